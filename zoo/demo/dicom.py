"""The DICOM step of ``zoo demo``: a synthetic CT series on disk -> volume -> model batches."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path


def demo_step(out_dir=None, checkpoint: str = "simple_cnn.phantom") -> dict:
    """Write a shuffled, tilted CT series with one slice missing, stack it, and feed
    ``checkpoint``'s contract.

    Returns what happened (numbers only, no PHI) for the demo's printout.
    """
    from zoo.data.pipeline import dicom_dataset
    from zoo.data.series import SeriesWarning, load_series
    from zoo.data.synthetic_dicom import write_ct_series

    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="zoo_dicom_demo_"))
    t = time.perf_counter()
    series = write_ct_series(
        root / "series", n_slices=12, size=64, tilt_deg=15, missing=(6,), compression="rle"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeriesWarning)
        volume = load_series(root / "series")
    data = dicom_dataset(
        root / "series", model=checkpoint, batch_size=8, cache_dir=root / "cache", shuffle=False
    )
    batch = next(iter(data))
    result = {
        "files": len(series.paths),
        "volume_shape": list(volume.array.shape),
        "spacing_mm": [round(v, 3) for v in volume.spacing],
        "gaps": volume.report.gaps,
        "hu_range": [float(volume.array.min()), float(volume.array.max())],
        "batch_shape": list(batch.shape),
        "batch_range": [float(batch.numpy().min()), float(batch.numpy().max())],
        "seconds": round(time.perf_counter() - t, 2),
    }
    print(
        f"DICOM: {result['files']} RLE slices (shuffled, tilted 15 deg, 1 missing) -> volume "
        f"{result['volume_shape']} at {result['spacing_mm']} mm, gap reported at {result['gaps']}; "
        f"batches {result['batch_shape']} in {result['batch_range']} for {checkpoint}"
    )
    return result
