"""GAN networks as weight cards: a published generator loads by tag in a fresh offline process;
a discriminator is reused as an encoder (zoo.load(..., pretrained=tag, num_classes=k)) and
fine-tuned a step. Plus ``zoo gan`` end to end on a tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.generative.dcgan import train_dcgan
from zoo.generative.gan_features import (
    discriminator_encoder,
    publish_discriminator,
    publish_generator,
)

OPTIONS = dict(depth=2, base_filters=4)


@pytest.fixture(scope="module")
def trained():
    data = make_phantoms(8, size=16, seed=0)
    return data, train_dcgan(data.images, labels=None, epochs=1, batch_size=8, latent_dim=6,
                             **OPTIONS)


@pytest.mark.slow
def test_generator_card_loads_in_a_fresh_offline_process(trained, zoo_env, tmp_path):
    _, result = trained
    gen = result.models["generator"]
    card = publish_generator(gen, "dcgan_generator", "gan_test", value_range=(0, 255),
                             options={**OPTIONS, "latent_dim": 6})
    doc = tomllib.loads((zoo_env / "cards" / "dcgan_generator.gan_test.toml").read_text())
    table = doc["dcgan_generator"]["gan_test"]
    assert table["input_size"] == [16, 16, 1] and table["output_range"] == [0.0, 255.0]
    assert table["builder_options"] == {"depth": 2, "base_filters": 4, "latent_dim": 6}
    assert card.name in zoo.list_models("dcgan*", pretrained=True)
    z = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code = ("import numpy as np, zoo\n"
            "g = zoo.load('dcgan_generator', pretrained='gan_test')\n"
            f"np.save({str(tmp_path / 'got.npy')!r}, g.predict(np.load("
            f"{str(tmp_path / 'z.npy')!r}), verbose=0))\n"
            "print(zoo.weights_origin(g)['card'])\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "3",
           "ZOO_HOME": str(zoo_env), "ZOO_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("dcgan_generator.gan_test")
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), gen.predict(z, verbose=0),
                               atol=1e-6)


def test_discriminator_as_encoder_with_a_fresh_head_fine_tuned_a_step(trained, zoo_env):
    import keras

    data, result = trained
    disc = result.models["discriminator"]
    publish_discriminator(disc, "dcgan_discriminator", "gan_enc", options=OPTIONS)
    model = zoo.load("dcgan_discriminator", pretrained="gan_enc", num_classes=2)
    assert tuple(model.output.shape) == (None, 2)
    x = data.images / 127.5 - 1.0
    encoder = keras.Model(model.inputs[0], model.get_layer("down2_lrelu").output)
    np.testing.assert_allclose(encoder.predict(x, verbose=0), discriminator_encoder(
        disc, "dcgan_discriminator").predict(x, verbose=0), atol=1e-6)
    from zoo.train.batches import Batches
    from zoo.train.engine import Engine
    from zoo.train.tasks import Classification

    before = [w.copy() for w in model.get_weights()]
    history = Engine(Classification(model), keras.optimizers.SGD(0.1)).fit(
        Batches(x.astype(np.float32), data.labels, batch_size=8), 1)  # one fine-tuning step
    assert np.isfinite(history[0]["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_cli_trains_writes_samples_and_refuses_unknown_options(tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "run"
    code = main(["gan", "pix2pix", "--n", "4", "--epochs", "1", "--batch-size", "4",
                 "--option", "depth=2", "--option", "base_filters=2", "--option", "n_layers=1",
                 "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".zoo-manifest.json", "generator.keras", "history.json", "samples.png"]
    assert json.loads((out / "history.json").read_text())[0]["epoch"] == 0
    from matplotlib import image

    grid = image.imread(out / "samples.png")
    assert grid.shape[:2] == (32, 32 * 4 + 3)  # 4 translations of 32 x 32, 1-pixel gaps
    capsys.readouterr()
    assert main(["gan", "pix2pix", "--n", "4", "--option", "depht=2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'depth'" in capsys.readouterr().err


def test_translation_generator_card_rebuilds_its_tanh_head(zoo_env):
    gen = zoo.load("unet", input_shape=(16, 16, 1), num_classes=1, classifier_activation="tanh",
                   depth=1, base_filters=2)
    publish_generator(gen, "unet", "p2p_test", options={"depth": 1, "base_filters": 2},
                      value_range=(-1024, 1024))
    back = zoo.load("unet", pretrained="p2p_test")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)
    want = gen.predict(x, verbose=0)
    assert not np.allclose(want, 1.0) and want.std() > 0  # a 1-channel softmax head gives 1
    np.testing.assert_allclose(back.predict(x, verbose=0), want, atol=1e-6)
