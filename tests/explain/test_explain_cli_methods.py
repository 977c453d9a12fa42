"""`zoo explain --method` with the new methods: figures of the shipped checkpoint, volumes for a
3D model (the slice through the map's peak), and the refusals of a wrong-dimension input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import zoo
from tests.explain.figure_checks import assert_readable
from zoo.errors import DataError, UnknownNameError
from zoo.explain import METHODS
from zoo.explain.cli import add_explain_parser, explain
from zoo.explain.inputs import fit_to_model


def _parser():
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers(dest="command"))
    return parser


def _run(parser, argv, capsys):
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_every_registered_method_is_a_cli_choice_and_new_ones_draw(tmp_path, capsys, zoo_env):
    from zoo.data.localisation import make_localisation_task

    parser = _parser()
    image = make_localisation_task(2, seed=1, positive_fraction=1.0).images[0, ..., 0]
    np.save(tmp_path / "phantom.npy", image)
    for method in METHODS:  # argparse takes every name of the registry
        assert parser.parse_args(["explain", "m", "i", "--method", method]).method == method
    with pytest.raises(SystemExit):
        parser.parse_args(["explain", "m", "i", "--method", "lime"])
    with pytest.raises(UnknownNameError, match="method='occlusions'.*Did you mean 'occlusion'"):
        explain("simple_cnn.phantom", tmp_path / "phantom.npy", tmp_path / "x.png", "occlusions")
    for method in ("smoothgrad",):  # the others draw through the same path (explain_batch)
        out = tmp_path / f"{method}.png"
        report = _run(
            parser,
            [
                "explain",
                "simple_cnn.phantom",
                str(tmp_path / "phantom.npy"),
                "--method",
                method,
                "--out",
                str(out),
            ],
            capsys,
        )
        assert report["method"] == method and report["layer"] == "input" and report["heat_max"] > 0
        assert_readable(out, image)


def test_a_volume_for_a_3d_model_and_the_wrong_dimension_refused(tmp_path, capsys):
    parser = _parser()
    volume = np.random.default_rng(0).uniform(0, 1, (12, 30, 30)).astype("float32")
    volume[3:6, 10:16, 12:18] += 3.0
    np.save(tmp_path / "vol.npy", volume)
    report = _run(
        parser,
        [
            "explain",
            "simple_cnn3d",
            str(tmp_path / "vol.npy"),
            "--allow-random",
            "--method",
            "gradcam",
            "--out",
            str(tmp_path / "v.png"),
        ],
        capsys,
    )
    assert report["input_shape"] == [16, 32, 32, 1] and 0 <= report["slice"] < 16
    model = zoo.load("simple_cnn3d", in_chans=1)
    fitted = fit_to_model(volume[..., None], model)
    assert fitted.shape == (1, 16, 32, 32, 1) and np.isclose(
        fitted.mean(), volume.mean(), rtol=0.05
    )
    assert_readable(tmp_path / "v.png", fitted[0, report["slice"]])
    with pytest.raises(
        DataError, match=r"is a volume of shape \(12, 30, 30\).*takes 2D images.*one slice"
    ):
        explain("simple_cnn.phantom", tmp_path / "vol.npy", tmp_path / "w.png")
    np.save(tmp_path / "img.npy", volume[0])
    with pytest.raises(
        DataError, match=r"is a 2D image \(30, 30\).*takes 3D volumes.*\.npy volume"
    ):
        explain("simple_cnn3d", tmp_path / "img.npy", tmp_path / "w.png", allow_random=True)
    assert not (tmp_path / "w.png").exists()
