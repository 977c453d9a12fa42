"""Series to volume on synthetic series: shuffled files, tilted planes, gaps, duplicates, bad mixes."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest

from zoo.data.series import SeriesWarning, load_series, resample
from zoo.data.synthetic_dicom import write_ct_series
from zoo.errors import InvalidArgumentError, SeriesError


@pytest.mark.parametrize("tilt", [0.0, 30.0, -65.0])
def test_shuffled_tilted_series_is_stacked_in_order(tmp_path, tilt):
    s = write_ct_series(tmp_path, n_slices=9, size=16, tilt_deg=tilt, tilt_axis="y", seed=3)
    # neither the file names nor the InstanceNumbers give the order
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in s.paths]
    truth = [int(np.argmin(np.linalg.norm(s.positions - np.array(pydicom.dcmread(p).ImagePositionPatient, float),
                                          axis=1))) for p in s.paths]
    assert truth != sorted(truth) and np.argsort(numbers).tolist() != np.argsort(truth).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound series stacks without a warning
        vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.array, s.volume)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.7), abs=1e-3)
    np.testing.assert_allclose(vol.direction[2], s.normal, atol=1e-5)
    np.testing.assert_allclose(vol.positions, np.arange(9) * 2.5, atol=1e-3)
    assert vol.report.gaps == [] and vol.report.problems == [] and vol.report.tilt_deg < 0.01


def test_missing_slice_is_reported_and_bridged_by_resampling(tmp_path):
    s = write_ct_series(tmp_path, n_slices=8, size=16, tilt_deg=20, missing=(5,))
    with pytest.warns(SeriesWarning, match="1 slice.s. missing"):
        vol = load_series(tmp_path)
    assert vol.array.shape == (7, 16, 16) and vol.report.gaps == [(4, 1)]
    np.testing.assert_array_equal(vol.array, s.volume[[0, 1, 2, 3, 4, 6, 7]])
    assert vol.spacing[0] == pytest.approx(2.5, abs=1e-3)
    with pytest.raises(SeriesError, match="missing"):
        load_series(tmp_path, on_problem="raise")
    full = load_series(tmp_path, on_problem="ignore", target_spacing=(2.5, 0.7, 0.7))
    assert full.array.shape == (8, 16, 16)
    np.testing.assert_allclose(full.array[5], (s.volume[4] + s.volume[6]) / 2, atol=0.05)
    np.testing.assert_allclose(full.array[[0, 1, 2, 3, 4, 6, 7]], s.volume[[0, 1, 2, 3, 4, 6, 7]], atol=0.05)


def test_duplicates(tmp_path):
    write_ct_series(tmp_path, n_slices=5, size=16, duplicate=(2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = load_series(tmp_path)  # a byte-identical copy is dropped quietly, but reported
    assert vol.array.shape[0] == 5 and len(vol.report.duplicates) == 1
    # same position, different pixels: a problem
    victim = next(p for p in sorted(tmp_path.iterdir()) if p.suffix == ".dcm")
    ds = pydicom.dcmread(victim)
    arr = ds.pixel_array.copy()
    arr[0, 0] += 7
    ds.PixelData = arr.tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "changed.dcm")
    with pytest.raises(SeriesError, match="same position with different pixels"):
        load_series(tmp_path, on_problem="raise")


def test_inconsistent_orientation(tmp_path):
    write_ct_series(tmp_path / "a", n_slices=5, size=16, series_uid="1.2.3.4")
    odd = write_ct_series(tmp_path / "b", n_slices=5, size=16, tilt_deg=12, series_uid="1.2.3.4", seed=1)
    shutil.copy(odd.paths[0], tmp_path / "a" / "odd.dcm")
    with pytest.raises(SeriesError, match=r"inconsistent ImageOrientationPatient \(0020,0037\).*odd.dcm is tilted 12.0 deg"):
        load_series(tmp_path / "a", on_problem="raise")
    with pytest.warns(SeriesWarning, match="inconsistent"):
        vol = load_series(tmp_path / "a", on_problem="warn")
    assert vol.report.orientation_spread_deg == pytest.approx(12.0, abs=0.01)


def test_gantry_tilt_is_measured(tmp_path):
    s = write_ct_series(tmp_path, n_slices=6, size=16)
    for k, path in enumerate(sorted(s.paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))):
        ds = pydicom.dcmread(path)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1] + k * 2.5 * np.tan(np.deg2rad(15)), pos[2]]
        ds.save_as(path)
    vol = load_series(tmp_path)
    assert vol.report.tilt_deg == pytest.approx(15.0, abs=0.05)


def test_mixed_series_sizes_and_empty_folders(tmp_path):
    write_ct_series(tmp_path / "x", n_slices=3, size=16)
    write_ct_series(tmp_path / "x", n_slices=3, size=16, seed=9)  # overwrites names: 3 files of series 2
    write_ct_series(tmp_path / "y", n_slices=3, size=16)
    for p in (tmp_path / "y").iterdir():
        shutil.copy(p, tmp_path / "x" / f"y_{p.name}")
    with pytest.raises(SeriesError, match="hold 2 series") as err:
        load_series(tmp_path / "x")
    key = str(err.value).split("'")[1]
    assert load_series(tmp_path / "x", series=key).array.shape == (3, 16, 16)
    write_ct_series(tmp_path / "z", n_slices=3, size=24, series_uid="9.9")
    write_ct_series(tmp_path / "w", n_slices=3, size=16, series_uid="9.9")
    shutil.copy(next((tmp_path / "z").iterdir()), tmp_path / "w" / "big.dcm")
    with pytest.raises(SeriesError, match="different sizes"):
        load_series(tmp_path / "w")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing")
    with pytest.raises(SeriesError, match="none of the 1 file"):
        load_series(tmp_path / "empty")


def test_non_image_files_in_a_series_folder_are_reported(tmp_path):
    write_ct_series(tmp_path, n_slices=4, size=16)
    (tmp_path / "README").write_text("not dicom")
    vol = load_series(tmp_path)
    assert vol.array.shape[0] == 4
    assert [p for p, _ in vol.report.skipped] == [str(tmp_path / "README")]


def test_multiframe_file_is_a_volume():
    from pydicom.data import get_testdata_file

    vol = load_series(get_testdata_file("eCT_Supplemental.dcm"), on_problem="ignore")
    assert vol.array.shape == (2, 512, 512)


def test_resample_against_numpy_interp():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(4, 5, 6)).astype(np.float32)
    z = np.array([0.0, 1.0, 3.0, 4.0])  # a gap between 1 and 3
    out, new_z, spacing = resample(vol, z, (1.0, 2.0, 2.0), (0.5, 1.0, 1.0))
    assert out.shape == (9, 9, 11) and spacing == (0.5, 1.0, 1.0)
    expected_zy = np.interp(new_z, z, vol[:, 2, 3])
    np.testing.assert_allclose(out[:, 4, 6], expected_zy, atol=1e-5)  # y=4 -> 2, x=6 -> 3 (exact voxels)
    col = np.array([np.interp(np.arange(11) * 1.0, np.arange(6) * 2.0, vol[k, 2]) for k in range(4)])
    np.testing.assert_allclose(out[0, 4], col[0], atol=1e-5)
    with pytest.raises(InvalidArgumentError):
        resample(vol, z, (1, 1, 1), (0, 1, 1))
