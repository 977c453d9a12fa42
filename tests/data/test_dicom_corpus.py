"""Every file of pydicom's test data and of pydicom-data: decoded, or a clear ZooError.

The corpus is not ours: many transfer syntaxes, modalities and broken files. Each file is
decoded once (module fixture); the tests then check the outcome of every file, that lossless
and re-encoded twins are equal pixel for pixel, and that CT lands in a plausible HU range.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from zoo.data.dicom import read_dicom
from zoo.errors import (
    DicomDecodeError,
    DicomError,
    MissingPixelDataError,
    NotDicomError,
    ZooError,
)

pydicom = pytest.importorskip("pydicom")


def corpus_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    files = set(get_testdata_files())
    import data_store  # the pydicom-data package

    files |= {str(p) for p in Path(data_store.__file__).parent.rglob("*") if p.is_file()}
    return sorted(Path(f) for f in files if os.path.isfile(f) and "__pycache__" not in f)


@pytest.fixture(scope="module")
def corpus():
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in corpus_files():
            try:
                results[path] = read_dicom(path)
            except Exception as e:  # recorded, judged by the tests below
                results[path] = e
    return results


def by_name(corpus, name):
    hits = [v for k, v in corpus.items() if k.name == name]
    assert hits, f"{name} is not in the corpus"
    return hits[0]


def test_corpus_is_the_real_one(corpus):
    assert len(corpus) >= 250  # pydicom's test files and pydicom-data's
    assert any("data_store" in str(p) for p in corpus)


def test_every_file_decodes_or_raises_a_clear_zoo_error(corpus):
    raw = {str(p): f"{type(e).__name__}: {e}" for p, e in corpus.items()
           if isinstance(e, Exception) and not isinstance(e, ZooError)}
    assert raw == {}
    for path, result in corpus.items():
        if isinstance(result, ZooError):
            message = str(result)
            assert path.name in message, message  # names the file
            assert len(message) > 60, message  # says the cause and the fix, not a bare code
        else:
            px = result.pixels
            assert px.dtype == np.float32 and px.ndim == 4 and px.shape[-1] in (1, 3)
            assert px.shape[:3] == (result.meta.frames, result.meta.rows, result.meta.columns)
            assert np.isfinite(px).all()
    decoded = [r for r in corpus.values() if not isinstance(r, Exception)]
    assert len(decoded) >= 150


@pytest.mark.parametrize("name, error", [
    ("README.txt", NotDicomError), ("zipMR.gz", NotDicomError), ("crayons.icc", NotDicomError),
    ("test1.json", NotDicomError), ("rtplan.dump", NotDicomError),
    ("MR_truncated.dcm", DicomDecodeError), ("JPEG-lossy.dcm", DicomDecodeError),
    ("test-SR.dcm", MissingPixelDataError), ("reportsi.dcm", MissingPixelDataError),
    ("rtstruct.dcm", MissingPixelDataError), ("rtplan.dcm", MissingPixelDataError),
    ("waveform_ecg.dcm", MissingPixelDataError), ("DICOMDIR", MissingPixelDataError),
    ("badVR.dcm", DicomError),
])
def test_known_bad_files_raise_the_right_error(corpus, name, error):
    result = by_name(corpus, name)
    assert isinstance(result, error), result


def test_messages_name_the_tag_or_cause(corpus):
    assert "NumberOfFrames (0028,0008)" in str(by_name(corpus, "badVR.dcm"))
    assert "truncated" in str(by_name(corpus, "MR_truncated.dcm"))
    assert "SR" in str(by_name(corpus, "test-SR.dcm"))
    assert "DICOMDIR" in str(by_name(corpus, "DICOMDIR"))
    assert "pip install" in str(by_name(corpus, "JPEG-lossy.dcm"))


LOSSLESS_TWINS = [  # (compressed, uncompressed reference)
    ("693_J2KR.dcm", "693_UNCR.dcm"), ("MR2_J2KR.dcm", "MR2_UNCR.dcm"), ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm"), ("US1_J2KR.dcm", "US1_UNCR.dcm"), ("examples_jpeg2k.dcm", "US1_UNCR.dcm"),
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"), ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm"),
    ("SC_rgb_rle.dcm", "SC_rgb.dcm"), ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),
    ("SC_rgb_rle_16bit.dcm", "SC_rgb_16bit.dcm"), ("SC_rgb_rle_32bit.dcm", "SC_rgb_32bit.dcm"),
    ("SC_rgb_rle_2frame.dcm", "SC_rgb_2frame.dcm"), ("SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_16bit_2frame.dcm"),
    ("SC_rgb_rle_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"), ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"), ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("rtdose_rle.dcm", "rtdose.dcm"), ("rtdose_rle_1frame.dcm", "rtdose_1frame.dcm"),
]
ENCODING_TWINS = [  # the same pixels in another byte order, VR encoding or planar configuration
    ("MR_small_bigendian.dcm", "MR_small.dcm"), ("MR_small_expb.dcm", "MR_small.dcm"),
    ("MR_small_implicit.dcm", "MR_small.dcm"), ("MR_small_padded.dcm", "MR_small.dcm"),
    ("emri_small_big_endian.dcm", "emri_small.dcm"), ("SC_rgb_expb.dcm", "SC_rgb.dcm"),
    ("SC_rgb_expb_16bit.dcm", "SC_rgb_16bit.dcm"), ("SC_rgb_expb_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm"),
    ("rtdose_expb.dcm", "rtdose.dcm"), ("liver_expb.dcm", "liver.dcm"),
    ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"), ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),
    ("color-pl.dcm", "color-px.dcm"),
]
LOSSY_REFERENCE = [  # lossy files and the decompressed copy shipped beside them: our decode must match
    ("693_J2KI.dcm", "693_UNCI.dcm"), ("MR2_J2KI.dcm", "MR2_UNCI.dcm"), ("US1_J2KI.dcm", "US1_UNCI.dcm"),
    ("RG1_J2KI.dcm", "RG1_UNCI.dcm"), ("RG3_J2KI.dcm", "RG3_UNCI.dcm"), ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),
]


@pytest.mark.parametrize("twin, reference", LOSSLESS_TWINS + ENCODING_TWINS + LOSSY_REFERENCE)
def test_twins_are_equal_pixel_for_pixel(corpus, twin, reference):
    a, b = by_name(corpus, twin), by_name(corpus, reference)
    assert not isinstance(a, Exception) and not isinstance(b, Exception)
    assert a.pixels.shape == b.pixels.shape
    np.testing.assert_array_equal(a.pixels, b.pixels)


def test_ct_lands_in_a_plausible_hounsfield_range(corpus):
    ct = {p: r for p, r in corpus.items() if not isinstance(r, Exception) and r.meta.modality == "CT"}
    assert len(ct) >= 15
    for path, image in ct.items():
        px = image.pixels
        assert image.meta.units == "HU", path
        assert px.min() >= -4096 and px.max() <= 4095, (path, px.min(), px.max())  # padding at worst
        tissue = np.mean((px >= -1100) & (px <= 3100))
        assert tissue >= 0.5, (path, tissue)
    ct_small = by_name(corpus, "CT_small.dcm").pixels
    raw = pydicom.dcmread(next(p for p in corpus if p.name == "CT_small.dcm"))
    expected = raw.pixel_array.astype(np.float64) * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    np.testing.assert_array_equal(ct_small[0, ..., 0], expected.astype(np.float32))


def test_enhanced_ct_is_rescaled_per_frame_from_the_functional_groups(corpus):
    image = by_name(corpus, "eCT_Supplemental.dcm")
    path = next(p for p in corpus if p.name == "eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    assert "RescaleIntercept" not in ds  # only in the functional groups
    intercept = float(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept)
    np.testing.assert_array_equal(image.pixels[..., 0], (ds.pixel_array.astype(np.float64) + intercept).astype(np.float32))
    assert image.meta.units == "HU" and image.meta.frames == 2
    assert image.meta.frame_positions is not None and len(image.meta.frame_positions) == 2


def test_monochrome1_is_inverted_over_the_stored_range(corpus):
    path = next(p for p in corpus if p.name == "RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and "RescaleSlope" not in ds
    expected = (2 ** int(ds.BitsStored) - 1) - ds.pixel_array.astype(np.float64)
    np.testing.assert_array_equal(by_name(corpus, "RG3_UNCR.dcm").pixels[0, ..., 0], expected)
    plain = read_dicom(path, invert_monochrome1=False).pixels[0, ..., 0]
    np.testing.assert_array_equal(plain, ds.pixel_array)


def test_palette_and_ybr_come_out_rgb(corpus):
    palette = by_name(corpus, "OBXXXX1A.dcm")
    assert palette.pixels.shape == (1, 600, 800, 3) and palette.meta.units == "RGB"
    assert palette.meta.value_range == (0.0, 65535.0)
    ybr = by_name(corpus, "SC_ybr_full_uncompressed.dcm").pixels
    rgb = by_name(corpus, "SC_rgb.dcm").pixels
    assert np.abs(ybr - rgb).max() <= 8  # YCbCr rounding only; unconverted YBR would differ by ~100
    multi = by_name(corpus, "color3d_jpeg_baseline.dcm")
    assert multi.pixels.shape == (120, 480, 640, 3)
