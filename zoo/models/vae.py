"""Variational auto-encoders in 2D and 3D (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017).

``vae`` / ``vae3d`` (task "generator"): image in, reconstruction out, in the input's own units.
The graph is ``to_unit`` (the value range onto [0, 1]) -> ``encoder`` (a nested model: strided
convolutions -> ``z_mean``, ``z_log_var``) -> ``z`` (``zoo.layers.vae.Sampling``: a draw while
training, the mean otherwise) -> ``decoder`` (a nested model: latent -> logits) ->
``reconstruction_unit`` (sigmoid) -> ``reconstruction`` (back to the value range). The nested
models are found by these layer names (``parts``), so ``generator(model)`` samples images from
latent vectors and ``mean_encoder(model)`` gives M1's features without rebuilding anything. beta
is a training option (zoo.generative.vae), not part of the graph.

``mlp_encoder`` / ``mlp_decoder`` are the dense conditional pair M2 uses (q(z|x,y), p(x|y,z)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zoo._lazy import keras
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.layers import dims as D
from zoo.models.registry import register_model


def check_latent_dim(latent_dim) -> int:
    """``latent_dim`` as a positive int, else InvalidArgumentError."""
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise InvalidArgumentError(
            f"latent_dim={latent_dim!r}: the latent size must be a positive integer (e.g. 16).")
    return latent_dim


def _check_widths(values, what: str) -> tuple[int, ...]:
    values = tuple(values) if isinstance(values, list | tuple) else (values,)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise InvalidArgumentError(
            f"{what}={values!r}: give a non-empty list of positive layer widths, e.g. (32, 64).")
    return values


def check_value_range(value_range) -> tuple[float, float]:
    """(low, high) with low < high, both finite."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"value_range={value_range!r}: give (low, high), e.g. (0, 255) or (0, 1).") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InvalidArgumentError(
            f"value_range={value_range!r}: need finite low < high (the images' pixel range).")
    return lo, hi


def check_sizes(spatial, depth: int) -> None:
    """Each spatial size a multiple of 2**depth (at least 2**depth): the decoder mirrors it."""
    step = 2**depth
    for size in spatial:
        if size is None or size < step or size % step:
            raise InputShapeError(
                f"input spatial size {size} (of {tuple(spatial)}): a VAE with {depth} strided "
                f"levels (filters of length {depth}) needs fixed sizes that are multiples of "
                f"{step}; pad or crop the images, or give fewer filters.")


def conv_encoder(shape, latent_dim: int, filters=(32, 64), name: str = "encoder"):
    """Images in [0, 1] of ``shape`` (spatial..., channels) -> [z_mean, z_log_var].

    Args:
        shape: the input shape without the batch axis, 2D (H, W, C) or 3D (D, H, W, C).
        latent_dim: the latent size.
        filters: the widths of the stride-2 3x3 convolutions.
        name: the model's name.

    Returns:
        A Functional model with outputs ``[z_mean, z_log_var]``.
    """
    filters, latent_dim = _check_widths(filters, "filters"), check_latent_dim(latent_dim)
    dims = D.check_dims(len(shape) - 1)
    check_sizes(shape[:-1], len(filters))
    inputs = keras.Input(shape=tuple(shape), name="unit_image")
    y = inputs
    for i, f in enumerate(filters):
        y = D.conv(dims)(f, 3, strides=2, padding="same", activation="relu",
                         name=f"enc_conv{i}")(y)
    y = keras.layers.Flatten(name="enc_flatten")(y)
    mean = keras.layers.Dense(latent_dim, name="z_mean")(y)
    log_var = keras.layers.Dense(latent_dim, name="z_log_var")(y)
    return keras.Model(inputs, [mean, log_var], name=name)


def conv_decoder(latent_dim: int, shape, filters=(32, 64), name: str = "decoder"):
    """Latent vectors -> logits of images of ``shape``: the mirror of ``conv_encoder``.

    Args:
        latent_dim: the latent size.
        shape: the output shape without the batch axis (spatial..., channels).
        filters: the encoder's widths (used in reverse order).
        name: the model's name.

    Returns:
        A Functional model from ``latent_dim`` vectors to logits of ``shape``.
    """
    filters, latent_dim = _check_widths(filters, "filters"), check_latent_dim(latent_dim)
    dims = D.check_dims(len(shape) - 1)
    check_sizes(shape[:-1], len(filters))
    bottom = tuple(int(s) // 2 ** len(filters) for s in shape[:-1])
    inputs = keras.Input(shape=(latent_dim,), name="latent")
    y = keras.layers.Dense(math.prod(bottom) * filters[-1], activation="relu",
                           name="dec_dense")(inputs)
    y = keras.layers.Reshape((*bottom, filters[-1]), name="dec_reshape")(y)
    for i, f in enumerate(reversed(filters)):
        y = D.conv_transpose(dims)(f, 3, strides=2, padding="same", activation="relu",
                                   name=f"dec_up{i}")(y)
    logits = D.conv(dims)(int(shape[-1]), 3, padding="same", name="dec_logits")(y)
    return keras.Model(inputs, logits, name=name)


def _dense_stack(y, hidden, prefix: str):
    for i, width in enumerate(hidden):
        y = keras.layers.Dense(width, activation="relu", name=f"{prefix}{i}")(y)
    return y


def _joined(inputs, name: str):
    return inputs[0] if len(inputs) == 1 else keras.layers.Concatenate(name=name)(inputs)


def mlp_encoder(in_dim: int, latent_dim: int, hidden=(128,), cond_dim: int = 0,
                name: str = "encoder"):
    """q(z | x[, y]): flat ``x`` (and a one-hot ``y`` when ``cond_dim``) -> [z_mean, z_log_var].

    Args:
        in_dim: the length of a flattened input.
        latent_dim: the latent size.
        hidden: the widths of the ReLU hidden layers.
        cond_dim: the width of the conditioning one-hot (0: none, one input).
        name: the model's name.

    Returns:
        A Functional model, inputs ``x`` (and ``y``), outputs ``[z_mean, z_log_var]``.
    """
    latent_dim, hidden = check_latent_dim(latent_dim), _check_widths(hidden, "hidden")
    inputs = [keras.Input(shape=(in_dim,), name="x")]
    if cond_dim:
        inputs.append(keras.Input(shape=(cond_dim,), name="y"))
    y = _dense_stack(_joined(inputs, "xy"), hidden, "enc_hidden")
    mean = keras.layers.Dense(latent_dim, name="z_mean")(y)
    log_var = keras.layers.Dense(latent_dim, name="z_log_var")(y)
    return keras.Model(inputs if cond_dim else inputs[0], [mean, log_var], name=name)


def mlp_decoder(latent_dim: int, out_dim: int, hidden=(128,), cond_dim: int = 0,
                gaussian: bool = False, name: str = "decoder"):
    """p(x | z[, y]): ``z`` (and a one-hot ``y``) -> Bernoulli logits, or Gaussian mean/log-var.

    Args:
        latent_dim: the latent size.
        out_dim: the length of a flattened output.
        hidden: the widths of the ReLU hidden layers.
        cond_dim: the width of the conditioning one-hot (0: none).
        gaussian: outputs ``[x_mean, x_log_var]`` (real-valued x, e.g. M1's latents) instead
            of ``logits``.
        name: the model's name.

    Returns:
        A Functional model, inputs ``z`` (and ``y``).
    """
    latent_dim, hidden = check_latent_dim(latent_dim), _check_widths(hidden, "hidden")
    inputs = [keras.Input(shape=(latent_dim,), name="z")]
    if cond_dim:
        inputs.append(keras.Input(shape=(cond_dim,), name="y"))
    y = _dense_stack(_joined(inputs, "zy"), hidden, "dec_hidden")
    if gaussian:
        outputs = [keras.layers.Dense(out_dim, name="x_mean")(y),
                   keras.layers.Dense(out_dim, name="x_log_var")(y)]
    else:
        outputs = keras.layers.Dense(out_dim, name="logits")(y)
    return keras.Model(inputs if cond_dim else inputs[0], outputs, name=name)


def attach(x, *, latent_dim: int = 16, filters=(32, 64), value_range=(0.0, 255.0), seed=None):
    """The VAE graph on the image tensor ``x``: returns the reconstruction tensor (module doc)."""
    lo, hi = check_value_range(value_range)
    filters, latent_dim = _check_widths(filters, "filters"), check_latent_dim(latent_dim)
    shape = tuple(x.shape[1:])
    D.check_dims(len(shape) - 1)
    check_sizes(shape[:-1], len(filters))
    unit = keras.layers.Rescaling(1.0 / (hi - lo), offset=-lo / (hi - lo), name="to_unit")(x)
    mean, log_var = conv_encoder(shape, latent_dim, filters)(unit)
    from zoo.layers.vae import Sampling

    z = Sampling(seed=seed, name="z")([mean, log_var])
    logits = conv_decoder(latent_dim, shape, filters)(z)
    probs = keras.layers.Activation("sigmoid", name="reconstruction_unit")(logits)
    return keras.layers.Rescaling(hi - lo, offset=lo, name="reconstruction")(probs)


def build_vae(input_shape, *, latent_dim: int = 16, filters=(32, 64), value_range=(0.0, 255.0),
              seed=None, name: str = "vae"):
    """A VAE without the zoo's preprocessing layer (zoo.load("vae", ...) adds it).

    Args:
        input_shape: (H, W, C) or (D, H, W, C).
        latent_dim: the latent size.
        filters: the encoder's stride-2 convolution widths (the decoder mirrors them).
        value_range: the images' (low, high) pixel range, mapped onto [0, 1] inside.
        seed: the Sampling layer's seed.
        name: the model's name.

    Returns:
        A Functional model: image in, reconstruction out.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    out = attach(inputs, latent_dim=latent_dim, filters=filters, value_range=value_range,
                 seed=seed)
    return keras.Model(inputs, out, name=name)


@dataclass(frozen=True)
class VAEParts:
    """A VAE model's pieces, found by layer name: ``to_unit`` maps images to [0, 1] through
    every layer before the encoder (the zoo's ``preprocess`` included)."""

    model: object
    encoder: object
    sampling: object
    decoder: object
    value_range: tuple

    def to_unit(self, x):
        """Images (raw units) -> the encoder's [0, 1] input."""
        layers = [self.model.get_layer("to_unit")]
        if any(layer.name == "preprocess" for layer in self.model.layers):
            layers.insert(0, self.model.get_layer("preprocess"))
        for layer in layers:
            x = layer(x)
        return x

    def terms(self, x, training: bool = True):
        """Per-example (-log p(x|z), KL(q(z|x) || N(0, I))) of images ``x`` in raw units, one
        reparameterised draw of z (the mean when not training).

        Args:
            x: (B, ...) images.
            training: draw z (True) or take the posterior mean.

        Returns:
            ``(nll, kl)``, each (B,) in nats.
        """
        from zoo.layers.vae import bernoulli_log_likelihood, gaussian_kl

        unit = self.to_unit(x)
        mean, log_var = self.encoder(unit, training=training)
        z = self.sampling([mean, log_var], training=training)
        logits = self.decoder(z, training=training)
        return -bernoulli_log_likelihood(unit, logits), gaussian_kl(mean, log_var)


def parts(model) -> VAEParts:
    """The encoder, ``z`` sampling layer and decoder of a model built here (or loaded).

    Args:
        model: a ``vae`` / ``vae3d`` model (zoo.load, build_vae or a loaded .keras file).

    Returns:
        VAEParts.

    Raises:
        InvalidArgumentError: the model lacks the VAE's named layers.
    """
    names = {layer.name for layer in model.layers}
    missing = sorted({"to_unit", "encoder", "z", "decoder", "reconstruction"} - names)
    if missing:
        raise InvalidArgumentError(
            f"model {model.name!r} has no layer(s) {missing}: it is not a zoo VAE; build one "
            "with zoo.load('vae', ...) or zoo.models.vae.build_vae(...).")
    out = model.get_layer("reconstruction")
    lo = float(out.offset)
    return VAEParts(model, model.get_layer("encoder"), model.get_layer("z"),
                    model.get_layer("decoder"), (lo, lo + float(out.scale)))


def generator(model):
    """Latent vectors -> images in the VAE's value range (its decoder, shared weights)."""
    p = parts(model)
    z = keras.Input(shape=(p.decoder.input_shape[-1],), name="latent")
    probs = model.get_layer("reconstruction_unit")(p.decoder(z))
    return keras.Model(z, model.get_layer("reconstruction")(probs), name=f"{model.name}_generator")


def mean_encoder(model):
    """Images -> posterior means (M1's features), sharing the VAE's weights."""
    p = parts(model)
    image = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="image")
    mean, _ = p.encoder(p.to_unit(image))
    return keras.Model(image, mean, name=f"{model.name}_mean_encoder")


def _register(name: str, dims: int, size: int):
    @register_model(
        name,
        family="zoo",
        default_size=(size,) * dims,
        min_size=2,
        preprocess="none",
        spatial_dims=dims,
        task="generator",
        description=f"{dims}D convolutional VAE / beta-VAE (latent_dim, filters, value_range); "
        "image in, reconstruction out",
        paper="Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014",
    )
    def build(x, *, include_top, num_classes, classifier_activation, latent_dim=16,
              filters=(32, 64), value_range=(0.0, 255.0), seed=None):
        """latent_dim: the latent size; filters: stride-2 conv widths; value_range: the pixel
        range mapped onto [0, 1] (the Bernoulli likelihood's domain); seed: the sampler's."""
        return attach(x, latent_dim=latent_dim, filters=filters, value_range=value_range,
                      seed=seed)

    return build


build_vae2d = _register("vae", 2, 32)
build_vae3d = _register("vae3d", 3, 16)
