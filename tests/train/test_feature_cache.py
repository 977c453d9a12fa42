"""Feature caching: where the model is cut, and that cached and uncached stage 1 reach the same head."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import InvalidArgumentError, OutputError
from zoo.train.batches import Batches
from zoo.train.feature_cache import DiskCache, collect, compute_features, split_head
from zoo.train.finetune import finetune
from zoo.train.transfer import freeze

SMALL = dict(in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 12))


def _model(dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    return zoo.load("simple_cnn", dropout=dropout, **SMALL)


@pytest.mark.numerics
def test_cut_after_pooling_keeps_dropout_in_the_head():
    model = freeze(_model(dropout=0.3))
    backbone, head = split_head(model)
    assert tuple(backbone.output.shape) == (None, 12)  # pooled features of the last stage
    assert [layer.name for layer in head.layers[1:]] == ["head_dropout", "head_fc"]
    assert head.get_layer("head_fc") is model.get_layer("head_fc")  # training the head trains the model
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 1)).astype("float32")
    features = compute_features(backbone, x, batch_size=2)
    assert features.shape == (5, 12) and features.dtype == np.float32
    assert_deep_close(head(features, training=False).numpy(), model(x, training=False).numpy(),
                      depth_of("simple_cnn"), what="cached features through the head ")


def test_unfrozen_or_headless_models_are_refused():
    with pytest.raises(InvalidArgumentError, match="'stage1_conv1' .* is trainable but lies before the head"):
        split_head(_model())
    frozen_all = _model()
    for layer in frozen_all.layers:
        layer.trainable = False
    with pytest.raises(InvalidArgumentError, match="no trainable head after a frozen backbone"):
        split_head(frozen_all)


@pytest.fixture(scope="module")
def data():
    return make_phantoms(40, size=32, seed=5), make_phantoms(16, size=32, seed=6)


def test_cached_and_uncached_stage1_reach_the_same_head(data, tmp_path):
    train, val = data
    results = {}
    for cached in (True, False, "disk"):
        model = _model(dropout=0.25, seed=3)  # same initial weights and the same dropout seed both ways
        backbone_before = [w.copy() for w in model.get_layer("stage3_conv1").get_weights()]
        # "disk": a budget of 0 bytes puts every feature on disk, streamed from there in stage 1
        result = finetune(model, train, val, epochs=(3, 0), batch_size=8, augment=False,
                          cache_features=bool(cached), cache_memory=0 if cached == "disk" else None,
                          seed=3, out_dir=tmp_path / str(cached), strategy="cpu", verbose=0, patience=5)
        assert result.cached_stage1 is bool(cached)
        for a, b in zip(backbone_before, result.model.get_layer("stage3_conv1").get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # the backbone stayed frozen
        results[cached] = result
    head_cached, head_images = (results[c].model.get_layer("head_fc").get_weights() for c in (True, False))
    start = _model(dropout=0.25, seed=3).get_layer("head_fc").get_weights()
    assert not np.allclose(head_cached[0], start[0])  # the head trained
    for a, b in zip(head_cached, head_images, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(results[True].history, results[False].history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)

    # on disk: the same bytes as in memory, so the same head and history exactly
    stage1 = json.loads(results["disk"].record.read_text())["stage1"]
    assert stage1["cache_on_disk"] == ["train", "validation"] and stage1["cached_features"]
    assert not (tmp_path / "disk" / "feature_cache").exists()  # removed after stage 1
    assert json.loads(results[True].record.read_text())["stage1"]["cache_on_disk"] == []
    for a, b in zip(results["disk"].model.get_weights(), results[True].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(results["disk"].history, results[True].history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def _parts(rng, sizes):
    return [rng.standard_normal((n, 3, 2)).astype("float32") for n in sizes]


def test_features_past_the_budget_go_to_disk_and_read_back_the_same(tmp_path):
    rng = np.random.default_rng(0)
    parts = _parts(rng, (4, 4, 3))  # 24 bytes a row: 96, 192, 264 bytes in all
    reference = np.concatenate(parts)
    in_memory = collect(iter(parts), DiskCache(tmp_path), "train", memory_budget=264)
    assert type(in_memory) is np.ndarray and not (tmp_path / "feature_cache").exists()
    np.testing.assert_array_equal(in_memory, reference)

    disk = DiskCache(tmp_path)
    spilled = collect(iter(parts), disk, "train", memory_budget=100)  # the 2nd part passes 100 bytes
    assert isinstance(spilled, np.memmap) and spilled.shape == (11, 3, 2)
    np.testing.assert_array_equal(spilled, reference)
    path = tmp_path / "feature_cache" / "train.f32"
    assert path.stat().st_size == reference.nbytes
    np.testing.assert_array_equal(np.fromfile(path, np.float32).reshape(11, 3, 2), reference)
    manifest = json.loads((tmp_path / "feature_cache" / ".zoo-manifest.json").read_text())
    assert manifest["writer"] == "zoo.feature_cache" and manifest["files"] == {"train.f32": reference.nbytes}
    disk.remove()
    assert not (tmp_path / "feature_cache").exists()

    with pytest.raises(InvalidArgumentError, match="memory_budget=-1"):
        collect(iter(parts), None, memory_budget=-1)


def test_removing_the_cache_never_deletes_a_file_it_did_not_write(tmp_path):
    disk = DiskCache(tmp_path)
    collect(iter(_parts(np.random.default_rng(1), (2,))), disk, "train", memory_budget=0)
    user_file = tmp_path / "feature_cache" / "notes.txt"
    user_file.write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        disk.remove()
    assert user_file.read_text() == "mine" and (tmp_path / "feature_cache" / "train.f32").exists()


def test_batches_stream_a_memmap_in_the_order_and_shapes_of_the_array(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 5)).astype("float32")
    y = rng.integers(0, 3, 11)
    w = rng.uniform(0.5, 2, 11).astype("float32")
    x.tofile(tmp_path / "x.f32")
    mapped = np.memmap(tmp_path / "x.f32", np.float32, "r", shape=x.shape)
    for epoch in (0, 1):
        a = list(Batches(x, y, 4, True, 7, w).dataset(epoch).as_numpy_iterator())
        b = list(Batches(mapped, y, 4, True, 7, w).dataset(epoch).as_numpy_iterator())
        assert [len(t[0]) for t in b] == [4, 4, 3]
        for ta, tb in zip(a, b, strict=True):
            for pa, pb in zip(ta, tb, strict=True):
                assert pa.dtype == pb.dtype
                np.testing.assert_array_equal(pa, pb)


def test_a_streamed_dataset_caches_to_disk_the_features_it_would_hold_in_memory(tmp_path):
    import tensorflow as tf

    from zoo.train.finetune import _streamed_features

    backbone, _ = split_head(freeze(_model()))
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (10, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, 10)
    stream = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    strategy = tf.distribute.get_strategy()
    memory = _streamed_features(backbone, stream, strategy)
    disk = _streamed_features(backbone, stream, strategy, DiskCache(tmp_path), "train", 0)
    assert isinstance(disk[0], np.memmap) and type(memory[0]) is np.ndarray
    for a, b in zip(memory, disk, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(memory[2], np.ones(10, np.float32))


def test_a_bad_cache_memory_is_refused_before_training(data, tmp_path):
    train, val = data
    with pytest.raises(InvalidArgumentError, match="memory_budget='1GB'"):
        finetune(_model(), train, val, epochs=(1, 0), cache_memory="1GB", out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_trace_serves_every_batch_size_and_both_passes():
    from zoo.train import feature_cache

    inputs = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(3, 3, trainable=False)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    backbone, _ = split_head(keras.Model(inputs, outputs))
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(10, 6, 6, 1)), rng.normal(size=(3, 6, 6, 1))
    got = [compute_features(backbone, x, batch_size=4) for x in (train, val)]  # 4, 4, 2 then 3
    for x, features in zip((train, val), got, strict=True):
        np.testing.assert_allclose(features, np.asarray(backbone(x, training=False)), atol=1e-6)
    (function,) = feature_cache._FUNCTIONS[backbone].values()
    assert function.experimental_get_tracing_count() == 1
