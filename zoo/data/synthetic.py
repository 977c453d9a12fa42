"""Seeded grey-scale phantoms with and without lesions, for demos, tests and benchmarks.

Numpy only. Each image is a noisy body ellipse with a few organ-like ellipses and a
smooth texture; a positive image carries one or more small bright (or dark) lesions whose
masks are returned for evaluation only. Values are float32 in [0, 255], the input range of
the zoo's ImageNet weight cards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import InvalidArgumentError

# The pretraining task of the shipped checkpoint simple_cnn.phantom (tools/train_demo_checkpoint.py)
# and the harder target task of ``zoo demo`` and ``zoo finetune --demo``: fainter lesions, more
# noise, and only a few labels (``make_phantoms(n, seed=..., **TARGET_TASK)``).
SOURCE_TASK = dict(n=3000, seed=100, contrast=(0.12, 0.4), noise=0.05)
TARGET_TASK = dict(contrast=(0.08, 0.25), noise=0.06, lesion_area=(0.01, 0.04))


@dataclass(frozen=True)
class Phantoms:
    images: np.ndarray  # (N, H, W, 1) float32 in [0, 255]
    labels: np.ndarray  # (N,) int32, 1 when the image holds a lesion
    masks: np.ndarray  # (N, H, W) bool, the lesion pixels (evaluation only)


def _ellipse(yy, xx, cy, cx, ry, rx, angle):
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _smooth_noise(rng, size, cells=4):
    """Low-frequency texture: bilinear upsampling of a coarse random grid."""
    coarse = rng.standard_normal((cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def make_phantoms(
    n: int,
    size: int = 64,
    seed: int = 0,
    positive_fraction: float = 0.5,
    lesions_per_image: tuple[int, int] = (1, 1),
    lesion_area: tuple[float, float] = (0.01, 0.05),
    contrast: float | tuple[float, float] = 0.3,
    noise: float = 0.05,
) -> Phantoms:
    """``n`` phantoms of ``size`` x ``size``; ``lesion_area`` is a fraction of the image per lesion.

    ``contrast`` is the lesion's intensity step relative to the full range (negative for dark
    lesions), or a (low, high) range drawn per lesion; ``noise`` the standard deviation of white
    noise, same units.
    """
    if n < 1 or size < 16:
        raise InvalidArgumentError(
            f"make_phantoms(n={n}, size={size}): need n >= 1 and size >= 16."
        )
    lo, hi = lesions_per_image
    if not (1 <= lo <= hi):
        raise InvalidArgumentError(f"lesions_per_image={lesions_per_image}: need 1 <= min <= max.")
    if not (0 < lesion_area[0] <= lesion_area[1] < 0.25):
        raise InvalidArgumentError(
            f"lesion_area={lesion_area}: need 0 < min <= max < 0.25 of the image."
        )
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    labels = (rng.random(n) < positive_fraction).astype(np.int32)
    for k in range(n):
        c = size / 2
        body = _ellipse(
            yy,
            xx,
            c + rng.uniform(-2, 2),
            c + rng.uniform(-2, 2),
            size * rng.uniform(0.36, 0.44),
            size * rng.uniform(0.40, 0.47),
            rng.uniform(-0.3, 0.3),
        )
        img = np.where(body, 0.45 + 0.05 * _smooth_noise(rng, size), 0.05)
        for _ in range(rng.integers(2, 5)):  # organs
            organ = _ellipse(
                yy,
                xx,
                c + rng.uniform(-0.2, 0.2) * size,
                c + rng.uniform(-0.2, 0.2) * size,
                size * rng.uniform(0.06, 0.14),
                size * rng.uniform(0.06, 0.14),
                rng.uniform(0, np.pi),
            )
            img = np.where(organ & body, img + rng.uniform(-0.15, 0.15), img)
        if labels[k]:
            inside = np.argwhere(_ellipse(yy, xx, c, c, size * 0.3, size * 0.33, 0.0))
            for _ in range(rng.integers(lo, hi + 1)):
                radius = np.sqrt(rng.uniform(*lesion_area) * size * size / np.pi)
                cy, cx = inside[rng.integers(len(inside))]
                lesion = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
                masks[k] |= lesion
                step = rng.uniform(*contrast) if isinstance(contrast, tuple | list) else contrast
                img = np.where(lesion, img + step, img)
        img = img + noise * rng.standard_normal((size, size))
        images[k] = np.clip(img, 0.0, 1.0) * 255.0
    return Phantoms(images[..., None], labels, masks)


@dataclass(frozen=True)
class Clusters:
    images: np.ndarray  # (N, size, size, 1) float32 in [0, 255]
    labels: np.ndarray  # (N,) int32


def _periodic_pattern(rng, size: int, frequencies: int = 2) -> np.ndarray:
    """A smooth, left-right symmetric, periodic pattern of unit standard deviation."""
    t = np.arange(size) * 2 * np.pi / size
    image = np.zeros((size, size))
    for fy in range(frequencies + 1):
        for fx in range(frequencies + 1):
            if fy == fx == 0:
                continue
            a, phase = rng.standard_normal(), rng.uniform(0, 2 * np.pi)
            image += a * np.cos(fy * t[:, None] + phase) * np.cos(fx * t[None, :])
    return (image - image.mean()) / image.std()


def make_clusters(
    n: int,
    seed: int = 0,
    num_classes: int = 2,
    size: int = 16,
    contrast: tuple[float, float] = (0.7, 1.3),
    noise: float = 0.3,
    max_shift: int = 3,
) -> Clusters:
    """A cluster-structured toy set where unlabelled images tell where the classes are.

    Class c is one smooth periodic prototype (the same for every seed), shown at a random
    circular shift of up to ``max_shift`` pixels each way, possibly mirrored (the prototypes
    are symmetric, so a mirror image is another shift), scaled by a random ``contrast`` and
    with white ``noise`` (in prototype standard deviations). Each class is a connected
    cluster in pixel space (neighbouring shifts are close) far from the other classes, but a
    few labelled images cover only a few of its shifts: a supervised network is unsure between
    them, while the unlabelled images link each class's shifts together (the cluster
    assumption of semi-supervised learning, the weak augmentation's shifts as the noise).
    Values are float32 grey values in [0, 255].
    """
    if n < 1 or size < 4 or num_classes < 2:
        raise InvalidArgumentError(
            f"make_clusters(n={n}, size={size}, num_classes={num_classes}): need n >= 1, "
            "size >= 4, num_classes >= 2.")
    if not (0 < contrast[0] <= contrast[1] and noise >= 0):
        raise InvalidArgumentError(
            f"contrast={contrast}, noise={noise}: need 0 < low <= high and noise >= 0.")
    basis = np.random.default_rng(12345)  # the same prototypes for every seed
    prototypes = [_periodic_pattern(basis, size) for _ in range(num_classes)]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    images = np.empty((n, size, size), np.float32)
    for k in range(n):
        shift = tuple(rng.integers(-max_shift, max_shift + 1, 2))
        image = np.roll(prototypes[labels[k]], shift, axis=(0, 1))
        if rng.random() < 0.5:
            image = image[:, ::-1]
        image = rng.uniform(*contrast) * image + noise * rng.standard_normal((size, size))
        images[k] = image
    images = np.clip(127.5 + 30.0 * images, 0, 255).astype(np.float32)
    return Clusters(images=images[..., None], labels=labels)


_MAX_CLASSES = 5  # smooth patterns of frequency <= 1 span 5 dimensions
_MAX_PATTERNS = 40  # random symmetric patterns of frequencies <= 4 span 44 dimensions


def _smooth_basis(classes: int, others: int, size: int) -> np.ndarray:
    """``classes`` orthonormal patterns of the lowest frequency (a shift of a pixel or two keeps
    most of each), then ``others`` of frequencies up to 4 orthogonal to them: (count, size**2),
    the same for every seed."""
    basis = np.random.default_rng(54321)
    patterns = [_periodic_pattern(basis, size, frequencies=1) for _ in range(classes)]
    patterns += [_periodic_pattern(basis, size, frequencies=4) for _ in range(others)]
    q, _ = np.linalg.qr(np.stack([p.ravel() for p in patterns], 1))
    return q.T


def make_gap_clusters(
    n: int,
    seed: int = 0,
    num_classes: int = 2,
    size: int = 16,
    gap: float = 4.0,
    spread: float = 0.5,
    nuisance: int = 32,
    nuisance_std: float = 1.0,
    noise: float = 0.5,
) -> Clusters:
    """A cluster toy set whose cluster assumption holds in pixel space (no shifts).

    Each class is a Gaussian blob around its own pattern of the lowest frequency: the class
    means are ``gap`` apart (pairwise, the same for every seed), each image ``spread`` (std) from
    its mean along those directions, so the classes are separated by a low-density gap along the
    directions of highest variance (the first principal components). On top, every image
    carries ``nuisance`` patterns of higher frequencies (up to 4 periods) with random weights of
    std ``nuisance_std`` (high variance, no class information) and white ``noise`` per pixel. A
    shift of a pixel or two (the weak augmentation) keeps most of a class pattern and scrambles
    the nuisance, a mirror image keeps both (the patterns are left-right symmetric), as small
    shifts keep the label of real images. A
    classifier trained on 2 labels per class fits the nuisance of its few images; the unlabelled
    images show where the gap is. Unlike ``make_clusters`` a class is not a set of shifted copies
    (no augmentation links its members): Gaussian noise, reconstruction and the low-density
    assumption can all find this structure. Units: the image's standard deviations, mapped onto
    grey values 127.5 + 40 x, clipped to [0, 255].
    """
    if n < 1 or size < 10 or num_classes < 2 or nuisance < 0:
        raise InvalidArgumentError(
            f"make_gap_clusters(n={n}, size={size}, num_classes={num_classes}, "
            f"nuisance={nuisance}): need n >= 1, size >= 10, num_classes >= 2, nuisance >= 0.")
    if num_classes > _MAX_CLASSES or num_classes + nuisance > _MAX_PATTERNS:
        raise InvalidArgumentError(
            f"num_classes={num_classes}, nuisance={nuisance}: at most {_MAX_CLASSES} classes (the "
            f"lowest-frequency patterns) and {_MAX_PATTERNS} patterns in all; use fewer.")
    if not (gap > 0 and spread >= 0 and nuisance_std >= 0 and noise >= 0):
        raise InvalidArgumentError(
            f"gap={gap}, spread={spread}, nuisance_std={nuisance_std}, noise={noise}: need gap > "
            "0 and the others >= 0.")
    basis = _smooth_basis(num_classes, nuisance, size)
    centred = basis[:num_classes] - basis[:num_classes].mean(0)
    means = gap / np.sqrt(2) * centred  # pairwise distance gap
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    within = spread * rng.standard_normal((n, num_classes)) @ basis[:num_classes]
    weights = nuisance_std * rng.standard_normal((n, nuisance))
    images = (means[labels] + within + weights @ basis[num_classes:]
              + noise * rng.standard_normal((n, size * size)))
    images = np.clip(127.5 + 40.0 * images, 0, 255).astype(np.float32)
    return Clusters(images=images.reshape(n, size, size, 1), labels=labels)
