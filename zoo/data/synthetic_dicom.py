"""Small synthetic CT series written with pydicom, for tests, the demo and benchmarks.

Each series is a known volume in HU (an air background, a water-like body, a bone disk whose
radius grows with the slice index and a marker that encodes the index), written as one file
per slice with a real geometry: ImageOrientationPatient (optionally tilted), positions along
the slice normal, PixelSpacing, RescaleSlope/Intercept. File names and InstanceNumbers are
shuffled on purpose, so only the geometry tells the order. Slices can be left out or
duplicated, and written with RLE or JPEG 2000 lossless compression (pydicom's own encoders).
Patient tags hold fake values, so tests can check that none of them leaks into messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import InvalidArgumentError

FAKE_PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-7731-XQ", "PatientBirthDate": "19610412",
            "StudyDate": "20240229", "AccessionNumber": "ACC99812"}
COMPRESSIONS = {"none": None, "rle": "1.2.840.10008.1.2.5", "j2k": "1.2.840.10008.1.2.4.90"}


@dataclass(frozen=True)
class SyntheticSeries:
    paths: list[Path]  # in the (shuffled) order written
    volume: np.ndarray  # (Z, Y, X) float32 HU of every slice position, missing ones included
    positions: np.ndarray  # (Z, 3) ImagePositionPatient of every slice position
    normal: np.ndarray  # unit slice normal
    spacing: tuple[float, float, float]  # (z, row, column) mm
    missing: tuple[int, ...]  # slice indices not written


def rotation(tilt_deg: float, axis: str = "x") -> np.ndarray:
    t = np.deg2rad(tilt_deg)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    raise InvalidArgumentError(f"axis={axis!r}: use 'x' or 'y'.")


def phantom_volume(n_slices: int, size: int) -> np.ndarray:
    """(Z, Y, X) HU: air, a 40 HU body ellipse, a growing 700 HU bone disk, an index marker."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    vol = np.full((n_slices, size, size), -1000.0, np.float32)
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 <= 1
    for k in range(n_slices):
        vol[k][body] = 40.0 + 5.0 * np.sin(xx[body] / 3.0)
        radius = 1.5 + 0.3 * size * (k + 1) / (n_slices + 1)
        vol[k][(yy - c) ** 2 + (xx - c) ** 2 <= radius**2] = 700.0
        vol[k, 1, 1 : 1 + min(k + 1, size - 2)] = 300.0  # marker row: its length is the index
    return np.round(vol)  # integer HU, so a lossless round trip through 12-bit storage is exact


def _given_volume(volume) -> np.ndarray:
    """A (Z, Y, X) volume of integer HU that 12-bit storage (intercept -1024) holds exactly."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.dtype.kind not in "iuf":
        raise InvalidArgumentError(
            f"volume of shape {volume.shape} and dtype {volume.dtype}: give (Z, Y, X) HU numbers."
        )
    if volume.size and (np.any(volume != np.round(volume)) or volume.min() < -1024
                        or volume.max() > 3071):
        raise InvalidArgumentError(
            "volume: give integer HU in -1024 .. 3071 (12-bit storage with intercept -1024 "
            "holds those exactly); round and clip it first."
        )
    return volume.astype(np.float32)


def _ellipsoid(grid, centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _body_and_organs(rng, grid, shape) -> tuple[np.ndarray, np.ndarray]:
    """(HU without lesions or noise, body mask): air, a 40 HU textured body, 2-3 organs of
    -70..+70 HU against it, a 500 HU vertebra."""
    from zoo.data.synthetic import _smooth_noise

    z, y, x = grid
    n_z, n_y, n_x = shape
    cy, cx = n_y / 2 + rng.uniform(-1.5, 1.5), n_x / 2 + rng.uniform(-1.5, 1.5)
    ry, rx = n_y * rng.uniform(0.36, 0.42), n_x * rng.uniform(0.42, 0.47)
    body = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    texture = _smooth_noise(rng, max(n_y, n_x))[:n_y, :n_x]
    hu = np.where(body, 40.0 + 8.0 * texture[None], -1000.0)
    for _ in range(rng.integers(2, 4)):
        centre = (rng.uniform(0.2, 0.8) * n_z, cy + rng.uniform(-0.3, 0.3) * ry,
                  cx + rng.uniform(-0.3, 0.3) * rx)
        radii = (rng.uniform(0.3, 0.6) * n_z, rng.uniform(0.3, 0.5) * ry,
                 rng.uniform(0.3, 0.5) * rx)
        step = rng.choice([-1.0, 1.0]) * rng.uniform(30.0, 70.0)
        hu = np.where(_ellipsoid(grid, centre, radii) & body, hu + step, hu)
    spine = (y - (cy + 0.7 * ry)) ** 2 + (x - cx) ** 2 <= (0.12 * ry) ** 2
    return np.where(spine & body, 500.0, hu), body & ~spine


def lesion_ct(shape=(32, 64, 64), spacing=(2.0, 1.0, 1.0), *, seed=0, lesions=(1, 3),
              radius_mm=(4.0, 8.0), contrast_hu=(50.0, 90.0), noise_hu: float = 20.0):
    """A synthetic CT volume with hyperdense lesions of known contrast, and their label map.

    Air around a textured 40 HU body, organs 30-70 HU brighter or darker than it and a 500 HU
    vertebra; ``lesions`` (a (min, max) count) ellipsoids with semi-axes drawn from
    ``radius_mm`` (per axis, in mm through ``spacing`` (z, y, x)), inside the body, each
    ``contrast_hu`` (drawn per lesion) above the tissue it sits in; white noise of
    ``noise_hu``. ``seed``: an int or a sequence of ints (``np.random.default_rng``).
    Returns ``(hu, labels)``: (Z, Y, X) integer HU in -1024 .. 3071
    (``write_ct_series(volume=hu)``) and uint8 labels (1 = lesion).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8 or len(spacing) != 3 or min(spacing) <= 0:
        raise InvalidArgumentError(
            f"lesion_ct(shape={shape}, spacing={spacing}): give (Z, Y, X) sizes of at least 8 "
            "voxels and three positive spacings in mm."
        )
    grid = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    hu, body = _body_and_organs(rng, grid, shape)
    labels = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(lesions[0], lesions[1] + 1)):
        radii = rng.uniform(*radius_mm, 3) / np.asarray(spacing, float)
        inner = np.argwhere(body[tuple(slice(int(np.ceil(r)), n - int(np.ceil(r)))
                                       for r, n in zip(radii, shape))])
        if not len(inner):
            continue
        centre = inner[rng.integers(len(inner))] + np.ceil(radii)
        lesion = _ellipsoid(grid, centre, radii) & body
        hu = np.where(lesion, hu + rng.uniform(*contrast_hu), hu)
        labels[lesion] = 1
    hu = hu + noise_hu * rng.standard_normal(shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels


def _new_dataset(sop_class: str):
    """An empty dataset with file meta for one new instance of ``sop_class`` (explicit VR LE)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    return ds


def _ct_slice(pixels, instance_number: int, uids, orientation, position, pixel_spacing,
              slice_spacing: float):
    """One CT slice: fake patient tags, the series' UIDs, its plane, HU + 1024 in 12 bits."""
    from pydicom.uid import CTImageStorage

    ds = _new_dataset(CTImageStorage)
    meta = ds.file_meta
    for key, value in FAKE_PHI.items():
        setattr(ds, key, value)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality = "CT"
    ds.InstanceNumber = instance_number
    ds.ImageOrientationPatient = orientation
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.SliceThickness = f"{slice_spacing:g}"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(np.round(pixels + 1024), 0, 4095).astype(np.uint16).tobytes()
    return ds


def write_ct_series(
    folder,
    n_slices: int = 8,
    size: int = 32,
    *,
    pixel_spacing=(0.7, 0.7),
    slice_spacing: float = 2.5,
    tilt_deg: float = 0.0,
    tilt_axis: str = "x",
    origin=(-10.0, -12.0, 30.0),
    missing=(),
    duplicate=(),
    compression: str = "none",
    seed: int = 0,
    series_uid: str | None = None,
    volume=None,
) -> SyntheticSeries:
    """Write ``n_slices`` CT slices into ``folder`` (shuffled names and InstanceNumbers).

    ``tilt_deg`` rotates the image plane about the patient x (or y) axis, an oblique series.
    ``missing`` slice indices are not written; ``duplicate`` ones are written twice.
    ``compression``: "none", "rle" or "j2k" (JPEG 2000 lossless).
    ``volume``: the (Z, Y, X) HU to write (integers in -1024 .. 3071, e.g. ``lesion_ct``'s)
    instead of ``phantom_volume``; it sets ``n_slices`` and the rows and columns.
    """
    import pydicom
    from pydicom.uid import generate_uid

    if compression not in COMPRESSIONS:
        raise InvalidArgumentError(f"compression={compression!r}: use one of {list(COMPRESSIONS)}.")
    volume = _given_volume(volume) if volume is not None else None
    if volume is not None:
        n_slices, size = volume.shape[0], min(volume.shape[1:])
    if n_slices < 2 or size < 8 or (compression == "j2k" and size < 32):
        raise InvalidArgumentError(
            f"n_slices={n_slices}, size={size}: need n_slices >= 2 and size >= 8 (32 for j2k: "
            "openjpeg's default resolution levels need it)."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rot = rotation(tilt_deg, tilt_axis)
    row_dir, col_dir = rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 1.0, 0])
    normal = np.cross(row_dir, col_dir)
    positions = np.asarray(origin, float) + np.arange(n_slices)[:, None] * slice_spacing * normal
    volume = phantom_volume(n_slices, size) if volume is None else volume
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    written = [k for k in range(n_slices) if k not in set(missing)] + [
        k for k in duplicate if k not in set(missing)
    ]
    order = rng.permutation(len(written))
    instance_numbers = rng.permutation(len(written)) + 1
    paths = []
    uids = (study_uid, series_uid, frame_uid)
    orientation = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    for j, w in enumerate(order):
        k = written[w]
        ds = _ct_slice(volume[k], int(instance_numbers[j]), uids, orientation, positions[k],
                       pixel_spacing, slice_spacing)
        if COMPRESSIONS[compression]:
            ds.compress(COMPRESSIONS[compression])
        path = folder / f"slice_{j:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return SyntheticSeries(
        paths,
        volume,
        positions,
        normal,
        (slice_spacing, *map(float, pixel_spacing)),
        tuple(sorted(set(missing))),
    )


def _ds_text(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def _contour_item(points_lps: np.ndarray, number: int, sop_class: str, sop_uid: str):
    from pydicom.dataset import Dataset

    image = Dataset()
    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = sop_class, sop_uid
    item = Dataset()
    item.ContourImageSequence = [image]
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points_lps)
    item.ContourNumber = number
    item.ContourData = [_ds_text(v) for v in points_lps.ravel()]
    return item


def _rtstruct_references(headers, ds) -> None:
    """Frame of reference, study, series and every slice, as an RTSTRUCT names them."""
    from pydicom.dataset import Dataset

    images = []
    for h in headers:
        image = Dataset()
        image.ReferencedSOPClassUID = h.SOPClassUID
        image.ReferencedSOPInstanceUID = h.SOPInstanceUID
        images.append(image)
    series = Dataset()
    series.SeriesInstanceUID, series.ContourImageSequence = headers[0].SeriesInstanceUID, images
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study.ReferencedSOPInstanceUID = headers[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = headers[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]


def _roi(ds, number: int, name: str, contours: list) -> None:
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber, roi.ROIName = number, name
    roi.ReferencedFrameOfReferenceUID = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 64 * (number % 4), 0]
    item.ContourSequence = contours
    observation = Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = number, number
    observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
    ds.StructureSetROISequence.append(roi)
    ds.ROIContourSequence.append(item)
    ds.RTROIObservationsSequence.append(observation)


def _slice_contours(label_map, headers, label: int) -> list:
    """Contour items of one label, traced per slice along pixel edges, in patient LPS mm."""
    from zoo.data.rtstruct import trace_contours

    items = []
    for k, h in enumerate(headers):
        if not (label_map[k] == label).any():
            continue
        orient = np.asarray(h.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(v) for v in h.PixelSpacing)
        corner = np.asarray(h.ImagePositionPatient, float)
        for xy in trace_contours(label_map[k] == label):
            lps = (corner + xy[:, :1] * col_spacing * orient[:3]
                   + xy[:, 1:] * row_spacing * orient[3:])
            items.append(_contour_item(lps, len(items) + 1, h.SOPClassUID, h.SOPInstanceUID))
    return items


def write_rtstruct(label_map, reference, path, *, roi_names=None, overwrite: bool = False):
    """Write an RTSTRUCT whose ROIs are the labels 1 .. K of ``label_map``, traced per slice.

    For tests and the demo: each label's pixel-boundary outlines (and holes) on each slice become
    CLOSED_PLANAR contours on that slice's plane, referencing the slice by SOPInstanceUID; so
    ``zoo.read_mask`` (a voxel is inside when its centre is inside a contour) reads the label map
    back exactly. The structure set carries the series' patient and study modules, as the
    standard requires; nothing else is written.

    ``label_map`` is ``(Z, Y, X)`` on the grid of ``reference`` (the Volume from
    ``zoo.load_series``, or the series' folder / files: single-frame slices); ``roi_names`` names
    labels 1 .. K (default "ROI k"). Written through ``zoo.outputs`` (``overwrite`` to replace).
    """
    import pydicom
    from pydicom.uid import generate_uid

    from zoo.data.references import load_reference, source_headers
    from zoo.data.rtstruct import RTSTRUCT_SOP_CLASS
    from zoo.outputs import staged

    volume = load_reference(reference)
    label_map = np.asarray(label_map)
    headers = source_headers(volume, label_map.shape)
    if len({id(h) for h in headers}) != len(headers):
        raise InvalidArgumentError("write_rtstruct takes a series of single-frame slices.")
    count = int(label_map.max(initial=0))
    names = list(roi_names) if roi_names is not None else [f"ROI {k}" for k in range(1, count + 1)]
    if len(names) < count:
        raise InvalidArgumentError(f"roi_names names {len(names)} ROIs; the label map holds "
                                   f"labels up to {count}.")
    ds = _new_dataset(RTSTRUCT_SOP_CLASS)
    meta = ds.file_meta
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                "StudyInstanceUID"):
        setattr(ds, key, headers[0].get(key, ""))
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 901
    ds.Manufacturer, ds.OperatorsName = "medzoo", ""
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "medzoo", "", ""
    _rtstruct_references(headers, ds)
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for label in range(1, count + 1):
        _roi(ds, label, str(names[label - 1]), _slice_contours(label_map, headers, label))
    with staged([path], writer="zoo.data.synthetic_dicom.write_rtstruct",
                overwrite=overwrite) as (tmp,):
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return Path(path)
