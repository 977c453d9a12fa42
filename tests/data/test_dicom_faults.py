"""Reproductions of issue 12's DICOM defects (M3-M6 and the DICOM low items), one test each.

Each test name carries the defect's id. The files are pydicom's own test files, edited with
pydicom the way a faulty writer or an interrupted copy would leave them.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from zoo.data import pipeline, series
from zoo.data.dicom import DicomWarning, read_dicom, read_metadata
from zoo.data.series import SeriesWarning, load_series, resample, resampled_shape
from zoo.data.synthetic_dicom import write_ct_series
from zoo.errors import (
    DicomDecodeError,
    DicomValueError,
    InvalidArgumentError,
    MissingPixelDataError,
    SeriesError,
    VolumeSizeError,
)


def edited(tmp_path, name: str, **tags):
    ds = pydicom.dcmread(get_testdata_file(name))
    with warnings.catch_warnings():  # pydicom warns about the invalid values planted here
        warnings.simplefilter("ignore")
        for key, value in tags.items():
            setattr(ds, key, value)
        path = tmp_path / f"{name}.edited.dcm"
        ds.save_as(path, enforce_file_format=False)
    return path


def slice_files_by_position(folder):
    return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


# --- M3: extra pixel data became channels -----------------------------------------------------


def test_m3_extra_pixel_bytes_are_a_decode_error_not_channels(tmp_path):
    stored = len(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PixelData)
    path = edited(tmp_path, "CT_small.dcm", Rows=64, Columns=64)
    with pytest.raises(
        DicomDecodeError, match=rf"holds {stored} bytes.*= {64 * 64 * 2} bytes; the extra bytes"
    ):
        read_dicom(path)


def test_m3_samples_per_pixel_1_on_rgb_data_is_a_decode_error(tmp_path):
    with pytest.raises(
        DicomDecodeError, match=r"SamplesPerPixel x BitsAllocated/8 = 1 x 100 x 100 x 1 x 8/8"
    ):
        read_dicom(edited(tmp_path, "SC_rgb.dcm", SamplesPerPixel=1))


@pytest.mark.parametrize(
    "name, frames, match",
    [
        ("SC_rgb_rle_2frame.dcm", 1, "declares 1 frame.*Basic Offset Table lists 2 frames"),
        ("emri_small_RLE.dcm", 12, "declares 12 frame.*Basic Offset Table lists 10 frames"),
        ("emri_small_jpeg_2k_lossless.dcm", 12, "declares 12 frame.*only 10 fragments"),
    ],
)
def test_m3_compressed_frames_must_match_number_of_frames(tmp_path, name, frames, match):
    """pydicom decodes the first NumberOfFrames frames and silently drops the others."""
    with pytest.raises(DicomDecodeError, match=match):
        read_dicom(edited(tmp_path, name, NumberOfFrames=frames))


def test_m3_zero_padding_after_the_last_frame_still_reads():
    """pydicom's MR_small_padded: excess zero bytes shorter than a frame are padding, not data."""
    padded, plain = (
        read_dicom(get_testdata_file("MR_small_padded.dcm")),
        read_dicom(get_testdata_file("MR_small.dcm")),
    )
    np.testing.assert_array_equal(padded.pixels, plain.pixels)


def _skipping_dataset(folder, cache_dir):
    return pipeline.dicom_dataset(folder, input_shape=(32, 32, 1), batch_size=4, shuffle=False,
                                  cache_dir=cache_dir, workers=1, on_error="skip")


def test_m3_dicom_dataset_skip_reports_instead_of_a_raw_batching_error(tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    write_ct_series(folder, n_slices=3, size=32)
    shutil.copy(edited(tmp_path, "CT_small.dcm", Rows=32, Columns=32), folder / "extra.dcm")
    ds = _skipping_dataset(folder, tmp_path / "c")
    x = np.concatenate([b.numpy() for b in ds])
    assert x.shape == (3, 32, 32, 1) and np.isfinite(x).all()
    assert [p for p, _ in ds.dicom.report.skipped] == [str(folder / "extra.dcm")]
    # and whatever the decoder gives, a sample of another shape is skipped before tf.data sees it
    real = pipeline.decode_item

    def four_channels(item, volumes, spacing=None):
        array, info = real(item, volumes, spacing)
        if item.name == "slice_0001.dcm":
            array, info = np.repeat(array, 4, axis=-1), {**info, "shape": [*array.shape[:-1], 4]}
        return array, info

    monkeypatch.setattr(pipeline, "decode_item", four_channels)
    ds = _skipping_dataset(folder, tmp_path / "c2")
    assert sum(b.shape[0] for b in ds) == 2
    assert "slice_0001.dcm decoded to an array of shape" in str(ds.dicom.report)


# --- M4: non-finite or degenerate geometry ----------------------------------------------------


def test_m4_rescale_slope_1e38_is_an_error_naming_the_tag(tmp_path):
    with pytest.raises(DicomValueError, match=r"not finite .* RescaleSlope \(0028,1053\)"):
        read_dicom(edited(tmp_path, "CT_small.dcm", RescaleSlope="1e38"))


@pytest.mark.parametrize(
    "orientation, why", [([1, 0, 0, 1, 0, 0], "parallel"), ([0, 0, 0, 0, 1, 0], "zero vector")]
)
def test_m4_degenerate_orientation_is_named_and_a_series_refuses_it(tmp_path, orientation, why):
    folder = tmp_path / "s"
    write_ct_series(folder, n_slices=4, size=16)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = orientation
        ds.save_as(path)
    with pytest.warns(
        DicomWarning, match=rf"ImageOrientationPatient \(0020,0037\) is degenerate.*{why}"
    ):
        image = read_dicom(next(folder.iterdir()))
    assert image.meta.image_orientation is None  # a 2D image still reads
    with pytest.raises(
        SeriesError, match=rf"ImageOrientationPatient \(0020,0037\) is degenerate.*{why}"
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DicomWarning)
            load_series(folder)


@pytest.mark.parametrize("spacing", [[0, 0], [-0.7, 0.7]])
def test_m4_non_positive_pixel_spacing_never_reaches_a_volume(tmp_path, spacing):
    folder = tmp_path / "s"
    write_ct_series(folder, n_slices=4, size=16)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = spacing
        ds.save_as(path)
    with pytest.warns(DicomWarning, match=r"PixelSpacing \(0028,0030\) is .* must be positive"):
        assert read_metadata(next(folder.iterdir())).pixel_spacing is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        with pytest.raises(SeriesError, match=r"PixelSpacing \(0028,0030\)"):
            load_series(folder, target_spacing=1.0)


def test_m4_dicom_convert_writes_no_png_from_infinite_pixels(tmp_path, capsys):
    from zoo.cli import main

    path = edited(tmp_path, "CT_small.dcm", RescaleSlope="1e38")
    assert main(["dicom", "convert", str(path), str(tmp_path / "out")]) != 0
    assert "RescaleSlope" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(path, folder / "inf.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "good.dcm")
    assert main(["dicom", "convert", str(folder), str(tmp_path / "out2")]) == 1
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [".zoo-manifest.json", "good.png"]
    assert "inf.dcm: DicomValueError" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.png"))


# --- M5: truncated files ----------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["mid_pixel_data", "mid_header", "element_length"])
def test_m5_truncated_file_is_truncated_or_corrupt_not_no_image(tmp_path, cut):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    if cut == "mid_pixel_data":
        data = data[: data.index(b"\xe0\x7f\x10\x00") + 5000]
    elif cut == "mid_header":
        data = data[:600]
    else:  # PatientName's length made to run past the end of the file
        at = data.index(b"\x10\x00\x10\x00PN")
        data = data[: at + 6] + (60000).to_bytes(2, "little") + data[at + 8 :]
    path = tmp_path / "cut.dcm"
    path.write_bytes(data)
    with pytest.raises(DicomDecodeError, match="is truncated or corrupt"):
        read_dicom(path)
    with pytest.raises(DicomDecodeError, match="is truncated or corrupt"):
        read_metadata(path) if cut != "mid_pixel_data" else read_dicom(path)


def test_m5_an_object_without_pixel_data_is_still_missing_pixel_data():
    with pytest.raises(MissingPixelDataError, match="holds no image"):
        read_dicom(get_testdata_file("test-SR.dcm"))


def test_m5_series_with_a_truncated_last_slice_reports_it(tmp_path):
    folder = tmp_path / "s"
    write_ct_series(folder, n_slices=6, size=16)
    last = slice_files_by_position(folder)[-1]
    last.write_bytes(last.read_bytes()[:-100])
    with pytest.warns(SeriesWarning, match="1 image file.* could not be used"):
        volume = load_series(folder)
    assert volume.report.slices == 5
    assert [p for p, _ in volume.report.skipped] == [str(last)]
    assert "truncated or corrupt" in volume.report.skipped[0][1]
    with pytest.raises(SeriesError, match="truncated or corrupt"):
        load_series(folder, on_problem="raise")


def test_m5_every_skipped_file_is_in_the_report(tmp_path):
    folder = tmp_path / "s"
    write_ct_series(folder, n_slices=4, size=16, series_uid="1.2.3.4")
    other = write_ct_series(tmp_path / "o", n_slices=2, size=16, series_uid="1.2.3.5")
    for p in other.paths:
        shutil.copy(p, folder / f"other_{p.name}")
    (folder / "notes.txt").write_text("not dicom")
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "sr.dcm")
    key = read_metadata(next(folder.glob("slice_*"))).series_key
    volume = load_series(folder, series=key)
    skipped = {p.rsplit("/", 1)[-1] for p, _ in volume.report.skipped}
    assert skipped == {"notes.txt", "sr.dcm", "other_slice_0000.dcm", "other_slice_0001.dcm"}
    assert volume.report.files == volume.report.slices + len(skipped)


# --- M6: resampling without a size guard ------------------------------------------------------


def test_m6_absurd_target_spacing_is_refused_with_the_numbers(tmp_path):
    write_ct_series(tmp_path / "s", n_slices=6, size=22)
    with pytest.raises(
        VolumeSizeError, match=r"would build \(\d+, \d+, \d+\) = .* GiB float32.*MAX_VOXELS"
    ):
        load_series(tmp_path / "s", target_spacing=1e-3)


def test_m6_one_slice_moved_by_1e5_mm_is_refused(tmp_path):
    folder = tmp_path / "s"
    write_ct_series(folder, n_slices=13, size=22)
    path = slice_files_by_position(folder)[3]
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [0, 0, 1e5]
    ds.save_as(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeriesWarning)
        with pytest.raises(
            VolumeSizeError, match=r"times the input .*MAX_UPSAMPLING.*largest step of 9\d{4}"
        ):
            load_series(folder, target_spacing=1.0)
        assert load_series(folder).array.shape == (
            13,
            22,
            22,
        )  # stacking alone is fine, with a gap reported


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), 0.0, -1.0, (1.0, float("nan"), 1.0), "x"]
)
def test_m6_non_finite_or_non_positive_target_spacing_is_an_invalid_argument(tmp_path, bad):
    write_ct_series(tmp_path / "s", n_slices=3, size=16)
    with pytest.raises(InvalidArgumentError, match="give a positive, finite number"):
        load_series(tmp_path / "s", target_spacing=bad)


def test_m6_estimated_size_is_the_built_size():
    array = np.zeros((5, 20, 30), np.float32)
    z = np.array([0.0, 2.5, 5.0, 10.0, 12.5])
    for target in (1.0, (2.0, 0.5, 0.7), 0.33):
        assert resample(array, z, (2.5, 0.7, 0.6), target)[0].shape == resampled_shape(
            z, array.shape, (2.5, 0.7, 0.6), target
        )
    with pytest.raises(SeriesError, match="not finite"):
        resampled_shape(np.array([0.0, np.nan]), (2, 4, 4), (1.0, 1.0, 1.0), 1.0)
    assert (
        series.MAX_VOXELS * 4 <= 2**32
    )  # the documented limit: at most 4 GiB of float32 (1 GiB today)


def test_m6_cli_spacing_nan_is_a_clear_error(tmp_path, capsys):
    from zoo.cli import main

    write_ct_series(tmp_path / "s", n_slices=3, size=16)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "dicom",
                "convert",
                str(tmp_path / "s"),
                str(tmp_path / "out"),
                "--volume",
                "--spacing",
                "nan",
            ]
        )
    assert info.value.code == 2
    assert "--spacing 'nan': give a positive, finite spacing in mm" in capsys.readouterr().err


# --- low: messages ----------------------------------------------------------------------------


def test_low_jpeg_lossless_without_its_decoder_names_the_dicom_extra(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder

    from zoo.errors import DecoderMissingError

    decoder = get_decoder(pydicom.uid.JPEGLossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(
        DecoderMissingError,
        match=r'GPL-3.0\), is in the optional `dicom` extra: `pip install "medzoo\[dicom\]"`',
    ):
        read_dicom(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))


def test_low_pydicom_warnings_come_back_without_element_values(tmp_path):
    path = edited(tmp_path, "CT_small.dcm", SOPClassUID="Doe^Jane-PID-7731")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_dicom(path)
    texts = [str(w.message) for w in caught]
    assert texts and all(w.category is DicomWarning for w in caught)
    assert not any("Doe^Jane" in t or "PID-7731" in t for t in texts), texts
