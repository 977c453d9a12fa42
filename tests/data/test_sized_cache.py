"""The sized cache of the slice and 2.5D samplers: values against an independent reference, reuse
and invalidation, never augmented, per-sample augmentation functions, tf.data service delivery,
the background writer, and the exact float32 rescale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import pipeline, sized_cache
from zoo.data.dicom import _rescale, read_dicom
from zoo.data.pipeline import _as_int16, dicom_dataset
from zoo.data.synthetic_dicom import write_ct_series
from zoo.errors import InvalidArgumentError

WINDOWS = [(40.0, 400.0), (-600.0, 1500.0), (300.0, 1500.0)]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("sized_src")
    write_ct_series(root / "a", n_slices=4, size=32, seed=3)
    return root / "a"


def batches(ds):
    return np.concatenate([(b[0] if isinstance(b, tuple) else b).numpy() for b in ds])


def reference(files, size, windows=WINDOWS, out=(0.0, 255.0)):
    """HU -> tf.image.resize(antialias) -> DICOM linear window per channel, written out here."""
    rows = []
    for f in files:
        hu = read_dicom(f).pixels[0].astype(np.float64)
        x = tf.image.resize(hu.astype(np.float32), size, antialias=True).numpy().astype(np.float64)
        chans = [np.clip((x[..., 0] - (c - 0.5)) / (w - 1) + 0.5, 0, 1) for c, w in windows]
        rows.append(np.stack(chans, -1) * (out[1] - out[0]) + out[0])
    return np.stack(rows)


def test_resized_windowed_values_and_reuse(series, tmp_path):
    files = sorted(series.iterdir())
    ds = dicom_dataset(series, input_shape=(16, 16, 3), windows=WINDOWS, shuffle=False,
                       batch_size=3, cache_dir=tmp_path, workers=1)
    assert (ds.dicom.decoded, ds.dicom.sized) == (4, 4)
    np.testing.assert_allclose(batches(ds), reference(files, (16, 16)), atol=2e-3)
    sized = sorted((tmp_path / sized_cache.SIZED_DIR).glob("*.f32"))
    assert len(sized) == 4 and all(p.stat().st_size == 16 * 16 * 3 * 4 for p in sized)
    assert not list(tmp_path.rglob("*.tmp"))  # every write was renamed into place

    again = dicom_dataset(series, input_shape=(16, 16, 3), windows=WINDOWS, shuffle=False,
                          cache_dir=tmp_path)
    assert (again.dicom.decoded, again.dicom.sized) == (0, 0)
    np.testing.assert_array_equal(batches(again), batches(ds))
    # another size or another window is another variant: new files, the old ones stay valid
    other = dicom_dataset(series, input_shape=(8, 8, 1), windows=["lung"], shuffle=False,
                          cache_dir=tmp_path)
    assert (other.dicom.decoded, other.dicom.sized) == (0, 4)
    assert len(list((tmp_path / sized_cache.SIZED_DIR).glob("*.f32"))) == 8
    lung = [(-600.0, 1500.0)]
    np.testing.assert_allclose(batches(other), reference(files, (8, 8), lung), atol=2e-3)


def test_cache_from_worker_processes_is_sized_in_the_main_process(series, tmp_path, monkeypatch):
    # a cache decoded elsewhere (here: a previous run) is sized from the .npy files alone
    dicom_dataset(series, input_shape=(32, 32, 1), cache_dir=tmp_path, workers=1)
    monkeypatch.setattr(pipeline, "read_dicom", lambda *a, **k: pytest.fail("decoded again"))
    ds = dicom_dataset(series, input_shape=(12, 12, 3), windows=WINDOWS, shuffle=False,
                       cache_dir=tmp_path)
    assert (ds.dicom.decoded, ds.dicom.sized) == (0, 4)
    np.testing.assert_allclose(batches(ds), reference(sorted(series.iterdir()), (12, 12)),
                               atol=2e-3)


def test_augmentation_is_never_cached_and_functions_run_per_sample(series, tmp_path):
    plain = batches(dicom_dataset(series, input_shape=(16, 16, 3), shuffle=False,
                                  cache_dir=tmp_path))
    mirrored = dicom_dataset(series, input_shape=(16, 16, 3), shuffle=False, cache_dir=tmp_path,
                             augment=lambda x: x[:, ::-1])
    assert mirrored.dicom.sized == 0  # the same cache: augmentation is not part of it
    np.testing.assert_array_equal(batches(mirrored), plain[:, :, ::-1])
    flipped = batches(dicom_dataset(series, input_shape=(16, 16, 3), shuffle=False,
                                    cache_dir=tmp_path, augment=tf.image.random_flip_left_right))
    assert all(np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
               for a, b in zip(flipped, plain))


def test_a_bad_augment_is_refused_before_decoding(series, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "read_dicom", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(InvalidArgumentError, match="augment=3.*function of one sample"):
        dicom_dataset(series, cache_dir=tmp_path, augment=3)


def test_grey_and_colour_items_share_a_batch(tmp_path):
    from pydicom.data import get_testdata_file

    mr, rgb = get_testdata_file("MR_small.dcm"), get_testdata_file("SC_rgb.dcm")
    x = batches(dicom_dataset([mr, rgb], input_shape=(20, 20, 3), shuffle=False, batch_size=2,
                              cache_dir=tmp_path))
    assert x.shape == (2, 20, 20, 3) and 0 <= x.min() and x.max() <= 255
    np.testing.assert_array_equal(x[0, ..., 0], x[0, ..., 2])  # grey: one stretch, 3 channels
    colour = read_dicom(rgb).pixels[0]
    expected = tf.image.resize(colour, (20, 20), antialias=True).numpy()  # [0, 255] stays
    np.testing.assert_allclose(x[1], np.clip(expected, 0, 255), atol=1e-3)


def test_the_tf_data_service_delivers_the_warm_pipeline(series, tmp_path):
    from zoo.train.data_service import DataService

    ds = dicom_dataset(series, [0, 1, 2, 3], input_shape=(16, 16, 1), batch_size=1,
                       shuffle=False, cache_dir=tmp_path)
    local = {int(y[0]): x.numpy() for x, y in ds}
    with DataService(workers=2) as service:
        served = [(x.numpy(), int(y[0])) for x, y in service.distribute(ds)]
    assert sorted(y for _, y in served) == [0, 1, 2, 3]  # each element exactly once
    for x, y in served:
        np.testing.assert_array_equal(x, local[y])


def test_writer_renames_only_whole_files_and_reraises(tmp_path):
    def broken(tmp: Path):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    writer = sized_cache.Writer(limit=10)
    writer.submit(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"whole"), nbytes=8)
    writer.submit(tmp_path / "b.bin", broken, nbytes=8)  # waits for a: over the limit
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert (tmp_path / "a.bin").read_bytes() == b"whole" and not (tmp_path / "b.bin").exists()


@pytest.mark.parametrize("slope, intercept", [(1.0, -1024.0), (2.0, 3.0), (0.5, -1.0),
                                              (1.0, -1024.25)])
def test_rescale_in_float32_only_where_exact(slope, intercept):
    stored = np.random.default_rng(0).integers(-2048, 4096, (64, 64)).astype(np.int16)
    fast = _rescale(stored, slope, intercept).astype(np.float32)
    exact = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    np.testing.assert_array_equal(fast, exact)
    assert _rescale(stored, 0.5, 0.0).dtype == np.float64  # a fractional slope stays float64


@pytest.mark.parametrize("shape, size", [((2, 64, 48, 1), (16, 24)), ((1, 10, 12, 3), (40, 30)),
                                         ((1, 20, 20, 1), (20, 20))])
def test_sparse_resize_equals_tensorflow_to_round_off(shape, size):
    x = np.random.default_rng(1).uniform(-1000, 3000, shape).astype(np.float32)
    expected = tf.image.resize(x, size, antialias=True).numpy()  # down, up, and the same size
    np.testing.assert_allclose(sized_cache.resize(x, size), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape, size", [((1, 512, 512, 1), (224, 224)),
                                         ((2, 60, 70, 3), (100, 90))])
def test_float32_resize_is_within_one_ulp_of_tensorflow(shape, size):
    # CT-like integers (HU) and fractional values; equal in every case measured, 1 ulp allowed
    rng = np.random.default_rng(4)
    for x in (rng.integers(-1024, 3072, shape).astype(np.float32),
              rng.uniform(-1000, 3000, shape).astype(np.float32)):
        expected = tf.image.resize(x, size, antialias=True).numpy()
        got = sized_cache.resize(x, size)
        assert got.dtype == np.float32
        ulps = np.abs(got - expected) / np.spacing(np.abs(expected))
        assert ulps.max() <= 1.0


@pytest.mark.parametrize("n_in, n_out", [(512, 224), (224, 512), (513, 224), (100, 37), (7, 3),
                                         (3, 7), (1, 5), (5, 1), (300, 299), (64, 64)])
def test_resize_weights_are_tensorflows_bit_for_bit(n_in, n_out):
    # computed without TensorFlow (decode workers never import it), equal to its kernel's
    impulses = np.eye(n_in, dtype=np.float32)[:, :, None, None]
    expected = tf.image.resize(impulses, (n_out, 1), antialias=True).numpy()[:, :, 0, 0].T
    np.testing.assert_array_equal(sized_cache.resize_matrix(n_in, n_out).toarray(), expected)


@pytest.mark.parametrize("chans_in", [1, 3])
def test_window_equals_the_broadcast_formula_and_tensorflow(chans_in):
    x = np.random.default_rng(5).uniform(-1500, 3000, (2, 9, 7, chans_in)).astype(np.float32)
    affine = np.array([[1 / 399, 1 / 1499, 1 / 1799], [0.376, 0.900, 0.278]], np.float32)
    got = sized_cache.window_np(x, affine, (-1.0, 2.0))
    # the same float32 operations, written with numpy's broadcasting
    y = x * affine[0] + affine[1]
    expected = np.clip(y, 0.0, 1.0) * np.float32(3.0) + np.float32(-1.0)
    assert got.shape == (2, 9, 7, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, sized_cache.window_tf(x, affine, (-1.0, 2.0)).numpy())
    one = sized_cache.window_np(x, affine[:, :1], (0.0, 1.0))  # one window over each channel
    assert one.shape == (2, 9, 7, chans_in)
    np.testing.assert_array_equal(one, np.clip(x * affine[0, 0] + affine[1, 0], 0.0, 1.0))


def test_an_old_version_sized_cache_is_rebuilt_never_read(series, tmp_path):
    files = sorted(series.iterdir())
    options = {"input_shape": (16, 16, 3), "windows": WINDOWS, "shuffle": False,
               "cache_dir": tmp_path}
    dicom_dataset(series, **options)
    # the same files under the previous version's folder, with wrong values in them
    current = tmp_path / sized_cache.SIZED_DIR
    old = tmp_path / "sized-v1"
    current.rename(old)
    for f in old.glob("*.f32"):
        f.write_bytes(np.full(16 * 16 * 3, 7.0, "<f4").tobytes())
    ds = dicom_dataset(series, **options)
    assert (ds.dicom.decoded, ds.dicom.sized) == (0, 4)  # decode cache reused, sized rebuilt
    np.testing.assert_allclose(batches(ds), reference(files, (16, 16)), atol=2e-3)
    assert len(list(old.glob("*.f32"))) == 4  # left alone, never deleted


@pytest.mark.parametrize("dtype, slope, intercept", [(np.int16, 1.0, -1024.0),
                                                     (np.uint16, 3.0, -7.0), (np.uint8, 1.0, 0.0)])
def test_rescale_into_output_equals_the_formula(dtype, slope, intercept):
    stored = np.random.default_rng(2).integers(0, 4096 if dtype != np.uint8 else 256,
                                               (2, 16, 16, 1)).astype(dtype)
    out = np.full(stored.shape, np.nan, np.float32)
    for k in range(2):  # frame by frame into views of one buffer, as read_dicom does
        _rescale(stored[k], slope, intercept, out=out[k])
    np.testing.assert_array_equal(out, stored.astype(np.float64) * slope + intercept)


@pytest.mark.parametrize("values, small", [([1.0, -3.0, 32767.0, -32768.0], True),
                                           ([40000.0], False), ([65541.0], False),
                                           ([1.5], False), ([np.nan, 1.0], False),
                                           ([np.inf], False), ([], False)])
def test_as_int16_only_when_lossless(values, small):
    array = np.asarray(values, np.float32)
    got = _as_int16(array)
    assert (got.dtype == np.int16) == small
    np.testing.assert_array_equal(got.astype(np.float32), array)
