"""Training: freezing (transfer), the distributed trainer, precision, feature caching, fine-tuning.

``zoo.train.strategy`` and ``zoo.train.finetune`` are importable here without importing
TensorFlow; it loads on the first call.
"""

from zoo.train.distribute import strategy


def finetune(model_or_name, train_data, val_data=None, **kwargs):
    """Two-stage fine-tuning; see zoo.train.finetune.finetune for every argument."""
    from zoo.train.finetune import finetune as _finetune

    return _finetune(model_or_name, train_data, val_data, **kwargs)


__all__ = ["strategy", "finetune"]
