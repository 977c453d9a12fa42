"""One exception family for the whole zoo.

Every message names the input, the cause and the fix, so a user can act on it
without reading a traceback from deep inside TensorFlow.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """Base class of every error the zoo raises on purpose."""


class UnknownModelError(ZooError, KeyError):
    """A model, tag or weight name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(ZooError, ValueError):
    """An argument of a public function is out of its domain."""


class InputShapeError(InvalidArgumentError):
    """An input shape the architecture cannot take."""


class CardError(ZooError, ValueError):
    """A weight card that does not parse or misses a required field."""


class FetchError(ZooError, OSError):
    """A weights file that could not be downloaded or found."""


class ChecksumError(FetchError):
    """A file whose bytes do not match the hash in its card."""


class OfflineError(FetchError):
    """ZOO_OFFLINE=1 is set and the file is not in the cache."""


class WeightsError(ZooError, ValueError):
    """A weights file that does not fit the model it is loaded into."""


class DataError(ZooError, ValueError):
    """Input data (an image, a volume, a DICOM file) that cannot be used."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


# --- reading DICOM files and series (zoo.data) -------------------------------------------------
# Messages name the file and the tag, never a patient's name, ID or date.


class DicomError(DataError):
    """A DICOM file (or series) that cannot be turned into pixels."""


class NotDicomError(DicomError):
    """A file that is not DICOM at all (no 'DICM' marker and no plausible raw data set)."""


class MissingPixelDataError(DicomError):
    """A DICOM object without an image: SR, RTSTRUCT, RTPLAN, DICOMDIR, waveform, ..."""


class DecoderMissingError(DicomError):
    """A transfer syntax with no installed decoder; the message names the package to install."""


class DicomDecodeError(DicomError):
    """Pixel data that is truncated, corrupt or rejected by every installed decoder."""


class SeriesError(DicomError):
    """Slices that cannot be stacked into one volume (mixed series, sizes or orientations)."""


# --- training at scale and export (zoo.train, zoo.export) ----------------------------------


class StrategyError(ZooError, RuntimeError):
    """A tf.distribute strategy that cannot be set up here (no cluster, no TPU, missing devices)."""


class PrecisionError(ZooError, RuntimeError):
    """A precision the device cannot run natively (bf16 without native support, fp16 on a CPU)."""


class ExportError(ZooError, RuntimeError):
    """A model not exportable in the asked format (unserializable layer, missing converter)."""


# --- optional dependencies and model graphs the zoo cannot analyse ----------------------------


class OptionalDependencyError(ZooError, ImportError):
    """A feature needs a package from an optional extra that is not installed."""


class UnsupportedLayerError(ZooError, TypeError):
    """A layer the analysis (e.g. receptive_field) has no rule for."""


# --- writing outputs (zoo.outputs: export, finetune runs, converted images) -------------------


class OutputError(ZooError, OSError):
    """An output path the zoo will not write: a user's files there, a dangerous path, no space."""


# --- explanations (zoo explain) ------------------------------------------------------------------


class RandomWeightsError(InvalidArgumentError):
    """An explanation asked of a network with random weights (an architecture name only)."""


# --- DICOM values and series geometry (zoo.data; issue 12) --------------------------------------


class DicomValueError(DicomError):
    """A DICOM tag whose value cannot describe a real image: non-positive PixelSpacing, degenerate
    ImageOrientationPatient, a rescale that makes pixels non-finite. The message names the tag."""


class VolumeSizeError(SeriesError):
    """A resampled volume that would be absurdly large (zoo.data.series.MAX_VOXELS)."""


class LabelsError(DataError):
    """A labels CSV (path,label[,patient]) that cannot be used; names file, line and fix."""

# --- the weights cache (zoo.hub) ---------------------------------------------------------------


class CacheWriteError(FetchError):
    """The weights cache (ZOO_HOME) cannot be written: read-only, full, or not a folder."""

# --- registries and private Keras API (zoo.registry, zoo._keras_compat; issue 13) -------------


class UnknownNameError(UnknownModelError, InvalidArgumentError):
    """A name no registry of its kind holds: a model, a MIL pooling, an SSL task, a sampler, ...

    One type for every registry (zoo.registry.Registry). It is still an UnknownModelError and an
    InvalidArgumentError (so a KeyError and a ValueError), the types these lookups raised before.
    """

    def __init__(self, kind: str, name, choices: Iterable[str] = (), hint: str = "", *,
                 argument: str | None = None, show_choices: bool = True):
        self.kind, self.name, self.choices = kind, name, tuple(choices)
        head = f"{argument}={name!r}: unknown {kind}." if argument else f"Unknown {kind} {name!r}."
        listed = ", ".join(map(str, self.choices)) or "(none registered)"
        message = head + did_you_mean(str(name), self.choices)
        message += f" Use one of {listed}." if show_choices else ""
        super().__init__(message + (f" {hint}" if hint else ""))


class KerasCompatError(ZooError, RuntimeError):
    """The installed Keras no longer has the private API zoo._keras_compat relies on."""

# --- inference engines (zoo.infer; issue 15) ------------------------------------------------------


class AgreementError(ZooError, RuntimeError):
    """An engine/precision whose outputs miss the agreement targets against the fp32 Keras model.

    ``agreement`` holds the measured numbers, ``outputs`` the engine's outputs that missed them.
    """

    def __init__(self, message: str, agreement=None, outputs=None):
        super().__init__(message)
        self.agreement, self.outputs = agreement, outputs

# --- the training engine and its checkpoints (zoo.train.engine; issue 14) ---------------------


class ResumeError(ZooError, RuntimeError):
    """A run folder that cannot be resumed: its checkpoint is unreadable or for other models."""
