"""Self-supervised pretraining whose encoders go back into the registry.

``zoo.ssl.pretrain(task, encoder, data, tag=...)`` trains an encoder on unlabelled images with a
pretext task and writes a weight card, after which ``zoo.load(encoder, pretrained=tag)`` loads
it. Importing this package is light; TensorFlow is imported when training starts.
"""

from __future__ import annotations

from zoo._lazy import submodule_access
from zoo.ssl.tasks import TASKS, get_task, list_tasks


def pretrain(task: str, encoder: str = "simple_cnn", data="synthetic", **kwargs):
    """See zoo.ssl.runner.pretrain."""
    from zoo.ssl.runner import pretrain as _pretrain

    return _pretrain(task, encoder, data, **kwargs)


__all__ = ["TASKS", "get_task", "list_tasks", "pretrain"]

__getattr__, __dir__ = submodule_access(__name__)  # zoo.ssl.<submodule> imports on use
