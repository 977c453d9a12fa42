"""tf.data pipelines from DICOM files or series: decode once (in parallel, cached on disk), then
sample.

Two stages, so training never waits on pydicom:
1. **Decode** every item once into ``cache_dir`` (``.npy`` in physical units, int16 where the
   values are integers, else float32, plus a small JSON of what normalisation needs), and for
   the slice and 2.5D samplers resize every frame once to the model's size into the sized cache
   (zoo.data.sized_cache; physical values, before any window or augmentation), in the process
   that decoded it. ``workers=1`` decodes here (the files written on a background thread);
   ``workers=N`` in N worker processes of the session's pool (zoo.data.decode_pool: they import
   numpy, scipy and pydicom, never TensorFlow, start once in about half a second and stay up
   for the next dataset): pydicom's parser holds the GIL, so threads would not scale.
   ``workers=None`` (default) uses a running pool from 2 items per core, and starts one
   (a worker per core, up to 8) from ``AUTO_JOBS_PER_WORKER`` items per core, decoding here
   until the workers are up. Bad items raise (``on_error="raise"``) or are skipped
   and listed with the reason in ``report`` (``on_error="skip"``); nothing is dropped silently.
   A later run with the same files finds the cache (keyed by path, size, mtime and reader
   version) and decodes nothing.
2. **Stream**. Slice and 2.5D: a shuffled index of samples is mapped in parallel to their
   ready frames in the sized cache (``tf.io.read_file``), batched and augmented: TensorFlow ops
   only, no Python per element (so tf.data service workers can run it). Triplanar, cube and MIL,
   whose samples are random crops: each sample is read from the cache (memory-mapped) and cut in
   numpy, then windowed or scaled by TensorFlow ops and batched.

Augmentation (``augment=``) is never cached. Keras preprocessing layers run on whole batches
(on each MIL bag); a function of one sample made of TensorFlow ops (e.g.
``tf.image.random_flip_left_right``) runs on each sample before batching, which is the cheaper
of the two on a CPU: Keras's random flip selects between flipped and unflipped batches
element by element, a per-sample ``tf.cond`` copies only what it flips.

The output follows a model's input contract by default: the shape and value range of
``zoo.input_contract(model)``, or of a weight card (``model="resnet50.imagenet"``); without a
model, 224x224x3 in [0, 255], the ImageNet cards' contract.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data.dicom import READER_VERSION, find_dicom_files, read_dicom
from zoo.data.labels import read_labels
from zoo.data.sized_cache import Writer, window_np, window_tf, write_atomic
from zoo.data.windows import DEFAULT_CT_STACK, resolve_windows, window_affine
from zoo.errors import DataError, InvalidArgumentError, ZooError
from zoo.registry import Registry

SAMPLERS = ("slice", "2.5d", "triplanar", "cube", "mil")
_SAMPLERS = Registry("sampler", SAMPLERS, argument="sampler")
VOLUME_SAMPLERS = ("2.5d", "triplanar", "cube")
SIZED_SAMPLERS = ("slice", "2.5d")
"""The samplers whose samples are whole frames resized to the model's size: they read the sized
cache (zoo.data.sized_cache), resized once, instead of resizing in every epoch."""


@dataclass
class SkipReport:
    """Every item left out of a dataset and why (file or folder, error class and message)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        if not self.skipped:
            return "no items skipped"
        return f"{len(self.skipped)} item(s) skipped:\n" + "\n".join(
            f"  {p}: {why}" for p, why in self.skipped
        )


# ----------------------------------------------------------------------------------------------
# sources and labels


def resolve_items(source, labels, volumes: bool,
                  must_exist: bool = True) -> tuple[list[Path], list | None, tuple | None]:
    """(items, labels, class names): files (or series folders for the volume samplers), labels.

    A labels CSV (``path,label[,patient]``, see zoo.data.labels) as ``source`` or ``labels``
    is read by ``read_labels``; ``must_exist=False`` leaves missing paths to the skip report.
    """
    if isinstance(source, str | os.PathLike) and str(source).endswith(".csv"):
        if labels is not None:
            raise InvalidArgumentError(
                "give labels either in the CSV source or as labels=, not both."
            )
        table = read_labels(source, must_exist=must_exist)
        return list(table.paths), table.labels.tolist(), table.classes
    items = _list_items(source, volumes)
    if not items:
        raise DataError(
            f"no items found in {source!r}; give DICOM files, series folders or a labels CSV."
        )
    if labels is None:
        return items, None, None
    return (items, *_match_labels(items, labels))


def _list_items(source, volumes: bool) -> list[Path]:
    """The files (or, for volumes, the series sub-folders) of a folder, a file, or a path list."""
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if not root.exists():
            raise DataError(f"{root} does not exist; give a folder, a file list or a labels CSV.")
        if root.is_file():
            items = [root]
        elif volumes:
            subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            items = subdirs or [root]
        else:
            items = find_dicom_files(root)
    else:
        items = [Path(p) for p in source]
    return items


def _match_labels(items: list[Path], labels) -> tuple[list, tuple | None]:
    """(one label per item, class names or None) from a labels CSV, a path -> label mapping or a
    list in item order; a DataError names the first unlabelled item or the count mismatch."""
    classes = None
    if isinstance(labels, str | os.PathLike):
        table = read_labels(labels, must_exist=False)
        labels = {p.resolve(): y for p, y in zip(table.paths, table.labels.tolist())}
        classes = table.classes
    if isinstance(labels, Mapping):
        table = {Path(k).resolve(): v for k, v in labels.items()}
        missing = [str(p) for p in items if p.resolve() not in table]
        if missing:
            raise DataError(
                f"{len(missing)} item(s) have no label, e.g. {missing[0]}; label every item or "
                "pass the labelled subset as the source."
            )
        return [table[p.resolve()] for p in items], classes
    labels = list(labels)
    if len(labels) != len(items):
        raise DataError(f"{len(labels)} labels for {len(items)} items; give one label per item.")
    return labels, None


# ----------------------------------------------------------------------------------------------
# stage 1: decode into the cache


def _fingerprint(item: Path, volumes: bool, target_spacing=None) -> str:
    files = find_dicom_files(item) if item.is_dir() else [item]
    kind = "volume" if volumes else "image"
    h = hashlib.sha256(f"v{READER_VERSION}|{kind}|{target_spacing}|{item.resolve()}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def decode_item(item: Path, volumes: bool, target_spacing=None) -> tuple[np.ndarray, dict]:
    """(array, info): (F, H, W, C) float32 for images, (Z, Y, X, 1) for volumes; info for
    normalising.

    A series folder with a gap, duplicate or tilt problem raises: a training volume must be sound.
    """
    if volumes and item.is_dir():
        from zoo.data.series import load_series

        volume = load_series(item, on_problem="raise", target_spacing=target_spacing)
        meta, array = volume.meta, volume.array[..., None]
        value_range = (float(array.min()), float(array.max()))
    else:
        image = read_dicom(item)
        meta, array = image.meta, image.pixels
        value_range = image.meta.value_range
        if volumes and meta.channels != 1:
            raise DataError(
                f"DICOM file {item} is a colour image; the volume samplers take grey volumes."
            )
    info = {
        "units": meta.units,
        "modality": meta.modality,
        "value_range": list(value_range or (0.0, 1.0)),
        "shape": list(array.shape),
        "pad": float(array.min()),
    }
    # uncalibrated grey: stretch the item's 0.5-99.5 percentiles
    if meta.units not in ("HU", "RGB"):
        sample = array.ravel()[:: max(1, array.size // 1_000_000)]
        info["percentiles"] = [float(v) for v in np.percentile(sample, (0.5, 99.5))]
    return np.ascontiguousarray(array, np.float32), info


@dataclass(frozen=True)
class _Sizer:
    """How a decoded item becomes sized-cache frames (slice and 2.5D samplers): picklable, so
    the process that decoded an item (a worker or this one) sizes it from the array in hand."""

    cache_dir: str
    sampler: str
    shape: tuple
    windows: tuple
    out_range: tuple

    def recipe(self, info: dict):
        """How one item's frames become samples (see zoo.data.sized_cache.Recipe): 2.5D frames
        are single channels of one window, stacked when read."""
        from zoo.data.sized_cache import Recipe

        chans = self.shape[-1]
        if self.sampler == "2.5d":
            affine = _affine(info, list(self.windows[:1]), chans)[:, :1]
        else:
            affine = _affine(info, list(self.windows), chans)
        grey = info["shape"][-1] == 3 and chans != 3  # colour into a grey model: averaged
        return Recipe(tuple(int(s) for s in self.shape[:2]), grey, affine, self.out_range)

    def __call__(self, writer, key: str, array: np.ndarray, info: dict) -> bool:
        """Size an item just decoded (on the writer's thread when given); False for shapes the
        pipeline refuses (left to ``DicomDataset._kept``)."""
        from zoo.data import sized_cache

        if array.ndim != 4 or array.shape[-1] not in (1, 3) or min(array.shape) < 1:
            return False
        recipe = self.recipe(info)
        files = sized_cache.frame_files(Path(self.cache_dir), key, array.shape[0], recipe)
        if writer is None:
            sized_cache.write_item(files, array, recipe)
        else:
            writer.call(sized_cache.write_item, files, array, recipe, nbytes=array.nbytes)
        return True


def _decode_to_cache(job, writer=None) -> tuple[str, str | None, int, bool]:
    """Decode one item into the cache; returns (item, error text or None, pid, sized).

    ``job``: (item, volumes, spacing, cache_dir, key, raise errors, sizer or None). ``writer``
    (a sized_cache.Writer) writes on a background thread; without it (in a worker process) the
    files are written here. The sizer sizes the decoded float32 array into the sized cache
    (without reading the decode cache back).
    """
    item, volumes, spacing, cache_dir, key, raise_errors, sizer = job
    target = Path(cache_dir) / f"{key}.npy"
    try:
        array, info = decode_item(Path(item), volumes, spacing)
    except ZooError as e:
        if raise_errors:
            raise
        return item, f"{type(e).__name__}: {e}", os.getpid(), False
    # HU and most stored grey values are integers: half the bytes, lossless
    small = _as_int16(array)
    text = json.dumps(info)
    # the array, then its JSON: an item counts as cached only when both exist
    if writer is None:
        write_atomic(target, lambda tmp: _save_npy(tmp, small))
    else:
        writer.submit(target, lambda tmp: _save_npy(tmp, small), nbytes=small.nbytes)
    write = writer.submit if writer is not None else write_atomic
    write(target.with_suffix(".json"), lambda tmp: tmp.write_text(text))
    sized = sizer is not None and sizer(writer, key, array, info)
    return item, None, os.getpid(), sized


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to the name
        np.save(f, array)


def _as_int16(array: np.ndarray) -> np.ndarray:
    """``array`` as int16 when that is lossless (integer values within int16), else itself."""
    if not array.size:
        return array
    # one cast and one comparison, no min/max scans: a value outside int16, fractional or NaN
    # casts to an int16 that differs from it (the cast's own warning is silenced)
    with np.errstate(invalid="ignore", over="ignore"):
        small = array.astype(np.int16)
    return small if np.array_equal(small, array) else array


AUTO_JOBS_PER_WORKER = 32
"""With workers=None, a pool of worker processes starts only for at least this many items per
core: its start-up costs about half a second of CPU (one interpreter importing numpy, scipy and
pydicom, no TensorFlow, forked into the workers), hidden behind this process decoding meanwhile
but taken from the same cores. A pool already running (an earlier dataset) is used from 2 items
per core."""


def _auto_workers(jobs: int) -> int:
    """``workers=None``: the cores (up to 8) when a pool is running or pays for its start-up,
    else 1 (this process)."""
    from zoo.data import decode_pool

    cores = decode_pool.default_workers()
    if cores <= 1:
        return 1
    if decode_pool.warm_workers() >= cores:
        return cores if jobs >= 2 * cores else 1
    return cores if jobs >= AUTO_JOBS_PER_WORKER * cores else 1


def _serial_map(jobs) -> list:
    """Every job in this process, the caches written on a background thread."""
    with Writer() as writer:
        return [_decode_to_cache(j, writer) for j in jobs]


def _pool_map(jobs, workers: int, hide_start: bool = False) -> list:
    """The jobs in ``workers`` worker processes (zoo.data.decode_pool: TensorFlow-free, kept for
    the session), or here when ``workers`` <= 1. ``hide_start``: this process decodes too
    while no worker is free (a cold pool's start-up), so a pool never makes it slower than
    decoding here alone."""
    if workers <= 1 or len(jobs) <= 1:
        return _serial_map(jobs)
    import warnings

    from zoo.data import decode_pool

    chunk = max(1, min(8, len(jobs) // (4 * workers)))
    with Writer() as writer:
        local = (lambda job: _decode_to_cache(job, writer)) if hide_start else None
        try:
            return decode_pool.get_pool(workers).map(_decode_to_cache, jobs, chunk, local,
                                                     workers=workers)
        except (decode_pool.WorkersDied, OSError) as e:
            warnings.warn(
                f"DICOM decode workers could not start or died ({e}); decoding in this process "
                "instead.", RuntimeWarning, stacklevel=3)
            decode_pool.shutdown()
            return [_decode_to_cache(j, writer) for j in jobs]


# ----------------------------------------------------------------------------------------------
# stage 2: sample (numpy, inside tf.numpy_function) and normalise (TensorFlow, off the GIL)


def _affine(info: dict, windows, chans: int) -> np.ndarray:
    """(2, chans) float32 (a, b): each output channel is ``clip(x * a + b, 0, 1)``.

    HU: one DICOM linear window per channel,
    ``a = 1 / (w - 1)`` and ``b = 0.5 - (c - 0.5) / (w - 1)``.
    Colour: divided by its value range. Other grey: the item's 0.5-99.5 percentile stretch.
    """
    if info["units"] == "HU":
        wins = windows if len(windows) == chans else windows[:1] * chans
        a, b = window_affine(wins)
    elif info["units"] == "RGB":
        a, b = [1.0 / max(info["value_range"][1], 1.0)] * chans, [0.0] * chans
    else:
        lo, hi = info.get("percentiles") or info["value_range"]
        a, b = [1.0 / max(hi - lo, 1e-6)] * chans, [-lo / max(hi - lo, 1e-6)] * chans
    return np.array([a, b], np.float32)


def _apply(x: np.ndarray, ab: np.ndarray, out_range) -> np.ndarray:
    """The numpy twin of the in-graph normalisation (x broadcasts against the channels of ab)."""
    return window_np(x, ab, out_range)


def _crop(array: np.ndarray, starts, sizes, pad_value: float) -> np.ndarray:
    """A crop of ``sizes`` at ``starts`` along the leading axes, ``pad_value`` past the edges."""
    out = np.full((*sizes, *array.shape[len(sizes):]), pad_value, np.float32)
    src, dst = [], []
    for s, n, dim in zip(starts, sizes, array.shape):
        a, b = max(s, 0), min(s + n, dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s, a - s + max(0, b - a)))
    out[tuple(dst)] = array[tuple(src)]
    return out


@dataclass(frozen=True)
class _Plan:
    sampler: str
    shape: tuple[int, ...]  # output shape of one sample
    windows: list
    out_range: tuple[float, float]
    tiles: int


def _sample_raw(array: np.ndarray, info: dict, position: int, seed: int, plan: _Plan):
    """(x in physical units, (2, C) affine): x has C channels, or 1 that the affine broadcasts."""
    rng = np.random.default_rng(seed)
    chans = plan.shape[-1]
    # the volume's minimum: air, background
    pad = float(info["pad"]) if "pad" in info else float(array.min())
    single = plan.windows[:1]
    if plan.sampler == "slice":
        x = np.asarray(array[position], np.float32)
    elif plan.sampler == "2.5d":
        z = np.clip(
            np.arange(position - chans // 2, position - chans // 2 + chans), 0, array.shape[0] - 1
        )
        return np.moveaxis(np.asarray(array[z, ..., 0], np.float32), 0, -1), _affine(
            info, single, chans
        )
    elif plan.sampler == "triplanar":
        p = plan.shape[0]
        center = [int(rng.integers(0, d)) for d in array.shape[:3]]
        vol = array[..., 0]
        axial = _crop(vol[center[0]], (center[1] - p // 2, center[2] - p // 2), (p, p), pad)
        coronal = _crop(vol[:, center[1], :], (center[0] - p // 2, center[2] - p // 2), (p, p), pad)
        sagittal = _crop(
            vol[:, :, center[2]], (center[0] - p // 2, center[1] - p // 2), (p, p), pad
        )
        return np.stack([axial, coronal, sagittal], axis=-1), _affine(info, single, 3)
    elif plan.sampler == "cube":
        size = plan.shape[:3]
        starts = [int(rng.integers(0, max(d - s, 0) + 1)) for d, s in zip(array.shape[:3], size)]
        x = _crop(array, starts, size, pad)
    else:  # mil: a bag of tiles from a grid over one frame
        t_h, t_w = plan.shape[1:3]
        frame = array[position]
        grid = [(r, c) for r in range(0, max(frame.shape[0] - t_h, 0) + 1, t_h)
                for c in range(0, max(frame.shape[1] - t_w, 0) + 1, t_w)]
        picks = rng.choice(len(grid), size=plan.tiles, replace=len(grid) < plan.tiles)
        x = np.stack([_crop(frame, grid[i], (t_h, t_w), pad) for i in picks])
    if x.shape[-1] == 3 and chans != 3:  # colour into a grey model: luminance-free mean
        x = x.mean(axis=-1, keepdims=True)
    return x, _affine(info, plan.windows, chans)


def _sample(array: np.ndarray, info: dict, position: int, seed: int, plan: _Plan) -> np.ndarray:
    """One normalised sample, all in numpy (the pipeline runs the same affine in TensorFlow)."""
    x, ab = _sample_raw(array, info, position, seed, plan)
    return _apply(x, ab, plan.out_range)


# ----------------------------------------------------------------------------------------------
# the dataset


def _contract(model, input_shape, input_range):
    if model is None:
        return tuple(input_shape or (224, 224, 3)), tuple(input_range or (0.0, 255.0))
    if isinstance(model, str):
        from zoo.hub.cards import get_card

        card = get_card(model)
        return tuple(input_shape or card.input_size), tuple(input_range or card.input_range)
    from zoo.layers.preprocess import input_contract

    contract = input_contract(model)
    shape = tuple(int(s) if s is not None else 224 for s in contract["input_shape"])
    return tuple(input_shape or shape), tuple(input_range or contract["input_range"])


def _native_shape(plan: _Plan) -> list:
    """The shape a sample has before resizing: unknown sizes, except where the sampler cuts
    at the model's size (MIL tiles, triplanar and cube patches); channels set after windowing."""
    if plan.sampler == "mil":
        # tiles are cut at the model's size: no resize
        return [plan.tiles, *plan.shape[1:-1], None]
    if plan.sampler in ("triplanar", "cube"):
        return [*plan.shape[:-1], None]
    return [None] * (len(plan.shape) - 1) + [None]


def _augment_batches(ds, layer, with_labels: bool):
    """Run the augmentation layer on whole batches (training mode), leaving the labels alone."""
    import tensorflow as tf

    if not with_labels:
        return ds.map(lambda x: layer(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x, y: (layer(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)


class DicomDataset:
    """What ``dicom_dataset`` built: ``.dataset`` (the ``tf.data.Dataset``) and its metadata.

    ``dicom_dataset`` returns the ``tf.data.Dataset`` itself, with this object on its ``.dicom``
    attribute. ``report`` lists every skipped item and why; ``items`` and ``labels`` the kept
    ones; ``classes`` the class names by label index when the labels came from a CSV;
    ``decoded`` counts items decoded in this construction, ``cached`` the items found in the
    cache, ``decode_processes`` the processes that decoded them, ``sized`` (slice and 2.5D
    samplers) the items resized into the sized cache in this construction; ``cache_dir`` the
    cache folder; ``shape``, ``windows`` ((center,
    width) per channel, or one for all) and ``input_range`` the samples' contract; ``len()`` is
    the number of samples per epoch (not batches). ``augment``: a Keras layer or a list of Keras
    preprocessing layers (run on whole batches), or a function of one sample made of
    TensorFlow ops (run on each sample before batching); see the module docstring.
    """

    def __init__(
        self,
        source,
        labels=None,
        *,
        model=None,
        sampler: str = "slice",
        input_shape=None,
        input_range=None,
        windows="auto",
        batch_size: int = 16,
        shuffle: bool = True,
        seed: int = 0,
        cache_dir=None,
        workers: int | None = None,
        augment=None,
        on_error: str = "raise",
        samples_per_item: int = 4,
        tiles: int = 8,
        target_spacing=None,
        repeat: bool = False,
        drop_remainder: bool = False,
    ):
        _SAMPLERS.check(sampler)
        if on_error not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size={batch_size!r}: use a positive integer.")
        shape, out_range = _contract(model, input_shape, input_range)
        want = 4 if sampler == "cube" else 3
        if len(shape) != want:
            raise InvalidArgumentError(
                f"sampler={sampler!r} makes {want - 1}D samples with channels, but the input shape "
                f"is {shape}; pass input_shape=... of length {want}."
            )
        if sampler == "triplanar" and (shape[-1] != 3 or shape[0] != shape[1]):
            raise InvalidArgumentError(
                f"sampler='triplanar' gives square 3-channel patches; input shape {shape} is not "
                "(P, P, 3)."
            )
        if augment is not None and sampler == "cube":
            raise InvalidArgumentError(
                "augment= takes 2D Keras preprocessing layers; the cube sampler has none."
            )
        augmenters = _augmenter(augment)  # a bad value raises before any decoding
        chans = shape[-1]
        # three complementary windows for 3 channels, else the soft-tissue one
        if windows == "auto":
            multi = chans == 3 and sampler not in ("2.5d", "triplanar")
            windows = DEFAULT_CT_STACK if multi else DEFAULT_CT_STACK[:1]
        wins = resolve_windows(windows)
        if len(wins) not in (1, chans) or (len(wins) > 1 and sampler in ("2.5d", "triplanar")):
            raise InvalidArgumentError(
                f"{len(wins)} windows for {chans} channels with sampler={sampler!r}: give one "
                "window per channel, or one window (repeated; the 2.5d and triplanar samplers use "
                "their channels for slices and planes)."
            )
        self.sampler, self.shape, self.seed = sampler, shape, seed
        self.windows, self.input_range = wins, out_range
        self.report = SkipReport()
        items, ys, self.classes = resolve_items(source, labels, sampler in VOLUME_SAMPLERS,
                                                must_exist=on_error == "raise")
        self._spacing = None if target_spacing is None else np.broadcast_to(
            np.asarray(target_spacing, float), (3,)).tolist()
        self._arrays, self.items, self.labels = self._decode(
            items, ys, sampler in VOLUME_SAMPLERS, cache_dir, workers, on_error
        )
        if not self.items:
            raise DataError(
                f"every one of the {len(items)} item(s) was skipped, nothing to train "
                f"on.\n{self.report}"
            )
        self._plan = _Plan(
            sampler, tuple(shape) if sampler != "mil" else (tiles, *shape), wins, out_range, tiles
        )
        self.index = self._index(samples_per_item)
        build, self.sized = self._build, 0
        if sampler in SIZED_SAMPLERS:
            self.sized, build = self._size(), self._build_sized
        self.dataset = build(batch_size, shuffle, augmenters, repeat, drop_remainder)

    # -- stage 1
    def _decode(self, items, ys, volumes, cache_dir, workers, on_error):
        """Stage 1: decode into the cache what it lacks (in worker processes when many), then
        keep the items that decoded to a shape the pipeline takes."""
        if cache_dir is None:
            from zoo.hub.cards import zoo_home

            cache_dir = zoo_home() / "dicom_cache"
        cache_dir = self.cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._sizer = _Sizer(str(cache_dir), self.sampler, tuple(self.shape),
                             tuple(tuple(w) for w in self.windows), tuple(self.input_range))
        keys, jobs, skipped = self._plan_decoding(items, volumes, cache_dir, on_error)
        auto = workers is None
        if auto:
            workers = _auto_workers(len(jobs))
        results = _pool_map(jobs, workers if len(jobs) >= 2 * workers else 1, hide_start=auto)
        self._sized_early = sum(r[3] for r in results)
        self.decoded, self.cached = len(jobs), len(items) - len(jobs) - len(skipped)
        self.decode_processes = len({r[2] for r in results})
        for item, error, *_ in results:
            if error:
                self.report.skipped.append((item, error))
                skipped.add(item)
        return self._kept(items, ys, keys, skipped, cache_dir, on_error)

    def _plan_decoding(self, items, volumes, cache_dir: Path, on_error):
        """(cache key per item (None: unreadable), decode jobs for items not cached, skipped)."""
        keys, jobs, skipped = [], [], set()
        sizer = self._sizer if self.sampler in SIZED_SAMPLERS else None
        for item in items:
            try:
                key = _fingerprint(item, volumes, self._spacing)
            except (OSError, ZooError) as e:
                if on_error == "raise":
                    raise DataError(
                        f"{item} cannot be read ({e}); fix the path or use on_error='skip'."
                    ) from None
                self.report.skipped.append((str(item), f"{type(e).__name__}: {e}"))
                skipped.add(str(item))
                keys.append(None)
                continue
            keys.append(key)
            if not (cache_dir / f"{key}.npy").exists() or not (cache_dir / f"{key}.json").exists():
                jobs.append((str(item), volumes, self._spacing, str(cache_dir), key,
                             on_error == "raise", sizer))
        return keys, jobs, skipped

    def _kept(self, items, ys, keys, skipped, cache_dir: Path, on_error):
        """(arrays, items, labels) of the decoded items whose cached shape the pipeline takes;
        another shape would stop tf.data's batching with a raw error, so it is skipped or raised."""
        arrays, kept, kept_y = [], [], []
        for k, (item, key) in enumerate(zip(items, keys)):
            if key is None or str(item) in skipped:
                continue
            info = json.loads((cache_dir / f"{key}.json").read_text())
            shape = info.get("shape", [])
            if len(shape) != 4 or shape[-1] not in (1, 3) or min(shape) < 1:
                # a sample of another shape would stop tf.data's batching with a raw error
                error = DataError(f"{item} decoded to an array of shape {shape}; the pipeline "
                                  "takes (frames, rows, "
                                  "columns, 1 or 3 channels). Remove the item or re-export it.")
                if on_error == "raise":
                    raise error
                self.report.skipped.append((str(item), f"DataError: {error}"))
                continue
            arrays.append((str(cache_dir / f"{key}.npy"), info))
            kept.append(item)
            if ys is not None:
                kept_y.append(ys[k])
        return arrays, kept, (kept_y if ys is not None else None)

    # -- stage 1b: the sized cache
    def _size(self) -> int:
        """Resize and window into the sized cache every item that lacks it (on a thread,
        while the next item loads); sets ``_frame_files`` (per item, a file per frame) and
        returns how many items it sized."""
        from zoo.data import sized_cache

        built, self._frame_files = self._sized_early, []
        with sized_cache.Writer() as writer:
            for path, info in self._arrays:
                recipe = self._sizer.recipe(info)
                files = sized_cache.frame_files(self.cache_dir, Path(path).stem, info["shape"][0],
                                                recipe)
                if sized_cache.missing(files):
                    array = np.load(path, mmap_mode="r")
                    writer.call(sized_cache.write_item, files, array, recipe)
                    built += 1
                self._frame_files.append(files)
        return built

    def _sample_files(self) -> np.ndarray:
        """(samples, k) frame files per sample: one for a slice, the C neighbours (clipped at
        the ends) for 2.5D."""
        chans = self.shape[-1]
        offsets = np.arange(chans) - chans // 2 if self.sampler == "2.5d" else np.zeros(1, int)
        rows = []
        for item, position in self.index:
            files = self._frame_files[item]
            rows.append([files[int(np.clip(position + d, 0, len(files) - 1))] for d in offsets])
        return np.array(rows, dtype=object).reshape(len(self.index), len(offsets))

    def _build_sized(self, batch_size, shuffle, augmenters, repeat, drop_remainder):
        """Slice and 2.5D, all TensorFlow: read each sample's ready frames (in parallel, through
        a per-sample augmentation function), batch, run Keras augmentation layers on the whole
        batch, prefetch."""
        import tensorflow as tf

        items = self.index[:, 0]
        labels = None if self.labels is None else np.asarray(self.labels)[items]
        per_sample, layer = augmenters
        read = _sized_reader(self._sample_files(), self.shape, labels, per_sample)
        ds = tf.data.Dataset.range(len(self.index))
        if shuffle:
            ds = ds.shuffle(len(self.index), seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                      num_parallel_calls=tf.data.AUTOTUNE)
        if layer is not None:
            ds = _augment_batches(ds, layer, with_labels=labels is not None)
        return ds.prefetch(tf.data.AUTOTUNE)

    # -- stage 2
    def _index(self, samples_per_item: int) -> np.ndarray:
        rows = []
        for i, (_, info) in enumerate(self._arrays):
            n = info["shape"][0]
            if self.sampler in ("slice", "mil", "2.5d"):
                rows += [(i, p) for p in range(n)]
            else:
                rows += [(i, j) for j in range(samples_per_item)]
        return np.array(rows, np.int64).reshape(-1, 2)

    def _load(self, item: int, position: int, seed: int):
        path, info = self._arrays[int(item)]
        array = np.load(path, mmap_mode="r")  # only the sampled part is read
        x, ab = _sample_raw(array, info, int(position), int(seed), self._plan)
        return np.ascontiguousarray(x, np.float32), ab

    def _build(self, batch_size, shuffle, augmenters, repeat, drop_remainder):
        import tensorflow as tf

        plan = self._plan
        native = _native_shape(plan)
        lo, hi = plan.out_range
        labels = None if self.labels is None else np.asarray(self.labels)
        per_sample, layer = augmenters
        ds = tf.data.Dataset.from_tensor_slices(self.index)
        if shuffle:
            ds = ds.shuffle(len(self.index), seed=self.seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip(
            ds, tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
        )

        @tf.autograph.experimental.do_not_convert
        def load(row, seed):
            x, ab = tf.numpy_function(
                self._load, [row[0], row[1], seed], (tf.float32, tf.float32), stateful=False
            )
            x.set_shape(native)
            ab.set_shape([2, plan.shape[-1]])
            x = window_tf(x, ab, plan.out_range)  # windows / scaling, in C++
            x.set_shape([*native[:-1], plan.shape[-1]])
            if per_sample is not None:
                x = per_sample(x)
            if layer is not None and plan.sampler == "mil":
                x = layer(x, training=True)  # a bag is a batch of tiles
            if labels is None:
                return x
            return x, tf.gather(labels, row[0])

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(
            batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
        )
        if layer is not None and plan.sampler != "mil":
            ds = _augment_batches(ds, layer, with_labels=labels is not None)
        return ds.prefetch(tf.data.AUTOTUNE)

    def __iter__(self):
        return iter(self.dataset)

    def __len__(self) -> int:
        """Samples per epoch (not batches)."""
        return len(self.index)


def _sized_reader(files: np.ndarray, shape, labels, augment=None):
    """sample index -> its frames from the sized cache stacked on channels, (H, W, C) float32,
    through ``augment`` (a function of one sample) when given (and its label)."""
    import tensorflow as tf

    table = tf.constant(files.astype(str))
    labels = None if labels is None else tf.constant(labels)
    h, w, _ = (int(s) for s in shape)

    @tf.autograph.experimental.do_not_convert
    def read(i):
        parts = [tf.reshape(tf.io.decode_raw(tf.io.read_file(table[i, j]), tf.float32), (h, w, -1))
                 for j in range(files.shape[1])]
        x = tf.ensure_shape(parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1), shape)
        if augment is not None:
            x = tf.ensure_shape(augment(x), shape)
        return x if labels is None else (x, labels[i])

    return read


def _augmenter(augment):
    """(function of one sample, Keras layer for whole batches): one of them, or neither."""
    if augment is None:
        return None, None
    import keras

    if isinstance(augment, keras.layers.Layer):
        return None, augment
    if isinstance(augment, Sequence) and not isinstance(augment, str):
        return None, keras.Sequential(list(augment), name="augment")
    if callable(augment):
        return augment, None
    raise InvalidArgumentError(
        f"augment={augment!r}: give a Keras layer, a list of Keras preprocessing layers (run on "
        "whole batches) or a function of one sample made of TensorFlow ops (run on each sample "
        "before batching, e.g. tf.image.random_flip_left_right)."
    )


def dicom_dataset(source, labels=None, **options):
    """A ``tf.data.Dataset`` of model-ready batches: ``model.fit(ds)`` works. Options: DicomDataset.

    source: a folder, a list of files (or series folders), or a labels CSV ``path,label[,patient]``
    (zoo.data.labels). labels: a list, a {path: label} mapping or a labels CSV. The metadata
    (skip ``report``, kept ``items``/``labels``, decode counts) is on the dataset's ``.dicom``
    attribute, a DicomDataset; it is not carried over by ``ds.map(...)`` and the like.
    """
    built = DicomDataset(source, labels, **options)
    dataset = built.dataset
    dataset.dicom = built
    return dataset
