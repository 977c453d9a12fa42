"""The reader on files we write ourselves: values against hand computation, every bad-file error."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import MPEG2MPML, JPEG2000Lossless

from zoo.data.dicom import read_dicom, read_metadata
from zoo.data.synthetic_dicom import FAKE_PHI, write_ct_series
from zoo.errors import (
    DecoderMissingError,
    DicomDecodeError,
    DicomError,
    MissingPixelDataError,
    NotDicomError,
    ZooError,
)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_ct_series(tmp_path_factory.mktemp("ct"), n_slices=4, size=32)


def slice_index(series, path):
    return int(np.argmin([np.linalg.norm(p - np.array(read_metadata(path).image_position)) for p in series.positions]))


@pytest.mark.parametrize("compression", ["none", "rle", "j2k"])
def test_synthetic_ct_reads_back_exact_hu(tmp_path, compression):
    s = write_ct_series(tmp_path, n_slices=3, size=32, compression=compression)
    for path in s.paths:
        image = read_dicom(path)
        assert image.pixels.shape == (1, 32, 32, 1) and image.pixels.dtype == np.float32
        np.testing.assert_array_equal(image.pixels[0, ..., 0], s.volume[slice_index(s, path)])
        assert image.meta.units == "HU" and image.meta.value_range == (-1024.0, 3071.0)


def test_metadata_has_geometry_and_no_phi(series):
    meta = read_metadata(series.paths[0])
    assert meta.modality == "CT" and meta.sop_class == "CT Image Storage"
    assert meta.pixel_spacing == (0.7, 0.7) and meta.slice_thickness == 2.5
    assert meta.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert meta.window == (40.0, 400.0) and len(meta.series_key) == 12
    text = repr(meta) + repr(meta.to_dict())
    for value in FAKE_PHI.values():
        assert value not in text
    ds = pydicom.dcmread(series.paths[0])
    assert ds.SeriesInstanceUID not in text


def write(ds, path):
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_not_dicom_and_missing_files(tmp_path):
    (tmp_path / "notes.txt").write_text("PatientName: nobody\n" * 20)
    with pytest.raises(NotDicomError, match="notes.txt is not a DICOM file"):
        read_dicom(tmp_path / "notes.txt")
    with pytest.raises(DicomError, match="does not exist"):
        read_dicom(tmp_path / "absent.dcm")
    with pytest.raises(DicomError, match="is a folder"):
        read_dicom(tmp_path)
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(NotDicomError):
        read_dicom(tmp_path / "empty.dcm")


@pytest.mark.parametrize("keep", [200, 600, 900])
def test_truncated_files_raise_a_zoo_error_naming_the_file(tmp_path, series, keep):
    data = series.paths[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:keep])
    with pytest.raises(ZooError, match="cut.dcm") as err:
        read_dicom(cut)
    for value in FAKE_PHI.values():
        assert value not in str(err.value)


def test_no_pixel_data(tmp_path, series):
    ds = pydicom.dcmread(series.paths[0])
    del ds.PixelData
    with pytest.raises(MissingPixelDataError, match=r"CT Image Storage object without pixel data \(no PixelData"):
        read_dicom(write(ds, tmp_path / "nopix.dcm"))


def test_decoder_not_installed_names_the_package(tmp_path, series, monkeypatch):
    ds = pydicom.dcmread(series.paths[0])
    ds.compress(JPEG2000Lossless)
    path = write(ds, tmp_path / "j2k.dcm")

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda uid: Unavailable())
    with pytest.raises(DecoderMissingError, match="pip install pylibjpeg pylibjpeg-openjpeg") as err:
        read_dicom(path)
    assert "JPEG 2000 Image Compression (Lossless Only)" in str(err.value) and "j2k.dcm" in str(err.value)


def test_transfer_syntax_without_any_decoder(tmp_path, series):
    ds = pydicom.dcmread(series.paths[0])
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    with pytest.raises(DecoderMissingError, match="which no Python DICOM decoder supports"):
        read_dicom(write(ds, tmp_path / "mpeg.dcm"))


def test_corrupt_compressed_stream(tmp_path, series):
    ds = pydicom.dcmread(series.paths[0])
    ds.compress(JPEG2000Lossless)
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 2])
    with pytest.raises(DicomDecodeError, match="corrupt"):
        read_dicom(write(ds, tmp_path / "bad_j2k.dcm"))


def test_header_claiming_huge_image_is_refused_without_allocating(tmp_path, series):
    ds = pydicom.dcmread(series.paths[0])
    ds.NumberOfFrames = 2_000_000
    with pytest.raises(DicomDecodeError, match="NumberOfFrames"):
        read_dicom(write(ds, tmp_path / "huge.dcm"))


def test_malformed_tag_is_named(tmp_path, series):
    data = series.paths[0].read_bytes()
    assert data.count(b"0.7\\0.7") == 1
    bad = tmp_path / "bad_tag.dcm"
    bad.write_bytes(data.replace(b"0.7\\0.7", b"ab\\cdef"))  # same length, not a number
    with pytest.raises(DicomError, match=r"PixelSpacing \(0028,0030\) has a malformed value"):
        read_dicom(bad)


def test_rescale_and_monochrome1_by_hand(tmp_path, series):
    ds = pydicom.dcmread(series.paths[0])
    stored = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-100"
    ds.PhotometricInterpretation = "MONOCHROME1"
    image = read_dicom(write(ds, tmp_path / "m1.dcm"))
    # stored range [0, 4095] maps to [-100, 1947.5]; inversion: lo + hi - x
    expected = (-100 + 1947.5) - (stored * 0.5 - 100)
    np.testing.assert_allclose(image.pixels[0, ..., 0], expected)
    assert image.meta.value_range == (-100.0, 1947.5)


def test_multiframe_and_frame_selection(tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm")
    full = read_dicom(path)
    assert full.pixels.shape == (10, 64, 64, 1)
    some = read_dicom(path, frames=[7, 2])
    np.testing.assert_array_equal(some.pixels, full.pixels[[7, 2]])
    with pytest.raises(DicomError, match=r"frames \[10\] do not exist"):
        read_dicom(path, frames=[10])


@pytest.mark.parametrize("little_endian", [True, False])
def test_file_without_meta_header_is_read_by_its_encoding(tmp_path, series, little_endian):
    """Old ACR-NEMA style: no preamble, no 'DICM', no file meta; the data set starts at byte 0."""
    from io import BytesIO

    from pydicom.filebase import DicomFileLike

    ds = pydicom.dcmread(series.paths[0])
    ds.PixelData = ds.pixel_array.astype(">u2" if not little_endian else "<u2").tobytes()
    buffer = DicomFileLike(BytesIO())
    buffer.is_little_endian, buffer.is_implicit_VR = little_endian, False
    pydicom.filewriter.write_dataset(buffer, pydicom.Dataset({k: ds[k] for k in ds.keys()}))
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(buffer.parent.getvalue())
    assert bare.read_bytes()[:4] != b"DICM" and b"DICM" not in bare.read_bytes()[:132]
    image = read_dicom(bare)
    np.testing.assert_array_equal(image.pixels, read_dicom(series.paths[0]).pixels)
    assert "Explicit VR" in image.meta.transfer_syntax


def test_module_never_imports_tensorflow():
    import subprocess
    import sys

    code = ("import zoo.data.dicom, zoo.data.series, zoo.data.windows, zoo.data.dicom_cli, zoo.data.synthetic_dicom, "
            "zoo.data.pipeline, sys; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_degenerate_orientation_matches_the_numpy_reference():
    from zoo.data.dicom import _degenerate

    rng = np.random.default_rng(3)
    cases = [rng.normal(size=6) for _ in range(50)]
    cases += [np.r_[v, 2.5 * v] for v in rng.normal(size=(5, 3))]  # parallel
    cases += [np.r_[np.zeros(3), rng.normal(size=3)], np.r_[1, 0, 0, 0, 1, 0], np.zeros(6)]
    for o in cases:
        row, col = o[:3], o[3:]
        norms = np.linalg.norm(row), np.linalg.norm(col)
        if min(norms) < 1e-3:
            want = "zero vector"
        elif np.linalg.norm(np.cross(row / norms[0], col / norms[1])) < 1e-3:
            want = "parallel"
        else:
            want = ""
        got = _degenerate(tuple(float(v) for v in o))
        assert (want in got) if want else got == ""
