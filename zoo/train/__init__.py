"""Training: the engine (any task, any strategy, hooks, resume), tasks, freezing (transfer),
precision, feature caching, fine-tuning.

``zoo.train.strategy`` is importable without importing TensorFlow; it loads on the first
call. Fine-tuning is ``zoo.finetune`` (zoo.train.finetune.finetune).
"""

from zoo._lazy import submodule_access
from zoo.train.distribute import strategy

__all__ = ["strategy"]

__getattr__, __dir__ = submodule_access(__name__)  # zoo.train.<submodule> imports on use
