"""The data side of every pretext task: numpy transforms that make (input, target) pairs.

Numpy only and driven by an explicit ``numpy.random.Generator``, so each transform is
seeded, testable against a hand computation and cheap to regenerate every epoch. Images
are channels-last arrays; batch functions take (N, *spatial, C). Pixel values are in the
zoo's input range [0, 255] except for the Models Genesis functions, which (like the paper's
code) work on [0, 1] intensities.
"""

from __future__ import annotations

import itertools

import numpy as np

from zoo.errors import DataError


def rotations(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gidaris 2018: every image in all four rotations (k x 90 degrees, counter-clockwise, as
    np.rot90).

    Returns (4N images, labels k) with each label exactly N times, so the classes are balanced.
    """
    if images.shape[1] != images.shape[2]:
        raise DataError(
            f"rotation needs square images, got {images.shape[1]}x{images.shape[2]}; crop or pad "
            "them."
        )
    x = np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)])
    y = np.repeat(np.arange(4, dtype=np.int32), len(images))
    return x, y


def inpaint_mask(shape: tuple[int, ...], rng: np.random.Generator, fraction: float = 0.5,
                 mode: str = "center") -> np.ndarray:
    """Pathak 2016's masks (N, H, W): a central square (side ``fraction``) or a random one."""
    n, h, w = shape
    mh, mw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    mask = np.zeros((n, h, w), np.float32)
    for i in range(n):
        if mode == "center":
            top, left = (h - mh) // 2, (w - mw) // 2
        else:
            top, left = rng.integers(0, h - mh + 1), rng.integers(0, w - mw + 1)
        mask[i, top:top + mh, left:left + mw] = 1.0
    return mask


def mask_images(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the masked region with each image's mean (the context encoder's mean pixel)."""
    fill = images.mean(axis=(1, 2), keepdims=True)
    m = mask[..., None]
    return (images * (1 - m) + fill * m).astype(np.float32)


def window(images: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """An intensity window (as for CT HU): [lo, hi] mapped linearly to [0, 1], clipped."""
    return np.clip((images - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def patch_grid(
    image: np.ndarray, patch: int, gap: int, rng: np.random.Generator, jitter: int = 0
) -> np.ndarray:
    """The 3 x 3 grid of ``patch``-sized tiles, ``gap`` pixels apart, centred in ``image`` (H, W,
    C).

    Returns (9, patch, patch, C) in row-major order (index 4 is the centre). Each tile is moved by
    up
    to ``jitter`` pixels, which with the gap stops the network from matching edges (Doersch 2015).
    """
    h, w = image.shape[:2]
    side = 3 * patch + 2 * gap
    top, left = (h - side) // 2, (w - side) // 2
    tiles = []
    for r, c in itertools.product(range(3), range(3)):
        y, x = top + r * (patch + gap), left + c * (patch + gap)
        if jitter:
            y = int(np.clip(y + rng.integers(-jitter, jitter + 1), 0, h - patch))
            x = int(np.clip(x + rng.integers(-jitter, jitter + 1), 0, w - patch))
        tiles.append(image[y:y + patch, x:x + patch])
    return np.stack(tiles)


NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # grid indices of the 8 neighbours of the centre tile (4)


def relative_position(images: np.ndarray, patch: int, gap: int, rng: np.random.Generator,
                      jitter: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Doersch 2015: (centre tiles, neighbour tiles, label 0..7 naming which neighbour)."""
    labels = rng.integers(0, 8, len(images)).astype(np.int32)
    centre, other = [], []
    for img, label in zip(images, labels):
        grid = patch_grid(img, patch, gap, rng, jitter)
        centre.append(grid[4])
        other.append(grid[NEIGHBOURS[label]])
    return np.stack(centre), np.stack(other), labels


def jigsaw_permutations(k: int, seed: int = 0) -> np.ndarray:
    """Noroozi 2016: ``k`` permutations of 9 tiles chosen greedily for maximal Hamming distance."""
    if not 2 <= k <= 1000:
        raise DataError(
            f"jigsaw permutations k={k}: use 2 <= k <= 1000 (the paper uses 100 to 1000)."
        )
    rng = np.random.default_rng(seed)
    pool = np.array([rng.permutation(9) for _ in range(max(2000, 4 * k))])
    chosen = [np.arange(9)]
    distance = (pool != chosen[0]).sum(1)
    for _ in range(k - 1):
        best = int(np.argmax(distance))
        chosen.append(pool[best])
        distance = np.minimum(distance, (pool != pool[best]).sum(1))
    return np.stack(chosen).astype(np.int32)


def jigsaw(images: np.ndarray, permutations: np.ndarray, patch: int, gap: int,
           rng: np.random.Generator, jitter: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of each image shuffled by a random permutation: (N, 9, p, p, C) tiles and the
    permutation index.

    Tile position i shows the original tile ``permutations[label][i]``.
    """
    labels = rng.integers(0, len(permutations), len(images)).astype(np.int32)
    tiles = np.stack([patch_grid(img, patch, gap, rng, jitter)[permutations[label]]
                      for img, label in zip(images, labels)])
    return tiles, labels


def slice_order_pairs(volumes: np.ndarray, rng: np.random.Generator, min_gap: int = 2,
                      count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P-CNN: two slices of a volume (N, D, H, W, C); label 1 when the first is higher."""
    n, d = volumes.shape[:2]
    if d <= min_gap:
        raise DataError(
            f"slice ordering with min_gap={min_gap} needs volumes deeper than {min_gap} slices, "
            f"got depth {d}."
        )
    count = count or n
    vol = rng.integers(0, n, count)
    low = rng.integers(0, d - min_gap, count)
    high = np.array([rng.integers(lo + min_gap, d) for lo in low])
    first_high = rng.random(count) < 0.5
    a = np.where(first_high, high, low)
    b = np.where(first_high, low, high)
    return volumes[vol, a], volumes[vol, b], first_high.astype(np.int32)


def subject_pairs(volumes: np.ndarray, subjects: np.ndarray, rng: np.random.Generator,
                  count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Siamese slice pairs at one height: same subject (label 1) or two subjects (0), balanced."""
    n, d = volumes.shape[:2]
    subjects = np.asarray(subjects)
    if len(np.unique(subjects)) < 2:
        raise DataError("subject discrimination needs volumes of at least two different subjects.")
    count = count or n
    same = (np.arange(count) % 2 == 0).astype(np.int32)
    rng.shuffle(same)
    a_idx, b_idx = rng.integers(0, n, count), np.empty(count, int)
    for i in range(count):
        pool = np.flatnonzero((subjects == subjects[a_idx[i]]) == bool(same[i]))
        if same[i] and len(pool) > 1:
            pool = pool[pool != a_idx[i]]  # another scan of the same subject where there is one
        b_idx[i] = rng.choice(pool)
    z = rng.integers(0, d, count)
    return volumes[a_idx, z], volumes[b_idx, z], same


def simclr_views(
    images: np.ndarray,
    rng: np.random.Generator,
    crop: tuple[float, float] = (0.4, 1.0),
    flip: float = 0.5,
    jitter: float = 0.4,
    noise: float = 0.05,
) -> np.ndarray:
    """One SimCLR view per image (N, H, W, C) in [0, 255]: random resized crop, flips, contrast and
    brightness jitter, Gaussian noise (grey-scale stand-ins for the paper's colour distortions)."""
    n, h, w = images.shape[:3]
    out = np.empty_like(images, dtype=np.float32)
    for i in range(n):
        area = rng.uniform(*crop)
        ch, cw = max(2, int(round(h * np.sqrt(area)))), max(2, int(round(w * np.sqrt(area))))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        rows = top + (np.arange(h) * ch // h)
        cols = left + (np.arange(w) * cw // w)
        v = images[i][rows][:, cols].astype(np.float32)
        if rng.random() < flip:
            v = v[:, ::-1]
        if rng.random() < flip:
            v = v[::-1]
        mean = v.mean()
        v = (
            (v - mean) * rng.uniform(1 - jitter, 1 + jitter)
            + mean
            + 255 * rng.uniform(-jitter, jitter) / 4
        )
        v = v + 255 * noise * rng.standard_normal(v.shape)
        out[i] = np.clip(v, 0, 255)
    return out


# ---- Models Genesis (Zhou et al. 2019): transforms on one sample (*spatial, C) in [0, 1] ----

def _bezier(points: np.ndarray, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    coef = np.array([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3])[..., 0].T
    curve = coef @ points
    return curve[:, 0], curve[:, 1]


def nonlinear(x: np.ndarray, rng: np.random.Generator, prob: float = 0.9) -> np.ndarray:
    """A monotone (half the time inverted) cubic Bezier intensity curve from [0, 1] onto [0, 1]."""
    if rng.random() >= prob:
        return x
    points = np.array([[0, 0], [rng.random(), rng.random()], [rng.random(), rng.random()], [1, 1]])
    xs, ys = _bezier(points)
    xs = np.sort(xs)
    # as the paper's code: half the time both coordinates sorted (a monotone curve), half the time
    # the y values in reversed curve order (an inverted curve); both stay inside [0, 1]
    ys = np.sort(ys) if rng.random() < 0.5 else ys[::-1]
    return np.interp(x, xs, ys).astype(x.dtype)


def local_pixel_shuffle(x: np.ndarray, rng: np.random.Generator, prob: float = 0.5,
                        blocks: int | None = None) -> np.ndarray:
    """Shuffle the pixels inside many small random blocks: texture changes, global shape stays."""
    if rng.random() >= prob:
        return x
    spatial = x.shape[:-1]
    blocks = blocks or max(1, int(np.prod(spatial)) // 40)
    out, source = x.copy(), x
    for _ in range(blocks):
        size = [int(rng.integers(1, max(2, s // 8) + 1)) for s in spatial]
        start = [int(rng.integers(0, s - b + 1)) for s, b in zip(spatial, size)]
        region = tuple(slice(a, a + b) for a, b in zip(start, size))
        block = source[region]
        flat = block.reshape(-1, block.shape[-1])
        out[region] = flat[rng.permutation(len(flat))].reshape(block.shape)
    return out


def _box(spatial, rng, lo: float, hi: float):
    size = [
        max(1, int(rng.integers(int(s * lo), max(int(s * lo) + 1, int(s * hi))))) for s in spatial
    ]
    start = [int(rng.integers(0, s - b + 1)) for s, b in zip(spatial, size)]
    return tuple(slice(a, a + b) for a, b in zip(start, size))


def painting(
    x: np.ndarray, rng: np.random.Generator, prob: float = 0.9, inpaint: float = 0.2
) -> np.ndarray:
    """In-painting (random boxes replaced by uniform noise) with probability ``prob * inpaint``,
    else
    out-painting (noise everywhere but a few boxes of the image) with probability
    ``prob * (1 - inpaint)``."""
    if rng.random() >= prob:
        return x
    spatial = x.shape[:-1]
    if rng.random() < inpaint:
        out = x.copy()
        for i in range(5):
            if i and rng.random() >= 0.95 ** i:
                break
            region = _box(spatial, rng, 1 / 6, 1 / 3)
            out[region] = rng.random(out[region].shape)
        return out.astype(x.dtype)
    out = rng.random(x.shape).astype(x.dtype)
    for i in range(4):
        if i and rng.random() >= 0.95 ** i:
            break
        region = _box(spatial, rng, 3 / 7, 4 / 7)
        out[region] = x[region]
    return out


def flips(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, prob: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """The same random flips of input and target, each spatial axis with probability ``prob``."""
    for axis in range(x.ndim - 1):
        if rng.random() < prob:
            x, y = np.flip(x, axis), np.flip(y, axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


GENESIS_RATES = {"flip": 0.4, "local_shuffle": 0.5, "nonlinear": 0.9, "paint": 0.9, "inpaint": 0.2}


def genesis(batch: np.ndarray, rng: np.random.Generator, **rates) -> tuple[np.ndarray, np.ndarray]:
    """Models Genesis inputs and targets for a batch in [0, 1]: flip both, then on the input a local
    shuffle, a non-linear intensity curve and in- or out-painting, each with its probability."""
    unknown = set(rates) - set(GENESIS_RATES)
    if unknown:
        raise DataError(
            f"unknown Models Genesis rate(s) {sorted(unknown)}; use {sorted(GENESIS_RATES)}."
        )
    r = {**GENESIS_RATES, **rates}
    xs, ys = [], []
    for sample in batch:
        x, y = flips(sample, sample, rng, r["flip"])
        x = local_pixel_shuffle(x, rng, r["local_shuffle"])
        x = nonlinear(x, rng, r["nonlinear"])
        x = painting(x, rng, r["paint"], r["inpaint"])
        xs.append(x)
        ys.append(y)
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)
