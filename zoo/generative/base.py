"""What the GAN methods share: the two-optimizer Task ("gen", "disc"), images scaled to the
generators' tanh range [-1, 1] and back, unpaired batches, and the data checks that run before
any training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import DataError, InputShapeError, InvalidArgumentError
from zoo.train.engine import Task


class GANTask(Task):
    """A GAN on the engine: optimizer ``gen`` updates the generators, ``disc`` the
    discriminators (``groups``: optimizer name -> models), each from one forward pass."""

    optimizers = ("gen", "disc")
    history_key = "gen_loss"
    groups: dict = {}

    def models(self) -> dict:
        return {name: m for members in self.groups.values() for name, m in members.items()}

    def trainable(self, name: str) -> list:
        return [v for m in self.groups[name].values() for v in m.trainable_variables]

    def regularized(self, name: str) -> list:
        return list(self.groups[name].values())

    def new_optimizers(self, learning_rate: float = 2e-4, d_learning_rate: float | None = None,
                       beta_1: float = 0.5) -> dict:
        """Adam for both (Radford et al.'s beta_1 = 0.5); the discriminator's rate defaults to
        the generator's."""
        import keras

        d_rate = learning_rate if d_learning_rate is None else d_learning_rate
        return {"gen": keras.optimizers.Adam(learning_rate, beta_1=beta_1),
                "disc": keras.optimizers.Adam(d_rate, beta_1=beta_1)}

    def predict(self, x):
        return self.groups["gen"][next(iter(self.groups["gen"]))](x, training=False)


def check_range(value_range, name: str = "value_range") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not lo < hi:
        raise InvalidArgumentError(
            f"{name}={value_range!r}: give (low, high) with low < high, the values the images "
            "span (e.g. (0, 255) for 8-bit images, (-1000, 1000) for CT in HU).")
    return lo, hi


def to_unit(images, value_range, what: str = "images") -> np.ndarray:
    """``value_range`` -> [-1, 1] (the generators' tanh range), float32; values more than 1% of
    the span outside ``value_range`` are a DataError (a tanh generator could never make them)."""
    lo, hi = check_range(value_range)
    images = np.asarray(images, np.float32)
    low, high = float(images.min()), float(images.max())
    slack = 0.01 * (hi - lo)
    if low < lo - slack or high > hi + slack:
        raise DataError(
            f"{what} span [{low:.4g}, {high:.4g}], outside their value range ({lo:g}, {hi:g}); "
            "give the range the images really take (e.g. (-1024, 1024) for CT in HU), or clip "
            "them into it.")
    return (2.0 * (np.asarray(images, np.float32) - lo) / (hi - lo) - 1.0).astype(np.float32)


def from_unit(images, value_range) -> np.ndarray:
    """[-1, 1] -> ``value_range``, float32."""
    lo, hi = check_range(value_range)
    return ((np.asarray(images, np.float32) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def check_images(images, name: str, volumes: bool = False) -> np.ndarray:
    """(N, H, W, C) finite float32, N >= 1; a (N, H, W) array gets one channel. ``volumes``:
    (N, D, H, W, C) volumes are taken too."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim not in ((4, 5) if volumes else (4,)) or len(images) == 0:
        raise DataError(f"{name}: shape {images.shape}; give images as (N, H, W) or (N, H, W, C)"
                        + (" or volumes as (N, D, H, W, C)" if volumes else "") + " with N >= 1.")
    if not np.issubdtype(images.dtype, np.number) or not np.isfinite(images).all():
        raise DataError(f"{name}: the images hold non-numeric, NaN or infinite values; clean "
                        "or drop those images.")
    return images.astype(np.float32)


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str], why: str) -> None:
    """Both domains' images (H, W, C) equal, else an InputShapeError naming both shapes."""
    if a.shape[1:] != b.shape[1:]:
        raise InputShapeError(
            f"{names[0]} images are {a.shape[1:]} but {names[1]} images are {b.shape[1:]}; {why} "
            "Resample or crop both domains to one (H, W, C) first.")


@dataclass
class UnpairedBatches:
    """Batches (a, b) of two domains in independent seeded orders per epoch (no pairing)."""

    a: np.ndarray
    b: np.ndarray
    batch_size: int
    seed: int = 0

    def __len__(self) -> int:
        return max(1, min(len(self.a), len(self.b)) // self.batch_size)

    def dataset(self, epoch: int):
        import tensorflow as tf

        rng = np.random.default_rng([self.seed, epoch])
        n = len(self) * self.batch_size
        ia, ib = (rng.permutation(len(d))[:n] if len(d) >= n else rng.integers(len(d), size=n)
                  for d in (self.a, self.b))
        return tf.data.Dataset.from_tensor_slices((self.a[ia], self.b[ib])).batch(self.batch_size)


@dataclass
class GANResult:
    """Trained models by name, the engine's history, and the value range the images had."""

    models: dict
    history: list
    value_range: tuple


def train_task(task: GANTask, data, *, epochs: int, learning_rate: float,
               d_learning_rate: float | None = None, hooks=(), verbose: int = 0) -> list:
    """Run ``task`` on the zoo's engine for ``epochs`` epochs; returns the history."""
    from zoo.train.engine import Engine

    optimizers = task.new_optimizers(learning_rate, d_learning_rate)
    return Engine(task, optimizers, hooks=hooks, verbose=verbose).fit(data, epochs)


def check_positive_number(value, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InvalidArgumentError(
            f"{name}={value!r}: give a {'non-negative' if allow_zero else 'positive'} number.")
    return float(value)


def check_options(options: dict, *functions, what: str) -> None:
    """Keyword options every one of ``functions`` rejects -> InvalidArgumentError (did you mean),
    before anything is built."""
    import inspect

    from zoo.errors import did_you_mean

    known = sorted({n for f in functions for n, p in inspect.signature(f).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidArgumentError(
            f"{what} got unknown option(s) {', '.join(unknown)}."
            + "".join(did_you_mean(u, known) for u in unknown)
            + f" It takes {', '.join(known)}.")
