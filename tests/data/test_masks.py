"""Masks onto a reference grid (zoo.data.masks): DICOM-SEG, RTSTRUCT and NIfTI round trips on a
synthetic oblique series, real SEG/RTSTRUCT files shipped with pydicom, and every refusal
(another series, another orientation, labels outside the classes, overlaps, overwrites)."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pydicom
import pytest

from zoo.data.geometry import Geometry, check_same_grid, geometry_of
from zoo.data.masks import read_mask, write_dicom_seg
from zoo.data.nifti import write_nifti
from zoo.data.series import SeriesWarning, load_series
from zoo.data.synthetic_dicom import FAKE_PHI, write_ct_series, write_rtstruct
from zoo.errors import DataError, InvalidArgumentError, OutputError

SERIES_UID = "1.2.826.0.1.3680043.8.498.77770001"


def truth_labels() -> np.ndarray:
    """Two classes on (8, 16, 16): a block, a ring with a hole and a class-2 island in it,
    diagonal-touching pixels (a saddle for the contour tracer), a lone pixel."""
    m = np.zeros((8, 16, 16), np.uint8)
    m[1:4, 4:9, 3:7] = 1
    m[5, 3:12, 3:12] = 1
    m[5, 5:9, 5:9] = 0
    m[5, 6, 6] = 2
    m[6, 2, 2] = m[6, 3, 3] = m[6, 2, 4] = 2
    m[7, 10:14, 9:15] = 2
    m[7, 15, 0] = 1
    return m


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oblique")
    write_ct_series(folder, n_slices=8, size=16, tilt_deg=20, pixel_spacing=(0.7, 0.9),
                    series_uid=SERIES_UID)
    return load_series(folder)


@pytest.fixture(scope="module")
def written(oblique, tmp_path_factory):
    """The truth written once as DICOM-SEG, RTSTRUCT and NIfTI next to the series."""
    out = tmp_path_factory.mktemp("masks")
    return {
        "seg": write_dicom_seg(truth_labels(), oblique, out / "seg.dcm",
                               segment_labels=["liver", "lesion"]),
        "rtstruct": write_rtstruct(truth_labels(), oblique, out / "rt.dcm",
                                   roi_names=["liver", "lesion"]),
        "nifti": write_nifti(truth_labels(), oblique, out / "labels.nii.gz"),
    }


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("kind", ["seg", "rtstruct", "nifti"])
def test_round_trip_is_voxel_exact(oblique, written, kind):
    mask = read_mask(written[kind], oblique)
    np.testing.assert_array_equal(mask.array, truth_labels())
    assert mask.array.dtype == np.uint8 and not mask.multilabel
    assert mask.classes == (("liver", "lesion") if kind != "nifti" else ("1", "2"))
    check_same_grid(mask.geometry, oblique)


def test_classes_by_name_remap_and_multilabel_channels(oblique, written):
    swapped = read_mask(written["seg"], oblique, classes=["Lesion", "Liver"])
    truth = truth_labels()
    np.testing.assert_array_equal(swapped.array, np.choose(truth, [0, 2, 1]))
    channels = read_mask(written["rtstruct"], oblique, classes=["liver", "lesion"],
                         multilabel=True)
    assert channels.array.shape == (8, 16, 16, 2) and channels.multilabel
    np.testing.assert_array_equal(channels.array[..., 1], truth == 2)


def test_nifti_channels_are_a_multilabel_mask(oblique, tmp_path):
    channels = np.stack([truth_labels() == 1, truth_labels() >= 1], axis=-1)  # overlapping
    path = write_nifti(channels, oblique, tmp_path / "channels.nii.gz")
    with pytest.raises(DataError, match="2 channels.*multilabel=True"):
        read_mask(path, oblique)
    back = read_mask(path, oblique, classes=["liver", "any"], multilabel=True)
    np.testing.assert_array_equal(back.array, channels)
    with pytest.raises(DataError, match="2 channels for 3 declared classes"):
        read_mask(path, oblique, classes=3, multilabel=True)


def test_overlapping_segments_need_multilabel(oblique, tmp_path):
    channels = np.zeros((8, 16, 16, 2), np.uint8)
    channels[2:5, 3:9, 3:9, 0] = 1
    channels[3:6, 6:12, 6:12, 1] = 1  # overlaps channel 0 in 2 x 3 x 3 voxels
    path = write_dicom_seg(channels, oblique, tmp_path / "overlap.dcm")
    with pytest.raises(DataError, match="overlap in 18 voxels.*multilabel=True"):
        read_mask(path, oblique)
    back = read_mask(path, oblique, multilabel=True)
    np.testing.assert_array_equal(back.array, channels)
    assert back.classes == ("segment 1", "segment 2")


def test_labels_outside_the_declared_classes_are_refused(oblique, written, tmp_path):
    with pytest.raises(DataError, match=r"\['lesion'\] that are not among the declared"):
        read_mask(written["seg"], oblique, classes=["liver"])
    with pytest.raises(DataError, match=r"segment number\(s\) \[2\] outside"):
        read_mask(written["rtstruct"], oblique, classes=1)
    with pytest.raises(DataError, match=r"labels \[2\] outside the declared classes 0 .. 1"):
        read_mask(written["nifti"], oblique, classes=["liver"])
    fractional = write_nifti(truth_labels() * 0.5, oblique, tmp_path / "half.nii")
    with pytest.raises(DataError, match="not class labels"):
        read_mask(fractional, oblique)
    for bad in (0, "liver", ["a", "A"], [1, 2]):
        with pytest.raises(InvalidArgumentError, match="classes="):
            read_mask(written["nifti"], oblique, classes=bad)


def test_dicom_seg_writes_nothing_else_and_leaves_the_series_alone(oblique, tmp_path):
    sources = sorted({p for p, _ in oblique.sources})
    before = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sources]
    out = tmp_path / "out"
    write_dicom_seg(truth_labels(), oblique, out / "pred.dcm", segment_labels=["a", "b"])
    assert sorted(p.name for p in out.iterdir()) == [".zoo-manifest.json", "pred.dcm"]
    manifest = (out / ".zoo-manifest.json").read_text()
    assert not any(v in manifest for v in FAKE_PHI.values()) and json.loads(manifest)
    assert before == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sources]
    seg = pydicom.dcmread(out / "pred.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    assert str(seg.PatientName) == FAKE_PHI["PatientName"]  # the patient module, by the standard


def test_writers_refuse_to_overwrite(oblique, written, tmp_path):
    with pytest.raises(OutputError, match="overwrite=True"):
        write_rtstruct(truth_labels(), oblique, written["rtstruct"])
    path = write_dicom_seg(truth_labels(), oblique, tmp_path / "seg.dcm")
    empty = np.zeros((8, 16, 16), np.uint8)
    with pytest.raises(OutputError, match="overwrite=True"):
        write_dicom_seg(empty, oblique, path)
    assert read_mask(path, oblique).array.any()  # untouched
    write_dicom_seg(empty, oblique, path, overwrite=True)  # empty: every frame kept
    assert not read_mask(path, oblique).array.any()


def test_bad_masks_for_writing(oblique, tmp_path):
    with pytest.raises(InvalidArgumentError, match="names 1 segment"):
        write_dicom_seg(truth_labels(), oblique, tmp_path / "a.dcm", segment_labels=["x"])
    with pytest.raises(InvalidArgumentError, match="argmax"):
        write_dicom_seg(truth_labels() * 0.5, oblique, tmp_path / "b.dcm")
    with pytest.raises(DataError, match="does not lie on the 8 slices"):
        write_dicom_seg(np.zeros((8, 16, 15), np.uint8), oblique, tmp_path / "c.dcm")


def test_seg_and_rtstruct_of_another_series_are_refused(written, tmp_path):
    write_ct_series(tmp_path, n_slices=8, size=16, tilt_deg=20, pixel_spacing=(0.7, 0.9))
    other = load_series(tmp_path)  # same grid, another SeriesInstanceUID
    uid = pydicom.dcmread(other.sources[0][0]).SeriesInstanceUID
    for kind in ("seg", "rtstruct"):
        with pytest.raises(DataError, match="references series") as caught:
            read_mask(written[kind], other)
        assert SERIES_UID in str(caught.value) and uid in str(caught.value)


def test_orientation_mismatch_is_detected(written, tmp_path):
    write_ct_series(tmp_path, n_slices=8, size=16, tilt_deg=0, pixel_spacing=(0.7, 0.9),
                    series_uid=SERIES_UID)
    flat = load_series(tmp_path)  # the same series UID, but not tilted: another geometry
    with pytest.raises(DataError, match="y axis rotated 20 deg.*resample=True"):
        read_mask(written["seg"], flat)
    with pytest.raises(DataError, match="y axis rotated 20 deg"):
        read_mask(written["nifti"], flat)
    with pytest.raises(DataError, match="not parallel to the reference's slices"):
        read_mask(written["rtstruct"], flat)
    resampled = read_mask(written["seg"], flat, resample=True)  # asked for: nearest neighbour
    assert resampled.array.shape == (8, 16, 16) and set(np.unique(resampled.array)) <= {0, 1, 2}


def reoriented(array, grid: Geometry, order, flips):
    """The same voxels stored with axes permuted (``order``) and flipped: array and geometry."""
    matrix = grid.index_to_lps()
    perm = np.zeros((4, 4))
    perm[3, 3] = 1
    for new, old in enumerate(order):
        perm[old, new] = 1
    array, matrix = array.transpose(order), matrix @ perm
    shape = array.shape
    for axis in flips:
        array = np.flip(array, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, shape[axis] - 1
        matrix = matrix @ flip
    return np.ascontiguousarray(array), Geometry.from_index_to_lps(matrix, shape)


def test_nifti_lossless_reorientation_is_applied_and_a_mirror_refused(oblique, tmp_path):
    grid = geometry_of(oblique)
    array, moved = reoriented(truth_labels(), grid, (0, 2, 1), flips=(1, 2))
    path = write_nifti(array, moved, tmp_path / "reoriented.nii")
    np.testing.assert_array_equal(read_mask(path, oblique).array, truth_labels())
    mirror = Geometry(grid.shape, grid.spacing, grid.origin, grid.direction * [[-1], [1], [1]])
    path = write_nifti(np.flip(truth_labels(), 2), mirror, tmp_path / "mirror.nii")
    with pytest.raises(DataError, match=r"x axis flipped") as caught:
        read_mask(path, oblique)
    assert str(path) in str(caught.value)


def test_nifti_on_another_grid_needs_resample(oblique, tmp_path):
    grid = geometry_of(oblique)
    half = np.array([0.5, 0.5])  # coarse voxel 0 centred between fine voxels 0 and 1 (y and x)
    origin = np.asarray(grid.origin) + half[0] * grid.spacing[1] * grid.direction[1] \
        + half[1] * grid.spacing[2] * grid.direction[0]
    coarse_grid = Geometry((8, 8, 8), (grid.spacing[0], 2 * grid.spacing[1],
                                       2 * grid.spacing[2]), tuple(origin), grid.direction)
    coarse = np.random.default_rng(1).integers(0, 3, (8, 8, 8)).astype(np.uint8)
    path = write_nifti(coarse, coarse_grid, tmp_path / "coarse.nii.gz")
    with pytest.raises(DataError, match=r"shape \(8, 8, 8\) vs \(8, 16, 16\).*resample=True"):
        read_mask(path, oblique)
    expected = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(read_mask(path, oblique, resample=True).array, expected)
    crop = write_nifti(truth_labels()[:, 2:, :], Geometry(
        (8, 14, 16), grid.spacing, tuple(grid.index_to_lps()[:3] @ [0, 2, 0, 1]),
        grid.direction), tmp_path / "crop.nii")
    with pytest.raises(DataError, match=r"shape \(8, 14, 16\) vs \(8, 16, 16\)"):
        read_mask(crop, oblique)
    placed = read_mask(crop, oblique, resample=True).array
    np.testing.assert_array_equal(placed[:, 2:], truth_labels()[:, 2:])
    assert not placed[:, :2].any()


def test_rtstruct_smooth_contour_within_the_stated_tolerance(oblique, written, tmp_path):
    """A 16-gon approximating a 4.5 mm circle: voxels differ from the ideal disk (centre inside
    the circle) only where the centre lies between the polygon and the circle (measured: 3
    voxels of a ~100-voxel disk, Dice 0.985)."""
    ds = pydicom.dcmread(written["rtstruct"])
    k = 4
    header = pydicom.dcmread(oblique.sources[k][0], stop_before_pixels=True)
    row_dir, col_dir = np.split(np.asarray(header.ImageOrientationPatient, float), 2)
    dy, dx = (float(v) for v in header.PixelSpacing)
    corner = np.asarray(header.ImagePositionPatient, float)
    centre, radius, n = np.array([7.3, 8.1]), 4.5, 16  # pixel (x, y), mm
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = centre + radius * np.column_stack([np.cos(t) / dx, np.sin(t) / dy])
    lps = corner + xy[:, :1] * dx * row_dir + xy[:, 1:] * dy * col_dir
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = [f"{v:.4f}" for v in lps.ravel()]
    contour.NumberOfContourPoints = n
    ds.ROIContourSequence[0].ContourSequence = [contour]
    ds.ROIContourSequence = ds.ROIContourSequence[:1]
    ds.StructureSetROISequence = ds.StructureSetROISequence[:1]
    path = tmp_path / "circle.dcm"
    ds.save_as(path, enforce_file_format=True)
    got = read_mask(path, oblique).array.astype(bool)
    yy, xx = np.mgrid[0:16, 0:16]
    dist = np.hypot((xx - centre[0]) * dx, (yy - centre[1]) * dy)
    ideal = np.zeros_like(got)
    ideal[k] = dist <= radius
    sagitta = radius * (1 - np.cos(np.pi / n))  # the polygon's largest distance from the circle
    differ = got[k] != ideal[k]
    assert not got[np.arange(8) != k].any()
    assert np.all(np.abs(dist[differ] - radius) <= sagitta + 1e-6)
    assert 0 < differ.sum() <= 5 and dice(got, ideal) >= 0.98


def test_pydicom_rtstruct_rasterises_on_a_matching_series(tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("rtstruct.dcm")
    if path is None:
        pytest.skip("pydicom does not ship rtstruct.dcm here")
    ds = pydicom.dcmread(path, force=True)
    series_uid = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].SeriesInstanceUID
    # a series on the contours' planes (z = -200, -190, -180 mm), 14 mm pixels centred on 0
    write_ct_series(tmp_path / "ct", n_slices=3, size=32, pixel_spacing=(14, 14),
                    slice_spacing=10, origin=(-217, -217, -200), series_uid=series_uid)
    mask = read_mask(path, load_series(tmp_path / "ct"))
    assert mask.classes == ("patient",)  # the two isocentre ROIs are POINTs: no area
    expected = np.zeros((3, 32, 32), np.uint8)
    expected[:, 5:27, 2:30] = 1  # centres with |x| < 200 and |y| < 150 mm
    np.testing.assert_array_equal(mask.array, expected)


@pytest.mark.parametrize("name", ["liver_1frame.dcm", "liver.dcm"])
def test_real_dicom_seg_files_place_their_frames_by_position(name):
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when pydicom-data would download
        path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom / pydicom-data test files)")
    # a reference grid around the frames: 5 axial slices 1 mm apart from z = -129.69
    grid = Geometry((5, 512, 512), (1.0, 0.810547, 0.810547), (-235.2, -226.8, -129.69),
                    np.eye(3))
    mask = read_mask(path, grid)
    assert mask.classes == ("Liver",) and mask.array.any()
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(-1, 512, 512)  # pydicom's own unpacking of the 1-bit frames
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):  # 1frame: 1 of 3 items
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        np.testing.assert_array_equal(mask.array[round(z + 129.69)], frame)
    assert mask.array.sum() == frames.sum()


def test_reference_grids_must_be_regular(tmp_path):
    write_ct_series(tmp_path, n_slices=8, size=16, missing=(4,))
    with pytest.warns(SeriesWarning):
        gapped = load_series(tmp_path)
    with pytest.raises(DataError, match="not evenly spaced.*target_spacing"):
        geometry_of(gapped)
    with pytest.raises(DataError, match="Volume"):
        geometry_of(np.zeros((4, 4, 4)))


def test_gantry_tilted_reference_is_refused(tmp_path):
    s = write_ct_series(tmp_path, n_slices=6, size=16)
    for path in s.paths:  # slices stepped 10 deg off their normal, as a tilted gantry does
        ds = pydicom.dcmread(path)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1] + (pos[2] - 30) * np.tan(np.deg2rad(10)),
                                   pos[2]]
        ds.save_as(path)
    with pytest.raises(DataError, match="10 deg off their normal"):
        geometry_of(load_series(tmp_path))


def test_not_a_mask_file(oblique, tmp_path):
    with pytest.raises(DataError, match="neither NIfTI"):
        read_mask(oblique.sources[0][0], oblique)  # a CT slice, not a mask
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="neither NIfTI"):
        read_mask(tmp_path / "notes.txt", oblique)


def test_facade_reads_and_writes(oblique, written, tmp_path):
    import zoo

    mask = zoo.read_mask(written["seg"], oblique, classes=["liver", "lesion"])
    np.testing.assert_array_equal(mask.array, truth_labels())
    path = zoo.write_nifti(mask.array, oblique, tmp_path / "pred.nii.gz")
    back = zoo.read_nifti(path)
    np.testing.assert_array_equal(back.array, truth_labels())
    zoo.write_dicom_seg(mask, oblique, tmp_path / "pred.dcm")  # a Mask keeps its class names
    assert read_mask(tmp_path / "pred.dcm", oblique).classes == ("liver", "lesion")


def test_seg_frames_without_positions_match_by_sop_instance_uid(oblique, written, tmp_path):
    ds = pydicom.dcmread(written["seg"])
    for item in ds.PerFrameFunctionalGroupsSequence:  # no PlanePositionSequence: no volume
        del item.PlanePositionSequence
        content = item.FrameContentSequence[0]
        content.DimensionIndexValues = content.DimensionIndexValues[:1]
    ds.DimensionIndexSequence = ds.DimensionIndexSequence[:1]
    path = tmp_path / "no_positions.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_mask(path, oblique).array, truth_labels())
    with pytest.raises(DataError, match="do not form a regular volume"):
        read_mask(path, geometry_of(oblique))  # a bare grid has no slices to match them to


def test_check_same_grid_names_what_differs_and_by_how_much(oblique):
    grid = geometry_of(oblique)
    moved = Geometry(grid.shape, (grid.spacing[0], grid.spacing[1], 1.0),
                     tuple(np.add(grid.origin, [3.0, 4.0, 0.0])), grid.direction)
    with pytest.raises(DataError) as caught:
        check_same_grid(moved, oblique)
    text = str(caught.value)
    assert "x spacing 1 vs 0.9 mm" in text and "(5 mm apart)" in text and "Resample" in text
    assert "shape" not in text and "axis" not in text
    check_same_grid(Geometry(grid.shape, grid.spacing, tuple(np.add(grid.origin, 0.01)),
                             grid.direction), oblique)  # 0.01 mm: within 0.05 voxel
