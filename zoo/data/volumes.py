"""Seeded synthetic 3D phantom volumes (numpy only), for the volume pretext tasks.

Each volume is one "subject": a torso-like body whose cross-section changes along the
depth axis (dark lungs in the upper half, a bright spine at the back all along, a
liver-like organ in the lower half), with subject-specific sizes, offsets and grey
levels. So slice order is learnable from anatomy and two subjects can be told apart,
as in the slice-ordering and subject-discrimination papers. Values are float32 in
[0, 255] like ``zoo.data.synthetic.make_phantoms``; axis order (N, D, H, W, 1), D = slice
index, increasing upwards (feet to head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data.synthetic import _smooth_noise
from zoo.errors import InvalidArgumentError


@dataclass(frozen=True)
class Volumes:
    volumes: np.ndarray  # (N, D, H, W, 1) float32 in [0, 255]
    subjects: np.ndarray  # (N,) int32 subject id of each volume


def _ellipsoid(zz, yy, xx, c, r):
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0


def make_volumes(n: int, depth: int = 16, size: int = 32, seed: int = 0, noise: float = 0.04,
                 subjects: np.ndarray | None = None) -> Volumes:
    """``n`` volumes ``depth`` x ``size`` x ``size``; ``subjects`` (length n) repeat anatomy."""
    if n < 1 or depth < 4 or size < 16:
        raise InvalidArgumentError(
            f"make_volumes(n={n}, depth={depth}, size={size}): need n >= 1, depth >= 4 and size >= "
            "16."
        )
    ids = np.arange(n, dtype=np.int32) if subjects is None else np.asarray(subjects, np.int32)
    if ids.shape != (n,):
        raise InvalidArgumentError(
            f"subjects has shape {ids.shape}; give one subject id per volume ({n})."
        )
    zz, yy, xx = np.mgrid[0:depth, 0:size, 0:size].astype(np.float32)
    z = zz / (depth - 1)  # 0 at the bottom slice, 1 at the top
    out = np.zeros((n, depth, size, size), np.float32)
    noise_rng = np.random.default_rng([seed, 1])
    for k, subject in enumerate(ids):
        rng = np.random.default_rng([seed, 0, int(subject)])  # anatomy depends on the subject only
        c = size / 2 + rng.uniform(-1.5, 1.5, 2)
        ry = size * rng.uniform(0.28, 0.36) * (0.85 + 0.15 * np.sin(np.pi * z))
        rx = size * rng.uniform(0.38, 0.45) * (0.8 + 0.2 * np.sin(np.pi * z))
        body = ((yy - c[0]) / ry) ** 2 + ((xx - c[1]) / rx) ** 2 <= 1.0
        tissue = rng.uniform(0.40, 0.50)
        vol = np.where(body, tissue + 0.04 * _smooth_noise(rng, size)[None], 0.03)
        lung_r = (
            depth * rng.uniform(0.22, 0.3),
            size * rng.uniform(0.14, 0.2),
            size * rng.uniform(0.09, 0.13),
        )
        for side in (-1, 1):
            lung = _ellipsoid(zz, yy, xx, (depth * rng.uniform(0.68, 0.8), c[0] - size * 0.03,
                                           c[1] + side * size * rng.uniform(0.17, 0.22)), lung_r)
            vol = np.where(lung & body, rng.uniform(0.08, 0.16), vol)
        liver = _ellipsoid(
            zz,
            yy,
            xx,
            (depth * rng.uniform(0.2, 0.3), c[0], c[1] - size * 0.12),
            (
                depth * rng.uniform(0.18, 0.26),
                size * rng.uniform(0.12, 0.18),
                size * rng.uniform(0.15, 0.2),
            ),
        )
        vol = np.where(liver & body, tissue + rng.uniform(0.08, 0.15), vol)
        spine = ((yy - (c[0] + size * 0.22)) ** 2 + (xx - c[1]) ** 2) <= (
            size * rng.uniform(0.05, 0.07)
        ) ** 2
        vol = np.where(spine & body, rng.uniform(0.8, 0.95), vol)
        vol = vol + noise * noise_rng.standard_normal(vol.shape)
        out[k] = np.clip(vol, 0.0, 1.0) * 255.0
    return Volumes(out[..., None], ids)
