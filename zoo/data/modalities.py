"""The phantoms as two "modalities" for image-to-image translation: MR-like -> CT-like (HU).

Numpy only. Both come from the same noise-free phantom intensity ``t`` in [0, 1]
(``make_phantoms(..., noise=0) / 255``): the MR-like image is ``t`` with Rician noise (the
magnitude of a complex Gaussian), the CT-like image is the known non-linear mapping
``mr_to_ct(t)`` in Hounsfield units with Gaussian noise. ``truth`` is ``mr_to_ct`` of the MR images'
own noise-free phantoms: what a perfect translator of ``mr`` returns, the reference for MAE in HU.
Paired: ``mr[i]`` and ``ct[i]`` show the same phantom. Unpaired: the CT images show other
phantoms (another seed), as when scans are not registered; ``truth`` still belongs to ``mr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data.synthetic import make_phantoms
from zoo.errors import InvalidArgumentError

MR_RANGE = (0.0, 1.25)  # the MR-like intensities (arbitrary units; Rician noise exceeds 1)
CT_RANGE = (-1024.0, 1024.0)  # the CT-like images, HU


def mr_to_ct(t: np.ndarray) -> np.ndarray:
    """The known intensity mapping, phantom intensity t in [0, 1] -> HU: air (-1000) saturating
    to soft tissue (~40 HU) by t = 0.4, then a linear rise to bone-like 400 HU at t = 1."""
    t = np.asarray(t, np.float32)
    soft = -1000.0 + 1040.0 * (1.0 - np.exp(-((t / 0.18) ** 2)))
    return (soft + 900.0 * np.clip(t - 0.6, 0.0, None)).astype(np.float32)


@dataclass(frozen=True)
class Modalities:
    mr: np.ndarray  # (N, H, W, 1) float32, MR-like intensities (MR_RANGE)
    ct: np.ndarray  # (N, H, W, 1) float32, HU (CT_RANGE), with CT noise
    truth: np.ndarray  # (N, H, W, 1) float32, HU: mr_to_ct of mr's own noise-free phantoms
    paired: bool


def make_modalities(n: int, size: int = 32, seed: int = 0, paired: bool = True,
                    mr_noise: float = 0.03, ct_noise: float = 20.0,
                    **phantom_options) -> Modalities:
    """``n`` MR-like / CT-like images of ``size`` x ``size`` (see the module docstring).

    ``mr_noise``: the Rician noise's sigma (intensity units); ``ct_noise``: HU; other keyword
    arguments go to ``make_phantoms`` (contrast, lesion_area, ...).
    """
    if not (mr_noise >= 0 and ct_noise >= 0):
        raise InvalidArgumentError(
            f"mr_noise={mr_noise!r}, ct_noise={ct_noise!r}: noise levels must be >= 0.")
    phantom_options = {**phantom_options, "noise": 0.0}
    clean = make_phantoms(n, size=size, seed=seed, **phantom_options).images / 255.0
    other = clean if paired else make_phantoms(
        n, size=size, seed=seed + 7919, **phantom_options).images / 255.0
    rng = np.random.default_rng([seed, 1])
    real = clean + mr_noise * rng.standard_normal(clean.shape)
    mr = np.sqrt(real**2 + (mr_noise * rng.standard_normal(clean.shape)) ** 2)
    ct = mr_to_ct(other) + ct_noise * rng.standard_normal(other.shape)
    return Modalities(mr.astype(np.float32), ct.astype(np.float32), mr_to_ct(clean), paired)
