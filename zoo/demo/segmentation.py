"""``zoo demo segmentation``: lesion segmentation end to end, on synthetic CT written to disk.

1. data: seeded CT volumes with hyperdense lesions of known contrast
   (``zoo.data.synthetic_dicom.lesion_ct``), written as DICOM series with a DICOM-SEG each and
   as NIfTI image + label map (``nifti/<split>/images``, ``nifti/<split>/masks``: the layout
   ``zoo evaluate`` reads), then read back only through ``zoo.load_series``, ``zoo.read_mask`` and
   ``zoo.read_nifti`` (training and validation cases from DICOM + SEG, test cases from NIfTI),
   with a check that every round trip is exact;
2. training: a 3D U-Net whose encoder is the first three stages of ``simple_cnn_3d`` (simple_cnn
   in 3D), trained by ``zoo.finetune(task="segmentation")`` on foreground-oversampled patches
   (``zoo.data.seg_dataset.segmentation_dataset``), twice with the same recipe: from random
   weights, and with the encoder inflated from the shipped ``simple_cnn.phantom`` checkpoint
   (``simple_cnn_3d.phantom_inflated``; ImageNet weights cannot be downloaded here);
3. evaluation: whole volumes by sliding window (``zoo.infer.segment``), Dice and HD95 in mm
   (``zoo.metrics.segmentation_report``) on the validation and test cases, a figure of one test
   slice with both predictions, and ``summary.json``; each trained model is also saved taking
   HU (``models/<run>.keras``, the window inside: ``zoo.data.windows.with_hu_input``), so
   ``zoo evaluate models/inflated_encoder.keras data/nifti/test`` scores the test cases again.

Everything is written into one folder claimed through ``zoo.outputs``: an earlier demo folder
is replaced only with ``overwrite`` (``--overwrite``), anything else is refused. With
``deterministic(seed)`` every number repeats exactly for the same seed (timings aside: they
sit under ``seconds``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SPACING = (2.0, 1.0, 1.0)  # (slice, row, column) mm: thick slices, as in most CT
WINDOW = "abdomen_soft_tissue"  # HU -> [0, 255] grey values, the phantom checkpoint's input range
ENCODER = "simple_cnn_3d"
RUNS = {"from scratch": None, "inflated encoder": "phantom_inflated"}
AUGMENT = ("flip", "rot90")  # exact for image and mask, and cheap
LEARNING_RATE = 2e-3
# Instance norm in the decoder: BatchNorm's moving statistics (momentum 0.99) lag far behind the
# weights over a hundred steps, and the validation and test passes run in inference mode.
DECODER_NORM = "instance"
WRITER = "zoo demo segmentation"
OUT_NAMES = ("data", "runs", "models", "segmentation.png", "summary.json")


@dataclass(frozen=True)
class Size:
    """How big the demo is: cases per split, volume and patch shapes (Z, Y, X), training length."""

    train: int
    val: int
    test: int
    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    epochs: int
    samples_per_case: int
    batch_size: int
    encoder_depth: int
    decoder_filters: tuple[int, ...]


SIZES = {
    # about 2 minutes on 2 CPU cores: 2 x 128 steps of 4 patches (docs/benchmarks.md,
    # bench_segmentation, has the Dice of 3 seeds)
    "default": Size(train=8, val=2, test=4, shape=(32, 64, 64), patch=(16, 32, 32), epochs=8,
                    samples_per_case=16, batch_size=4, encoder_depth=3,
                    decoder_filters=(48, 32, 16)),
    # every step once, in seconds: for tests
    "tiny": Size(train=2, val=1, test=1, shape=(16, 32, 32), patch=(16, 16, 16), epochs=1,
                 samples_per_case=2, batch_size=2, encoder_depth=2, decoder_filters=(8, 4)),
}


@dataclass
class Case:
    """One CT: where its files are, and (once read back) its grey image, mask and spacing."""

    name: str
    split: str
    series: Path
    seg: Path
    image_nii: Path
    mask_nii: Path
    image: np.ndarray | None = field(default=None, repr=False)  # (Z, Y, X, 1) in [0, 255]
    mask: np.ndarray | None = field(default=None, repr=False)  # (Z, Y, X) 0/1
    spacing: tuple[float, float, float] = SPACING


def _splits(size: Size) -> list[str]:
    return ["train"] * size.train + ["val"] * size.val + ["test"] * size.test


def write_cases(root: Path, size: Size, seed: int) -> tuple[list[Case], dict]:
    """Write every case as a DICOM series + DICOM-SEG and as NIfTI image + label map.

    Returns the cases (paths only) and the generated arrays by name, kept only to check the
    round trips; the demo reads its data back from the files.
    """
    import zoo
    from zoo.data.synthetic_dicom import lesion_ct, write_ct_series

    cases, truth = [], {}
    for i, split in enumerate(_splits(size)):
        name = f"case_{i:02d}"
        hu, labels = lesion_ct(size.shape, SPACING, seed=(seed, i))
        case = Case(name, split, root / "dicom" / name, root / "dicom" / f"{name}_seg.dcm",
                    root / "nifti" / split / "images" / f"{name}.nii.gz",
                    root / "nifti" / split / "masks" / f"{name}.nii.gz")
        write_ct_series(case.series, volume=hu, pixel_spacing=SPACING[1:],
                        slice_spacing=SPACING[0], seed=i)
        volume = zoo.load_series(case.series)
        zoo.write_dicom_seg(labels, volume, case.seg, segment_labels=["lesion"])
        zoo.write_nifti(volume.array, volume, case.image_nii)
        zoo.write_nifti(labels, volume, case.mask_nii)
        cases.append(case)
        truth[name] = (hu, labels)
    return cases, truth


def _grey(hu: np.ndarray) -> np.ndarray:
    from zoo.data.windows import window

    return (window(hu, WINDOW) * np.float32(255.0))[..., None]


def read_cases(cases: list[Case], truth: dict) -> dict:
    """Read every case back through the zoo's readers; fill in image, mask and spacing.

    Training and validation cases come from DICOM + SEG, test cases from NIfTI; both forms of
    every case are read and compared with what was generated. Returns the exactness checks.
    """
    import zoo

    exact = {"dicom_hu": True, "dicom_seg": True, "nifti_image": True, "nifti_mask": True}
    for case in cases:
        hu, labels = truth[case.name]
        series = zoo.load_series(case.series)
        seg = zoo.read_mask(case.seg, reference=series).array
        nifti = zoo.read_nifti(case.image_nii)
        nifti_mask = zoo.read_mask(case.mask_nii, reference=nifti).array
        exact["dicom_hu"] &= bool(np.array_equal(series.array, hu))
        exact["dicom_seg"] &= bool(np.array_equal(seg, labels))
        exact["nifti_image"] &= bool(np.array_equal(nifti.array, hu)) and np.allclose(
            nifti.spacing, series.spacing)
        exact["nifti_mask"] &= bool(np.array_equal(nifti_mask, labels))
        volume, mask = (nifti, nifti_mask) if case.split == "test" else (series, seg)
        case.image, case.mask = _grey(volume.array), np.asarray(mask, np.int32)
        case.spacing = tuple(float(s) for s in volume.spacing)
    return exact


def _tiles(cases: list[Case], patch) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping patches covering each volume (the validation batches: fixed every epoch)."""
    images, masks = [], []
    for case in cases:
        starts = [range(0, n - p + 1, p) for n, p in zip(case.mask.shape, patch)]
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    window = (slice(z, z + patch[0]), slice(y, y + patch[1]),
                              slice(x, x + patch[2]))
                    images.append(case.image[window])
                    masks.append(case.mask[window])
    return np.stack(images), np.stack(masks)


def train_run(weights, cases: list[Case], size: Size, seed: int, out: Path):
    """One U-Net trained by zoo.finetune on foreground-oversampled patches: every layer from the
    start (stage 2 only), the encoder's BatchNorm statistics re-estimated, the weights of the
    best validation loss (Dice + cross-entropy on fixed tiles of the validation volumes) kept."""
    import keras
    import tensorflow as tf

    import zoo
    from zoo.data.seg_dataset import segmentation_dataset

    keras.utils.set_random_seed(seed)  # the same decoder start for both runs' recipe
    model = zoo.load("unet3d", input_shape=size.patch, in_chans=1, num_classes=2,
                     classifier_activation="softmax", encoder=ENCODER, encoder_weights=weights,
                     encoder_depth=size.encoder_depth, decoder_filters=size.decoder_filters,
                     norm=DECODER_NORM)
    train = [(c.image, c.mask) for c in cases if c.split == "train"]
    stream = segmentation_dataset(train, "patch", patch_size=size.patch, fg_fraction=0.5,
                                  augment=AUGMENT, batch_size=size.batch_size,
                                  samples_per_case=size.samples_per_case, seed=seed,
                                  num_classes=2)
    val = tf.data.Dataset.from_tensor_slices(
        _tiles([c for c in cases if c.split == "val"], size.patch)).batch(size.batch_size)
    return zoo.finetune(model, stream, val, task="segmentation", num_classes=2,
                        loss="dice_ce", epochs=(0, size.epochs),
                        learning_rate=(LEARNING_RATE, LEARNING_RATE), unfreeze_batchnorm=True,
                        augment=False, patience=size.epochs, seed=seed,
                        out_dir=out, verbose=0)


def score(model, cases: list[Case], patch) -> tuple[dict, dict]:
    """(segmentation_report of the cases' whole volumes, predicted label maps by name)."""
    from zoo.infer.segment import segment
    from zoo.metrics import segmentation_report

    predicted = {c.name: segment(model, c.image, roi=patch, overlap=0.5).labels for c in cases}
    report = segmentation_report([(c.mask, predicted[c.name], c.spacing) for c in cases], 2,
                                 names=[c.name for c in cases], n_boot=200)
    return report, predicted


def _means(report: dict) -> dict:
    row = report["classes"][1]
    return {"dice": row["dice"]["value"], "dice_ci": [row["dice"]["low"], row["dice"]["high"]],
            "hd95_mm": row["hd95_mm"]["value"], "hd95_cases": row["hd95_mm"]["n"],
            "cases": report["n_cases"]}


def _evaluate(result, cases: list[Case], patch) -> tuple[dict, dict]:
    """A run's numbers (whole-volume validation and test, training summary) and test maps."""
    val_report, _ = score(result.model, [c for c in cases if c.split == "val"], patch)
    test_report, predicted = score(result.model, [c for c in cases if c.split == "test"], patch)
    numbers = {"val": _means(val_report), "test": _means(test_report),
               "best_epoch": result.best_epoch, "best_val_loss": result.best_value,
               "test_cases": test_report["cases"]}
    return numbers, predicted


def _figure(cases: list[Case], predicted: dict, path: Path, seed: int) -> dict:
    """The test slice with the most lesion voxels, both runs' outlines on it."""
    from zoo.figures import segmentation_figure

    test = [c for c in cases if c.split == "test"]
    case = max(test, key=lambda c: int(c.mask.sum(axis=(1, 2)).max()))
    z = int(case.mask.sum(axis=(1, 2)).argmax())
    segmentation_figure(case.image[z], case.mask[z],
                        {name: maps[case.name][z] for name, maps in predicted.items()}, path,
                        title=f"zoo demo segmentation (seed {seed}): {case.name}, slice {z}")
    return {"case": case.name, "slice": z}


def save_hu_model(model, path: Path) -> Path:
    """``model`` behind the demo's window as a model of one-channel HU input, saved as .keras."""
    from zoo.data.windows import with_hu_input

    path.parent.mkdir(parents=True, exist_ok=True)
    with_hu_input(model, (WINDOW,), name=f"{model.name}_hu").save(path)
    return path


def _report(name: str, numbers: dict, seconds: float) -> None:
    val, test = numbers["val"], numbers["test"]
    print(f"{name:>16}: validation Dice {val['dice']:.3f}, test Dice {test['dice']:.3f} "
          f"(95% CI {test['dice_ci'][0]:.3f}-{test['dice_ci'][1]:.3f}), test HD95 "
          f"{test['hd95_mm']:.1f} mm; best epoch {numbers['best_epoch'] + 1} ({seconds:.0f} s)")


def _data_step(out: Path, size: Size, seed: int, seconds: dict) -> tuple[list[Case], dict]:
    t = time.perf_counter()
    cases, truth = write_cases(out / "data", size, seed)
    seconds["write"] = time.perf_counter() - t
    t = time.perf_counter()
    exact = read_cases(cases, truth)
    seconds["read"] = time.perf_counter() - t
    lesions = float(np.mean([c.mask.mean() for c in cases]))
    print(f"data: {len(cases)} CT volumes {size.shape} at {SPACING} mm with lesions "
          f"({100 * lesions:.2f}% of voxels), written as DICOM + DICOM-SEG and NIfTI in "
          f"{seconds['write']:.0f} s; read back in {seconds['read']:.0f} s, round trips "
          + ("exact" if all(exact.values()) else f"NOT exact: {exact}"))
    return cases, exact


def run_segmentation(out_dir="demo_segmentation", seed: int = 0, overwrite: bool = False,
                     size: str = "default") -> dict:
    """The segmentation demo (module docstring); prints what each step shows.

    Args:
        out_dir: the demo's folder (data, runs, figure, summary.json); an earlier demo folder is
            replaced only with ``overwrite``.
        seed: the data, the patches and the training; the same seed repeats every number.
        overwrite: replace an earlier demo's folder.
        size: "default" (the demo) or "tiny" (every step once, for tests).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        OutputError: ``out_dir`` exists and is not an earlier demo folder ``overwrite`` allows
            replacing. UnknownNameError: an unknown ``size``.
    """
    from zoo.errors import UnknownNameError
    from zoo.outputs import claim_dir, finish_dir
    from zoo.train.finetune import deterministic

    if size not in SIZES:
        raise UnknownNameError("segmentation demo size", size, SIZES, argument="size")
    t0, seconds, dims = time.perf_counter(), {}, SIZES[size]
    out = claim_dir(out_dir, writer=WRITER, overwrite=overwrite, names=OUT_NAMES)
    deterministic(seed)  # every number below repeats exactly for the same seed
    cases, exact = _data_step(out, dims, seed, seconds)
    runs, predicted = {}, {}
    for name, weights in RUNS.items():
        t = time.perf_counter()
        result = train_run(weights, cases, dims, seed, out / "runs" / name.replace(" ", "_"))
        runs[name], predicted[name] = _evaluate(result, cases, dims.patch)
        save_hu_model(result.model, out / "models" / f"{name.replace(' ', '_')}.keras")
        seconds[name] = time.perf_counter() - t
        _report(name, runs[name], seconds[name])
    figure = _figure(cases, predicted, out / "segmentation.png", seed)
    seconds["total"] = time.perf_counter() - t0
    summary = {"seed": seed, "size": size, "settings": asdict(dims), "spacing_mm": SPACING,
               "window": WINDOW, "encoder": ENCODER, "encoder_weights": RUNS, "io_exact": exact,
               "runs": runs, "figure": figure, "seconds": {k: round(v, 1)
                                                            for k, v in seconds.items()}}
    (out / "summary.json").write_text(json.dumps(_plain(summary), indent=2))
    finish_dir(out, writer=WRITER)
    print(f"figure {out / 'segmentation.png'}, summary {out / 'summary.json'}; done in "
          f"{seconds['total']:.0f} s")
    print(f"the test cases again, from their NIfTI files in HU: zoo evaluate "
          f"{out / 'models' / 'inflated_encoder.keras'} {out / 'data' / 'nifti' / 'test'}")
    return summary


def _plain(value):
    """JSON-ready: numpy scalars as Python numbers, NaN (an empty mask's HD95) as null, paths as
    text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value) if isinstance(value, Path) else value
