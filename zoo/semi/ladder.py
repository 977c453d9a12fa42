"""The ladder network (Rasmus et al. 2015, arXiv:1507.02672) on a zoo dense/conv stack.

The classifier is read as the paper's encoder: a chain of **units**, each a Dense or Conv layer
(``z_pre = W h``), optionally followed by BatchNormalization, with weightless layers (activations,
pooling, flattening, dropout) in between; layer 0 is the image as the network sees it (after its
``preprocess`` layer). Two paths share every weight:

- the **clean** path is the classifier itself (its BatchNorm layers run and update their
  statistics as in supervised training); it records each unit's batch-normalised
  ``z = (z_pre - mu) / sigma`` (batch mean and standard deviation), the denoising targets;
- the **corrupted** path adds Gaussian noise of ``noise_std`` to the image and to every ``z``, then
  applies the unit's own scale and shift (``gamma * z + beta``) and activation.

A decoder (``zoo.layers.ladder``) runs top-down: ``u_L = batchnorm(corrupted output)``,
``ẑ_l = g(z̃_l, u_l)`` with the vanilla combinator g per channel (lateral connections: each
``z̃_l`` enters its own level), ``u_{l-1} = batchnorm(V_l ẑ_l)`` where ``V_l`` maps back to the
level below (a Dense layer, or nearest up-sampling and a 3x3 convolution). The denoising cost is
the paper's, with BatchNorm-normalised targets:

    C_d = sum_l lambda_l * mean_n mean_i ((ẑ_l - mu_l) / sigma_l - z_l)^2

(``mu_l``, ``sigma_l``: the clean path's batch statistics; 0 and 1 for the image), with the
paper's weights by default (``layer_weights``: lambda_0 = 1000 for the image, 10 for the first
layer, 0.1 above, as in Rasmus et al.'s MNIST network). The loss is, as in the paper, the
labelled images' cross-entropy on the *corrupted* path's output (the noise regularises the
supervised cost too) plus ``unlabelled_weight * C_d`` over the labelled and unlabelled images;
the clean path is the classifier that is evaluated and returned.

``augment=True`` (not in the paper) also corrupts each unlabelled image of the corrupted path
with the consistency methods' weak augmentation (zoo.semi.augment.weak: flip, shift) before the
Gaussian noise, while the clean path (the targets) reads the image itself: the denoising costs
then ask the network to recover an image's clean representation from a shifted view of it, which
links an image's augmented views as the Pi-model's consistency does. Gaussian noise alone does
not move an image towards its shifted class-mates (docs/semi.md, "Which methods use the cluster
structure"). The labelled images enter the corrupted path unaugmented, so the supervised cost
stays the paper's and any gain comes from the unlabelled images; with ``augment=False`` (the
default) the method is the paper's.

A network whose layers are not such a chain (residual or dense connections, nested models, layer
or group normalisation, depthwise convolutions) is refused with an error naming the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.semi.augment import weak
from zoo.semi.methods import SemiTask, check_weight, labelled_part, register_method
from zoo.semi.reconstruction import DecoderTask, supervised_step
from zoo.train.engine import StepOutput

_AFFINE = ("Dense", "Conv1D", "Conv2D", "Conv3D")
_NEEDS = ("the ladder network needs a plain stack of Dense/Conv layers (each optionally followed "
          "by BatchNormalization), with only weightless layers (activations, pooling, flatten, "
          "dropout) between them, such as simple_cnn or a Sequential MLP/CNN")


@dataclass
class Unit:
    """One level of the ladder: a Dense/Conv layer and the BatchNormalization after it (or None)."""

    affine: object
    bn: object = None
    after: list = field(default_factory=list)  # weightless layers up to the next unit


@dataclass
class LadderPlan:
    """The classifier as a ladder: layers giving level 0 (the image), then the units."""

    pre: list
    units: list


def _refuse(model, layer, what: str):
    return InvalidArgumentError(
        f"method='ladder' cannot use model {model.name!r}: {what} (layer {layer.name!r}, "
        f"{type(layer).__name__}); {_NEEDS}.")


def _check_chain(model, layers) -> None:
    """Every layer reads the previous layer's output only (no branches, no shared layers)."""
    from zoo._keras_compat import layer_inputs

    previous = None
    for layer in layers:
        try:
            inputs = layer_inputs(layer.output)
        except (AttributeError, ValueError):
            raise _refuse(model, layer, "it is called more than once") from None
        if previous is not None and (len(inputs) != 1 or inputs[0] is not previous.output):
            raise _refuse(model, layer, "it joins or skips layers: no residual or dense "
                                        "connections are allowed")
        previous = layer


def _is(layer, names) -> bool:
    return type(layer).__name__ in names


def ladder_plan(model) -> LadderPlan:
    """Read ``model`` as a ladder (module docstring), or refuse it naming the layer at fault."""
    import keras

    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise InvalidArgumentError(f"method='ladder' takes a Keras model, not {type(model)}.")
    layers = [layer for layer in model.layers if not _is(layer, ("InputLayer",))]
    _check_chain(model, layers)
    pre, units = [], []
    for layer in layers:
        if _is(layer, _AFFINE):
            units.append(Unit(layer))
        elif _is(layer, ("BatchNormalization",)):
            if not units or units[-1].bn is not None or units[-1].after:
                raise _refuse(model, layer, "a BatchNormalization that does not follow a "
                                            "Dense/Conv layer")
            units[-1].bn = layer
        elif layer.weights:
            raise _refuse(model, layer, "a layer with weights that is neither Dense/Conv nor "
                                        "BatchNormalization")
        else:
            (units[-1].after if units else pre).append(layer)
    if not units:
        raise InvalidArgumentError(f"method='ladder' cannot use model {model.name!r}: it has no "
                                   f"Dense or Conv layer; {_NEEDS}.")
    if tuple(units[-1].affine.output.shape[1:]) != tuple(model.outputs[0].shape[1:]):
        raise _refuse(model, units[-1].affine, "the last Dense/Conv layer does not give the class "
                                               "scores (the ladder's top level)")
    return LadderPlan(pre, units)


def _shapes(plan: LadderPlan, model) -> list[tuple]:
    """Per-example shapes of the levels 0..L."""
    level0 = plan.pre[-1].output if plan.pre else model.inputs[0]
    return [tuple(level0.shape[1:])] + [tuple(u.affine.output.shape[1:]) for u in plan.units]


def _down(x, shape: tuple, name: str):
    """V_l: from level l's shape to ``shape`` (level l-1's)."""
    import keras

    from zoo.layers import dims as D

    if len(x.shape) == 2:
        x = keras.layers.Dense(int(np.prod(shape)), name=f"{name}_dense")(x)
        return keras.layers.Reshape(shape, name=f"{name}_reshape")(x) if len(shape) > 1 else x
    if len(shape) == 1:
        x = keras.layers.Flatten(name=f"{name}_flatten")(x)
        return keras.layers.Dense(shape[0], name=f"{name}_dense")(x)
    dims = len(shape) - 1
    ratios = [t / s for t, s in zip(shape[:-1], x.shape[1:-1], strict=True)]
    if any(r < 1 or r != int(r) for r in ratios):
        raise InvalidArgumentError(
            f"the ladder decoder cannot map a level of size {tuple(x.shape[1:-1])} onto the level "
            f"below, {shape[:-1]} (not a whole multiple); use input sizes the network's poolings "
            "divide exactly.")
    if any(r > 1 for r in ratios):
        x = D.layer("upsample", dims)(tuple(int(r) for r in ratios), name=f"{name}_up")(x)
    return D.conv(dims)(shape[-1], 3, padding="same", name=f"{name}_conv")(x)


def build_ladder_decoder(shapes: list[tuple], top_shape: tuple):
    """The decoder: inputs [corrupted output, z̃_L, ..., z̃_0], outputs [ẑ_L, ..., ẑ_0]."""
    import keras

    from zoo.layers.ladder import BatchStandardize, LadderCombinator

    top = keras.Input(top_shape, name="ladder_top")
    lateral = [keras.Input(shapes[level], name=f"ladder_z{level}")
               for level in reversed(range(len(shapes)))]
    u = BatchStandardize(name="ladder_u_top")(top)
    outputs = []
    for z, level in zip(lateral, reversed(range(len(shapes))), strict=True):
        z_hat = LadderCombinator(name=f"ladder_g{level}")([z, u])
        outputs.append(z_hat)
        if level:
            u = BatchStandardize(name=f"ladder_u{level - 1}")(
                _down(z_hat, shapes[level - 1], f"ladder_v{level}"))
    return keras.Model([top, *lateral], outputs, name="ladder_decoder")


def denoising_cost(z_hats, zs, mus, sigmas, weights):
    """``sum_l w_l mean_n mean_i ((ẑ_l - mu_l) / sigma_l - z_l)^2``, levels in the same order."""
    from keras import ops

    total = 0.0
    for z_hat, z, mu, sigma, w in zip(z_hats, zs, mus, sigmas, weights, strict=True):
        diff = ops.reshape((z_hat - mu) / sigma - z, (ops.shape(z)[0], -1))
        total = total + w * ops.mean(ops.square(diff))
    return total


def _pre_activation(layer, h):
    """``W h + b`` of a Dense/Conv layer, before its own activation."""
    import keras
    from keras import ops

    if layer.activation is keras.activations.linear:
        return layer(h)
    if _is(layer, ("Dense",)):
        out = ops.matmul(h, layer.kernel)
    else:
        out = layer.convolution_op(h, layer.kernel)
    return out + layer.bias if layer.use_bias else out


@dataclass
class Path:
    """One pass through the encoder: per level z (normalised), mu, sigma; and the output."""

    zs: list
    mus: list
    sigmas: list
    output: object


class Ladder(DecoderTask):
    """The ladder network's task (module docstring)."""

    unlabelled_metrics = ("denoising_cost",)  # every step reports them (0 / 0 without)

    def __init__(self, classifier, *, num_classes: int, unlabelled_weight: float = 1.0,
                 seed: int = 0, noise_std: float = 0.3, layer_weights=None,
                 augment: bool = False):
        super().__init__(classifier, num_classes=num_classes,
                         unlabelled_weight=unlabelled_weight, seed=seed)
        self.plan = ladder_plan(classifier)
        shapes = _shapes(self.plan, classifier)
        self.noise_std = check_weight(noise_std, "noise_std")
        self.layer_weights = _layer_weights(layer_weights, len(shapes))
        if not isinstance(augment, bool):
            raise InvalidArgumentError(f"augment={augment!r}: give True (the corrupted path also "
                                       "reads weakly augmented views) or False (the paper's).")
        self.augment = augment
        self.decoder = build_ladder_decoder(shapes, tuple(classifier.outputs[0].shape[1:]))

    def corrupted_input(self, x, labelled: int = 0):
        """The corrupted path's images: ``x``, or with ``augment`` every image from row
        ``labelled`` on (the unlabelled ones) as a weak augmentation of itself."""
        import tensorflow as tf

        if not self.augment:
            return x
        x = tf.cast(x, tf.float32)
        return tf.concat([x[:labelled], weak(x[labelled:], self.step_seed(20))], 0)

    def _noise(self, x, purpose: int):
        import tensorflow as tf

        if not self.noise_std:
            return x
        return x + self.noise_std * tf.random.stateless_normal(
            tf.shape(x), self.step_seed(purpose), dtype=x.dtype)

    def _unit(self, unit: Unit, h, training: bool, purpose):
        """(z, mu, sigma, output before the activation) of one unit; ``purpose`` None: clean."""
        from keras import ops

        z_pre = _pre_activation(unit.affine, h)
        mean, var = ops.moments(z_pre, axes=tuple(range(len(z_pre.shape) - 1)))
        sigma = ops.sqrt(var + (unit.bn.epsilon if unit.bn is not None else 1e-3))
        z = (z_pre - mean) / sigma
        if purpose is None:
            out = unit.bn(z_pre, training=training) if unit.bn is not None else z_pre
            return z, mean, sigma, out
        z = self._noise(z, purpose)
        if unit.bn is None:
            return z, mean, sigma, z * sigma + mean
        gamma = unit.bn.gamma if unit.bn.scale else 1.0
        beta = unit.bn.beta if unit.bn.center else 0.0
        return z, mean, sigma, gamma * z + beta

    def walk(self, x, training: bool, corrupted: bool) -> Path:
        """The clean (the classifier's own computation) or the corrupted path over ``x``."""
        from keras import ops

        h = ops.cast(x, "float32")
        for layer in self.plan.pre:
            h = layer(h, training=training)
        if corrupted:
            h = self._noise(h, 10)
        zs, mus, sigmas = [h], [0.0], [1.0]
        for level, unit in enumerate(self.plan.units, start=1):
            z, mean, sigma, h = self._unit(unit, h, training, 10 + level if corrupted else None)
            h = unit.affine.activation(h)
            for layer in unit.after:
                h = layer(h, training=training)
            zs.append(z)
            mus.append(mean)
            sigmas.append(sigma)
        return Path(zs, mus, sigmas, h)

    def costs(self, x, training: bool, labelled: int = 0):
        """(C_d, the clean path, the decoder's ẑ per level 0..L) over the images ``x``."""
        cost, clean, _, z_hats = self.paths(x, training, labelled)
        return cost, clean, z_hats

    def paths(self, x, training: bool, labelled: int = 0):
        """(C_d, the clean path, the corrupted path, ẑ per level 0..L) over the images ``x``,
        the first ``labelled`` of them labelled (never augmented)."""
        clean = self.walk(x, training, corrupted=False)
        noisy = self.walk(self.corrupted_input(x, labelled), training, corrupted=True)
        z_hats = self.decoder([noisy.output, *noisy.zs[::-1]], training=training)[::-1]
        cost = denoising_cost(z_hats, clean.zs, clean.mus, clean.sigmas, self.layer_weights)
        return cost, clean, noisy, z_hats

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        inputs, y, w = batch
        if not (training and self.unlabelled_weight > 0 and isinstance(inputs, dict)):
            return supervised_step(self, batch, training)
        self.iterations.assign_add(1)
        xl = ops.cast(labelled_part(inputs), "float32")
        both = ops.concatenate([xl, ops.cast(inputs["unlabelled"], "float32")], 0)
        n = ops.shape(xl)[0]
        cost, clean, noisy, _ = self.paths(both, training, n)
        w = ops.cast(w, "float32")
        # the paper's supervised cost: the corrupted path's output (the clean one is reported)
        metrics = self.supervised.metrics(y, ops.cast(clean.output[:n], "float32"), w)
        metrics["denoising_cost"] = (cost, 1.0)
        noisy_probs = ops.cast(noisy.output[:n], "float32")
        loss = self.supervised.per_example(y, noisy_probs) * w + self.unlabelled_weight * cost
        return StepOutput({"main": loss}, metrics)


PAPER_WEIGHTS = (1000.0, 10.0, 0.1)  # Rasmus et al.'s MNIST lambdas: the image, layer 1, above


def _layer_weights(weights, levels: int) -> list[float]:
    """``layer_weights``: None (the paper's: 1000 for the image, 10 for the first layer, 0.1
    above), one number, or one per level 0..L."""
    if weights is None:
        return [PAPER_WEIGHTS[min(level, 2)] for level in range(levels)]
    values = [weights] * levels if isinstance(weights, int | float) else list(weights)
    ok = len(values) == levels and all(
        not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v >= 0
        for v in values)
    if not ok:
        raise InvalidArgumentError(
            f"layer_weights={weights!r}: give one weight >= 0 per level, {levels} here (the image "
            "first, then each Dense/Conv layer), or one number for all.")
    return [float(v) for v in values]


@register_method("ladder", family="reconstruction",
                 summary="ladder network: clean and corrupted paths sharing weights, lateral "
                         "connections, a denoising cost per layer",
                 backbones="plain Dense/Conv stacks: simple_cnn, simple_cnn_3d, Sequential "
                           "MLP/CNNs (no residual or dense connections)")
def make_ladder(model, *, num_classes: int, unlabelled_weight: float, seed: int,
                noise_std: float = 0.3, layer_weights=None, augment: bool = False) -> SemiTask:
    """The ladder task; ``layer_weights`` are the lambda_l (the image first); ``augment``: the
    corrupted path also reads weakly augmented unlabelled images (module docstring)."""
    check_weight(unlabelled_weight)
    return Ladder(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight, seed=seed,
                  noise_std=noise_std, layer_weights=layer_weights, augment=augment)
