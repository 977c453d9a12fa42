"""The tf.data DICOM pipeline: values of every sampler against numpy, cache reuse, skip report, contracts."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import tensorflow as tf

from zoo.data import pipeline
from zoo.data.dicom import read_dicom
from zoo.data.pipeline import _Plan, _sample, dicom_dataset
from zoo.data.synthetic_dicom import write_ct_series
from zoo.data.windows import stack_windows, window
from zoo.errors import DataError, InvalidArgumentError, MissingPixelDataError, NotDicomError

WIDE = (1000.0, 4001.0)  # a window wide enough to invert: hu = (y - 0.5) * 4000 + 999.5


def unwide(y):
    return (np.asarray(y, np.float64) - 0.5) * 4000.0 + 999.5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_root")
    write_ct_series(root / "a", n_slices=5, size=32, seed=0)
    write_ct_series(root / "b", n_slices=5, size=32, seed=1, tilt_deg=10)
    return root


def batches(ds):
    xs, ys = [], []
    for b in ds:
        if isinstance(b, tuple):
            xs.append(b[0].numpy())
            ys.append(b[1].numpy())
        else:
            xs.append(b.numpy())
    return np.concatenate(xs), (np.concatenate(ys) if ys else None)


def test_slice_sampler_values_follow_the_contract(root, tmp_path):
    files = sorted((root / "a").iterdir())
    labels = {f: i % 2 for i, f in enumerate(files)}
    ds = dicom_dataset(root / "a", labels, input_shape=(32, 32, 3), batch_size=2, shuffle=False,
                       cache_dir=tmp_path, workers=1)
    x, y = batches(ds)
    assert isinstance(ds, tf.data.Dataset) and len(ds.dicom) == 5
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32
    expected = np.stack([stack_windows(read_dicom(f).pixels[0], ("abdomen_soft_tissue", "lung", "bone")) * 255
                         for f in files])
    np.testing.assert_allclose(x, expected, atol=1e-3)
    assert y.tolist() == [labels[f] for f in files]


def test_resize_to_a_card_contract_and_grey_model(root, tmp_path):
    ds = dicom_dataset(root / "a", model="resnet50.imagenet", batch_size=5, shuffle=False, cache_dir=tmp_path,
                       workers=1)
    x, _ = batches(ds)
    assert x.shape == (5, 224, 224, 3) and 0 <= x.min() and x.max() <= 255
    import zoo

    model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32))
    grey = dicom_dataset(root / "a", [0, 1, 0, 1, 1], model=model, batch_size=5, shuffle=False,
                         cache_dir=tmp_path, workers=1)
    x, y = batches(grey)
    assert x.shape == (5, 32, 32, 1)
    expected = window(read_dicom(sorted((root / "a").iterdir())[0]).pixels[0], "abdomen_soft_tissue") * 255
    np.testing.assert_allclose(x[0], expected, atol=1e-3)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(grey, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_cache_is_reused_and_invalidated(root, tmp_path, monkeypatch):
    first = dicom_dataset(root / "a", input_shape=(32, 32, 1), cache_dir=tmp_path, workers=1)
    assert (first.dicom.decoded, first.dicom.cached) == (5, 0)
    assert len(list(tmp_path.glob("*.npy"))) == 5 and len(list(tmp_path.glob("*.json"))) == 5
    x1, _ = batches(dicom_dataset(root / "a", input_shape=(32, 32, 1), cache_dir=tmp_path, shuffle=False))

    def boom(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(pipeline, "read_dicom", boom)
    second = dicom_dataset(root / "a", input_shape=(32, 32, 1), cache_dir=tmp_path, shuffle=False, workers=1)
    assert (second.dicom.decoded, second.dicom.cached) == (0, 5)
    np.testing.assert_array_equal(batches(second)[0], x1)
    monkeypatch.undo()
    shutil.copytree(root / "a", tmp_path / "copy")
    changed = sorted((tmp_path / "copy").iterdir())[0]
    ds = pydicom.dcmread(changed)
    ds.RescaleIntercept = "-1000"
    ds.save_as(changed)
    third = dicom_dataset(tmp_path / "copy", input_shape=(32, 32, 1), cache_dir=tmp_path / "c", workers=1)
    fourth = dicom_dataset(tmp_path / "copy", input_shape=(32, 32, 1), cache_dir=tmp_path / "c", workers=1)
    changed.touch()
    fifth = dicom_dataset(tmp_path / "copy", input_shape=(32, 32, 1), cache_dir=tmp_path / "c", workers=1)
    assert (third.dicom.decoded, fourth.dicom.decoded, fifth.dicom.decoded) == (5, 0, 1)


def test_bad_files_raise_or_are_skipped_with_a_report(root, tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "mixed"
    shutil.copytree(root / "a", folder)
    (folder / "notes.txt").write_text("hello")
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "report.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "truncated.dcm")
    with pytest.raises(NotDicomError, match="notes.txt"):  # the first bad file, in sorted order
        dicom_dataset(folder, input_shape=(32, 32, 1), cache_dir=tmp_path / "c1", workers=1)
    with pytest.raises(MissingPixelDataError, match="report.dcm"):
        dicom_dataset([folder / "report.dcm"], input_shape=(32, 32, 1), cache_dir=tmp_path / "c1", workers=1)
    ds = dicom_dataset(folder, input_shape=(32, 32, 1), cache_dir=tmp_path / "c2", workers=1, on_error="skip")
    skipped = dict(ds.dicom.report.skipped)
    assert set(skipped) == {str(folder / n) for n in ("notes.txt", "report.dcm", "truncated.dcm")}
    assert skipped[str(folder / "notes.txt")].startswith("NotDicomError")
    assert skipped[str(folder / "report.dcm")].startswith("MissingPixelDataError")
    assert skipped[str(folder / "truncated.dcm")].startswith("DicomDecodeError")
    assert "3 item(s) skipped" in str(ds.dicom.report) and len(ds.dicom) == 5
    assert batches(ds)[0].shape == (5, 32, 32, 1)
    with pytest.raises(DataError, match="every one of the 1 item"):
        dicom_dataset([folder / "notes.txt"], input_shape=(32, 32, 1), cache_dir=tmp_path / "c3", on_error="skip")
    with pytest.raises(NotDicomError):
        dicom_dataset([folder / "notes.txt"], input_shape=(32, 32, 1), cache_dir=tmp_path / "c3")


def test_labels_from_csv(root, tmp_path):
    files = sorted((root / "b").iterdir())
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{f},{i * 10}\n" for i, f in enumerate(files)))
    ds = dicom_dataset(tmp_path / "labels.csv", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path, workers=1)
    assert batches(ds)[1].tolist() == [0, 10, 20, 30, 40]
    (tmp_path / "named.csv").write_text(
        "path,label,patient\n"
        + "".join(f"{f},{'lesion' if i % 2 else 'normal'},P{i}\n" for i, f in enumerate(files)))
    named = dicom_dataset(tmp_path / "named.csv", input_shape=(32, 32, 1), shuffle=False,
                          cache_dir=tmp_path)
    assert batches(named)[1].tolist() == [1, 0, 1, 0, 1]
    assert named.dicom.classes == ("lesion", "normal")
    (tmp_path / "bad.csv").write_text("path,y\nx,1\n")
    with pytest.raises(DataError, match="bad.csv, line 1: the header has no 'label' column"):
        dicom_dataset(tmp_path / "bad.csv", cache_dir=tmp_path)
    with pytest.raises(DataError, match="2 labels for 5 items"):
        dicom_dataset(root / "b", [0, 1], cache_dir=tmp_path)


def test_shuffle_changes_order_not_content(root, tmp_path):
    plain, _ = batches(dicom_dataset(root / "a", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path))
    mixed = dicom_dataset(root / "a", input_shape=(32, 32, 1), shuffle=True, seed=4, cache_dir=tmp_path)
    epoch1, epoch2 = batches(mixed)[0], batches(mixed)[0]
    key = lambda a: sorted(float(v.sum()) for v in a)  # noqa: E731
    assert key(epoch1) == pytest.approx(key(plain)) and key(epoch2) == pytest.approx(key(plain))
    assert not (np.array_equal(epoch1, plain) and np.array_equal(epoch2, plain))


def test_25d_sampler_stacks_neighbouring_slices(root, tmp_path):
    from zoo.data.series import load_series

    vol = load_series(root / "a").array
    ds = dicom_dataset(root, [0, 1], sampler="2.5d", input_shape=(32, 32, 3), windows=[WIDE], shuffle=False,
                       cache_dir=tmp_path, workers=1)
    x, y = batches(ds)
    assert x.shape == (10, 32, 32, 3) and y.tolist() == [0] * 5 + [1] * 5
    hu = unwide(x / 255.0)
    for z in range(5):
        for c, dz in enumerate((-1, 0, 1)):
            np.testing.assert_allclose(hu[z, ..., c], vol[min(max(z + dz, 0), 4)], atol=0.5)


def test_triplanar_cube_and_mil_samples_against_numpy():
    vol = (np.arange(6)[:, None, None] * 100 + np.arange(7)[None, :, None] * 10
           + np.arange(8)[None, None, :]).astype(np.float32)[..., None]
    info = {"units": "HU", "value_range": [0, 1000]}
    plan = _Plan("triplanar", (4, 4, 3), [WIDE], (0.0, 1.0), 0)
    out = unwide(_sample(vol, info, 0, seed=3, plan=plan))
    rng = np.random.default_rng(3)
    cz, cy, cx = (int(rng.integers(0, d)) for d in vol.shape[:3])
    padded = np.pad(vol[..., 0], 2, constant_values=vol.min())  # reference crop: pad by the patch half-size
    axial = padded[cz + 2, cy:cy + 4, cx:cx + 4]
    coronal = padded[cz:cz + 4, cy + 2, cx:cx + 4]
    sagittal = padded[cz:cz + 4, cy:cy + 4, cx + 2]
    np.testing.assert_allclose(out, np.stack([axial, coronal, sagittal], axis=-1), atol=1e-3)
    np.testing.assert_allclose(out[2, 2], [vol[cz, cy, cx, 0]] * 3, atol=1e-3)  # the planes share the centre

    plan = _Plan("cube", (3, 4, 5, 1), [WIDE], (0.0, 1.0), 0)
    cube = unwide(_sample(vol, info, 0, seed=5, plan=plan))[..., 0]
    first = int(round(float(cube[0, 0, 0])))  # the corner voxel encodes its own (z, y, x)
    z0, y0, x0 = first // 100, first // 10 % 10, first % 10
    np.testing.assert_allclose(cube, vol[z0:z0 + 3, y0:y0 + 4, x0:x0 + 5, 0], atol=1e-3)

    image = np.arange(2 * 8 * 12, dtype=np.float32).reshape(2, 8, 12, 1)
    plan = _Plan("mil", (5, 4, 4, 1), [WIDE], (0.0, 1.0), 5)
    bag = unwide(_sample(image, info, 1, seed=0, plan=plan))
    tiles = {(r, c): image[1, r:r + 4, c:c + 4] for r in (0, 4) for c in (0, 4, 8)}
    assert bag.shape == (5, 4, 4, 1)
    for tile in bag:  # every instance is one grid tile of frame 1
        assert any(np.allclose(tile, t, atol=1e-2) for t in tiles.values())
    assert len({tuple(np.round(t.ravel()[:2])) for t in bag}) == 5  # distinct tiles when the grid has enough


def test_volume_samplers_end_to_end(root, tmp_path):
    tri = dicom_dataset(root, [0, 1], sampler="triplanar", input_shape=(16, 16, 3), samples_per_item=3,
                        batch_size=4, cache_dir=tmp_path, workers=1)
    x, y = batches(tri)
    assert x.shape == (6, 16, 16, 3) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    cube = dicom_dataset(root, [0, 1], sampler="cube", input_shape=(4, 16, 16, 2), windows=["brain", "bone"],
                         samples_per_item=2, batch_size=4, cache_dir=tmp_path, workers=1, target_spacing=1.4)
    x, _ = batches(cube)
    assert x.shape == (4, 4, 16, 16, 2) and x.min() >= 0 and x.max() <= 255
    mil = dicom_dataset(root / "a", [1, 0, 1, 0, 1], sampler="mil", input_shape=(8, 8, 1), tiles=6,
                        batch_size=2, cache_dir=tmp_path, workers=1)
    x, y = batches(mil)
    assert x.shape == (5, 6, 8, 8, 1)


def test_augmentation_with_keras_preprocessing_layers(root, tmp_path):
    import keras

    plain, _ = batches(dicom_dataset(root / "a", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path))
    flipped = dicom_dataset(root / "a", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path,
                            augment=[keras.layers.RandomFlip("horizontal", seed=1)])
    x, _ = batches(flipped)
    same = [np.allclose(a, b) for a, b in zip(x, plain)]
    mirrored = [np.allclose(a, b[:, ::-1]) for a, b in zip(x, plain)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored)
    with pytest.raises(InvalidArgumentError, match="cube"):
        dicom_dataset(root, sampler="cube", input_shape=(4, 8, 8, 1), augment=[keras.layers.RandomFlip()],
                      cache_dir=tmp_path)


def test_bad_options_are_explained(root, tmp_path):
    with pytest.raises(InvalidArgumentError, match="sampler='3d'"):
        dicom_dataset(root, sampler="3d", cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="on_error"):
        dicom_dataset(root, on_error="ignore", cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="2 windows for 3 channels"):
        dicom_dataset(root / "a", windows=["brain", "bone"], cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        dicom_dataset(root, sampler="cube", input_shape=(8, 8, 1), cache_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        dicom_dataset(tmp_path / "nowhere", cache_dir=tmp_path)


@pytest.mark.slow
def test_parallel_decode_in_processes_equals_serial(tmp_path):
    for k in range(3):
        write_ct_series(tmp_path / "src" / f"s{k}", n_slices=4, size=32, seed=k)
    serial = dicom_dataset(tmp_path / "src", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path / "s",
                           workers=1)
    parallel = dicom_dataset(tmp_path / "src", input_shape=(32, 32, 1), shuffle=False, cache_dir=tmp_path / "p",
                             workers=2)
    assert parallel.dicom.decoded == len(serial.dicom.items) == 12
    assert serial.dicom.decode_processes == 1 and parallel.dicom.decode_processes == 2
    np.testing.assert_array_equal(batches(parallel)[0], batches(serial)[0])


def test_mr_and_colour_items_are_scaled_not_windowed(tmp_path):
    from pydicom.data import get_testdata_file

    mr, rgb = get_testdata_file("MR_small.dcm"), get_testdata_file("SC_rgb.dcm")
    x, _ = batches(dicom_dataset([mr], input_shape=(64, 64, 1), shuffle=False, cache_dir=tmp_path))
    hu = read_dicom(mr).pixels[0]
    lo, hi = np.percentile(hu, (0.5, 99.5))
    np.testing.assert_allclose(x[0], np.clip((hu - lo) / (hi - lo), 0, 1) * 255, atol=1e-2)
    x, _ = batches(dicom_dataset([rgb], input_shape=(100, 100, 3), shuffle=False, cache_dir=tmp_path))
    np.testing.assert_allclose(x[0], read_dicom(rgb).pixels[0], atol=1e-3)  # [0, 255] stays [0, 255]
    cached = sorted(tmp_path.glob("*.npy"))
    assert {np.load(p).dtype.name for p in cached} == {"int16"}  # integer values cached at half the bytes
