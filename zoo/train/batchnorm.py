"""Recompute BatchNorm moving statistics under a model's final weights (SWA's ``bn_update``).

Why a module of the training room: the moving averages lag weights that still change fast, which
every short training run on the engine meets (zoo.semi.fit ends each method with it); the
statistics kept across replicas during training are ``engine.sync_batchnorm``'s.
"""

from __future__ import annotations


def _batchnorm_layers(model, like=None) -> list:
    """``model``'s BatchNormalization layers that training moves: those trainable in ``like``
    (the trained network, for a frozen copy of it such as FixMatch's weight average), else in
    ``model``; a layer the user froze keeps its statistics."""
    import keras

    from zoo._keras_compat import all_layers

    def bns(m):
        return [layer for layer in all_layers(m)
                if isinstance(layer, keras.layers.BatchNormalization)]

    mine, flags = bns(model), [layer.trainable for layer in bns(like if like is not None
                                                                   else model)]
    if len(flags) != len(mine):
        flags = [layer.trainable for layer in mine]
    return [layer for layer, moving in zip(mine, flags, strict=True) if moving]


def recompute_batchnorm(model, batches, like=None) -> int:
    """Set every moving BatchNorm statistic of ``model`` to the average of its batch statistics
    over ``batches`` (images) under the current weights (SWA's ``bn_update``), and return the
    number of images.

    Why: the moving averages lag weights that still change fast; at the end of a run of a few
    hundred steps they mix statistics of earlier networks, and the inference-mode network is
    worse than the training-mode one (zoo.semi's FixMatch on digits: pool accuracy 0.815 vs
    0.867). Each batch's momentum is the share of the images seen before it, so the mean is the
    population's exactly and the variance the average within-batch variance (the one training
    normalises by). Other training-mode layers (dropout) act as in training, as in
    ``bn_update``.
    """
    layers = _batchnorm_layers(model, like)
    if not layers:
        return 0
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    seen = 0
    try:
        for layer in layers:
            layer.trainable = True  # a frozen copy's BatchNorm moves only when trainable
        for x in batches:
            n = int(x.shape[0])
            for layer in layers:
                layer.momentum = seen / (seen + n)
            model(x, training=True)
            seen += n
    finally:
        for layer, (momentum, trainable) in zip(layers, saved, strict=True):
            layer.momentum, layer.trainable = momentum, trainable
    return seen
