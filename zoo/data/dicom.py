"""Read one DICOM file into float32 pixels in physical units, plus the metadata a model needs.

pydicom 3 parses; its decoder registry (pylibjpeg-libjpeg / -openjpeg / -rle, gdcm when
installed) decompresses. On top of pydicom this module makes every image the same shape,
``(frames, rows, columns, channels)`` float32, applies the Modality LUT or rescale (per frame
for enhanced multi-frame objects, so CT comes out in Hounsfield units), inverts MONOCHROME1,
turns palette and YBR colour into RGB, and turns every failure into a ``DicomError`` that
names the file and the tag, never a patient's name, ID or date.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from zoo.errors import (
    DecoderMissingError,
    DicomDecodeError,
    DicomError,
    DicomValueError,
    MissingPixelDataError,
    NotDicomError,
)

READER_VERSION = 2  # bump when decoded values change, so on-disk caches are rebuilt
MAX_DECODED_BYTES = 2**31  # a header claiming more than this is treated as corrupt, not allocated

# pip packages that decode each compressed transfer syntax (pydicom lists gdcm/pillow too).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)
"""Let these through; catch everything else, including BaseExceptions from native decoders
(pylibjpeg-rle is Rust: a panic on corrupt data surfaces as pyo3's PanicException)."""


@dataclass(frozen=True)
class DicomMeta:
    """What a model needs to know about an image, and nothing that identifies a patient.

    Spacings are in mm, (row, column) for ``pixel_spacing``; positions and orientations are
    patient coordinates (LPS). ``series_key`` is a short hash of the SeriesInstanceUID, enough
    to group slices without carrying the UID itself.
    """

    path: str
    modality: str
    sop_class: str
    transfer_syntax: str
    photometric: str
    rows: int
    columns: int
    frames: int
    channels: int
    bits_stored: int
    units: str
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    image_position: tuple[float, float, float] | None = None
    image_orientation: tuple[float, ...] | None = None
    frame_positions: tuple[tuple[float, float, float], ...] | None = None
    window: tuple[float, float] | None = None
    instance_number: int | None = None
    series_key: str = ""
    value_range: tuple[float, float] | None = None  # the range the pixels can take (set on decode)
    invalid: tuple[str, ...] = ()  # unusable geometry tags (set to None above) and why; no values

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DicomImage:
    """Decoded pixels, ``(frames, rows, columns, channels)`` float32, and their metadata."""

    pixels: np.ndarray
    meta: DicomMeta


def _where(path) -> str:
    return f"DICOM file {os.fspath(path)}"


def _tag_name(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else keyword


@functools.cache
def _tag_of(keyword: str):
    """The tag of a keyword, looked up once (pydicom converts a keyword on every access)."""
    from pydicom.tag import Tag

    return Tag(keyword)


def _get(ds, keyword: str, cast: Callable, path, default=None):
    """``cast(ds.keyword)``, or ``default`` when absent; a malformed value names the tag."""
    try:
        tag = _tag_of(keyword)
        if tag not in ds:
            return default
        value = ds[tag].value
        if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
            return default
        return cast(value)
    except Exception as e:  # a broken value in any of the many shapes pydicom can raise
        raise DicomError(
            f"{_where(path)}: tag {_tag_name(keyword)} has a malformed value ({type(e).__name__}); "
            "fix or remove the tag (e.g. with pydicom or dcmodify) and read the file again."
        ) from None


def _floats(n: int | None = None) -> Callable:
    def cast(value):
        values = [
            float(v)
            for v in (
                value
                if isinstance(value, Sequence) and not isinstance(value, str | bytes)
                else [value]
            )
        ]
        if n is not None and len(values) < n:
            raise ValueError(f"expected {n} values")
        if not all(np.isfinite(values)):
            raise ValueError("not finite")
        return tuple(values[:n] if n else values)
    return cast


def _first_float(value) -> float:
    return _floats()(value)[0]


def _looks_like_raw_dataset(path) -> bool:
    """No preamble/'DICM' but a group 0002/0008 element first (old ACR-NEMA style)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        return False
    return int.from_bytes(head[:2], "little") in (0x0002, 0x0008) or int.from_bytes(
        head[:2], "big"
    ) in (0x0002, 0x0008)


class DicomWarning(UserWarning):
    """A problem pydicom reported while reading a file, re-issued without any element value."""


_QUOTED = re.compile(r"""b?'[^'\n]*'?|b?"[^"\n]*"?""")
_TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA", "DT", "TM", "AS", "AE", "UI"}


def scrub(text: str, ds=None) -> str:
    """``text`` without quoted values, and without any text value of ``ds`` (a name, an ID...).

    pydicom's messages quote element values (``Invalid value for VR PN: 'Doe^Jane'``); nothing
    the zoo prints, warns or raises may carry them.
    """
    text = _QUOTED.sub("<value>", str(text))
    if ds is not None:
        values = set()
        with warnings.catch_warnings():  # converting values makes pydicom warn, with the values
            warnings.simplefilter("ignore")
            try:
                for elem in ds.iterall():
                    if elem.VR in _TEXT_VRS and elem.value is not None:
                        items = elem.value if isinstance(elem.value, Sequence) and not isinstance(
                            elem.value, str | bytes) else [elem.value]
                        values |= {str(v).strip() for v in items if len(str(v).strip()) >= 3}
            except Exception:  # a dataset too broken to walk: the quoted values are gone already
                pass
        for value in sorted(values, key=len, reverse=True):
            text = text.replace(value, "<value>")
    return text


def _reissue(path, caught, ds=None) -> None:
    """Re-issue warnings caught reading ``path`` as DicomWarnings, values scrubbed, once each."""
    seen = set()
    for w in caught:
        if issubclass(w.category, DicomWarning):  # the zoo's own: no values by construction
            warnings.warn(w.message, w.category, stacklevel=4)
            continue
        message = str(w.message).strip()
        text = scrub(message, ds).strip().splitlines()[0][:200] if message else ""
        if text and text not in seen:
            seen.add(text)
            warnings.warn(f"{_where(path)}: {text} ({w.category.__name__} while "
                          "reading)", DicomWarning,
                          stacklevel=4)


class _CheckedFile:
    """A binary file that notes the first short read after the preamble.

    pydicom reads an element value with ``read(length)`` and keeps what it gets, so a file cut in
    the middle of an element (or an element whose length runs past the end) parses "fine" and
    the image is silently missing or short. A short read is how a truncated file shows itself.
    """

    def __init__(self, path):
        self._f = open(path, "rb")
        self.name = os.fspath(path)
        self.short: tuple[int, int, int] | None = None

    def read(self, n: int = -1) -> bytes:
        at = self._f.tell()
        data = self._f.read(n)
        # reading a tag (8 bytes) or peeking (1 byte) at the very end is how a file ends normally
        if (self.short is None and n is not None and n > 0 and at >= 132 and len(data) < n
                and (data or n not in (1, 8))):
            self.short = (at, n, len(data))
        return data

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _truncated(path, short):
    where = (f"the file ends inside an element (at byte {short[0]}, {short[2]} of {short[1]} "
             "bytes present)"
             if short else "the file ends before a sequence's delimiter")
    return DicomDecodeError(
        f"{_where(path)} is truncated or corrupt: {where}; an interrupted copy or a corrupt "
        "element length. "
        "Re-export it from the archive (PACS) or copy it again.")


class _ScrubLog:
    """A logging filter for the ``pydicom`` logger: its records quote element values too."""

    def filter(self, record) -> bool:
        record.msg, record.args = scrub(record.getMessage()), ()
        return True


_SCRUB_LOG = _ScrubLog()


def _dcmread(path, stop_before_pixels: bool, force: bool = False):
    import logging

    import pydicom

    logger = logging.getLogger("pydicom")
    if _SCRUB_LOG not in logger.filters:
        logger.addFilter(_SCRUB_LOG)

    with _CheckedFile(path) as fp:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=force)
        if fp.short or any("End of file reached" in str(w.message) for w in caught):
            raise _truncated(path, fp.short)
    _reissue(path, caught, ds)
    return ds


def open_dataset(path, stop_before_pixels: bool = False):
    """Parse ``path`` with pydicom; a file that is not DICOM raises ``NotDicomError``, a truncated
    one ``DicomDecodeError``; pydicom's warnings come back as ``DicomWarning`` without values."""
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if path.is_dir():
        raise DicomError(
            f"{path} is a folder, not a DICOM file; use zoo.data.series.load_series for a series "
            "or list its files."
        )
    if not path.is_file():
        raise DicomError(f"{_where(path)} does not exist; check the path.")
    try:
        try:
            return _dcmread(path, stop_before_pixels)
        except InvalidDicomError:
            if not _looks_like_raw_dataset(path):
                raise NotDicomError(
                    f"{path} is not a DICOM file: no 'DICM' marker after the 128-byte preamble and "
                    "no DICOM data set at its start. Remove it from the input or convert it to "
                    "DICOM."
                ) from None
            return _dcmread(path, stop_before_pixels, force=True)
    except DicomError:
        raise
    except MemoryError:
        raise DicomDecodeError(
            f"{_where(path)} claims an element too large to allocate; the file is corrupt."
        ) from None
    except _FATAL:
        raise
    except BaseException as e:
        raise DicomDecodeError(
            f"{_where(path)} cannot be parsed ({type(e).__name__}: {_short(e)}); the file is "
            "truncated or corrupt. Re-export it from the archive (PACS) or check the transfer."
        ) from None


def _short(e: BaseException) -> str:
    """The first line of an exception's text, values scrubbed (pydicom quotes element values)."""
    text = scrub(str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def transfer_syntax(ds, path):
    """The dataset's transfer syntax; without a meta header, the encoding it was read with."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    uid = _get(meta, "TransferSyntaxUID", lambda v: UID(str(v)), path) if meta is not None else None
    if uid:
        return uid
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        raise DicomError(
            f"{_where(path)} has no TransferSyntaxUID (0002,0010) and its encoding is unknown; add "
            "the file meta header (e.g. dcmconv +fe) and read it again."
        )
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _uid_text(uid) -> str:
    """A UID's name and number, or "an invalid UID": a corrupt UID's text could be anything."""
    if not uid or not uid.is_valid:
        return "an invalid UID"
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _uid_name(uid) -> str:
    return uid.name if uid and uid.is_valid else "invalid UID"


def _sop_class_name(ds, path) -> str:
    from pydicom.uid import UID

    uid = _get(ds, "SOPClassUID", lambda v: UID(str(v)), path)
    if uid is None and getattr(ds, "file_meta", None) is not None:
        uid = _get(ds.file_meta, "MediaStorageSOPClassUID", lambda v: UID(str(v)), path)
    if uid and not uid.is_valid:
        return "invalid UID"  # its text could be anything, a name included
    return (uid.name if uid else "") or "unknown"


def _frame_group_value(ds, frame: int | None, sequence: str, keyword: str, cast, path):
    """A value from the enhanced multi-frame functional groups (per frame first, then shared)."""
    groups = []
    if frame is not None:
        per = _get(ds, "PerFrameFunctionalGroupsSequence", list, path, [])
        if frame < len(per):
            groups.append(per[frame])
    groups += _get(ds, "SharedFunctionalGroupsSequence", list, path, [])[:1]
    for group in groups:
        items = _get(group, sequence, list, path, [])
        if items:
            value = _get(items[0], keyword, cast, path)
            if value is not None:
                return value
    return None


def read_metadata(path) -> DicomMeta:
    """The PHI-free metadata of ``path``, from its header only (pixels are not read)."""
    ds = open_dataset(path, stop_before_pixels=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            meta = _guarded(path, lambda: _metadata(path, ds))
        finally:
            pending = list(caught)
    _reissue(path, pending, ds)
    return meta


def _guarded(path, work: Callable):
    """Run ``work``; a failure not a DicomError becomes a DicomDecodeError naming the file."""
    try:
        return work()
    except DicomError:
        raise
    except MemoryError:
        raise DicomDecodeError(
            f"{_where(path)}: the pixel data does not fit in memory; the header is corrupt or the "
            "image is too large, read fewer frames with frames=[...]."
        ) from None
    except _FATAL:
        raise
    # pydicom raises many types on corrupt headers; never let one escape raw
    except BaseException as e:
        raise DicomDecodeError(
            f"{_where(path)} cannot be read ({type(e).__name__}: {_short(e)}). The file is "
            "truncated or its tags (image tags are group 0028) are inconsistent; re-export it."
        ) from None


_CODE = re.compile(r"[A-Z0-9 _]{0,16}")


def _code(ds, keyword: str, path, default: str = "") -> str:
    """A code string (Modality, PhotometricInterpretation, RescaleType), or "INVALID" when its
    value is not a DICOM code: a corrupt file may hold any text there, a name included."""
    value = _get(ds, keyword, lambda v: str(v).strip(), path, default)
    if _CODE.fullmatch(value):
        return value
    warnings.warn(f"{_where(path)}: {_tag_name(keyword)} is not a valid code string; read as "
                  "'INVALID'.",
                  DicomWarning, stacklevel=3)
    return "INVALID"


def _metadata(path, ds) -> DicomMeta:
    modality = _code(ds, "Modality", path)
    frames = _get(ds, "NumberOfFrames", lambda v: int(v), path, 1) or 1
    spacing, spacing_tag = _get(ds, "PixelSpacing", _floats(2), path), "PixelSpacing"
    if spacing is None:
        spacing = _frame_group_value(ds, 0, "PixelMeasuresSequence", "PixelSpacing", _floats(2),
                                     path)
        spacing_tag = "PixelSpacing (in PixelMeasuresSequence (0028,9110))"
    if spacing is None:
        spacing_tag = "ImagerPixelSpacing"
        spacing = _get(ds, spacing_tag, _floats(2), path)
    thickness = _get(ds, "SliceThickness", _first_float, path)
    thickness = thickness or _frame_group_value(
        ds, 0, "PixelMeasuresSequence", "SliceThickness", _first_float, path
    )
    position = _get(ds, "ImagePositionPatient", _floats(3), path)
    orientation = _get(ds, "ImageOrientationPatient", _floats(6), path)
    orientation = orientation or _frame_group_value(
        ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient", _floats(6), path
    )
    invalid = _check_geometry(path, spacing, spacing_tag, orientation)
    if any(i.startswith(spacing_tag) for i in invalid):
        spacing = None
    if any("ImageOrientationPatient" in i for i in invalid):
        orientation = None
    frame_positions = None
    if frames > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        found = [
            _frame_group_value(
                ds, i, "PlanePositionSequence", "ImagePositionPatient", _floats(3), path
            )
            for i in range(frames)
        ]
        if all(p is not None for p in found):
            frame_positions = tuple(found)
    position = position or (frame_positions[0] if frame_positions else None)
    center = _get(ds, "WindowCenter", _first_float, path)
    width = _get(ds, "WindowWidth", _first_float, path)
    if center is None or width is None:
        center = _frame_group_value(
            ds, 0, "FrameVOILUTSequence", "WindowCenter", _first_float, path
        )
        width = _frame_group_value(ds, 0, "FrameVOILUTSequence", "WindowWidth", _first_float, path)
    photometric = _code(ds, "PhotometricInterpretation", path)
    series_uid = _get(ds, "SeriesInstanceUID", str, path, "")
    has_rescale = "RescaleSlope" in ds or "ModalityLUTSequence" in ds or _frame_group_value(
        ds, 0, "PixelValueTransformationSequence", "RescaleSlope", _first_float, path) is not None
    units = _code(ds, "RescaleType", path)
    if modality == "CT" and has_rescale and units in ("", "US", "HU"):
        units = "HU"
    if photometric == "PALETTE COLOR" or photometric.startswith(("RGB", "YBR")):
        units = "RGB"
    return DicomMeta(
        path=os.fspath(path),
        modality=modality,
        sop_class=_sop_class_name(ds, path),
        transfer_syntax=_uid_name(transfer_syntax(ds, path))
        if getattr(ds, "file_meta", None) is not None or hasattr(
            ds, "original_encoding") else "",
        photometric=photometric,
        rows=_get(ds, "Rows", int, path, 0),
        columns=_get(ds, "Columns", int, path, 0),
        frames=int(frames),
        channels=3 if units == "RGB" else _get(ds, "SamplesPerPixel", int, path, 1),
        bits_stored=_get(ds, "BitsStored", int, path, 0),
        units=units,
        pixel_spacing=spacing,
        slice_thickness=thickness,
        image_position=position,
        image_orientation=orientation,
        frame_positions=frame_positions,
        window=(center, width) if center is not None and width is not None and width > 0 else None,
        instance_number=_get(ds, "InstanceNumber", int, path),
        series_key=hashlib.sha256(series_uid.encode()).hexdigest()[:12] if series_uid else "",
        invalid=invalid,
    )


def _check_geometry(path, spacing, spacing_tag: str, orientation) -> tuple[str, ...]:
    """Unusable geometry tags, each with why: spacing <= 0, zero or parallel orientation vectors.

    A 2D image reads on without them (some CR/DX writers store PixelSpacing 0\\0 for "unknown"),
    with a DicomWarning; ``load_series`` refuses them (``geometry_error``): a volume needs them.
    """
    found = []
    if spacing is not None and min(spacing) <= 0:
        tag = _tag_name(spacing_tag) if " " not in spacing_tag else spacing_tag
        found.append(f"{tag} is {[float(v) for v in spacing]} mm; a pixel spacing must be positive")
    if orientation is not None:
        degenerate = _degenerate(tuple(orientation[:6]))
        if degenerate:
            found.append(f"{_tag_name('ImageOrientationPatient')} is degenerate: {degenerate}")
    for why in found:
        warnings.warn(f"{_where(path)}: {why}; the tag is ignored (a series cannot be stacked "
                      "with it).",
                      DicomWarning, stacklevel=2)
    return tuple(found)


@functools.lru_cache(maxsize=256)
def _degenerate(orientation: tuple[float, ...]) -> str:
    """Why a row/column direction pair cannot be used ("" when it can); once per distinct value
    (every slice of a series has the same), in plain floats (numpy's per-call cost is the most)."""
    row, col = orientation[:3], orientation[3:6]
    norms = math.hypot(*row), math.hypot(*col)
    if min(norms) < 1e-3:
        return "its row or column direction is a zero vector"
    (a, b, c), (d, e, f) = (v / norms[0] for v in row), (v / norms[1] for v in col)
    if math.hypot(b * f - c * e, c * d - a * f, a * e - b * d) < 1e-3:
        return "its row and column directions are parallel"
    return ""


def geometry_error(meta: DicomMeta) -> DicomValueError:
    """The error for an image with unusable geometry tags (``meta.invalid``), for volume readers."""
    return DicomValueError(
        f"{_where(meta.path)}: {'; '.join(meta.invalid)}. Slice spacing and order cannot be "
        "derived from it: "
        "fix the tag (e.g. with dcmodify: positive spacings, two orthogonal unit direction "
        "vectors) or "
        "re-export the file.")


def _decoder(uid, path):
    """pydicom's decoder for ``uid``, or a DecoderMissingError naming what to install."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DecoderMissingError(
            f"{_where(path)} uses transfer syntax {_uid_text(uid)}, which no Python DICOM decoder "
            "supports. Transcode it to an uncompressed syntax first (e.g. `dcmconv +te` from "
            "dcmtk, or `gdcmconv --raw`)."
        ) from None
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(uid), "python-gdcm")
        how = (f"its decoder, pylibjpeg-libjpeg (GPL-3.0), is in the optional `dicom` extra: "
               f'`pip install "medzoo[dicom]"` (or `pip install {package}`)' if "libjpeg" in package
               else f'install one: `pip install {package}` (or `pip install "medzoo[dicom]"`)')
        raise DecoderMissingError(
            f"{_where(path)} uses transfer syntax {_uid_text(uid)} and no decoder for it is "
            "installed; "
            f"{how}. pydicom's own list: {'; '.join(decoder.missing_dependencies) or 'none'}."
        )
    return decoder


def _check_size(ds, path, n_frames: int) -> None:
    rows = _get(ds, "Rows", int, path, 0)
    cols = _get(ds, "Columns", int, path, 0)
    samples = _get(ds, "SamplesPerPixel", int, path, 1)
    bits = _get(ds, "BitsAllocated", int, path, 0)
    if rows <= 0 or cols <= 0 or samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
        raise DicomDecodeError(
            f"{_where(path)}: the image header is invalid (Rows={rows}, Columns={cols}, "
            f"SamplesPerPixel={samples}, BitsAllocated={bits}); tags Rows (0028,0010), Columns "
            "(0028,0011), SamplesPerPixel (0028,0002) and BitsAllocated (0028,0100) must describe "
            "the pixel data. Re-export the file."
        )
    if n_frames < 1 or rows * cols * samples * max(bits // 8, 1) * n_frames > MAX_DECODED_BYTES:
        raise DicomDecodeError(
            f"{_where(path)}: NumberOfFrames (0028,0008)={n_frames} with a {rows}x{cols} image "
            f"would decode to more than {MAX_DECODED_BYTES >> 30} GiB; the header is corrupt, or "
            "read fewer frames with frames=[...]."
        )


def _modality_transform(ds, path, frames: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """(stored values of one frame, frame index) -> physical values (Modality LUT / rescale)."""
    from pydicom.pixels import apply_modality_lut

    if "ModalityLUTSequence" in ds:
        def lut(arr, _frame):  # the LUT indexes by stored value, so it takes the integer array
            return np.asarray(apply_modality_lut(np.asarray(arr), ds), dtype=np.float64)
        return lut
    slope = _get(ds, "RescaleSlope", _first_float, path)
    intercept = _get(ds, "RescaleIntercept", _first_float, path)
    if slope is not None or intercept is not None:
        s, b = (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)
        return functools.partial(_rescale_frame, slope=s, intercept=b)
    if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = [
            (
                _frame_group_value(
                    ds, i, "PixelValueTransformationSequence", "RescaleSlope", _first_float, path
                ),
                _frame_group_value(
                    ds,
                    i,
                    "PixelValueTransformationSequence",
                    "RescaleIntercept",
                    _first_float,
                    path,
                ),
            )
            for i in range(frames)
        ]

        def functional(arr, frame):
            s, b = per_frame[frame]
            return np.asarray(arr, np.float64) * (1.0 if s is None else s) + (
                0.0 if b is None else b
            )

        return functional
    return lambda arr, _frame: np.asarray(arr, np.float64)


def _rescale_frame(arr, _frame, slope: float, intercept: float, out=None) -> np.ndarray:
    return _rescale(arr, slope, intercept, out)


def _exact_in_float32(arr, slope: float, intercept: float) -> bool:
    """Integer stored values of at most 16 bits and an integer slope and intercept small enough
    that every ``arr * slope + intercept`` is an integer below 2**24: exact (and finite) in
    float32."""
    return (arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and float(slope).is_integer()
            and float(intercept).is_integer() and abs(slope) * 65536 + abs(intercept) < 2**24)


def _rescale(arr, slope: float, intercept: float, out=None) -> np.ndarray:
    """``arr * slope + intercept``; in float32 (half the memory traffic) when that is exact
    (``_exact_in_float32``), else in float64. With ``out`` (float32, ``arr``'s shape) the exact
    case is written into it in place, without a temporary."""
    arr = np.asarray(arr)
    if not _exact_in_float32(arr, slope, intercept):
        return np.asarray(arr, np.float64) * slope + intercept
    if out is None:
        out = arr.astype(np.float32)
    else:
        np.copyto(out, arr, casting="unsafe")  # int16 -> float32 is exact
    if slope != 1:
        out *= np.float32(slope)
    if intercept != 0:
        out += np.float32(intercept)
    return out


def _to_rgb(arr: np.ndarray, photometric: str, ds, path) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, convert_color_space

    if photometric == "PALETTE COLOR":
        try:
            return apply_color_lut(arr, ds)
        except Exception as e:
            raise DicomDecodeError(
                f"{_where(path)}: the palette (Red/Green/Blue Palette Color Lookup Table tags, "
                f"(0028,1101)-(0028,1203)) cannot be applied ({_short(e)}); the file's palette is "
                "missing or corrupt."
            ) from None
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return convert_color_space(arr, photometric, "RGB")
    return arr


def read_dicom(
    path, frames: Sequence[int] | None = None, invert_monochrome1: bool = True
) -> DicomImage:
    """Decode ``path`` into ``DicomImage(pixels (F, H, W, C) float32, meta)``.

    Grey images are in physical units: the Modality LUT or RescaleSlope/Intercept is applied
    (per frame in enhanced multi-frame objects), so CT is in HU. MONOCHROME1 is inverted over
    the stored range (``lo + hi - x``) so that bright always means dense. Colour images
    (RGB, YBR_*, palette) come back as RGB in their stored range. ``frames`` picks frames of a
    multi-frame file (0-based); the rest are not decoded.
    """
    ds = open_dataset(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = _guarded(path, lambda: _decode(ds, path, frames, invert_monochrome1))
        finally:
            pending = list(caught)
    _reissue(path, pending, ds)
    return image


def _decode(ds, path, frames, invert_monochrome1) -> DicomImage:
    meta = _metadata(path, ds)
    _check_has_pixels(ds, path, meta)
    uid = transfer_syntax(ds, path)
    _check_size(ds, path, meta.frames)
    decoder = _decoder(uid, path)
    frames = _check_frames(path, meta, frames)
    indices = list(range(meta.frames)) if frames is None else frames
    samples = _get(ds, "SamplesPerPixel", int, path, 1)
    if not uid.is_compressed:
        _check_native_length(ds, path, meta.frames, samples)
    elif "PixelData" in ds:
        _check_encapsulated_frames(ds, path, uid, meta.frames)
    decoded, info = _decode_frames(ds, path, uid, decoder, frames, indices)
    _check_decoded_count(path, uid, meta, indices, samples, decoded)
    flat = decoded[0].reshape(-1) if len(decoded) == 1 else np.concatenate(
        [a.reshape(-1) for a in decoded])
    arr = flat.reshape(len(indices), meta.rows, meta.columns, samples)
    photometric = str(info.get("photometric_interpretation", meta.photometric)).strip()
    if (
        photometric == "PALETTE COLOR"
        or photometric.startswith(("RGB", "YBR"))
        or arr.shape[-1] == 3
    ):
        return _colour_image(ds, path, meta, arr, photometric)
    return _grey_image(ds, path, meta, arr, indices, photometric, invert_monochrome1)


def _check_has_pixels(ds, path, meta) -> None:
    """A MissingPixelDataError for an object without pixel data (a DICOMDIR, a report, ...)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        what = (
            "a DICOMDIR (a media index)"
            if "DirectoryRecordSequence" in ds
            else f"a {meta.sop_class} object"
        )
        raise MissingPixelDataError(
            f"{_where(path)} is {what} without pixel data (no PixelData (7FE0,0010)); it holds no "
            "image. Leave it out of image inputs (a dataset pipeline with on_error='skip' reports "
            "it)."
        )


def _check_frames(path, meta, frames) -> list[int] | None:
    """The requested 0-based frame indices as ints (None: all), each one that exists."""
    if frames is not None:
        frames = [int(f) for f in frames]
        bad = [f for f in frames if not 0 <= f < meta.frames]
        if bad:
            raise DicomError(
                f"{_where(path)} has {meta.frames} frame(s); frames {bad} do not exist (0-based)."
            )
    return frames


def _decode_frames(ds, path, uid, decoder, frames, indices):
    """(decoded arrays, decoder info); a decoder failure becomes a DicomDecodeError with a hint
    (truncated file, corrupt stream, another decoder to install, tags that do not match)."""
    try:
        if frames is None:
            arr, info = decoder.as_array(ds, as_rgb=True)
            decoded = [np.asarray(arr)]
        else:
            pairs = list(decoder.iter_array(ds, indices=indices, as_rgb=True))
            info = pairs[0][1]
            decoded = [np.asarray(a) for a, _ in pairs]
        return decoded, info
    except (MemoryError, DicomError, *_FATAL):
        raise
    except BaseException as e:
        if "less than expected" in str(e):
            hint = "the pixel data is shorter than the header says (a truncated file)"
        elif uid.is_compressed:
            hint = ("the compressed stream is corrupt or uses a variant the installed decoder "
                    "rejects")
        else:
            hint = "the pixel data does not match the image tags (group 0028)"
        extra = (
            " Another decoder may read it: `pip install "
            f"{_DECODER_PACKAGES.get(str(uid), 'python-gdcm')}` or `pip install python-gdcm`."
            if uid.is_compressed
            else " Re-export the file."
        )
        raise DicomDecodeError(
            f"{_where(path)} ({_uid_text(uid)}): {hint} ({type(e).__name__}: "
            f"{_short(e)}).{extra}") from None


def _check_decoded_count(path, uid, meta, indices, samples, decoded) -> None:
    """The decoder gave frames x Rows x Columns x SamplesPerPixel values, else a tag is wrong."""
    want = len(indices) * meta.rows * meta.columns * samples
    got = sum(a.size for a in decoded)
    if got != want:
        raise DicomDecodeError(
            f"{_where(path)} ({_uid_text(uid)}): the decoder returned {got} values, but the "
            "header declares "
            f"{len(indices)} frame(s) x {meta.rows} Rows x {meta.columns} Columns x {samples} "
            "SamplesPerPixel = "
            f"{want}; NumberOfFrames (0028,0008), Rows (0028,0010), Columns (0028,0011) or "
            "SamplesPerPixel "
            "(0028,0002) do not match the pixel data. Fix the tags or re-export the file.")


def _colour_image(ds, path, meta, arr, photometric) -> DicomImage:
    """RGB, YBR or palette colour as float RGB (frames, rows, columns, 3); its value range from
    BitsStored (or the palette's descriptor)."""
    rgb = _to_rgb(arr[..., 0] if photometric == "PALETTE COLOR" else arr, photometric, ds, path)
    out = rgb.astype(np.float32).reshape((len(arr), meta.rows, meta.columns, 3))
    bits = meta.bits_stored or 8
    if photometric == "PALETTE COLOR":
        bits = _get(
            ds, "RedPaletteColorLookupTableDescriptor", lambda v: int(list(v)[2]), path, 16
        )
    return DicomImage(
        np.ascontiguousarray(out), replace(meta, value_range=(0.0, float(2**bits - 1)))
    )


def _grey_image(ds, path, meta, arr, indices, photometric, invert_monochrome1) -> DicomImage:
    """Grey values through the Modality LUT / rescale per frame; the value range is the transform
    of the stored extremes, MONOCHROME1 inverted within it when asked."""
    transform = _modality_transform(ds, path, meta.frames)
    bits = meta.bits_stored or 16
    signed = _get(ds, "PixelRepresentation", int, path, 0) == 1
    extremes = np.array(
        [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1], np.int64
    )
    out = np.empty((len(indices), meta.rows, meta.columns, arr.shape[-1]), np.float32)
    ranges = []
    # a plain integer rescale, exact in float32, is written straight into ``out`` and its values
    # are finite by construction (integers below 2**24), so the scan for inf/NaN is not needed
    exact = isinstance(transform, functools.partial) and _exact_in_float32(
        arr, transform.keywords["slope"], transform.keywords["intercept"])
    with np.errstate(over="ignore", invalid="ignore"):
        for k, f in enumerate(indices):
            if exact:
                transform(arr[k], f, out=out[k])
            else:
                out[k] = transform(arr[k], f)
            ends = np.asarray(transform(extremes, f), np.float64)
            ranges.append((ends.min(), ends.max()))
            if invert_monochrome1 and photometric == "MONOCHROME1":
                np.subtract(ends.min() + ends.max(), out[k], out=out[k])
        # min and max are NaN when any value is, +-inf when any value is: no mask of the image
        finite = ((exact or bool(np.isfinite(out.min()) and np.isfinite(out.max())))
                  and np.isfinite(np.asarray(ranges, np.float32)).all())
    if not finite:
        _not_finite(ds, path)
    value_range = (float(min(r[0] for r in ranges)), float(max(r[1] for r in ranges)))
    return DicomImage(np.ascontiguousarray(out), replace(meta, value_range=value_range))


def _check_native_length(ds, path, frames: int, samples: int) -> None:
    """Uncompressed pixel data must hold exactly the declared frames and samples (plus padding:
    one byte to an even length, or zero bytes shorter than one frame).

    pydicom reads extra bytes as extra frames (with a warning) and the old reshape turned them
    into channels: CT_small with Rows = Columns = 64 became (1, 64, 64, 4).
    """
    from pydicom.pixels.utils import get_expected_length

    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    actual = len(ds[keyword].value or b"")
    rows, cols = _get(ds, "Rows", int, path, 0), _get(ds, "Columns", int, path, 0)
    bits = _get(ds, "BitsAllocated", int, path, 0)
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except Exception:  # tags pydicom's helper needs are missing: the plain product
        expected = -(-frames * rows * cols * samples * bits // 8)
    if actual in (expected, expected + expected % 2):
        return
    frame_bytes = expected // max(frames, 1)
    if expected < actual < expected + frame_bytes and not any(ds[keyword].value[expected:]):
        return  # zero padding after the last frame (pydicom's MR_small_padded): not image data
    effect = ("the extra bytes would be read as extra frames or channels" if actual > expected
              else "the pixel data is short (a truncated file)")
    raise DicomDecodeError(
        f"{_where(path)}: {_tag_name(keyword)} holds {actual} bytes, but NumberOfFrames x Rows "
        "x Columns x "
        f"SamplesPerPixel x BitsAllocated/8 = {frames} x {rows} x {cols} x {samples} x "
        f"{bits}/8 = {expected} "
        f"bytes; {effect}. The file is truncated or corrupt, or its image tags (group 0028) "
        "are wrong: fix "
        "them or re-export the file.")


def _check_encapsulated_frames(ds, path, uid, frames: int) -> None:
    """Compressed pixel data must hold the declared frames: as many as NumberOfFrames in the
    Basic Offset Table (when filled), one fragment per frame for RLE, never fewer fragments.

    pydicom decodes the first NumberOfFrames frames and drops the rest without a word.
    """
    from io import BytesIO

    from pydicom.encaps import parse_basic_offsets, parse_fragments
    from pydicom.uid import RLELossless

    buffer = BytesIO(ds.PixelData)
    offsets = parse_basic_offsets(buffer)
    fragments = parse_fragments(buffer)[0]
    if len(offsets) > 1 and len(offsets) != frames:
        found = f"its Basic Offset Table lists {len(offsets)} frames"
    elif uid == RLELossless and fragments != frames:
        found = f"it holds {fragments} RLE fragments (one per frame)"
    elif fragments < frames:
        found = f"it holds only {fragments} fragments"
    else:
        return
    raise DicomDecodeError(
        f"{_where(path)} ({_uid_text(uid)}): NumberOfFrames (0028,0008) declares {frames} "
        f"frame(s), but {found}. The file is truncated or corrupt, or NumberOfFrames is wrong: fix "
        "the tag or re-export the file."
    )


def _not_finite(ds, path):
    tags = [k for k in ("RescaleSlope", "RescaleIntercept") if k in ds]
    if "ModalityLUTSequence" in ds:
        tags.append("ModalityLUTSequence")
    enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    if not tags and enhanced:
        tags.append("RescaleSlope/RescaleIntercept in PixelValueTransformationSequence (0028,9145)")
    if any(k in ds for k in ("FloatPixelData", "DoubleFloatPixelData")):
        tags.append(next(k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds))
    named = ", ".join(_tag_name(t) if " " not in t else t for t in tags) or "the pixel data"
    raise DicomValueError(
        f"{_where(path)}: the pixel values are not finite (inf or NaN) after {named} (or "
        "exceed float32); "
        "the rescale tags are corrupt. Fix them (a CT slope is usually 1) or re-export the file.")


def find_dicom_files(folder) -> list[Path]:
    """Every regular non-hidden file under ``folder``, recursively, sorted; read decides DICOM."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder} is not a folder; give a folder of DICOM files.")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
