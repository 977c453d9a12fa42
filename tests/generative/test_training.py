"""One engine step of each GAN (each optimizer moves only its own networks), and bad input refused
with a ZooError before any training."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.modalities import CT_RANGE, MR_RANGE, make_modalities
from zoo.data.synthetic import make_phantoms
from zoo.errors import DataError, InputShapeError, InvalidArgumentError, UnknownModelError
from zoo.generative import cyclegan, dcgan, pggan, pix2pix


def _weights(models):
    return {name: [w.copy() for w in m.get_weights()] for name, m in models.items()}


def _moved(before, models):
    return {name: any(not np.array_equal(a, b) for a, b in zip(before[name], m.get_weights()))
            for name, m in models.items()}


@pytest.fixture(scope="module")
def phantoms():
    return make_phantoms(8, size=16, seed=0)


def test_dcgan_step_with_r1_spectral_norm_and_conditional(phantoms):
    r = dcgan.train_dcgan(phantoms.images, epochs=1, batch_size=8, depth=2, base_filters=4,
                          latent_dim=8, r1_gamma=1.0, spectral_norm=True, loss="hinge")
    (row,) = r.history
    assert np.isfinite([row["gen_loss"], row["disc_loss"]]).all() and 0 < row["d_real"] < 1
    r = dcgan.train_dcgan(phantoms.images, labels=phantoms.labels, num_labels=2, epochs=1,
                          batch_size=8, depth=2, base_filters=4, latent_dim=8)
    samples = dcgan.sample(r.models["generator"], 4, labels=[0, 1, 0, 1], value_range=(0, 255))
    assert samples.shape == (4, 16, 16, 1) and 0 <= samples.min() and samples.max() <= 255


def test_each_optimizer_moves_only_its_networks():
    import keras
    import tensorflow as tf

    from zoo.train.engine import Engine

    keras.utils.set_random_seed(0)
    gen, disc = dcgan.build_dcgan((16, 16, 1), latent_dim=8, depth=2, base_filters=4)
    task = dcgan.DCGANTask(gen, disc)
    x = tf.data.Dataset.from_tensor_slices((make_phantoms(4, size=16).images / 127.5 - 1,
                                            np.zeros(4, np.int32))).batch(4)
    for trained, frozen in (("generator", "discriminator"), ("discriminator", "generator")):
        rates = {"gen": 1e-2 if trained == "generator" else 0.0,
                 "disc": 1e-2 if trained == "discriminator" else 0.0}
        before = _weights(task.models())
        Engine(task, {k: keras.optimizers.SGD(v) for k, v in rates.items()}).fit(x, 1)
        assert _moved(before, task.models())[trained], trained
        # the other network's forward passes move only its BatchNorm statistics, no weight
        other = task.models()[frozen]
        stats = {id(v) for layer in other.layers if "batch" in layer.name
                 for v in layer.non_trainable_variables}
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before[frozen], other.weights)
                   if id(v) not in stats)


def test_pix2pix_cyclegan_and_pggan_steps():
    paired = make_modalities(4, size=16, seed=0)
    r = pix2pix.train_pix2pix(paired, source_range=MR_RANGE, target_range=CT_RANGE, epochs=1,
                              batch_size=4, depth=2, base_filters=4, n_layers=1, disc_filters=4)
    assert np.isfinite(r.history[0]["l1"])
    out = pix2pix.translate(r.models["generator"], paired.mr, source_range=MR_RANGE,
                            target_range=CT_RANGE)
    assert out.shape == paired.ct.shape and CT_RANGE[0] <= out.min() <= out.max() <= CT_RANGE[1]
    volumes = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 16, 1)).astype(np.float32)
    r = pix2pix.train_pix2pix(volumes, volumes**2, source_range=(0, 1), target_range=(0, 1),
                              epochs=1, batch_size=2, depth=2, base_filters=2, n_layers=1,
                              disc_filters=2)  # 3D: unet3d + patchgan3d
    assert r.models["discriminator"].name == "patchgan3d" and np.isfinite(r.history[0]["l1"])
    unpaired = make_modalities(4, size=16, seed=1, paired=False)
    r = cyclegan.train_cyclegan(unpaired.mr, unpaired.ct[:3], range_a=MR_RANGE,
                                range_b=CT_RANGE, epochs=1, batch_size=2, base_filters=4,
                                n_blocks=1, n_layers=1, disc_filters=4, pool_size=2)
    assert sorted(r.models) == ["d_a", "d_b", "g_ab", "g_ba"] and r.history[0]["cycle"] > 0
    r = pggan.train_pggan(make_phantoms(4, size=16).images, start=8, epochs_per_stage=1,
                          batch_size=4, latent_dim=4, base_filters=4, max_filters=8)
    assert [row["resolution"] for row in r.history] == [8, 16]
    assert [float(f.alpha.numpy()) for f in pggan.fade_layers(r.models["generator"])] == [1.0]


@pytest.fixture
def no_training(monkeypatch):
    """Any call that reaches the engine fails the test: errors must come before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    for module in (dcgan, pix2pix, cyclegan, pggan):
        monkeypatch.setattr(module, "train_task", refuse)


def test_bad_input_is_refused_before_training(no_training):
    m = make_modalities(4, size=16)
    ranges = {"source_range": MR_RANGE, "target_range": CT_RANGE}
    with pytest.raises(DataError, match="unpaired"):
        pix2pix.train_pix2pix(make_modalities(4, size=16, paired=False), **ranges)
    with pytest.raises(DataError, match="pairs"):
        pix2pix.train_pix2pix(m.mr, m.ct[:3], **ranges)
    with pytest.raises(InputShapeError, match="same place"):
        pix2pix.train_pix2pix(m.mr, m.ct[:, :8, :8], **ranges)
    odd = make_modalities(2, size=20)  # 20 is not a multiple of 2**3
    with pytest.raises(InputShapeError, match="divisible"):
        pix2pix.train_pix2pix(odd.mr, odd.ct, depth=3, **ranges)
    with pytest.raises(InputShapeError, match="domain B"):
        cyclegan.train_cyclegan(m.mr, m.ct[:, :8, :8], range_a=MR_RANGE, range_b=CT_RANGE)
    with pytest.raises(InputShapeError, match="multiples of 8"):
        dcgan.train_dcgan(make_phantoms(2, size=20).images, depth=3)
    with pytest.raises(InputShapeError, match="a power of two"):
        pggan.train_pggan(make_phantoms(2, size=24).images)
    with pytest.raises(DataError, match="labels"):
        dcgan.train_dcgan(make_phantoms(2, size=16).images, labels=[0, 1, 2], depth=2)
    with pytest.raises(UnknownModelError, match="hinge"):
        dcgan.train_dcgan(make_phantoms(2, size=16).images, loss="hing", depth=2)
    with pytest.raises(InvalidArgumentError, match="depth"):
        pix2pix.train_pix2pix(m.mr, m.ct, depht=2, **ranges)
    with pytest.raises(DataError, match="outside their value range"):
        pix2pix.train_pix2pix(m.mr, m.ct, source_range=MR_RANGE, target_range=(0, 255))
    with pytest.raises(InvalidArgumentError, match="value_range"):
        dcgan.train_dcgan(make_phantoms(2, size=16).images, value_range=(1, 1), depth=2)
