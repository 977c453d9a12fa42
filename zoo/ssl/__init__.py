"""Self-supervised pretraining whose encoders go back into the registry.

``zoo.ssl.pretrain(task, encoder, data, tag=...)`` trains an encoder on unlabelled images with a
pretext task and writes a weight card, after which ``zoo.load(encoder, pretrained=tag)`` loads
it. Importing this package is light; TensorFlow is imported when training starts.
"""

from __future__ import annotations

from zoo._lazy import submodule_access
from zoo.ssl.tasks import TASKS, get_task, list_tasks


def pretrain(task: str, encoder: str = "simple_cnn", data="synthetic", **kwargs):
    """Pretrain ``encoder`` on unlabelled ``data`` with a pretext ``task``; publish it as a card.

    Args:
        task: a pretext task name (``zoo.ssl.list_tasks()``: rotation, inpainting, simclr, ...).
        encoder: a registered architecture (2D or 3D, as the task needs).
        data: images (N, H, W, C) or volumes (N, D, H, W, C) in [0, 255], or ``"synthetic"``.
        **kwargs: ``epochs``, ``batch_size``, ``learning_rate``, ``tag`` (write weights and a
            card, then ``zoo.load(encoder, pretrained=tag)``), ``init``, ``eval_data``,
            ``overwrite`` and the task's own options; see ``zoo.ssl.runner.pretrain``.

    Returns:
        A ``PretrainResult``: the encoder, the training history, probe scores and the card.

    Raises:
        UnknownNameError: unknown task or encoder. InvalidArgumentError / DataError: data of
            the wrong kind, range or size, checked before anything is built.
    """
    from zoo.ssl.runner import pretrain as _pretrain

    return _pretrain(task, encoder, data, **kwargs)


__all__ = ["TASKS", "get_task", "list_tasks", "pretrain"]

__getattr__, __dir__ = submodule_access(__name__)  # zoo.ssl.<submodule> imports on use
