"""A domain discriminator attached to any zoo model's feature maps, behind a gradient reversal.

``attach_discriminator(model, layers)`` returns a Functional model with two outputs, the task
output and a domain logit (source 0, target 1). The feature maps of ``layers`` (named layers of
the model, one or several depths) are average-pooled to the coarsest of their grids and
concatenated: the multi-connected discriminator of Kamnitsas et al. 2017 (IPMI), which looks at
low- and high-level features at once. A ``GradientReversal`` layer sits between the features and
the discriminator, so one optimizer trains both (DANN's trick). 2D and 3D alike.
"""

from __future__ import annotations

from zoo.errors import InvalidArgumentError
from zoo.registry import Registry

PREFIX = "domain_"


def feature_layer_names(model) -> list[str]:
    """The model's layers whose output is a spatial feature map (N, *spatial, C)."""
    rank = len(model.inputs[0].shape)
    names = []
    for layer in model.layers:
        out = getattr(layer, "output", None)
        if out is not None and not isinstance(out, list | tuple | dict) and len(out.shape) == rank:
            names.append(layer.name)
    return names


def _check_layers(model, layers) -> list[str]:
    """``layers`` as a list of known feature-layer names (did-you-mean on a typo)."""
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers or [])
    if not layers or not all(isinstance(n, str) for n in layers):
        raise InvalidArgumentError(
            f"layers={layers!r}: name one or more layers of {model.name} whose feature maps the "
            f"discriminator sees, e.g. {feature_layer_names(model)[-3:]}.")
    known = Registry("feature layer", feature_layer_names(model), argument="layers",
                     show_choices=False,
                     hint=f"zoo.domain.discriminator.feature_layer_names(model) lists the "
                          f"{model.name} layers with a spatial output.")
    return [known.check(n) for n in dict.fromkeys(layers)]


def _pool_factors(shapes: dict[str, tuple]) -> tuple[tuple, dict[str, tuple]]:
    """The coarsest grid and, per layer, the integer pooling factor down to it."""
    for name, shape in shapes.items():
        if None in shape:
            raise InvalidArgumentError(
                f"layer {name!r} has a feature map of unknown size {shape}; build the model with "
                "a fixed input_shape= so the discriminator's inputs can be aligned.")
    rank = len(next(iter(shapes.values())))
    grid = tuple(min(s[i] for s in shapes.values()) for i in range(rank))
    factors = {}
    for name, shape in shapes.items():
        if any(s % g for s, g in zip(shape, grid, strict=True)):
            raise InvalidArgumentError(
                f"layers {sorted(shapes)}: the feature map of {name!r} ({shape}) is not a whole "
                f"multiple of the coarsest one ({grid}); pick layers whose strides divide each "
                "other (e.g. the ends of the network's stages).")
        factors[name] = tuple(s // g for s, g in zip(shape, grid, strict=True))
    return grid, factors


def attach_discriminator(model, layers, *, width: int = 32, depth: int = 2,
                         lambda_: float = 0.0, name: str | None = None):
    """``model`` with a domain discriminator on the feature maps of ``layers``.

    Args:
        model: a single-output Functional zoo model (classifier or segmenter), 2D or 3D.
        layers: a layer name or a list of them (several depths: the multi-connected
            discriminator); ``feature_layer_names(model)`` lists the candidates.
        width: the discriminator's channels per convolution.
        depth: its number of 3x3(x3) convolutions before global pooling.
        lambda_: the gradient reversal's starting strength (DANN's schedule raises it from 0).
        name: the new model's name (default ``<model>_dann``).

    Returns:
        A ``keras.Model`` with outputs ``[task output, domain logit (N, 1)]``, sharing ``model``'s
        layers (training it trains ``model``).
    """
    import keras

    from zoo.layers import dims as D
    from zoo.layers.gradient_reversal import GradientReversal

    if len(model.outputs) != 1:
        raise InvalidArgumentError(
            f"{model.name} has {len(model.outputs)} outputs; attach the discriminator to a model "
            "with one task output (build it without deep supervision or auxiliary heads).")
    for value, what in ((width, "width"), (depth, "depth")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{what}={value!r}: give a positive integer.")
    names = _check_layers(model, layers)
    dims = D.check_dims(len(model.inputs[0].shape) - 2)
    outputs = {n: model.get_layer(n).output for n in names}
    _, factors = _pool_factors({n: tuple(t.shape[1:-1]) for n, t in outputs.items()})
    pooled = []
    for i, n in enumerate(names):
        t = outputs[n]
        if any(f > 1 for f in factors[n]):
            t = D.pool("avg", dims)(factors[n], name=f"{PREFIX}pool{i}")(t)
        pooled.append(t)
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name=f"{PREFIX}concat")(pooled)
    x = GradientReversal(lambda_, name=f"{PREFIX}reversal")(x)
    for i in range(depth):
        x = D.conv(dims)(width, 3, padding="same", activation="relu",
                         name=f"{PREFIX}conv{i + 1}")(x)
    x = D.global_pool("avg", dims)(name=f"{PREFIX}pool")(x)
    logit = keras.layers.Dense(1, name=f"{PREFIX}logit", dtype="float32")(x)
    return keras.Model(model.input, [model.outputs[0], logit], name=name or f"{model.name}_dann")


def reversal_layers(model) -> list:
    """Every GradientReversal layer in ``model`` (what a lambda schedule sets)."""
    from zoo._keras_compat import all_layers
    from zoo.layers.gradient_reversal import GradientReversal

    return [layer for layer in all_layers(model) if isinstance(layer, GradientReversal)]


def task_model(adapted):
    """The adapted model without its discriminator: input -> task output (shared layers)."""
    import keras

    return keras.Model(adapted.input, adapted.outputs[0], name=adapted.name.removesuffix("_dann"))
