"""``zoo demo``: the whole path offline, on embedded synthetic data; every demo step lives here.

1. transfer (``zoo.demo.transfer``): the zoo's own phantom checkpoint, loaded through the
   registry (sha256 verified), fine-tuned with ``zoo.finetune`` on a few labels of a harder task,
   against the same network trained from scratch; exported with ``zoo.export`` as a SavedModel;
2. DICOM (``zoo.demo.dicom``): a synthetic CT series (shuffled, tilted, one slice missing)
   stacked and fed to a model;
3. weak labels (``zoo.demo.mil``): a MIL head trained from image labels only, and where it points;
4. self-supervision (``zoo.demo.ssl``): a shipped self-supervised encoder against random
   initialisation.

``zoo demo segmentation`` (``zoo.demo.segmentation.run_segmentation``) is a demo of its own:
synthetic CT with lesions written as DICOM + DICOM-SEG and NIfTI, read back, a 3D U-Net trained
from scratch and with an encoder inflated from the phantom checkpoint, Dice and HD95 out.

The top of the layer order: demos may use the ``zoo`` facade, as a user would; no library
package imports this one. Importing it is light (each step imports TensorFlow when it runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from zoo.demo.transfer import CHECKPOINT, SOURCE_TASK, TARGET_TASK, transfer_data, transfer_step

__all__ = ["CHECKPOINT", "SOURCE_TASK", "TARGET_TASK", "run", "transfer_data", "transfer_step"]


def run(out_dir: str | os.PathLike = "demo_out", n_labelled: int = 80, epochs: int = 12,
        seed: int = 0) -> dict:
    """The four steps in order, printing what each shows; returns their numbers."""
    from zoo.demo import dicom, mil, ssl
    from zoo.train.finetune import deterministic

    t0 = time.time()
    deterministic(seed)  # every number printed below repeats exactly for the same seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("== 1. transfer learning from the zoo's own checkpoint")
    result = transfer_step(out, n_labelled, epochs, seed)
    result.pop("model")
    print("== 2. DICOM: a CT series to model-ready batches")
    result["dicom"] = dicom.demo_step(out / "dicom")
    print("== 3. weak labels: a MIL head trained from image labels only")
    result["mil"] = mil.demo_step(out)
    print("== 4. self-supervised pretraining: a shipped encoder against random initialisation")
    r = result["ssl"] = ssl.demo_step()
    print(f"self-supervised {r['checkpoint']}: linear probe on {r['labelled_images']} labels "
          f"{r['ssl_accuracy']:.3f} vs random init {r['random_init_accuracy']:.3f} "
          f"({r['seconds']} s)")
    print(f"done in {time.time() - t0:.0f} s")
    return result
