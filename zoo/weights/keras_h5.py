"""Keras' own weight files: legacy ``.h5`` (keras.applications) and Keras 3 ``.weights.h5``.

Both are loaded by Keras itself: a legacy file by layer order (its layer names come from
Keras 2 and do not all survive in Keras 3: DenseNet's ``conv1/conv`` is ``conv1_conv``), a
``.weights.h5`` file by the model's structure.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from zoo.errors import WeightsError
from zoo.weights import register_format
from zoo.weights.base import FileFacts, WeightsFormat


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(
            f"weights file {path} is not a readable HDF5 file ({e}); "
            "re-download it or point pretrained= at a .h5 / .weights.h5 file."
        ) from None


def _layer_group(f):
    """The group holding ``layer_names`` (a whole-model legacy file nests it in model_weights)."""
    return f["model_weights"] if "model_weights" in f else f


def sniff(path: Path) -> str:
    """``keras-legacy-h5`` when the file lists its ``layer_names``, else ``keras-weights-h5``."""
    with _open(path) as f:
        return "keras-legacy-h5" if "layer_names" in _layer_group(f).attrs else "keras-weights-h5"


def legacy_first_chans(path: Path) -> int | None:
    """Input channels of the first kernel of a legacy file (its layers are listed in order)."""
    with _open(path) as f:
        group = _layer_group(f)
        for name in group.attrs.get("layer_names", []):
            layer = group[_text(name)]
            weights = layer.attrs.get("weight_names", [])
            if len(weights):
                shape = layer[_text(weights[0])].shape
                return int(shape[-2]) if len(shape) >= 3 else None
    return None


def count_arrays(path: Path) -> int:
    """How many arrays (variables) an HDF5 weights file holds."""
    import h5py

    found = []
    with _open(path) as f:
        f.visititems(lambda _, obj: found.append(1) if isinstance(obj, h5py.Dataset) else None)
    return len(found)


def load_with_keras(model, path: Path, fmt: str) -> None:
    """``model.load_weights`` with one WeightsError instead of a screenful of Keras warnings.

    Nothing is written beside the user's file: a ``.weights.h5`` file under another name is
    reached through a symlink in a private temporary folder (Keras dispatches on the suffix).
    Keras' per-layer warnings are shown only when the load succeeds.
    """
    import tempfile

    with contextlib.ExitStack() as stack:
        target = Path(path)
        if fmt == "keras-weights-h5" and not target.name.endswith(".weights.h5"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-weights-")))
            link = folder / "model.weights.h5"
            try:
                os.symlink(target.resolve(), link)
            except OSError:  # no symlinks on this file system: read a private copy
                import shutil

                shutil.copyfile(target, link)
            target = link
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        try:
            model.load_weights(str(target))
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise WeightsError(
                f"weights file {path} does not fit {model.name} as built "
                f"({str(e).splitlines()[0]}). "
                f"Use a file saved from {model.name} with the same options, or load the "
                "architecture it was saved from."
            ) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@register_format("keras-legacy-h5")
class KerasLegacyH5(WeightsFormat):
    """keras.applications' ImageNet files: HDF5 listing ``layer_names``, loaded by layer order."""

    def inspect(self, path):
        return FileFacts(self.name, in_chans=legacy_first_chans(path))

    def load_into(self, model, path, card=None, *, build=None):
        load_with_keras(model, path, self.name)


@register_format("keras-weights-h5")
class KerasWeightsH5(WeightsFormat):
    """Keras 3 ``save_weights`` files (the zoo's own and self-supervised checkpoints)."""

    def inspect(self, path):
        return FileFacts(self.name, arrays=count_arrays(path))

    def load_into(self, model, path, card=None, *, build=None):
        load_with_keras(model, path, self.name)
