"""Training: freezing (transfer), the distributed trainer, precision, feature caching, fine-tuning.

``zoo.train.strategy`` is importable without importing TensorFlow; it loads on the first
call. Fine-tuning is ``zoo.finetune`` (zoo.train.finetune.finetune).
"""

from zoo.train.distribute import strategy

__all__ = ["strategy"]
