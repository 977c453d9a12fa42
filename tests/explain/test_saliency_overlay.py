"""Saliency of a linear model is its weights; the explain CLI: its figure, its report, its refusals."""

from __future__ import annotations

import argparse
import json

import keras
import numpy as np
import pytest

import zoo
from tests.explain.figure_checks import assert_readable
from zoo.errors import DataError, InvalidArgumentError, RandomWeightsError, ZooError
from zoo.explain.cli import add_explain_parser, load_image
from zoo.explain.inputs import fit_to_model
from zoo.explain.overlay import save_overlay
from zoo.explain.saliency import saliency
from zoo.heads.builder import build_mil_head


@pytest.fixture(scope="module")
def linear():
    inp = keras.Input((4, 5, 2))
    model = keras.Model(inp, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(inp)))
    x = np.random.default_rng(0).normal(size=(2, 4, 5, 2)).astype("float32")
    return model, x, model.get_layer("fc").kernel.numpy()


def test_saliency_of_a_linear_model_is_its_weights(linear):
    model, x, kernel = linear
    for c in range(3):
        g = saliency(model, x, class_index=c, absolute=False, channel_reduce=None, normalize=False)
        assert g.shape == x.shape
        np.testing.assert_allclose(g, np.broadcast_to(kernel[:, c].reshape(4, 5, 2), x.shape), rtol=1e-6, atol=1e-7)


def test_saliency_post_processing_steps(linear):
    model, x, kernel = linear
    w = np.abs(kernel[:, 1].reshape(4, 5, 2))
    np.testing.assert_allclose(saliency(model, x, 1, normalize=False), np.broadcast_to(w.max(-1), (2, 4, 5)), rtol=1e-6)
    np.testing.assert_allclose(saliency(model, x, 1, channel_reduce="mean", normalize=False),
                               np.broadcast_to(w.mean(-1), (2, 4, 5)), rtol=1e-6)
    g = saliency(model, x, 1)
    m = w.max(-1)
    np.testing.assert_allclose(g[0], (m - m.min()) / (m.max() - m.min()), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="channel_reduce="):
        saliency(model, x, 1, channel_reduce="sum")


def test_saliency_of_softmax_output_uses_the_logit_unless_asked():
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="fc")(inp))
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    kernel = model.get_layer("fc").kernel.numpy()
    raw = dict(absolute=False, channel_reduce=None, normalize=False)
    np.testing.assert_allclose(saliency(model, x, 0, **raw)[0], kernel[:, 0], rtol=1e-6)
    p = model.predict(x, verbose=0)[0]
    through_softmax = p[0] * (kernel[:, 0] - (p[0] * kernel[:, 0] + p[1] * kernel[:, 1]))
    np.testing.assert_allclose(saliency(model, x, 0, logits=False, **raw)[0], through_softmax, rtol=1e-4, atol=1e-6)


def test_explain_cli_writes_figures_and_says_what_it_explained(tmp_path, capsys):
    feats = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), features=(8,))
    path = tmp_path / "mil.keras"
    build_mil_head(feats, "wildcat", num_classes=2).save(path)
    image = np.random.default_rng(3).uniform(0, 255, (40, 36)).astype("float32")  # resized to 32 x 32
    np.save(tmp_path / "img.npy", image)
    save_overlay(tmp_path / "img.png", image, np.zeros((40, 36)))  # an RGB(A) PNG input (a figure)
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers(dest="command"))
    for method, source in [("cam", "img.npy"), ("gradcam", "img.png"), ("saliency", "img.npy")]:
        out = tmp_path / f"{method}.png"
        args = parser.parse_args(["explain", str(path), str(tmp_path / source), "--out", str(out),
                                  "--method", method, "--class", "1"])
        assert args.func(args) == 0
        report = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert report["class_index"] == 1 and report["layer"] == {"cam": "instance_maps", "gradcam": "stage3_relu2",
                                                                 "saliency": "input"}[method]
        assert report["size"][0] >= 256 and report["boxes"]["image"][2] - report["boxes"]["image"][0] >= 256
    # the figure is replaced only with --overwrite and only if zoo explain wrote it (zoo.outputs)
    again = ["explain", str(path), str(tmp_path / "img.npy"), "--out", str(tmp_path / "cam.png"), "--method", "cam"]
    with pytest.raises(ZooError, match="exists; pass overwrite=True"):
        parser.parse_args(again).func(parser.parse_args(again))
    assert parser.parse_args([*again, "--overwrite"]).func(parser.parse_args([*again, "--overwrite"])) == 0
    (tmp_path / "mine.png").write_bytes(b"a user's picture")
    mine = [*again[:3], "--out", str(tmp_path / "mine.png"), "--overwrite"]
    with pytest.raises(ZooError, match="did not write"):
        parser.parse_args(mine).func(parser.parse_args(mine))
    assert (tmp_path / "mine.png").read_bytes() == b"a user's picture"
    capsys.readouterr()
    args = parser.parse_args(["explain", str(path), str(tmp_path / "img.npy"), "--layer", "stage3_pol",
                              "--out", str(tmp_path / "x.png")])
    with pytest.raises(ZooError, match="Did you mean 'stage3_pool'"):
        args.func(args)
    with pytest.raises(DataError, match="no such file"):
        load_image(tmp_path / "missing.png")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"give \(H, W\) or \(H, W, C\)"):
        load_image(tmp_path / "bad.npy")


def test_explain_cli_with_a_zoo_checkpoint_and_rgb_input(tmp_path, capsys, zoo_env):
    from zoo.data.localisation import make_localisation_task

    task = make_localisation_task(4, seed=1, positive_fraction=1.0)
    image = task.images[0, ..., 0]  # grey (64, 64): the checkpoint's own input
    np.save(tmp_path / "phantom.npy", image)
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explain", "simple_cnn", str(tmp_path / "phantom.npy"), "--pretrained", "phantom",
                              "--out", str(tmp_path / "p.png")])
    assert args.func(args) == 0
    said, line = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    model = zoo.load("simple_cnn.phantom")
    p = model.predict(image[None, ..., None], verbose=0)[0]
    assert report["method"] == "gradcam" and report["input_shape"] == [64, 64, 1]
    assert report["class_index"] == int(p.argmax()) and report["score"] == pytest.approx(float(p.max()), abs=1e-5)
    assert report["layer"] == "stage4_relu2" and report["score_kind"] == "probability"
    assert f"class {report['class_index']}" in said and "stage4_relu2" in said and f"{p.max():.3f}" in said
    assert_readable(tmp_path / "p.png", image)
    # an architecture name without weights is refused, unless asked
    np.save(tmp_path / "rgb.npy", np.random.default_rng(4).uniform(0, 255, (32, 32, 3)).astype("float32"))
    argv = ["explain", "simple_cnn", str(tmp_path / "rgb.npy"), "--out", str(tmp_path / "o.png")]
    with pytest.raises(RandomWeightsError, match=r"without --pretrained.*random.*--allow-random"):
        parser.parse_args(argv).func(parser.parse_args(argv))
    assert not (tmp_path / "o.png").exists()
    args = parser.parse_args([*argv, "--allow-random"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["input_shape"] == [64, 64, 3]
    model = zoo.load("simple_cnn", in_chans=1, input_shape=(40, 48))
    assert fit_to_model(np.ones((8, 8, 3), np.float32), model).shape == (1, 40, 48, 1)


def test_zoo_cli_reports_a_random_model_refusal_in_one_line(tmp_path, capsys):
    from zoo.cli import main

    np.save(tmp_path / "img.npy", np.zeros((64, 64), np.float32))
    assert main(["explain", "simple_cnn", str(tmp_path / "img.npy"), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo explain: model 'simple_cnn'") and "--allow-random" in err and "\n" not in err
