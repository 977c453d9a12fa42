"""Fuzzing the reader: mutated DICOM files (bit flips, overwritten lengths, truncation, splices).

Every outcome must be pixels or a ZooError: never another exception, a crash or a hang
(hypothesis' deadline bounds each read). Seeds cover the main decoders: native little and
big endian, RLE, JPEG 2000, JPEG-LS, JPEG baseline, palette colour and enhanced multi-frame.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.data.dicom import read_dicom, read_metadata
from zoo.errors import ZooError

SEEDS = ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle_2frame.dcm",
         "examples_palette.dcm", "emri_small_RLE.dcm", "rtdose_1frame.dcm"]


def seed_bytes() -> list[bytes]:
    from pydicom.data import get_testdata_file

    return [open(get_testdata_file(name), "rb").read() for name in SEEDS]


SEED_BYTES = seed_bytes()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**7), st.integers(1, 255)),
    st.tuples(st.just("length"), st.integers(0, 10**7), st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 3])),
    st.tuples(st.just("truncate"), st.integers(0, 10**7), st.just(0)),
    st.tuples(st.just("splice"), st.integers(0, 10**7), st.integers(0, 10**7)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= value
        elif kind == "length":  # overwrite 4 bytes, most often a length or a Rows/Columns pair
            buf[pos:pos + 4] = value.to_bytes(4, "little")
        elif kind == "truncate":
            del buf[pos:]
        else:  # copy a chunk of the file over another place
            src = value % len(buf)
            buf[pos:pos + 16] = buf[src:src + 16]
    return bytes(buf)


def check(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_metadata(path)  # the header-only path (`zoo dicom info`) must hold too
        except ZooError as e:
            assert "fuzz.dcm" in str(e)
        try:
            image = read_dicom(path)
        except ZooError as e:
            assert "fuzz.dcm" in str(e)
            return
    assert image.pixels.ndim == 4 and image.pixels.dtype.name == "float32"


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, len(SEEDS) - 1), ops=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_quick(tmp_path, seed, ops):
    check(tmp_path, mutate(SEED_BYTES[seed], ops))


@pytest.mark.slow
@settings(max_examples=2000, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, len(SEEDS) - 1), ops=st.lists(mutation, min_size=1, max_size=8))
def test_fuzz_thousands(tmp_path, seed, ops):
    check(tmp_path, mutate(SEED_BYTES[seed], ops))


@pytest.mark.slow
@settings(max_examples=600, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, len(SEEDS) - 1), start=st.integers(0, 2000), size=st.integers(1, 64),
       junk=st.binary(min_size=1, max_size=64))
def test_fuzz_header_region(tmp_path, seed, start, size, junk):
    """Most parsing happens in the first couple of kilobytes: hit them hard."""
    data = bytearray(SEED_BYTES[seed])
    data[start:start + size] = junk
    check(tmp_path, bytes(data))
