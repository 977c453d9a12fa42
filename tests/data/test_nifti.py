"""NIfTI in and out (zoo.data.nifti): exact round trips, RAS <-> LPS against nibabel and the DICOM
headers themselves, nibabel's own test files, broken files refused, nothing overwritten."""

from __future__ import annotations

import gzip
import os
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest

from zoo.data.geometry import Geometry
from zoo.data.nifti import read_nifti, read_nifti_array, write_nifti
from zoo.data.series import load_series
from zoo.data.synthetic_dicom import FAKE_PHI, rotation, write_ct_series
from zoo.errors import DataError, InvalidArgumentError, OutputError

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oblique")
    write_ct_series(folder, n_slices=8, size=16, tilt_deg=25, pixel_spacing=(0.7, 0.9))
    return folder, load_series(folder)


def grid(shape=(6, 5, 4), tilt=30.0):
    return Geometry(shape, (2.5, 0.8, 1.1), (-7.0, 3.5, 12.25), rotation(tilt, "y"))


def test_image_round_trip_is_exact_on_an_oblique_series(oblique, tmp_path):
    _, vol = oblique
    path = write_nifti(vol.array, vol, tmp_path / "ct.nii.gz")
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.float32 and back.array.shape == (8, 16, 16)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert back.sources == () and back.meta.sop_class == "NIfTI-1"


def test_affine_puts_every_voxel_where_the_dicom_headers_say(oblique, tmp_path):
    folder, vol = oblique
    img = nib.load(write_nifti(vol.array, vol, tmp_path / "ct.nii"))
    data = np.asarray(img.dataobj)
    for path in sorted(folder.iterdir())[:3]:
        ds = pydicom.dcmread(path)
        row_dir, col_dir = np.split(np.asarray(ds.ImageOrientationPatient, float), 2)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        corner = np.asarray(ds.ImagePositionPatient, float)
        pixels = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for y, x in ((0, 0), (3, 11), (15, 2)):
            lps = corner + x * dx * row_dir + y * dy * col_dir  # DICOM's own pixel position
            i, j, k = np.linalg.solve(img.affine[:3, :3], (LPS @ [*lps, 1])[:3] - img.affine[:3, 3])
            assert np.allclose([i, j, k], np.round([i, j, k]), atol=1e-3)
            assert (round(i), round(j)) == (x, y)
            assert data[round(i), round(j), round(k)] == pixels[y, x]


@pytest.mark.parametrize("array", [
    np.arange(120, dtype=np.int64).reshape(6, 5, 4) % 7,  # a label map (int64 is stored uint8)
    np.arange(120).reshape(6, 5, 4) * 1000 - 50_000,  # needs int32
    np.arange(120).reshape(6, 5, 4) % 2 == 1,  # bool -> uint8
    np.linspace(-1, 1, 240).reshape(6, 5, 4, 2),  # float64 channels
])
def test_arrays_round_trip_exactly(tmp_path, array):
    path = write_nifti(array, grid(), tmp_path / "a.nii.gz")
    back, geometry, _ = read_nifti_array(path, keep_channels=array.ndim == 4)
    np.testing.assert_array_equal(back, array)
    assert geometry.shape == (6, 5, 4)
    np.testing.assert_allclose(geometry.index_to_lps(), grid().index_to_lps(), atol=1e-5)


def test_header_is_fresh_and_carries_no_patient_data(oblique, tmp_path):
    _, vol = oblique
    path = write_nifti(vol.array, vol, tmp_path / "ct.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    for value in FAKE_PHI.values():
        assert value.encode() not in raw
    header = nib.load(path).header
    assert header["descrip"].tobytes().rstrip(b"\0") == b"medzoo"
    assert header["aux_file"].tobytes().strip(b"\0") == b"" and int(header["sform_code"]) == 1


def test_overwrite_is_refused_without_overwrite_true(tmp_path):
    target = tmp_path / "m.nii.gz"
    write_nifti(np.zeros((6, 5, 4), np.uint8), grid(), target)
    with pytest.raises(OutputError, match="overwrite=True"):
        write_nifti(np.ones((6, 5, 4), np.uint8), grid(), target)
    assert not np.asarray(nib.load(target).dataobj).any()
    write_nifti(np.ones((6, 5, 4), np.uint8), grid(), target, overwrite=True)
    assert np.asarray(nib.load(target).dataobj).all()
    (tmp_path / "user.nii").write_bytes(b"not ours")
    with pytest.raises(OutputError, match="did not write"):
        write_nifti(np.ones((6, 5, 4), np.uint8), grid(), tmp_path / "user.nii", overwrite=True)


def test_bad_write_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"\.nii or \.nii\.gz"):
        write_nifti(np.zeros((6, 5, 4)), grid(), tmp_path / "m.png")
    with pytest.raises(InvalidArgumentError, match="does not fit the grid"):
        write_nifti(np.zeros((6, 5, 3)), grid(), tmp_path / "m.nii")


NIBABEL_FILES = ["anatomical.nii", "example4d.nii.gz", "functional.nii", "standard.nii.gz",
                 "example_nifti2.nii.gz", "reoriented_anat_moved.nii"]


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_nibabel_test_files_read_with_their_affine(name):
    from nibabel.testing import data_path

    path = os.path.join(data_path, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not shipped with this nibabel ({nib.__version__}) wheel")
    img = nib.load(path)
    frame = 1 if len(img.shape) == 4 else None
    vol = read_nifti(path, frame=frame)
    data = np.asarray(img.dataobj)
    data = data[..., frame] if frame is not None else data
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0).astype(np.float32))
    assert vol.meta.sop_class == ("NIfTI-2" if "nifti2" in name else "NIfTI-1")
    rng = np.random.default_rng(0)
    ijk = np.column_stack([rng.integers(0, n, 20) for n in img.shape[:3]] + [np.ones(20)])
    expected = (LPS @ img.affine @ ijk.T).T  # nibabel's own RAS affine, taken to LPS
    to_lps = Geometry(vol.array.shape, vol.spacing, vol.origin, vol.direction).index_to_lps()
    got = (to_lps @ ijk[:, [2, 1, 0, 3]].T).T
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_4d_file_needs_a_frame():
    from nibabel.testing import data_path

    path = os.path.join(data_path, "example4d.nii.gz")
    if not os.path.exists(path):
        pytest.skip("example4d.nii.gz is not shipped with this nibabel wheel")
    with pytest.raises(InvalidArgumentError, match="frame=0 .. 1"):
        read_nifti(path)
    with pytest.raises(InvalidArgumentError, match="frame=5"):
        read_nifti(path, frame=5)


def _mutations(raw: bytes) -> dict[str, bytes]:
    def poke(offset, fmt, value):
        b = bytearray(raw)
        b[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        return bytes(b)

    return {
        "truncated.nii": raw[:-40],
        "header_only.nii": raw[:200],
        "sizeof_hdr.nii": poke(0, "<i", 999),
        "datatype.nii": poke(70, "<h", 77),
        "pixdim_zero.nii": poke(80, "<f", 0.0),
        "huge_dims.nii": poke(42, "<h", 30000)[:44] + struct.pack("<h", 30000) + raw[46:],
        "nan_srow.nii": poke(280, "<f", float("nan")),
        "magic.nii": raw[:344] + b"xx\0\0" + raw[348:],
        "truncated.nii.gz": gzip.compress(raw)[:200],
        "empty.nii": b"",
        "text.nii": b"PatientName: nobody\n" * 30,
    }


def test_broken_files_are_refused_naming_the_file(tmp_path):
    good = write_nifti(np.arange(120, dtype=np.int16).reshape(6, 5, 4), grid(tilt=0),
                       tmp_path / "good.nii")
    for name, data in _mutations(good.read_bytes()).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError) as caught:
            read_nifti(path)
        assert str(path) in str(caught.value), name
    with pytest.raises(DataError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii")


def test_sheared_affine_is_refused(tmp_path):
    affine = np.array([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), affine), tmp_path / "shear.nii")
    with pytest.raises(DataError, match="sheared"):
        read_nifti(tmp_path / "shear.nii")
