"""MIL heads as models: named outputs, exact pooling of the instance maps, .keras round trips, zoo.load hook."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from numerics_util import assert_deep_close

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.heads.builder import build_mil_head, build_tiled_mil
from zoo.heads.losses import mil_losses, mil_targets
from zoo.heads.mil import POOLINGS

RNG = np.random.default_rng(1)
X = RNG.uniform(0, 1, (2, 16, 16, 1)).astype("float32")
MIL_DEPTH = 4  # one conv, attention (two dense layers), the classifier: the longest chain of weighted layers
OPTIONS = {"lse": {"r": 3.0, "learnable": True}, "wildcat": {"maps_per_class": 2, "k_max": 3, "k_min": 0.1},
           "attention": {"units": 4}, "gated_attention": {"units": 4}}


def features_model(channels=4):
    inp = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name="conv")(inp)
    return keras.Model(inp, keras.layers.ReLU(name="relu")(x), name="tiny")


def run(model, x):
    """The model called directly (no predict: no tf.function to trace for one small batch)."""
    out = model(x, training=False)
    return {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else out.numpy()


def numpy_pool(name, maps, options):
    flat = maps.reshape(len(maps), -1, maps.shape[-1]).astype(np.float64)
    if name == "max":
        return flat.max(1)
    if name == "avg":
        return flat.mean(1)
    if name == "lse":
        r = options["r"]
        return np.log(np.mean(np.exp(r * flat), 1)) / r
    if name == "two_sided_lse":
        return np.log(np.mean(np.exp(5 * flat), 1)) / 5 - np.log(np.mean(np.exp(-5 * flat), 1)) / 5
    ranked = np.sort(flat, 1)
    if name == "weldon":
        return ranked[:, -1] + ranked[:, 0]
    if name == "wildcat":  # k_max 3, k_min 0.1 * 64 = 6, alpha 0.7
        return ranked[:, -3:].mean(1) + 0.7 * ranked[:, :6].mean(1)
    raise AssertionError(name)


@pytest.mark.parametrize("pooling", [p for p in POOLINGS if "attention" not in p])
def test_bag_is_the_pooling_of_the_instance_maps(pooling):
    model = build_mil_head(features_model(), pooling, num_classes=3, **OPTIONS.get(pooling, {}))
    out = run(model, X)
    assert set(out) == {"bag", "instance_maps"}
    assert out["bag"].shape == (2, 3) and out["instance_maps"].shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out["bag"], numpy_pool(pooling, out["instance_maps"], OPTIONS.get(pooling, {})),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["attention", "gated_attention"])
def test_attention_head_bag_logit_is_the_attention_weighted_instance_scores(pooling):
    model = build_mil_head(features_model(), pooling, num_classes=2, **OPTIONS[pooling])
    out = run(model, X)
    assert out["attention"].shape == (2, 8, 8)
    np.testing.assert_allclose(out["attention"].sum((1, 2)), 1.0, rtol=1e-5)
    weighted = (out["attention"][..., None] * out["instance_maps"]).sum((1, 2))
    np.testing.assert_allclose(out["bag"], weighted, rtol=1e-4, atol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_every_head_round_trips_through_keras_file_in_safe_mode(pooling, tmp_path):
    model = build_mil_head(features_model(), pooling, num_classes=2, activation="sigmoid", **OPTIONS.get(pooling, {}))
    if pooling == "lse":  # a trained sharpness must be saved, not re-initialised
        model.get_layer("mil_pool").log_r.assign(0.3)
    path = tmp_path / f"{pooling}.keras"
    model.save(path)
    loaded = zoo.load_model(path)
    before, after = run(model, X), run(loaded, X)
    assert_deep_close(after, before, MIL_DEPTH, what=f"{pooling} round trip ")
    assert np.all((before["bag"] > 0) & (before["bag"] < 1))  # the sigmoid is applied to the bag only
    assert loaded.get_layer("mil_pool").get_config() == model.get_layer("mil_pool").get_config()


@pytest.mark.numerics
def test_compiled_head_with_priors_round_trips_and_trains(tmp_path):
    model = build_mil_head(features_model(), "wildcat", num_classes=1, maps_per_class=2)
    losses = mil_losses(sparsity=0.1, area=(0.02, 0.3))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses)
    labels = np.array([0, 1])
    history = model.fit(X, mil_targets(labels, losses), epochs=3, batch_size=2, verbose=0)
    assert len(history.history["loss"]) == 3 and np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "trained.keras"
    model.save(path)
    loaded = zoo.load_model(path)
    assert_deep_close(run(loaded, X), run(model, X), MIL_DEPTH, what="trained wildcat round trip ")
    before = model.evaluate(X, mil_targets(labels, losses), verbose=0)
    after = loaded.evaluate(X, mil_targets(labels, losses), verbose=0)  # the losses came back with the file
    np.testing.assert_allclose(after, before, rtol=1e-5)


def test_bad_settings_are_zoo_errors():
    with pytest.raises(InputShapeError, match=r"needs a spatial feature map \(B, H, W, C\).*rank 3"):
        inp = keras.Input((10, 4))
        build_mil_head(keras.Model(inp, keras.layers.Dense(3)(inp)), "max")
    with pytest.raises(InvalidArgumentError, match="k_max=65 is larger than the 64 instances"):
        build_mil_head(features_model(), "weldon", k_max=65)
    with pytest.raises(InvalidArgumentError, match="num_classes=0"):
        build_mil_head(features_model(), "max", num_classes=0)
    with pytest.raises(InvalidArgumentError, match="Did you mean 'gated_attention'"):
        build_mil_head(features_model(), "gated_atention")
    with pytest.raises(InvalidArgumentError, match="r=-1"):
        build_mil_head(features_model(), "lse", r=-1)


def test_zoo_load_with_a_mil_head():
    model = zoo.load("simple_cnn", in_chans=1, input_shape=(64, 64), head="mil", mil_pooling="wildcat", num_classes=2,
                     head_options={"maps_per_class": 3, "k_max": 2, "k_min": 2})
    out = run(model, RNG.uniform(0, 255, (2, 64, 64, 1)).astype("float32"))
    assert out["bag"].shape == (2, 2) and out["instance_maps"].shape == (2, 2, 2, 2)  # deepest map, stride 32
    assert model.get_layer("mil_classifier").kernel.shape == (64, 6)
    x = RNG.uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    stride8 = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), head="mil", mil_pooling="lse", features=(8,))
    assert run(stride8, x)["instance_maps"].shape == (2, 4, 4, 1)
    with pytest.raises(InvalidArgumentError, match="Did you mean 'mil'"):
        zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), head="mli")


@pytest.mark.numerics
def test_tiled_bag_model_matches_the_encoder_applied_per_tile(tmp_path):
    encoder = features_model()
    model = build_tiled_mil(encoder, "gated_attention", num_classes=2, units=4)
    tiles = RNG.uniform(0, 1, (2, 5, 16, 16, 1)).astype("float32")
    out = run(model, tiles)
    assert out["bag"].shape == (2, 2) and out["instance_maps"].shape == (2, 5, 2) and out["attention"].shape == (2, 5)
    # reference: the encoder on each tile separately, the shared classifier on its mean embedding
    embed = np.stack([run(encoder, tiles[:, i]).mean((1, 2)) for i in range(5)], axis=1)
    dense = model.get_layer("mil_classifier")
    scores = embed @ dense.kernel.numpy() + dense.bias.numpy()
    assert_deep_close(out["instance_maps"], scores, MIL_DEPTH, what="tile scores ")
    assert_deep_close(out["bag"], (out["attention"][..., None] * scores).sum(1), MIL_DEPTH, what="bag ")
    # order of the tiles does not matter; bags of another size go through the same model
    perm = [3, 0, 4, 1, 2]
    assert_deep_close(run(model, tiles[:, perm])["bag"], out["bag"], MIL_DEPTH, what="permuted tiles ")
    assert run(model, tiles[:, :3])["bag"].shape == (2, 2)
    path = tmp_path / "tiled.keras"
    model.save(path)
    assert_deep_close(run(zoo.load_model(path), tiles), out, MIL_DEPTH, what="tiled round trip ")


def test_tiled_model_with_score_pooling_and_bad_tiles():
    model = build_tiled_mil(features_model(), "max", num_classes=1, num_tiles=4)
    out = run(model, RNG.uniform(0, 1, (3, 4, 16, 16, 1)).astype("float32"))
    np.testing.assert_allclose(out["bag"], out["instance_maps"].max(1), rtol=1e-6)
    inp = keras.Input((16, 16, 1))
    with pytest.raises(InputShapeError, match="tile encoder"):
        build_tiled_mil(keras.Model(inp, keras.layers.Conv1D(2, 3)(keras.layers.Reshape((256, 1))(inp))), "max")
