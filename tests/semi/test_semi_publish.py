"""Semi-supervised models published by tag: the SDNet segmenter (fit_sdnet) and the M2 / M1 + M2
classifiers (fit) are written as weight cards, rebuilt by ``zoo.load(arch, pretrained=tag)`` to
the same outputs in this process and in a fresh process with networking disabled, and round-trip
``.keras`` in safe mode; ``zoo semi sdnet`` / ``zoo semi m1m2`` through ``zoo.cli.main``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.data.synthetic import make_clusters, make_phantoms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TINY = dict(depth=1, base_filters=4, width=4, n_anatomy=4, z_dim=2)


def _phantoms(n=14):
    p = make_phantoms(n, size=32, seed=3, positive_fraction=1.0)
    return p.images.astype(np.float32), p.masks.astype(np.int32)


def _vae(shape):
    from zoo.models.factory import load

    return load("vae", input_shape=shape[:-1], in_chans=shape[-1], latent_dim=3, filters=(4,),
                value_range=(0.0, 255.0))


def _fresh_offline_outputs(tmp_path, names, probe):
    """zoo.load(arch, pretrained=tag) for each (arch, tag) in a new interpreter, ZOO_OFFLINE=1."""
    np.save(tmp_path / "probe.npy", probe)
    code = ("import sys, numpy as np, zoo\n"
            "x = np.load(sys.argv[1] + '/probe.npy')\n"
            "for i, name in enumerate(sys.argv[2:]):\n"
            "    arch, tag = name.split('.')\n"
            "    m = zoo.load(arch, pretrained=tag)\n"
            "    np.save(f'{sys.argv[1]}/out{i}.npy', m.predict(x, verbose=0))\n")
    env = {**os.environ, "ZOO_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path), *names], check=True, env=env,
                   timeout=180, cwd=ROOT)
    return [np.load(tmp_path / f"out{i}.npy") for i in range(len(names))]


def test_sdnet_m2_m1m2_published_by_tag_load_offline_in_a_fresh_process(tmp_path):
    import zoo
    from zoo.saving import load_model
    from zoo.semi import fit
    from zoo.semi.sdnet import fit_sdnet

    x, y = _phantoms()
    sd = fit_sdnet(x[:3], y[:3], x[3:], num_classes=2, epochs=1, batch_size=3, seed=1,
                   tag="sd_t", input_range=(0.0, 255.0), **TINY)
    c = make_clusters(12, seed=2, size=32)
    m2 = fit("m2", "simple_cnn", (c.images[:4], c.labels[:4]), c.images, epochs=1,
             batch_size=4, latent_dim=2, hidden=(8,), tag="m2_t")
    m12 = fit("m1m2", "simple_cnn", (c.images[:4], c.labels[:4]), c.images, epochs=1,
              batch_size=4, m1=_vae(c.images.shape[1:]), latent_dim=2, hidden=(8,), tag="m12_t")

    card = zoo.get_card("sdnet.sd_t")
    assert card.include_top and card.num_classes == 2 and tuple(card.input_range) == (0, 255)
    assert card.extra["task"] == "segmentation" and card.extra["recipe"] == "sdnet"
    assert card.extra["builder_options"] == dict(n_anatomy=4, depth=1, base_filters=4, width=4,
                                                 input_range=[0.0, 255.0])
    assert card.extra["hyperparameters"]["kl_weight"] == 0.01
    assert zoo.get_card("simple_cnn.m2_t").extra["recipe"] == "m2"
    assert zoo.get_card("simple_cnn.m12_t").extra["hyperparameters"]["m1"] == "vae"

    want = [np.asarray(sd.segmenter(x[:3], training=False)),
            m2.classifier.predict(c.images[:3], verbose=0),
            m12.classifier.predict(c.images[:3], verbose=0)]
    assert want[0].shape == (3, 32, 32, 2) and want[1].shape == want[2].shape == (3, 2)
    loaded = zoo.load("sdnet", pretrained="sd_t")
    np.testing.assert_allclose(loaded.predict(x[:3], verbose=0), want[0], atol=1e-5)
    loaded.save(tmp_path / "sd.keras")
    back = load_model(tmp_path / "sd.keras", safe_mode=True)
    np.testing.assert_allclose(back.predict(x[:3], verbose=0), want[0], atol=1e-5)

    # the segmenter and the classifiers take the same probe size (32 x 32 grey images)
    probe = np.concatenate([x[:3], c.images[:3]])
    got = _fresh_offline_outputs(tmp_path, ["sdnet.sd_t", "simple_cnn.m2_t", "simple_cnn.m12_t"],
                                 probe)
    np.testing.assert_allclose(got[0][:3], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1][3:], want[1], atol=1e-5)
    np.testing.assert_allclose(got[2][3:], want[2], atol=1e-5)


def test_sdnet_on_a_zoo_backbone_round_trips_keras():
    """encoder=simple_cnn: the anatomy U-Net's encoder is that backbone's features model."""
    import keras

    from zoo.semi.sdnet import build_sdnet

    keras.utils.set_random_seed(0)
    net = build_sdnet((32, 32, 1), num_classes=3, n_anatomy=4, z_dim=2, width=4,
                      input_range=(0.0, 255.0), encoder="simple_cnn")
    names = {layer.name for layer in net.segmenter.layers}
    assert any("simple_cnn" in n for n in names), names
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    probs = np.asarray(net.segmenter(x))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_sdnet_tag_and_encoder_are_checked_before_training():
    from zoo.errors import InvalidArgumentError, UnknownNameError
    from zoo.semi.sdnet import fit_sdnet

    x, y = _phantoms(6)
    with pytest.raises(InvalidArgumentError, match="tag="):
        fit_sdnet(x[:2], y[:2], x[2:], tag="Bad Tag", **TINY)
    with pytest.raises(UnknownNameError, match="resnet50"):
        fit_sdnet(x[:2], y[:2], x[2:], encoder="resnet5O", **TINY)
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        fit_sdnet(x[:2], y[:2], x[2:], resume=True, **TINY)


def test_cli_sdnet_trains_publishes_and_checkpoints(tmp_path, capsys):
    import zoo
    from zoo.cli import main

    x, y = _phantoms()
    np.savez(tmp_path / "lab.npz", images=x[:3], masks=y[:3])
    np.save(tmp_path / "pool.npy", x[3:])
    ck = tmp_path / "ck"
    code = main(["semi", "sdnet", "--labelled", str(tmp_path / "lab.npz"), "--unlabelled",
                 str(tmp_path / "pool.npy"), "--epochs", "1", "--batch-size", "3",
                 "--checkpoint-dir", str(ck), "--tag", "sd_cli",
                 *[a for k, v in TINY.items() for a in ("--option", f"{k}={v}")]])
    out = capsys.readouterr().out
    assert code == 0 and "sdnet: 1 epochs" in out and "sdnet.sd_cli" in out
    assert zoo.get_card("sdnet.sd_cli").num_classes == 2
    assert any(ck.iterdir())  # the engine's checkpoint of the epoch


@pytest.mark.parametrize("masks, args, match", [
    (lambda y: y[:, :8], [], "masks_labelled of shape"),
    (lambda y: y, ["--option", "depht=1"], "Did you mean 'depth'"),
    (lambda y: y, ["--val", "x.npz"], "no --val"),
    (None, [], "'masks'"),
])
def test_cli_sdnet_bad_input_is_one_line_before_training(tmp_path, capsys, masks, args, match):
    from zoo.cli import main

    x, y = _phantoms(6)
    arrays = {"images": x[:2]} if masks is None else {"images": x[:2], "masks": masks(y[:2])}
    np.savez(tmp_path / "lab.npz", **arrays)
    np.save(tmp_path / "pool.npy", x[2:])
    code = main(["semi", "sdnet", "--labelled", str(tmp_path / "lab.npz"), "--unlabelled",
                 str(tmp_path / "pool.npy"), *args])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err


def test_cli_unknown_method_suggests_sdnet_too(capsys):
    from zoo.cli import main

    assert main(["semi", "sdnett", "--quick"]) == 2
    assert "Did you mean 'sdnet'" in capsys.readouterr().err
    assert main(["semi", "mean_teachr", "--quick"]) == 2
    assert "Did you mean 'mean_teacher'" in capsys.readouterr().err


def test_cli_m1m2_takes_the_m1_vae_from_a_keras_file(tmp_path, capsys):
    import zoo
    from zoo.cli import main

    c = make_clusters(12, seed=2, size=32)
    np.savez(tmp_path / "lab.npz", images=c.images[:4], labels=c.labels[:4])
    np.save(tmp_path / "pool.npy", c.images)
    base = ["semi", "m1m2", "--labelled", str(tmp_path / "lab.npz"), "--unlabelled",
            str(tmp_path / "pool.npy"), "--epochs", "1", "--batch-size", "4",
            "--option", "latent_dim=2", "--option", "hidden=(8,)"]
    assert main(base) == 2 and "give --m1" in capsys.readouterr().err
    assert main([*base, "--m1", str(tmp_path / "no.keras")]) == 2
    assert "no such file" in capsys.readouterr().err
    vae = _vae(c.images.shape[1:])
    vae.save(tmp_path / "m1.keras")
    assert main([*base, "--m1", str(tmp_path / "m1.keras"), "--tag", "m12_cli"]) == 0
    assert "simple_cnn.m12_cli" in capsys.readouterr().out
    card = zoo.get_card("simple_cnn.m12_cli")
    assert card.extra["recipe"] == "m1m2" and card.num_classes == 2
    # M1 as a weight card (what `zoo generative ... --tag` writes for a VAE)
    from zoo.train.publish import publish

    publish(vae, "vae", "m1_card", {"preprocess": "none", "license": "test", "source": "test",
                                    "include_top": True, "builder_options": dict(
                                        latent_dim=3, filters=[4], value_range=[0.0, 255.0])})
    assert main([*base, "--m1", "vae.m1_card"]) == 0
    assert "m1m2: 1 epochs" in capsys.readouterr().out


def test_fit_sdnet_resumed_from_a_checkpoint_ends_as_the_uninterrupted_run(tmp_path):
    """Weights, optimizer, data order and the modality sampler's draws come back on resume."""
    from zoo.semi.sdnet import fit_sdnet

    x, y = _phantoms(8)
    run = dict(num_classes=2, batch_size=2, unlabelled_batch_size=3, seed=4, **TINY)
    whole = fit_sdnet(x[:2], y[:2], x[2:], epochs=2, **run)
    fit_sdnet(x[:2], y[:2], x[2:], epochs=1, checkpoint_dir=tmp_path / "ck", **run)
    resumed = fit_sdnet(x[:2], y[:2], x[2:], epochs=2, checkpoint_dir=tmp_path / "ck",
                        resume=True, **run)
    assert len(resumed.history) == 2
    assert resumed.history[-1]["loss"] == pytest.approx(whole.history[-1]["loss"], rel=1e-5)
    for a, b in zip(resumed.net.decoder.weights, whole.net.decoder.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
