"""The phantom task seen by two scanners: the same phantoms, another contrast, noise and blur.

Numpy only; for domain-adaptation tests, demos and benchmarks (``zoo.domain``). Each phantom of
``make_phantoms`` is drawn once without noise (``clean``, in [0, 1]); the source scanner adds
white noise, the target scanner first maps intensities, then blurs, then adds its own noise:

    mapped = level + contrast * (clean ** gamma - level) + brightness
    target = clip(gaussian_blur(mapped, blur) + noise * N(0, 1), 0, 1) * 255

so with ``gamma=1`` every intensity step (lesion to tissue, organ to body) is ``contrast`` times
the source's, the noise standard deviation is ``noise`` and the blur a Gaussian of ``blur``
pixels (scipy's ``gaussian_filter`` with its defaults: reflecting borders, 4 sigma). Labels and
lesion masks are the phantoms', identical in both domains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from zoo.data.synthetic import Phantoms, make_phantoms
from zoo.errors import InvalidArgumentError


@dataclass(frozen=True)
class Scanner:
    """How a scanner renders a clean phantom (intensities in [0, 1] of the full range)."""

    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.05
    blur: float = 0.0
    level: float = 0.45  # the soft-tissue level the contrast is scaled about

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise InvalidArgumentError(f"Scanner({name}={value!r}): give a finite number.")
        if self.contrast <= 0 or self.gamma <= 0:
            raise InvalidArgumentError(
                f"Scanner(contrast={self.contrast}, gamma={self.gamma}): both must be > 0 (an "
                "intensity map that keeps the order of grey values).")
        if self.noise < 0 or self.blur < 0:
            raise InvalidArgumentError(
                f"Scanner(noise={self.noise}, blur={self.blur}): give standard deviations >= 0.")


SOURCE_SCANNER = Scanner()
TARGET_SCANNER = Scanner(contrast=0.6, brightness=-0.08, gamma=1.3, noise=0.08, blur=0.8)


@dataclass(frozen=True)
class ScannerShift:
    """The same phantoms rendered by two scanners; ``clean`` is the noise-free phantom."""

    source: Phantoms
    target: Phantoms
    clean: np.ndarray  # (N, H, W, 1) float32 in [0, 1]
    source_scanner: Scanner
    target_scanner: Scanner


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalised 1D Gaussian of ``sigma`` pixels, radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: np.ndarray, sigma: float, axes=(1, 2)) -> np.ndarray:
    """Separable Gaussian blur along ``axes`` with reflecting borders (scipy's 'reflect')."""
    out = np.asarray(images, np.float64)
    if sigma <= 0:
        return out
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    for axis in axes:
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, len(kernel), axis=axis)
        out = windows @ kernel
    return out


def render(clean: np.ndarray, scanner: Scanner, seed) -> np.ndarray:
    """Clean phantoms in [0, 1] as ``scanner`` shows them: float32 in [0, 255]."""
    rng = np.random.default_rng(seed)
    s = scanner
    mapped = s.level + s.contrast * (np.asarray(clean, np.float64) ** s.gamma - s.level)
    mapped = gaussian_blur(mapped + s.brightness, s.blur)
    noisy = mapped + s.noise * rng.standard_normal(mapped.shape)
    return (np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.float32)


def make_scanner_shift(n: int, size: int = 64, seed: int = 0, *,
                       source: Scanner = SOURCE_SCANNER, target: Scanner = TARGET_SCANNER,
                       **phantom_options) -> ScannerShift:
    """``n`` phantoms (``make_phantoms(n, size, seed, **phantom_options)`` without noise) rendered
    by the ``source`` and ``target`` scanners, each with its own seeded noise."""
    if "noise" in phantom_options:
        raise InvalidArgumentError(
            "make_scanner_shift(noise=...): the noise belongs to each scanner; give "
            "source=Scanner(noise=...) or target=Scanner(noise=...).")
    for what, scanner in (("source", source), ("target", target)):
        if not isinstance(scanner, Scanner):
            raise InvalidArgumentError(
                f"{what}={scanner!r}: give a zoo.data.scanner_shift.Scanner.")
    base = make_phantoms(n, size, seed, noise=0.0, **phantom_options)
    clean = base.images / np.float32(255.0)
    return ScannerShift(
        Phantoms(render(clean, source, [seed, 1]), base.labels, base.masks),
        Phantoms(render(clean, target, [seed, 2]), base.labels, base.masks),
        clean, source, target)
