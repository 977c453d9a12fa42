"""VAE / beta-VAE training on the zoo's engine, and its PNG grids (issue 18, item 5).

``fit_vae(images, ...)`` checks everything first (shape, finite values, value range, beta,
latent size), builds ``zoo.load("vae" | "vae3d", ...)``, trains ``VAETask`` (the negative ELBO
``-log p(x|z) + beta * KL(q(z|x) || N(0, I))`` per image, Bernoulli likelihood on [0, 1]) and,
with ``out=``, writes ``reconstructions.png`` (originals above their reconstructions),
``samples.png`` (decoded N(0, I) draws) and ``traversals.png`` (one latent axis per row, from -3
to 3 around the first image's mean). Volumes show their middle slice (depth axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.train.engine import StepOutput, Task

FIGURES = ("reconstructions.png", "samples.png", "traversals.png")


class VAETask(Task):
    """One VAE, one optimizer: ``nll + beta * kl`` per image (beta = 1: the VAE; > 1: beta-VAE)."""

    def __init__(self, model, beta: float = 1.0):
        from zoo.models.vae import parts

        self.model, self.parts = model, parts(model)
        self.beta = check_beta(beta)

    def models(self) -> dict:
        return {"vae": self.model}

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        x, _, w = batch
        nll, kl = self.parts.terms(x, training=training)
        w = ops.cast(w, "float32")
        count = ops.cast(ops.shape(nll)[0], "float32")
        return StepOutput({"main": (nll + self.beta * kl) * w},
                          {"reconstruction": (ops.sum(nll * w), count),
                           "kl": (ops.sum(kl * w), count)})


def check_beta(beta) -> float:
    """beta as a finite float >= 0, else InvalidArgumentError."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) \
            or beta < 0:
        raise InvalidArgumentError(
            f"beta={beta!r}: the KL weight must be a finite number >= 0 (1: a VAE, 4: beta-VAE).")
    return float(beta)


def check_images(images, value_range=None) -> tuple[np.ndarray, tuple[float, float]]:
    """(N, H, W[, C]) or (N, D, H, W, C) finite images -> float32 with channels, and their range.

    Args:
        images: the training images.
        value_range: (low, high) the pixels lie in (None: the data's own min and max).

    Returns:
        ``(images, (low, high))``.

    Raises:
        DataError: another rank, fewer than 2 images, NaN/inf, values outside ``value_range``.
    """
    from zoo.models.vae import check_value_range

    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (4, 5) or len(x) < 2:
        raise DataError(
            f"images of shape {np.shape(images)}: give at least 2 images (N, H, W[, C]) or "
            "volumes (N, D, H, W, C).")
    if not np.isfinite(x).all():
        raise DataError("images contain NaN or inf; clean or drop those images first.")
    if value_range is None and x.min() == x.max():
        raise InvalidArgumentError(
            f"every pixel is {x.min():g}, so the value range cannot be read from the images; "
            "give value_range=(low, high).")
    lo, hi = (float(x.min()), float(x.max())) if value_range is None else value_range
    lo, hi = check_value_range((lo, hi))
    if x.min() < lo or x.max() > hi:
        raise DataError(
            f"images range over [{x.min():g}, {x.max():g}], outside value_range=({lo:g}, {hi:g}); "
            "give the images' real pixel range.")
    return x, (lo, hi)


@dataclass
class VAEResult:
    """A trained VAE, its epoch history and the figures written (file name -> path)."""

    model: object
    history: list
    figures: dict


def fit_vae(images, *, latent_dim: int = 16, beta: float = 1.0, filters=(32, 64),
            value_range=None, epochs: int = 10, batch_size: int = 32,
            learning_rate: float = 1e-3, seed: int = 0, out=None,
            overwrite: bool = False) -> VAEResult:
    """Train a VAE (beta-VAE with ``beta`` > 1) on 2D images or 3D volumes.

    Args:
        images: (N, H, W[, C]) images or (N, D, H, W, C) volumes; sizes multiples of
            2**len(filters).
        latent_dim: the latent size.
        beta: the KL weight.
        filters: the encoder's stride-2 convolution widths.
        value_range: the pixels' (low, high) (None: the data's min and max).
        epochs: passes over the images.
        batch_size: images per step.
        learning_rate: Adam's learning rate.
        seed: the weights', sampler's and batch order's seed.
        out: a folder for the PNG grids (None: none written).
        overwrite: replace grids the zoo wrote there before.

    Returns:
        VAEResult.

    Raises:
        DataError: bad images; InvalidArgumentError / InputShapeError: bad options, sizes the
        decoder cannot reproduce; all before training.
    """
    import keras

    from zoo.models import vae as V
    from zoo.models.factory import load
    from zoo.train.batches import Batches
    from zoo.train.engine import Engine

    x, value_range = check_images(images, value_range)
    beta = check_beta(beta)
    V.check_latent_dim(latent_dim)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs={epochs!r}: give a positive integer.")
    V.check_sizes(x.shape[1:-1], len(V._check_widths(filters, "filters")))
    keras.utils.set_random_seed(seed)
    model = load("vae" if x.ndim == 4 else "vae3d", input_shape=x.shape[1:],
                 latent_dim=latent_dim, filters=tuple(filters), value_range=value_range,
                 seed=seed)
    task = VAETask(model, beta)
    engine = Engine(task, keras.optimizers.Adam(learning_rate))
    data = Batches(x, np.zeros(len(x), np.float32), batch_size, seed=seed)
    history = engine.fit(data, epochs)
    figures = write_figures(model, x, out, seed=seed, overwrite=overwrite) if out else {}
    return VAEResult(model, history, figures)


def _slices(grid: np.ndarray) -> np.ndarray:
    """A (rows, cols, H, W, C) grid as it is; (rows, cols, D, H, W, C) -> the middle slices."""
    return grid[:, :, grid.shape[2] // 2] if grid.ndim == 6 else grid


def grids(model, images, *, n: int = 8, seed: int = 0) -> dict:
    """The three grids as (rows, cols, H, W, C) arrays in the VAE's value range.

    Args:
        model: a zoo VAE.
        images: at least one image of the model's input shape.
        n: columns (images, samples, traversal steps).
        seed: the samples' seed.

    Returns:
        ``{"reconstructions": (2, k), "samples": (rows, n), "traversals": (min(latent, 8), n)}``.
    """
    from zoo.models.vae import generator, mean_encoder

    x = np.asarray(images[:n], np.float32)
    recon = np.asarray(model(x, training=False))
    decode = generator(model)
    latent = decode.inputs[0].shape[-1]
    z = np.random.default_rng(seed).standard_normal((2 * n, latent)).astype(np.float32)
    samples = np.asarray(decode(z)).reshape(2, n, *recon.shape[1:])
    start = np.asarray(mean_encoder(model)(x[:1]))[0]
    axes = min(latent, 8)
    steps = np.linspace(-3.0, 3.0, n, dtype=np.float32)
    walk = np.repeat(start[None, None], axes * n, axis=0).reshape(axes, n, latent).copy()
    for d in range(axes):
        walk[d, :, d] = steps
    traversals = np.asarray(decode(walk.reshape(-1, latent))).reshape(axes, n, *recon.shape[1:])
    return {"reconstructions": _slices(np.stack([x, recon])), "samples": _slices(samples),
            "traversals": _slices(traversals)}


def write_figures(model, images, out, *, n: int = 8, seed: int = 0,
                  overwrite: bool = False) -> dict:
    """Write ``reconstructions.png``, ``samples.png`` and ``traversals.png`` into ``out``.

    Each is ``zoo.figures.image_grid`` of a ``grids`` array, one row per grid row, black..white
    = the VAE's value range.

    Args:
        model: a zoo VAE.
        images: images of the model's input shape (the first ``n`` are shown).
        out: the folder.
        n: columns per grid.
        seed: the samples' seed.
        overwrite: replace grids the zoo wrote there before.

    Returns:
        {file name: path written}.
    """
    from zoo.figures import image_grid
    from zoo.models.vae import parts
    from zoo.outputs import staged

    value_range = parts(model).value_range
    arrays = grids(model, images, n=n, seed=seed)
    out = Path(out)
    with staged([out / name for name in FIGURES], writer="zoo.generative.vae",
                overwrite=overwrite) as paths:
        for name, path in zip(FIGURES, paths, strict=True):
            grid = arrays[name[:-4]]
            image_grid(grid.reshape(-1, *grid.shape[2:]), path, value_range=value_range,
                       columns=grid.shape[1])
    return {name: out / name for name in FIGURES}
