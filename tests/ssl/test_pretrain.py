"""pretrain -> weights + card -> zoo.load by tag (in a fresh, offline process); and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from numerics_util import assert_deep_close, depth_of

import zoo.ssl
from zoo.data.synthetic import make_phantoms
from zoo.data.volumes import make_volumes
from zoo.errors import (
    CardError,
    DataError,
    InputShapeError,
    InvalidArgumentError,
    UnknownModelError,
    ZooError,
)


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.numerics
def test_round_trip_card_and_fresh_offline_process(zoo_env, tmp_path, monkeypatch):
    data = make_phantoms(8, size=32, seed=3)
    result = zoo.ssl.pretrain("genesis2d", "simple_cnn", data, epochs=1, batch_size=4, tag="gen_test",
                              eval_data=make_phantoms(8, size=32, seed=4), verbose=0)
    card = result.card
    assert card.name == "simple_cnn.gen_test" and card.card_path == str(zoo_env / "cards" / "simple_cnn.gen_test.toml")
    weights = zoo_env / "cards" / "simple_cnn_gen_test.weights.h5"
    assert card.urls == ("simple_cnn_gen_test.weights.h5",)  # relative: found beside the card, mirror-able
    assert card.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest() and card.size == weights.stat().st_size
    assert weights.stat().st_size < 1_000_000  # encoder only: no decoder, no optimizer state
    doc = tomllib.loads((zoo_env / "cards" / "simple_cnn.gen_test.toml").read_text())["simple_cnn"]["gen_test"]
    assert doc["recipe"] == "genesis2d" and doc["input_size"] == [32, 32, 1] and doc["preprocess"] == "tf"
    assert doc["hyperparameters"]["epochs"] == 1 and doc["hyperparameters"]["nonlinear"] == 0.9
    assert set(doc["versions"]) >= {"keras", "tensorflow", "numpy", "zoo"}
    assert 0 <= doc["evaluation"]["linear_probe_accuracy"] <= 1 and doc["evaluation"]["eval_images"] == 8
    assert "zoo.data" in doc["modality"] and "8 images" in doc["data"]
    assert zoo.list_models("simple_cnn*", pretrained=True).count("simple_cnn.gen_test") == 1

    probe = make_phantoms(3, size=32, seed=5).images
    np.save(tmp_path / "probe.npy", probe)
    expected = result.encoder.predict(probe, verbose=0)
    code = (
        "import numpy as np, zoo\n"
        "m = zoo.load('simple_cnn', pretrained='gen_test', in_chans=1, num_classes=0, pooling=None)\n"
        f"np.save({str(tmp_path / 'got.npy')!r}, m.predict(np.load({str(tmp_path / 'probe.npy')!r}), verbose=0))\n"
        "print(m.zoo_weights)\n"
    )
    out = _run(code, {"ZOO_HOME": str(zoo_env), "ZOO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("simple_cnn.gen_test")
    assert_deep_close(np.load(tmp_path / "got.npy"), expected, depth_of("simple_cnn"), what="fresh process ")

    # a tampered file is refused (sha256), never loaded; in this process: the fresh one above proved
    # that nothing but ZOO_HOME carries the card, and the stamp it left must not vouch for new bytes
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(ZooError, match="gen_test"):
        zoo.load("simple_cnn", pretrained="gen_test", in_chans=1)


def test_weights_outside_the_card_folder_are_found_by_file_url(zoo_env, tmp_path):
    import keras

    import zoo
    from zoo.train.publish import publish

    keras.utils.set_random_seed(1)
    enc = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=0, pooling=None)
    card = publish(enc, "simple_cnn", "elsewhere", {"preprocess": "tf", "license": "x", "source": "tests"},
                   out=tmp_path / "site")
    assert card.urls[0].startswith("file://") and card.urls[0].endswith("/site/simple_cnn_elsewhere.weights.h5")
    loaded = zoo.load("simple_cnn.elsewhere", in_chans=1, num_classes=0, pooling=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    assert_deep_close(loaded(x, training=False).numpy(), enc(x, training=False).numpy(), depth_of("simple_cnn"),
                      what="published encoder ")
    with pytest.raises(CardError, match="already exists"):
        publish(enc, "simple_cnn", "elsewhere", {"preprocess": "tf", "license": "x", "source": "tests"})
    with pytest.raises(CardError, match="not one pretrain wrote"):  # a shipped card is never overwritten
        zoo.ssl.pretrain("rotation", "simple_cnn", np.ones((4, 32, 32, 1)) * 9, tag="phantom", overwrite=True)


def test_unknown_task_has_did_you_mean(zoo_env):
    with pytest.raises(UnknownModelError, match="Did you mean 'simclr'") as e:
        zoo.ssl.pretrain("simclear", "simple_cnn")
    assert isinstance(e.value, ZooError) and "byol" in str(e.value)


def test_images_too_small_for_the_task(zoo_env):
    images = make_phantoms(4, size=64).images
    with pytest.raises(InputShapeError, match=r"too small for task 'jigsaw'.*20x20.*at least 100 pixels"):
        zoo.ssl.pretrain("jigsaw", "simple_cnn", images)
    with pytest.raises(InputShapeError, match="too small for task 'rotation'.*>= 32"):
        zoo.ssl.pretrain("rotation", "simple_cnn", images[:, :16, :16])


def test_2d_encoder_given_a_3d_task_and_wrong_data_kind(zoo_env):
    volumes = make_volumes(2, depth=16, size=32)
    with pytest.raises(InvalidArgumentError, match="3D encoder but simple_cnn is 2D; use simple_cnn3d"):
        zoo.ssl.pretrain("genesis3d", "simple_cnn", volumes)
    with pytest.raises(InvalidArgumentError, match="2D encoder but simple_cnn3d is 3D"):
        zoo.ssl.pretrain("rotation", "simple_cnn3d", volumes)
    with pytest.raises(DataError, match=r"takes \(N, D, H, W, C\) volumes"):
        zoo.ssl.pretrain("slice_order", "simple_cnn", make_phantoms(4, size=32).images)
    with pytest.raises(DataError, match="takes \\(N, H, W, C\\) images"):
        zoo.ssl.pretrain("rotation", "simple_cnn", volumes)


def test_bad_data_values_options_and_arguments(zoo_env):
    images = make_phantoms(4, size=32).images
    with pytest.raises(DataError, match="multiply by 255"):
        zoo.ssl.pretrain("rotation", "simple_cnn", images / 255.0)
    with pytest.raises(DataError, match="NaN"):
        zoo.ssl.pretrain("rotation", "simple_cnn", np.full((4, 32, 32, 1), np.nan))
    with pytest.raises(DataError, match="channels last"):
        zoo.ssl.pretrain("rotation", "simple_cnn", images[..., 0])
    with pytest.raises(InvalidArgumentError, match="no option.*'temprature'.*temperature"):
        zoo.ssl.pretrain("simclr", "simple_cnn", images, temprature=0.1)
    with pytest.raises(InvalidArgumentError, match="batch_size=1"):
        zoo.ssl.pretrain("simclr", "simple_cnn", images, batch_size=1)
    with pytest.raises(InvalidArgumentError, match="tag='Bad Tag'"):
        zoo.ssl.pretrain("rotation", "simple_cnn", images, tag="Bad Tag")
    with pytest.raises(UnknownModelError, match="Unknown model 'simple_nn'"):
        zoo.ssl.pretrain("rotation", "simple_nn", images)
    with pytest.raises(InvalidArgumentError, match="fraction=1.5"):
        zoo.ssl.pretrain("inpainting", "simple_cnn", images, fraction=1.5, verbose=0)
    with pytest.raises(InputShapeError, match="multiples of the encoder's stride"):
        zoo.ssl.pretrain("genesis2d", "simple_cnn", make_phantoms(2, size=48).images, epochs=1, verbose=0)


def test_cli_pretrain_parser_and_clear_errors(zoo_env, tmp_path):
    import argparse

    from zoo.ssl.cli import _option, add_pretrain_parser

    parser = argparse.ArgumentParser(prog="zoo")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pretrain", "simclr", "--encoder", "simple_cnn", "--tag", "t1", "--option",
                              "temperature=0.2", "--option", "crop=(0.5, 1.0)", "--epochs", "2"])
    assert args.task == "simclr" and args.tag == "t1" and args.epochs == 2
    assert dict(map(_option, args.option)) == {"temperature": 0.2, "crop": (0.5, 1.0)}
    np.save(tmp_path / "small.npy", make_phantoms(4, size=16).images)
    args = parser.parse_args(["pretrain", "rotation", "--data", str(tmp_path / "small.npy")])
    with pytest.raises(InputShapeError):
        args.func(args)
    with pytest.raises(InvalidArgumentError, match="key=value"):
        _option("no-equals")


@pytest.mark.slow
def test_cli_pretrain_end_to_end_writes_a_loadable_card(zoo_env, tmp_path):
    np.savez(tmp_path / "vols.npz", volumes=make_volumes(4, depth=16, size=32).volumes, subjects=np.array([0, 0, 1, 1]))
    code = ("import sys; from zoo.ssl.cli import add_pretrain_parser; import argparse\n"
            "p = argparse.ArgumentParser(); add_pretrain_parser(p.add_subparsers(dest='command'))\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "ZOO_HOME": str(zoo_env), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code, "pretrain", "subject", "--data", str(tmp_path / "vols.npz"),
                          "--tag", "subj", "--epochs", "1", "--batch-size", "4", "--description", "four test volumes"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "simple_cnn.subj" in out.stdout and "final loss" in out.stdout
    assert [line for line in out.stdout.splitlines() if line.startswith("epoch")] == [
        next(line for line in out.stdout.splitlines() if line.startswith("epoch 1/1: loss "))]  # one line an epoch
    info = json.loads(subprocess.run([sys.executable, "-m", "zoo", "info", "simple_cnn.subj"], capture_output=True,
                                     text=True, env=env, timeout=120).stdout)
    w = info["weights"][0]
    assert w["recipe"] == "subject" and w["data"] == "four test volumes" and w["input_size"] == [32, 32, 1]
