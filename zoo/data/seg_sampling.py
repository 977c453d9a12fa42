"""Samplers that turn a segmentation case (an image volume and its label map) into training
samples, numpy only.

A case is an image (D, H, W) or (D, H, W, C) (D: slices; a 2D image is a volume of one slice,
(1, H, W)) and a mask on the same grid: an integer label map (D, H, W) (0: background; a
(D, H, W, 1) map is squeezed) or a multi-label stack (D, H, W, K) of binary channels.
``make_case`` checks and normalises both; every error names the case.

Samplers (``SAMPLERS``, by name):

- ``slice``: one axial slice, (H, W, C) with its mask (H, W); ``patch_size=(h, w)`` crops it.
- ``2.5d``: ``stack`` neighbouring slices as channels, (H, W, stack * C) ordered slice by slice
  (then channel), with the mask of the centre slice. Slices past the first or last are the edge
  slice repeated (replication, as the DICOM pipeline does), so every slice can be a centre.
- ``patch``: a 3D patch ``patch_size=(d, h, w)``, always inside the volume; a volume smaller than
  the patch is a DataError naming the case, the sizes and the fix.
- ``centre``: the patch CNNs' pixel classification: a 2D (``patch_size=(h, w)``, in the slice
  plane) or 3D patch centred on a voxel, and that voxel's label. Any voxel can be a centre, so the
  patch is padded past the volume's edge (image: each channel's minimum; mask: 0). The centre is
  the voxel at index ``size // 2`` on each axis (odd sizes make it the true middle).
  ``balance=True`` draws the class first (uniformly over the classes present in the case,
  background included), then a voxel of it.

Foreground oversampling (all samplers): with probability ``fg_fraction`` a sample is drawn
around a labelled voxel: of any foreground class (``fg_mode="any"``: large structures dominate)
or of a class drawn uniformly among those present (``fg_mode="per_class"``: small ones get their
share). Otherwise it is uniform: a uniformly random window position (slice, patch) or centre
voxel (centre). A case without foreground falls back to uniform. Window samplers keep the patch
inside the volume, so an oversampled patch contains its labelled voxel but is not always centred
on it near the border.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.registry import Registry

FG_MODES = ("any", "per_class")


# ----------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    """One checked case: ``image`` (D, H, W, C) float32, ``mask`` (D, H, W) int32 labels or
    (D, H, W, K) uint8 multi-label, ``name`` for messages. Foreground indices are computed once
    and kept, so many samples from one case pay for them once."""

    image: np.ndarray
    mask: np.ndarray
    name: str = "case"
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def multilabel(self) -> bool:
        return self.mask.ndim == 4

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[:3])

    def fill(self) -> np.ndarray:
        """Each image channel's minimum: the background a patch is padded with."""
        if "fill" not in self._cache:
            self._cache["fill"] = self.image.reshape(-1, self.image.shape[-1]).min(axis=0)
        return self._cache["fill"]

    def foreground(self, cls: int | None = None) -> np.ndarray:
        """Flat indices of the labelled voxels (any class), or of class / channel ``cls``."""
        key = ("fg", cls)
        if key not in self._cache:
            if self.multilabel:
                m = self.mask.any(axis=-1) if cls is None else self.mask[..., cls]
                self._cache[key] = np.flatnonzero(m)
            elif cls is None:
                self._cache[key] = np.flatnonzero(self.mask)
            else:
                fg = self.foreground()
                self._cache[key] = fg[self.mask.ravel()[fg] == cls]
        return self._cache[key]

    def classes(self) -> list[int]:
        """The foreground classes present (label values, or channel indices when multi-label)."""
        if "classes" not in self._cache:
            if self.multilabel:
                found = np.flatnonzero(self.mask.reshape(-1, self.mask.shape[-1]).any(axis=0))
            else:
                found = np.unique(self.mask.ravel()[self.foreground()])
            self._cache["classes"] = [int(c) for c in found]
        return self._cache["classes"]


def _image_array(image, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    if image.ndim != 4 or min(image.shape) < 1:
        raise DataError(
            f"{name}: the image has shape {image.shape}; a case image is a volume (D, H, W) or "
            "(D, H, W, C) (a 2D image is a volume of one slice, (1, H, W))."
        )
    if not np.issubdtype(image.dtype, np.number) and image.dtype != bool:
        raise DataError(f"{name}: the image has dtype {image.dtype}; give numbers.")
    return np.asarray(image, np.float32)


def _integral(mask: np.ndarray, name: str) -> np.ndarray:
    if mask.dtype == bool or np.issubdtype(mask.dtype, np.integer):
        return mask
    if np.issubdtype(mask.dtype, np.floating) and np.array_equal(mask, np.rint(mask)):
        return mask  # label maps stored as float (common in NIfTI) with whole values
    raise DataError(
        f"{name}: the mask has dtype {mask.dtype} with non-integer values; a mask holds class "
        "labels (or 0/1 per channel). Threshold or round it first."
    )


def _check_labels(mask: np.ndarray, name: str, multilabel: bool, num_classes) -> None:
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if multilabel:
        if lo < 0 or hi > 1:
            raise DataError(
                f"{name}: a multi-label mask holds 0/1 per channel, but its values span "
                f"[{lo}, {hi}]; binarise it, or give a label map (D, H, W)."
            )
        if num_classes is not None and mask.shape[-1] != num_classes:
            raise DataError(
                f"{name}: the multi-label mask has {mask.shape[-1]} channels but "
                f"num_classes={num_classes}; give one channel per class."
            )
        return
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        declared = f"0..{num_classes - 1}" if num_classes is not None else "labels >= 0"
        raise DataError(
            f"{name}: mask label values span [{lo}, {hi}], outside the declared classes "
            f"({declared}); remap the labels or raise num_classes."
        )


def make_case(image, mask, name: str = "case", *, multilabel: bool | None = None,
              num_classes: int | None = None) -> Case:
    """A checked ``Case`` from arrays.

    Args:
        image: (D, H, W) or (D, H, W, C) numbers.
        mask: (D, H, W) labels, (D, H, W, 1) labels, or (D, H, W, K) 0/1 channels.
        name: how messages call the case (its file, its index).
        multilabel: None decides by shape (K > 1 channels: multi-label); True/False insists.
        num_classes: when given, label values must lie in 0..num_classes-1 (K channels when
            multi-label).

    Returns:
        The case, image float32, mask int32 (labels) or uint8 (multi-label).

    Raises:
        DataError: shapes that differ, a mask that is not integral, labels outside the classes.
    """
    image = _image_array(image, name)
    mask = _integral(np.asarray(mask), name)
    if mask.shape[:3] != image.shape[:3] or mask.ndim not in (3, 4):
        raise DataError(
            f"{name}: the mask has shape {mask.shape} but the image {image.shape}; the mask must "
            f"lie on the image grid {image.shape[:3]} (plus K channels when multi-label). "
            "Resample it onto the image (zoo.data's mask reader does, given the image)."
        )
    if multilabel is None:
        multilabel = mask.ndim == 4 and mask.shape[-1] > 1
    if multilabel and mask.ndim != 4:
        raise DataError(
            f"{name}: multilabel=True needs a mask with one 0/1 channel per class (D, H, W, K), "
            f"not {mask.shape}."
        )
    if not multilabel and mask.ndim == 4:
        if mask.shape[-1] != 1:
            raise DataError(
                f"{name}: a mask of shape {mask.shape} has {mask.shape[-1]} channels; pass "
                "multilabel=True for one 0/1 channel per class, or give a label map (D, H, W)."
            )
        mask = mask[..., 0]
    _check_labels(mask, name, multilabel, num_classes)
    return Case(image, mask.astype(np.uint8 if multilabel else np.int32), name)


# ----------------------------------------------------------------------------------------------
# drawing a centre


@dataclass(frozen=True)
class Sample:
    """One drawn sample: the ``image`` and ``mask`` windows, the voxel (z, y, x) it was drawn
    around (``centre``), where the window starts in the volume (``start``; negative where a
    centre patch is padded) and whether the draw was a foreground one (``foreground``)."""

    image: np.ndarray
    mask: np.ndarray
    centre: tuple[int, int, int]
    start: tuple[int, int, int]
    foreground: bool


def _voxel(case: Case, flat: np.ndarray, rng) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(flat[int(rng.integers(len(flat)))], case.shape))


def _background_voxel(case: Case, rng) -> tuple[int, ...] | None:
    """A uniformly random unlabelled voxel (rejection sampling: background is usually most of a
    volume, and its index list would be as large as the volume), None if there is none."""
    labelled = case.mask.any(axis=-1) if case.multilabel else case.mask != 0
    for _ in range(64):
        v = tuple(int(rng.integers(n)) for n in case.shape)
        if not labelled[v]:
            return v
    free = np.flatnonzero(~labelled)
    return _voxel(case, free, rng) if len(free) else None


def _foreground_voxel(case: Case, rng, fg_mode: str) -> tuple[int, ...] | None:
    if fg_mode == "per_class":
        classes = case.classes()
        if not classes:
            return None
        flat = case.foreground(classes[int(rng.integers(len(classes)))])
    else:
        flat = case.foreground()
    return _voxel(case, flat, rng) if len(flat) else None


def _balanced_voxel(case: Case, rng) -> tuple[int, ...]:
    """Class first (uniform over the classes present, background included), then a voxel."""
    classes = case.classes()
    has_background = len(case.foreground()) < int(np.prod(case.shape))
    choices = ([None] if has_background else []) + classes
    pick = choices[int(rng.integers(len(choices)))]
    if pick is None:
        return _background_voxel(case, rng)
    return _voxel(case, case.foreground(pick), rng)


def _check_patch(patch_size, dims: tuple[int, ...], name: str = "patch_size") -> tuple[int, ...]:
    ok = (
        patch_size is not None
        and not isinstance(patch_size, str)
        and len(tuple(patch_size)) in dims
        and all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1
                for s in patch_size)
    )
    if not ok:
        lengths = " or ".join(str(d) for d in dims)
        raise InvalidArgumentError(
            f"{name}={patch_size!r}: give {lengths} positive integers (voxels per axis)."
        )
    return tuple(int(s) for s in patch_size)


def _check_fg(fg_fraction, fg_mode) -> None:
    if isinstance(fg_fraction, bool) or not isinstance(fg_fraction, int | float) or not (
        0.0 <= fg_fraction <= 1.0
    ):
        raise InvalidArgumentError(f"fg_fraction={fg_fraction!r}: give a fraction in [0, 1].")
    if fg_mode not in FG_MODES:
        raise InvalidArgumentError(f"fg_mode={fg_mode!r}: use one of {', '.join(FG_MODES)}.")


def _crop(array: np.ndarray, start, size, fill) -> np.ndarray:
    """A window of ``size`` at ``start`` over the leading axes, ``fill`` past the edges."""
    out = np.empty((*size, *array.shape[len(size):]), array.dtype)
    out[...] = fill
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape):
        a, b = max(s, 0), min(s + n, dim)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


# ----------------------------------------------------------------------------------------------
# samplers


class Sampler:
    """A way to cut samples from a case. ``draw(case, rng)`` -> ``Sample``; ``target(mask)``
    turns the mask window into what the model learns (the window itself, or a centre label);
    ``shapes(case)`` gives the (image, mask window) shapes of one sample, for static shapes."""

    name: ClassVar[str] = ""

    def __init__(self, patch_size=None, fg_fraction: float = 0.0, fg_mode: str = "any"):
        _check_fg(fg_fraction, fg_mode)
        self.fg_fraction, self.fg_mode = float(fg_fraction), fg_mode
        self.patch_size = patch_size

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(patch_size={self.patch_size}, "
                f"fg_fraction={self.fg_fraction}, fg_mode={self.fg_mode!r})")

    def window(self, case: Case) -> tuple[int, int, int]:
        """The (d, h, w) window cut from ``case`` (before any reshaping)."""
        raise NotImplementedError

    def check(self, case: Case) -> None:
        """DataError when a window of this sampler does not fit in ``case``."""
        size = self.window(case)
        if any(s > n for s, n in zip(size, case.shape)):
            raise DataError(
                f"{case.name}: the volume is {case.shape} voxels (D, H, W) but the {self.name} "
                f"sampler cuts {size}; pad the volume to at least that size (e.g. np.pad with its "
                "background) or give a smaller patch_size."
            )

    def _centre(self, case: Case, rng) -> tuple[tuple[int, ...] | None, bool]:
        """(a foreground voxel or None for a uniform draw, whether it is foreground)."""
        if self.fg_fraction and rng.random() < self.fg_fraction:
            v = _foreground_voxel(case, rng, self.fg_mode)
            return v, v is not None
        return None, False

    def _inside(self, case: Case, rng) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
        """(start, centre, foreground) of a window kept inside the volume."""
        self.check(case)
        size = self.window(case)
        centre, fg = self._centre(case, rng)
        if centre is None:
            start = tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(case.shape, size))
            return start, tuple(a + s // 2 for a, s in zip(start, size)), False
        start = tuple(int(np.clip(c - s // 2, 0, n - s))
                      for c, s, n in zip(centre, size, case.shape))
        return start, centre, fg

    def draw(self, case: Case, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    def shapes(self, case: Case) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(image shape, mask window shape) of one sample from ``case``."""
        s = self.draw(case, np.random.default_rng(0))
        return s.image.shape, s.mask.shape

    def target(self, mask: np.ndarray) -> np.ndarray:
        """What the model learns from a (possibly augmented) mask window: the window itself."""
        return mask


class SliceSampler(Sampler):
    """One axial slice (H, W, C) and its mask; ``patch_size=(h, w)`` cuts a window of it."""

    name = "slice"

    def __init__(self, patch_size=None, fg_fraction: float = 0.0, fg_mode: str = "any"):
        super().__init__(None if patch_size is None else _check_patch(patch_size, (2,)),
                         fg_fraction, fg_mode)

    def window(self, case: Case) -> tuple[int, int, int]:
        return (1, *(self.patch_size or case.shape[1:]))

    def _stack(self, case: Case, start, size) -> np.ndarray:
        window = tuple(slice(a, a + s) for a, s in zip(start, size))
        return case.image[window][0]

    def draw(self, case: Case, rng: np.random.Generator) -> Sample:
        start, centre, fg = self._inside(case, rng)
        size = self.window(case)
        window = tuple(slice(a, a + s) for a, s in zip(start, size))
        return Sample(self._stack(case, start, size), case.mask[window][0], centre, start, fg)


class StackSampler(SliceSampler):
    """2.5D: ``stack`` (odd) neighbouring slices as channels, (H, W, stack * C), with the mask of
    the centre slice; the first and last slices are repeated past the volume's ends."""

    name = "2.5d"

    def __init__(self, stack: int = 3, patch_size=None, fg_fraction: float = 0.0,
                 fg_mode: str = "any"):
        if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1 or stack % 2 == 0:
            raise InvalidArgumentError(
                f"stack={stack!r}: give an odd number of slices (3, 5, ...), so the mask's slice "
                "is the middle one."
            )
        super().__init__(patch_size, fg_fraction, fg_mode)
        self.stack = stack

    def _stack(self, case: Case, start, size) -> np.ndarray:
        z = np.clip(np.arange(start[0] - self.stack // 2, start[0] + self.stack // 2 + 1),
                    0, case.shape[0] - 1)
        window = case.image[z, start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
        h, w, c = window.shape[1:]
        return np.moveaxis(window, 0, 2).reshape(h, w, self.stack * c)


class PatchSampler(Sampler):
    """A 3D patch ``patch_size=(d, h, w)`` inside the volume, image (d, h, w, C) and mask."""

    name = "patch"

    def __init__(self, patch_size=(32, 32, 32), fg_fraction: float = 0.33, fg_mode: str = "any"):
        super().__init__(_check_patch(patch_size, (3,)), fg_fraction, fg_mode)

    def window(self, case: Case) -> tuple[int, int, int]:
        return self.patch_size

    def draw(self, case: Case, rng: np.random.Generator) -> Sample:
        start, centre, fg = self._inside(case, rng)
        window = tuple(slice(a, a + s) for a, s in zip(start, self.patch_size))
        return Sample(case.image[window], case.mask[window], centre, start, fg)


class CentreSampler(Sampler):
    """Pixel classification: a 2D (in-plane) or 3D patch centred on a voxel, whose label is the
    target; padded past the edges so every voxel can be a centre."""

    name = "centre"

    def __init__(self, patch_size=(29, 29), fg_fraction: float = 0.0, fg_mode: str = "any",
                 balance: bool = False):
        super().__init__(_check_patch(patch_size, (2, 3)), fg_fraction, fg_mode)
        self.balance = bool(balance)

    def window(self, case: Case) -> tuple[int, int, int]:
        return self.patch_size if len(self.patch_size) == 3 else (1, *self.patch_size)

    def check(self, case: Case) -> None:
        """Every case fits: the patch is padded past the volume's edge."""

    def _pick(self, case: Case, rng) -> tuple[tuple[int, ...], bool]:
        if self.balance:
            return _balanced_voxel(case, rng), False
        centre, fg = self._centre(case, rng)
        if centre is None:
            centre = tuple(int(rng.integers(n)) for n in case.shape)
        return centre, fg

    def draw(self, case: Case, rng: np.random.Generator) -> Sample:
        centre, fg = self._pick(case, rng)
        size = self.window(case)
        start = tuple(c - s // 2 for c, s in zip(centre, size))
        image = _crop(case.image, start, size, case.fill())
        mask = _crop(case.mask, start, size, 0)
        if len(self.patch_size) == 2:
            image, mask = image[0], mask[0]
        return Sample(image, mask, centre, start, fg)

    def target(self, mask: np.ndarray) -> np.ndarray:
        """The label of the patch's centre voxel (index size // 2 on each axis)."""
        nd = len(self.patch_size)
        return mask[tuple(s // 2 for s in mask.shape[:nd])]


SAMPLERS = Registry(
    "segmentation sampler",
    {c.name: c for c in (SliceSampler, StackSampler, PatchSampler, CentreSampler)},
    argument="sampler",
)
"""Sampler names: slice, 2.5d, patch, centre."""


def make_sampler(sampler: Any = "patch", **options) -> Sampler:
    """A sampler from a name and its options, or a Sampler as it is.

    Args:
        sampler: a name in ``SAMPLERS`` (slice, 2.5d, patch, centre) or a Sampler instance.
        **options: the named sampler's options (patch_size, fg_fraction, fg_mode, stack,
            balance).

    Returns:
        The sampler.

    Raises:
        UnknownNameError: an unknown sampler name.
        InvalidArgumentError: options given with an instance, an option the sampler lacks, or a
            bad value.
    """
    if isinstance(sampler, Sampler):
        if options:
            raise InvalidArgumentError(
                f"options {sorted(options)} given with a sampler object; set them on the sampler."
            )
        return sampler
    return SAMPLERS.build(sampler, options)
