"""SDNet (zoo.semi.sdnet): the loss against a numpy formula on a hand-built batch, the straight-through
anatomy factor, unlabelled images used only through their weight, .keras round trips, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.errors import DataError, InvalidArgumentError

SHAPE = (16, 16, 1)


@pytest.fixture(scope="module")
def net():
    import keras

    from zoo.semi.sdnet import build_sdnet

    keras.utils.set_random_seed(0)
    return build_sdnet(SHAPE, num_classes=3, n_anatomy=4, z_dim=3, depth=1, base_filters=4,
                       width=4, input_range=(0.0, 2.0))


def _batch(seed=0, n=2, m=3):
    rng = np.random.default_rng(seed)
    xl = rng.uniform(0, 2, (n, *SHAPE)).astype(np.float32)
    xu = rng.uniform(0, 2, (m, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 3, (n, *SHAPE[:-1])).astype(np.int32)
    return {"labelled": xl, "unlabelled": xu}, y, np.ones(n, np.float32)


def _np_terms(task, x, y=None):
    """Per image: soft Dice loss (numpy), L1 and KL (numpy) from the parts' outputs."""
    p = {k: np.asarray(v, np.float64) for k, v in task.parts(x, training=False).items()}
    target = x / 2.0  # input_range (0, 2) -> [0, 1]
    l1 = np.abs(target - p["rec"]).reshape(len(x), -1).mean(1)
    kl = 0.5 * (p["mu"] ** 2 + np.exp(p["logvar"]) - 1 - p["logvar"]).sum(-1)
    if y is None:
        return None, l1, kl
    t = np.eye(3)[y]
    tp = (p["seg"] * t).sum((1, 2))
    dice = (2 * tp + 1e-5) / (p["seg"].sum((1, 2)) + t.sum((1, 2)) + 1e-5)
    return 1 - dice.mean(-1), l1, kl


def test_loss_is_the_formula_on_a_hand_built_batch(net):
    from zoo.semi.sdnet import SDNetTask

    task = SDNetTask(net, unlabelled_weight=0.7, seg_weight=3.0, rec_weight=2.0, kl_weight=0.5)
    x, y, w = _batch()
    got = float(task.step((x, y, w), training=False).losses["main"])
    seg, l1, kl = _np_terms(task, x["labelled"], y)
    _, l1u, klu = _np_terms(task, x["unlabelled"])
    want = np.mean(3.0 * seg + 2.0 * l1 + 0.5 * kl) + 0.7 * np.mean(2.0 * l1u + 0.5 * klu)
    assert got == pytest.approx(want, rel=1e-5)


def test_unlabelled_images_enter_only_through_their_weight(net):
    from zoo.semi.sdnet import SDNetTask

    x, y, w = _batch()
    other = dict(x, unlabelled=x["unlabelled"][::-1] * 0.3)
    off = SDNetTask(net, unlabelled_weight=0.0)
    on = SDNetTask(net, unlabelled_weight=1.0)

    def loss(task, inputs):
        return float(task.step((inputs, y, w), training=False).losses["main"])

    assert loss(off, x) == loss(off, other)  # weight 0: the unlabelled images are not used
    assert loss(on, x) != pytest.approx(loss(on, other))
    _, l1u, klu = _np_terms(on, x["unlabelled"])
    assert loss(on, x) - loss(off, x) == pytest.approx(np.mean(l1u + 0.01 * klu), rel=1e-4)


def test_anatomy_factor_is_binary_and_straight_through():
    import tensorflow as tf

    from zoo.layers.sdnet import StraightThroughRound

    x = tf.constant([[0.2, 0.7, 0.5001, 0.49]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = StraightThroughRound()(x)
        loss = tf.reduce_sum(out * tf.constant([[1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_array_equal(out.numpy(), [[0, 1, 1, 0]])
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[1, 2, 3, 4]])


def test_keras_round_trips_in_safe_mode(net, tmp_path):
    from zoo.saving import load_model

    x, _, _ = _batch(1)
    xl = x["labelled"]
    z = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    s = np.asarray(net.anatomy(xl))
    for name, model, inputs in (("segmenter", net.segmenter, xl), ("decoder", net.decoder, [s, z])):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        back = load_model(path)
        np.testing.assert_allclose(np.asarray(back(inputs)), np.asarray(model(inputs)), atol=1e-6)
    assert set(np.unique(s)) <= {0.0, 1.0}


def test_fit_sdnet_trains_and_returns_a_segmenter():
    from zoo.semi.sdnet import fit_sdnet

    x, y, _ = _batch(2, n=3, m=4)
    result = fit_sdnet(x["labelled"], y, x["unlabelled"], num_classes=3, epochs=2, batch_size=2,
                       depth=1, base_filters=4, width=4, n_anatomy=4, z_dim=2, seed=0)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])
    assert {"seg_loss", "reconstruction", "kl", "unlabelled_reconstruction"} <= set(
        result.history[-1])
    probs = np.asarray(result.segmenter(x["labelled"]))
    assert probs.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("change, match", [
    (lambda a: dict(a, masks=a["masks"][:, :8]), "masks_labelled of shape"),
    (lambda a: dict(a, masks=a["masks"] + 5), "num_classes"),
    (lambda a: dict(a, masks=a["masks"] * 0.5 + 0.25), "class indices"),
    (lambda a: dict(a, unlabelled=a["unlabelled"][:, :8]), "unlabelled_images of shape"),
    (lambda a: dict(a, unlabelled=a["unlabelled"][:0]), "empty"),
    (lambda a: dict(a, images=a["images"] * np.nan), "NaN"),
])
def test_bad_input_is_refused_before_training(change, match):
    from zoo.semi.sdnet import fit_sdnet

    x, y, _ = _batch()
    a = change({"images": x["labelled"], "masks": y, "unlabelled": x["unlabelled"]})
    with pytest.raises(DataError, match=match):
        fit_sdnet(a["images"], a["masks"], a["unlabelled"], num_classes=3)


@pytest.mark.parametrize("option", [{"kl_weight": -1.0}, {"unlabelled_weight": float("nan")},
                                    {"seg_weight": "10"}])
def test_bad_weights_are_refused(net, option):
    from zoo.semi.sdnet import SDNetTask

    with pytest.raises(InvalidArgumentError, match=next(iter(option))):
        SDNetTask(net, **option)


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_sdnet --quick takes about 30 s on 2 cores (two U-Nets and two SDNets traced and "
    "trained), over this file's share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_sdnet_quick_runs():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "benchmarks/bench_sdnet.py", "--quick"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("SDNet Dice") == 2 and "| labelled images |" in proc.stdout
