"""NIfTI-1/-2 images and label maps in and out, on the voxel grid conventions of a DICOM series.

nibabel reads the file; this module converts its geometry explicitly. NIfTI stores data as
``[i, j, k]`` with a voxel-to-world affine in **RAS** (x to the patient's Right->Left is negative,
...); the zoo's volumes are ``[z, y, x]`` arrays in **LPS** (DICOM patient coordinates). So:

- the array is transposed ``[i, j, k] -> [k, j, i]``: NIfTI's i is the zoo's x (column), j is y
  (row), k is z (slice); nothing is flipped or resampled, the voxels stay as stored;
- the affine is taken to LPS by negating its first two rows (``diag(-1, -1, 1) @ affine``); its
  columns give the spacing (their lengths) and the x, y, z directions (their unit vectors), its
  translation the LPS position of voxel ``[0, 0, 0]``.

The affine is nibabel's ``img.affine`` (the sform when its code is set, else the qform). A
sheared affine (axes not orthogonal) is refused: resample the file first. The z direction of a
NIfTI grid may be ``-cross(x, y)`` (a left-handed affine), unlike a DICOM series, whose z is
always the slice normal; ``zoo.data.geometry`` compares grids in patient space, so both work.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from zoo.data.dicom import DicomMeta
from zoo.data.geometry import Geometry, geometry_of
from zoo.data.series import MAX_VOXELS, SeriesReport, Volume
from zoo.errors import DataError, InvalidArgumentError
from zoo.outputs import staged

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SUFFIXES = (".nii", ".nii.gz")
HEADER_ERROR_LEVEL = 30
"""nibabel fixes header problems below its error level quietly (a wrong sizeof_hdr, zero pixdim);
at this level they raise, so a broken header is a DataError rather than a guess."""


def _where(path) -> str:
    return f"NIfTI file {os.fspath(path)}"


@contextmanager
def _quiet_nibabel():
    """nibabel logs each header problem before raising it; the DataError says it instead."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load(path):
    """(nibabel image, data as stored) or DataError naming the file: not NIfTI, broken header,
    truncated or corrupt data, or more than MAX_VOXELS voxels."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.imageglobals import ErrorLevel
    from nibabel.spatialimages import HeaderDataError, ImageDataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{_where(path)} does not exist (or is not a file).")
    broken = (ImageFileError, HeaderDataError, ImageDataError, OSError, ValueError, EOFError,
              zlib.error, MemoryError, struct.error)
    try:
        with ErrorLevel(HEADER_ERROR_LEVEL), _quiet_nibabel():
            img = nib.load(path)
    except broken as e:
        raise DataError(f"{_where(path)} cannot be read as NIfTI ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no detail'}): not a NIfTI-1/-2 "
                        "file, or its header is broken. Re-export it (nibabel, SimpleITK, "
                        "dcm2niix).") from None
    if not isinstance(img, nib.Nifti1Pair | nib.Nifti2Pair):
        raise DataError(f"{_where(path)} is a {type(img).__name__}, not NIfTI; convert it to "
                        ".nii / .nii.gz first.")
    if int(np.prod([float(n) for n in img.shape])) > MAX_VOXELS:
        raise DataError(f"{_where(path)}'s header claims shape {img.shape}, over "
                        f"{MAX_VOXELS:.3g} voxels: a broken header (or crop the image first).")
    try:
        data = np.asanyarray(img.dataobj)
    except broken as e:
        raise DataError(f"{_where(path)}: the voxel data cannot be read ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no detail'}); the file is "
                        "truncated or corrupt. Re-export or re-download it.") from None
    return img, data


def _affine_geometry(affine, shape_ijk, path) -> Geometry:
    """The zoo Geometry of a NIfTI grid: RAS affine over (i, j, k) -> LPS over (z, y, x)."""
    a = RAS_TO_LPS @ np.asarray(affine, float)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{_where(path)} has a non-finite affine (sform/qform); fix the header.")
    zyx = np.eye(4)
    zyx[:3, 0], zyx[:3, 1], zyx[:3, 2], zyx[:3, 3] = a[:3, 2], a[:3, 1], a[:3, 0], a[:3, 3]
    try:
        geometry = Geometry.from_index_to_lps(zyx, (shape_ijk[2], shape_ijk[1], shape_ijk[0]))
    except DataError as e:
        raise DataError(f"{_where(path)}: {e}") from None
    cos = np.abs(geometry.direction @ geometry.direction.T - np.eye(3)).max()
    if cos > 1e-3:
        raise DataError(f"{_where(path)} has a sheared affine (axes "
                        f"{np.degrees(np.arcsin(min(cos, 1.0))):.2g} deg from orthogonal); "
                        "resample it to an orthogonal grid first (e.g. "
                        "nibabel.processing.resample_to_output).")
    return geometry


def _spatial(data: np.ndarray, path, frame) -> np.ndarray:
    """(i, j, k) data from a 3D file, or one volume of a 4D file (``frame``)."""
    if data.ndim == 2:
        data = data[..., None]
    extra = data.shape[3:]
    if any(n != 1 for n in extra[1:]):
        raise DataError(f"{_where(path)} has {data.ndim} dimensions {data.shape}; only 3D images "
                        "and 4D series (one volume at a time, frame=...) are read.")
    data = data.reshape(data.shape[:4]) if data.ndim > 4 else data
    count = data.shape[3] if data.ndim == 4 else 1
    if data.ndim == 3 or count == 1:
        if frame not in (None, 0):
            raise InvalidArgumentError(f"frame={frame!r}: {_where(path)} holds one volume; "
                                       "use frame=None.")
        return data.reshape(data.shape[:3])
    if frame is None:
        raise InvalidArgumentError(f"{_where(path)} is a 4D series of {count} volumes "
                                   f"{data.shape}; pass frame=0 .. {count - 1} to read one.")
    if not isinstance(frame, int | np.integer) or not 0 <= frame < count:
        raise InvalidArgumentError(f"frame={frame!r}: {_where(path)} has volumes 0 .. "
                                   f"{count - 1}.")
    return data[..., int(frame)]


def read_nifti_array(path, *, frame: int | None = None, keep_channels: bool = False):
    """(array [z, y, x] (+ trailing axes with ``keep_channels``) as stored, Geometry, image).

    The shared reader of images and label maps: no scaling to float, no dtype change beyond
    nibabel's own scl_slope/scl_inter.
    """
    img, data = _load(path)
    shape = img.shape[:3] + (1,) * (3 - len(img.shape[:3]))
    geometry = _affine_geometry(img.affine, shape, path)
    if keep_channels and data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,)) if data.ndim > 4 else data
        return np.ascontiguousarray(data.transpose(2, 1, 0, 3)), geometry, img
    data = _spatial(data, path, frame)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), geometry, img


def read_nifti(path, *, frame: int | None = None) -> Volume:
    """Read a NIfTI-1/-2 image (``.nii``, ``.nii.gz``, ``.hdr``/``.img``) as a zoo Volume.

    The array is float32 ``(Z, Y, X)``, NIfTI's ``[i, j, k]`` transposed (see the module
    docstring); spacing ``(z, y, x)`` mm, origin and direction rows in patient LPS, as
    ``zoo.load_series`` gives for DICOM. ``meta`` is a DicomMeta describing the file (sop_class
    "NIfTI-1"/"NIfTI-2", no DICOM tags); ``sources`` is empty.
    """
    array, geometry, img = read_nifti_array(path, frame=frame)
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{_where(path)} holds non-finite voxel values (NaN or inf); fix or "
                        "mask them before use.")
    z, y, x = geometry.shape
    version = "NIfTI-2" if type(img.header).__name__.startswith("Nifti2") else "NIfTI-1"
    meta = DicomMeta(path=os.fspath(path), modality="", sop_class=version,
                     transfer_syntax="", photometric="MONOCHROME2", rows=y, columns=x, frames=z,
                     channels=1, bits_stored=int(img.get_data_dtype().itemsize * 8), units="",
                     pixel_spacing=geometry.spacing[1:], slice_thickness=geometry.spacing[0],
                     image_position=geometry.origin,
                     image_orientation=tuple(float(v) for v in geometry.direction[:2].ravel()))
    report = SeriesReport(files=1, slices=z, sorted_by="NIfTI affine (as stored)")
    positions = np.arange(z) * geometry.spacing[0]
    return Volume(array, geometry.spacing, geometry.origin, geometry.direction, positions, meta,
                  report)


def nifti_affine(geometry) -> np.ndarray:
    """The RAS affine over NIfTI's ``(i, j, k)`` = the zoo's ``(x, y, z)`` for a grid."""
    m = geometry_of(geometry).index_to_lps()
    ijk = np.eye(4)
    ijk[:3, 0], ijk[:3, 1], ijk[:3, 2], ijk[:3, 3] = m[:3, 2], m[:3, 1], m[:3, 0], m[:3, 3]
    return RAS_TO_LPS @ ijk


def _storable(array: np.ndarray) -> np.ndarray:
    """The array in a dtype every NIfTI reader takes, without changing a value."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                return array.astype(dtype)
        raise InvalidArgumentError(f"values {lo} .. {hi} do not fit NIfTI's int32; rescale them.")
    if array.dtype in (np.float32, np.float64):
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise InvalidArgumentError(f"array of dtype {array.dtype}: give numbers (bool, int, float).")


def write_nifti(array, geometry, path, *, overwrite: bool = False) -> Path:
    """Write a ``(Z, Y, X)`` (or ``(Z, Y, X, C)``) array on ``geometry``'s grid as NIfTI-1.

    Args:
        array: voxels ``[z, y, x]`` (a label map, a probability map, an image); bool is stored
            as uint8, integers in the smallest of uint8/int16/int32 that holds them, floats as
            float32/float64, so the values read back exactly.
        geometry: a Volume (``zoo.load_series``, ``zoo.read_nifti``) or a Geometry: the grid
            ``array`` lies on; its shape must be ``array.shape[:3]``.
        path: a ``.nii`` or ``.nii.gz`` file.
        overwrite: replace an earlier zoo output at ``path`` (never a file the zoo did not write).

    Returns:
        The path written. The affine (sform and qform, code 1 "scanner") is the grid's, RAS; the
        header is built fresh: ``descrip`` says "medzoo", ``aux_file``, ``intent_name`` and
        ``db_name`` are empty, so no patient data travels in it. The affine is stored as float32,
        so positions read back to about 1e-5 mm.

    Raises:
        InvalidArgumentError: a path without a NIfTI suffix, or an array that does not fit the
            grid. OutputError: ``path`` exists and ``overwrite`` is False (or it is not a zoo
            output).
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith(SUFFIXES):
        raise InvalidArgumentError(f"{path}: a NIfTI file name ends in .nii or .nii.gz.")
    grid = geometry_of(geometry)
    array = np.asarray(array)
    if array.ndim not in (3, 4) or tuple(array.shape[:3]) != tuple(grid.shape):
        raise InvalidArgumentError(f"array of shape {array.shape} does not fit the grid "
                                   f"{tuple(grid.shape)}; give (Z, Y, X) or (Z, Y, X, C) voxels "
                                   "on it.")
    data = _storable(array)
    data = data.transpose(2, 1, 0, *range(3, data.ndim))
    affine = nifti_affine(grid)
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    header = img.header
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"medzoo"
    header["aux_file"] = b""
    header["intent_name"] = b""
    header["db_name"] = b""
    with staged([path], writer="zoo.data.nifti.write_nifti", overwrite=overwrite) as (tmp,):
        nib.save(img, tmp)
    return path
