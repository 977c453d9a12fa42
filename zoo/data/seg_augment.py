"""Augmentation that moves an image and its mask together, in 2D and 3D (numpy and scipy only).

Images carry their channels last: (H, W, C) in 2D, (D, H, W, C) in 3D (D: slices). A mask has
the same spatial axes: an integer label map (H, W) / (D, H, W), or a multi-label stack with its
K binary channels last. Every geometric transform computes one map of space and applies it to
both: linear interpolation for the image, nearest neighbour (order 0) for the mask, so labels
stay labels and no label value is invented. Flips, 90-degree rotations and integer shifts move
voxels without interpolation, so image and mask stay exactly aligned. Intensity jitter changes
the image only.

A policy (``SegAugment``) runs each of its transforms with that transform's probability ``p``
and draws every random number from one ``np.random.Generator``: the same seed gives the same
result. ``tf_augment`` wraps a policy for ``tf.data`` (``tf.numpy_function``, static shapes
restored). No transform changes an array's shape (Keras wants static shapes): a 90-degree
rotation in a plane whose two sides differ turns by 180 degrees only.

"inplane" (the default of rot90, affine and elastic) moves a 3D volume within its slices only
(the last two spatial axes), which suits CT and MR with thick slices; "any" uses every axis pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.registry import Registry

PLANES = ("inplane", "any")
MODES = ("constant", "nearest", "reflect", "mirror")
"""How affine and elastic transforms fill space brought in from outside the array: "constant"
fills the image with each channel's minimum (background) and the mask with 0; the others are
scipy.ndimage's modes, applied alike to image and mask."""


def spatial_dims(image: np.ndarray, mask: np.ndarray) -> int:
    """2 or 3: the spatial axes of an (image, mask) pair; DataError when they do not match.

    Args:
        image: (H, W, C) or (D, H, W, C).
        mask: the image's spatial shape, optionally with K label channels last.

    Returns:
        The number of spatial axes.

    Raises:
        DataError: an image without a channel axis, or a mask of another spatial shape.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim not in (3, 4):
        raise DataError(
            f"augmentation takes a 2D image (H, W, C) or a 3D one (D, H, W, C), not shape "
            f"{image.shape}; add the channel axis (image[..., None])."
        )
    nd = image.ndim - 1
    if mask.shape[:nd] != image.shape[:nd] or mask.ndim not in (nd, nd + 1):
        raise DataError(
            f"the mask has shape {mask.shape} but the image {image.shape}: a mask must have the "
            f"image's spatial shape {image.shape[:nd]} (plus K label channels for a multi-label "
            "mask). Resample the mask onto the image grid."
        )
    return nd


def _check_p(p) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise InvalidArgumentError(f"p={p!r}: a transform's probability must be in [0, 1].")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"{name}={value!r}: use one of {', '.join(choices)}.")


def _check_range(name: str, value, positive: bool = True) -> None:
    ok = isinstance(value, Sequence) and len(value) == 2 and value[0] <= value[1]
    if not ok or (positive and value[0] <= 0):
        raise InvalidArgumentError(
            f"{name}={value!r}: give a (low, high) pair with low <= high"
            + (" and low > 0." if positive else ".")
        )


def _check_nonneg(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidArgumentError(f"{name}={value!r}: give a number >= 0.")


def _planes(nd: int, planes: str) -> list[tuple[int, int]]:
    """The axis pairs a transform may move: the last two spatial axes, or every pair."""
    if nd == 2 or planes == "inplane":
        return [(nd - 2, nd - 1)]
    return [(0, 1), (0, 2), (1, 2)]


def _fill(image: np.ndarray, cval) -> np.ndarray:
    """Per-channel fill value: ``cval``, or each channel's minimum (its background)."""
    if cval is not None:
        return np.full(image.shape[-1], cval, image.dtype)
    return image.reshape(-1, image.shape[-1]).min(axis=0)


def shift_array(array: np.ndarray, shifts: Sequence[int], fill) -> np.ndarray:
    """``array`` moved by whole voxels along its leading axes, ``fill`` where nothing moved in.

    Equal to ``np.roll(array, shifts, axes)`` wherever no voxel wrapped around.

    Args:
        array: any array; ``shifts`` applies to its first ``len(shifts)`` axes.
        shifts: one integer per leading axis (positive: towards higher indices).
        fill: a scalar, or one value per trailing channel.

    Returns:
        A new array of the same shape and dtype.
    """
    out = np.empty_like(array)
    out[...] = fill
    src, dst = [], []
    for s, n in zip(shifts, array.shape):
        if abs(s) >= n:
            return out
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _resample(image: np.ndarray, mask: np.ndarray, warp, mode: str):
    """Apply ``warp(array, order, mode, cval)`` (one map of space) to every image channel
    (linear) and every mask channel (nearest)."""
    fill = _fill(image, None)
    scipy_mode = "constant" if mode == "constant" else mode
    img = np.stack(
        [warp(image[..., c], 1, scipy_mode, float(fill[c])) for c in range(image.shape[-1])], -1
    )
    nd = image.ndim - 1
    kind = mask.dtype
    m = mask.astype(np.int32) if kind == np.bool_ else mask
    if m.ndim == nd:
        out = warp(m, 0, scipy_mode, 0)
    else:
        out = np.stack([warp(m[..., k], 0, scipy_mode, 0) for k in range(m.shape[-1])], -1)
    return img, out.astype(kind)


# ----------------------------------------------------------------------------------------------
# transforms: each a frozen dataclass with p and apply(image, mask, rng) -> (image, mask)


@dataclass(frozen=True)
class Flip:
    """Mirror along each of ``axes`` (spatial axes; default all) with probability 1/2 each."""

    p: float = 0.5
    axes: tuple[int, ...] | None = None
    name: ClassVar[str] = "flip"

    def __post_init__(self):
        _check_p(self.p)

    def apply(self, image, mask, rng):
        nd = image.ndim - 1
        axes = range(nd) if self.axes is None else self.axes
        bad = [a for a in axes if not -nd <= a < nd]
        if bad:
            raise InvalidArgumentError(
                f"flip axes {bad}: a {nd}D image has spatial axes 0..{nd - 1}."
            )
        flip = tuple(a % nd for a in axes if rng.random() < 0.5)
        return np.flip(image, flip), np.flip(mask, flip)


@dataclass(frozen=True)
class Rot90:
    """Turn by 90, 180 or 270 degrees in one plane (the slice plane, or any axis pair); a plane
    whose two sides differ turns by 180 degrees only, so shapes never change."""

    p: float = 0.5
    planes: str = "inplane"
    name: ClassVar[str] = "rot90"

    def __post_init__(self):
        _check_p(self.p)
        _check_choice("planes", self.planes, PLANES)

    def apply(self, image, mask, rng):
        choices = _planes(image.ndim - 1, self.planes)
        a, b = choices[int(rng.integers(len(choices)))]
        k = int(rng.integers(1, 4)) if image.shape[a] == image.shape[b] else 2
        return np.rot90(image, k, (a, b)), np.rot90(mask, k, (a, b))


@dataclass(frozen=True)
class Shift:
    """Move by whole voxels, up to ``max_shift`` per axis (a fraction of the size if < 1, else
    voxels); the image is filled with ``cval`` (default: each channel's minimum), the mask
    with 0."""

    p: float = 0.5
    max_shift: float = 0.1
    axes: tuple[int, ...] | None = None
    cval: float | None = None
    name: ClassVar[str] = "shift"

    def __post_init__(self):
        _check_p(self.p)
        _check_nonneg("max_shift", self.max_shift)

    def apply(self, image, mask, rng):
        nd = image.ndim - 1
        axes = set(range(nd) if self.axes is None else (a % nd for a in self.axes))
        shifts = []
        for axis in range(nd):
            m = self.max_shift
            m = int(round(m * image.shape[axis])) if m < 1 else int(m)
            shifts.append(int(rng.integers(-m, m + 1)) if axis in axes else 0)
        return shift_array(image, shifts, _fill(image, self.cval)), shift_array(mask, shifts, 0)


@dataclass(frozen=True)
class Affine:
    """Rotation (up to ``rotate`` degrees per plane), scale (a factor in ``scale``, the same on
    every moved axis when ``isotropic``) and shear (up to ``shear``) about the centre, by
    ``scipy.ndimage.affine_transform``: one matrix, linear for the image, nearest for the mask."""

    p: float = 0.5
    rotate: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.05
    planes: str = "inplane"
    isotropic: bool = True
    mode: str = "constant"
    name: ClassVar[str] = "affine"

    def __post_init__(self):
        _check_p(self.p)
        _check_nonneg("rotate", self.rotate)
        _check_nonneg("shear", self.shear)
        _check_range("scale", self.scale)
        _check_choice("planes", self.planes, PLANES)
        _check_choice("mode", self.mode, MODES)

    def matrix(self, nd: int, rng: np.random.Generator) -> np.ndarray:
        """The (nd, nd) matrix taking output coordinates (about the centre) to input ones."""
        planes = _planes(nd, self.planes)
        moved = sorted({a for plane in planes for a in plane})
        rot, shear = np.eye(nd), np.eye(nd)
        for a, b in planes:
            t = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
            r = np.eye(nd)
            r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
            rot = rot @ r
            shear[a, b] = rng.uniform(-self.shear, self.shear)
        scale = np.ones(nd)
        factors = rng.uniform(*self.scale, size=1 if self.isotropic else len(moved))
        scale[moved] = factors
        return rot @ shear @ np.diag(scale)

    def apply(self, image, mask, rng):
        from scipy.ndimage import affine_transform

        nd = image.ndim - 1
        matrix = self.matrix(nd, rng)
        centre = (np.array(image.shape[:nd]) - 1) / 2.0
        offset = centre - matrix @ centre

        def warp(a, order, mode, cval):
            return affine_transform(a, matrix, offset, order=order, mode=mode, cval=cval)

        return _resample(image, mask, warp, self.mode)


@dataclass(frozen=True)
class Elastic:
    """A smooth random displacement of every voxel: uniform noise filtered by a Gaussian of
    ``sigma`` voxels, scaled so each displaced axis moves by ``magnitude`` voxels RMS, then
    ``scipy.ndimage.map_coordinates`` (linear image, nearest mask).

    ``magnitude`` is the RMS displacement itself, the same in 2D and 3D whatever ``sigma``; in
    Simard's convention (albumentations, batchgenerators) ``alpha`` multiplies the raw filtered
    noise, whose size shrinks with ``sigma`` and the dimension, so their ``alpha`` values do not
    carry over.
    """

    p: float = 0.5
    magnitude: float = 2.0
    sigma: float = 4.0
    planes: str = "inplane"
    mode: str = "constant"
    name: ClassVar[str] = "elastic"

    def __post_init__(self):
        _check_p(self.p)
        _check_nonneg("magnitude", self.magnitude)
        sigma = self.sigma
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or sigma <= 0:
            raise InvalidArgumentError(f"sigma={self.sigma!r}: give the smoothness in voxels, > 0.")
        _check_choice("planes", self.planes, PLANES)
        _check_choice("mode", self.mode, MODES)

    def field(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """(nd, *shape) displacements in voxels: zero on axes outside the planes."""
        from scipy.ndimage import gaussian_filter

        nd = len(shape)
        moved = sorted({a for plane in _planes(nd, self.planes) for a in plane})
        out = np.zeros((nd, *shape))
        for axis in moved:
            g = gaussian_filter(rng.uniform(-1.0, 1.0, shape), self.sigma, mode="reflect")
            g -= g.mean()
            out[axis] = g * (self.magnitude / max(float(np.sqrt(np.mean(g * g))), 1e-12))
        return out

    def apply(self, image, mask, rng):
        from scipy.ndimage import map_coordinates

        shape = image.shape[:-1]
        coords = np.indices(shape, dtype=np.float64) + self.field(shape, rng)

        def warp(a, order, mode, cval):
            return map_coordinates(a, coords, order=order, mode=mode, cval=cval)

        return _resample(image, mask, warp, self.mode)


@dataclass(frozen=True)
class Intensity:
    """Image-only jitter, each part off when None: ``gamma`` (an exponent drawn from the range,
    on values min-max normalised), ``scale`` (a multiplicative factor), ``shift`` and ``noise``
    (an offset and a Gaussian noise standard deviation, both in units of the image's std, so the
    same numbers suit HU and [0, 1] images). ``preserve_range`` clips the result to the image's
    own [min, max] (batchgenerators' default), so jittered grey values never leave a model's
    input range ([0, 255] for the zoo's models) and never look like another modality."""

    p: float = 0.5
    scale: tuple[float, float] | None = (0.9, 1.1)
    shift: float | None = 0.1
    gamma: tuple[float, float] | None = (0.8, 1.25)
    noise: float | None = 0.05
    preserve_range: bool = True
    name: ClassVar[str] = "intensity"

    def __post_init__(self):
        _check_p(self.p)
        for name in ("scale", "gamma"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name))
        for name in ("shift", "noise"):
            if getattr(self, name) is not None:
                _check_nonneg(name, getattr(self, name))

    def apply(self, image, mask, rng):
        x = np.array(image, np.float32)
        std = float(x.std()) or 1.0
        bounds = float(x.min()), float(x.max())
        if self.gamma is not None:
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                g = rng.uniform(*self.gamma)
                x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g
        if self.scale is not None:
            x = x * rng.uniform(*self.scale)
        if self.shift is not None:
            x = x + rng.uniform(-self.shift, self.shift) * std
        if self.noise:
            x = x + rng.normal(0.0, self.noise * std, x.shape)
        if self.preserve_range:
            x = np.clip(x, *bounds)
        return x.astype(np.float32), mask


TRANSFORMS = Registry(
    "augmentation transform",
    {t.name: t for t in (Flip, Rot90, Shift, Affine, Elastic, Intensity)},
    argument="augment",
)
"""Transform names a policy may be given: flip, rot90, shift, affine, elastic, intensity."""

DEFAULT_TRANSFORMS = ("flip", "rot90", "affine", "elastic", "intensity")


def make_transform(entry) -> Any:
    """One transform from an instance, a name, or a (name, options) pair.

    Args:
        entry: a transform object (``Flip(p=0.3)``), a registered name (``"elastic"``), or
            ``(name, {option: value})``.

    Returns:
        The transform.

    Raises:
        UnknownNameError: a name that is not in ``TRANSFORMS``.
        InvalidArgumentError: an option the transform does not have, or a bad value.
    """
    if hasattr(entry, "apply") and hasattr(entry, "p"):
        return entry
    name, options = (entry, {}) if isinstance(entry, str) else tuple(entry)
    if isinstance(options, int | float) and not isinstance(options, bool):
        options = {"p": options}
    return TRANSFORMS.build(name, options)


def _entries(transforms) -> list:
    if isinstance(transforms, str):
        return [transforms]
    if isinstance(transforms, Mapping):
        return list(transforms.items())
    return list(transforms)


class SegAugment:
    """A seeded policy: its transforms in order, each run with probability ``p``.

    ``SegAugment(["flip", ("affine", {"rotate": 10}), Elastic(magnitude=3)], seed=1)``; a
    mapping ``{"flip": 0.5, "affine": {"rotate": 10}}`` works too (a number is ``p``).
    ``policy(image, mask, seed=k)`` draws from ``np.random.default_rng([policy_seed, k])``, so
    equal seeds give equal results in any order and any thread; without ``seed`` each call takes
    the next number of a counter. ``apply(image, mask, rng)`` uses a Generator of your own.
    """

    def __init__(self, transforms=DEFAULT_TRANSFORMS, seed: int = 0):
        self.transforms = tuple(make_transform(t) for t in _entries(transforms))
        self.seed = int(seed)
        self._calls = 0

    def __repr__(self) -> str:
        return f"SegAugment({list(self.transforms)!r}, seed={self.seed})"

    def apply(self, image, mask, rng: np.random.Generator):
        """(image float32, mask of its own dtype), transformed alike; shapes unchanged.

        Args:
            image: (H, W, C) or (D, H, W, C).
            mask: integer labels of the image's spatial shape, or K label channels last.
            rng: where every random number comes from.

        Returns:
            The transformed (image, mask), contiguous.

        Raises:
            DataError: a mask that does not match the image.
        """
        image, mask = np.asarray(image, np.float32), np.asarray(mask)
        spatial_dims(image, mask)
        for t in self.transforms:
            if rng.random() < t.p:
                image, mask = t.apply(image, mask, rng)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(mask)

    def __call__(self, image, mask, seed: int | None = None):
        if seed is None:
            seed, self._calls = self._calls, self._calls + 1
        return self.apply(image, mask, np.random.default_rng([self.seed, int(seed) % 2**63]))


def make_policy(augment, seed: int = 0) -> SegAugment | None:
    """A policy from what ``augment=`` may be: None/False, True (the defaults), a policy, or
    transforms (names, (name, options) pairs, objects, a mapping)."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return SegAugment(DEFAULT_TRANSFORMS, seed)
    if isinstance(augment, SegAugment):
        return augment
    return SegAugment(augment, seed)


def tf_augment(policy: SegAugment):
    """A ``tf.data`` map function ``(image, mask, seed) -> (image, mask)`` running ``policy``.

    The numpy work runs in ``tf.numpy_function``; the static shapes of the inputs are restored
    on the outputs (no transform changes a shape), so Keras sees the shapes it was built for.

    Args:
        policy: the SegAugment to run.

    Returns:
        A function for ``ds.map``: ``seed`` is an integer tensor (e.g. from
        ``tf.data.Dataset.random``) that makes each sample's draw reproducible.
    """
    import tensorflow as tf

    def run(image, mask, seed):
        out_image, out_mask = policy(image, mask, seed=int(seed))
        return out_image, out_mask.astype(mask.dtype)

    def fn(image, mask, seed):
        image = tf.cast(image, tf.float32)
        out_image, out_mask = tf.numpy_function(
            run, [image, mask, tf.cast(seed, tf.int64)], (tf.float32, mask.dtype), stateful=False
        )
        out_image.set_shape(image.shape)
        out_mask.set_shape(mask.shape)
        return out_image, out_mask

    return fn
