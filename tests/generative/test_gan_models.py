"""The GAN builders as zoo models: registered with their own tasks, latent inputs, the sizes they
refuse, PGGAN's fade-in against the low- and high-resolution paths, .keras and SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError
from zoo.models.registry import get_entry

TINY = {
    "dcgan_generator": dict(input_shape=(16, 16, 1), latent_dim=8, depth=2, base_filters=4),
    "dcgan_discriminator": dict(input_shape=(16, 16, 1), include_top=True, num_classes=1,
                                depth=2, base_filters=4, spectral_norm=True, norm="none"),
    "patchgan": dict(input_shape=(16, 16, 2), include_top=True, num_classes=1, n_layers=2,
                     base_filters=4),
    "cyclegan_resnet": dict(input_shape=(16, 16, 1), base_filters=4, n_blocks=1),
    "pggan_generator": dict(input_shape=(16, 16, 1), latent_dim=8, base_filters=4,
                            max_filters=8, alpha=0.3),
    "pggan_discriminator": dict(input_shape=(16, 16, 1), include_top=True, num_classes=1,
                                base_filters=4, max_filters=8, alpha=0.3),
}


# SavedModel: a latent-input generator, an image-to-image one, the custom layers (FadeIn,
# MinibatchStd) and spectral normalisation; the others share their layers
EXPORTED = {"dcgan_generator", "dcgan_discriminator", "cyclegan_resnet", "pggan_discriminator",
            "pggan_generator"}


def _input(model, seed=0):
    shape = (3, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_listed_with_their_own_tasks_and_latent_inputs():
    assert set(TINY) <= set(zoo.list_models("*gan*"))
    tasks = {name: get_entry(name).task for name in TINY}
    assert tasks == {"dcgan_generator": "generator", "dcgan_discriminator": "discriminator",
                     "patchgan": "discriminator", "cyclegan_resnet": "generator",
                     "pggan_generator": "generator", "pggan_discriminator": "discriminator"}
    g = zoo.load("dcgan_generator", input_shape=(16, 16), in_chans=1, latent_dim=8, depth=2,
                 base_filters=4)
    assert g.inputs[0].name == "latent" and tuple(g.inputs[0].shape) == (None, 8)
    assert tuple(g.output.shape) == (None, 16, 16, 1)
    out = g.predict(_input(g), verbose=0)
    assert np.abs(out).max() <= 1.0  # tanh
    cond = zoo.load("dcgan_generator", input_shape=(16, 16, 1), num_labels=3, latent_dim=8,
                    depth=2, base_filters=4)
    assert [i.name for i in cond.inputs] == ["latent", "label"]


@pytest.mark.parametrize("name, options", [
    ("dcgan_generator", dict(input_shape=(20, 20, 1), depth=3)),  # 20 is not a multiple of 8
    ("dcgan_discriminator", dict(input_shape=(20, 20, 1), depth=3)),
    ("patchgan", dict(input_shape=(36, 36, 2), n_layers=3)),
    ("cyclegan_resnet", dict(input_shape=(18, 18, 1))),
    ("pggan_generator", dict(input_shape=(24, 24, 1))),  # not a power of two
    ("pggan_discriminator", dict(input_shape=(32, 16, 1))),  # not square
])
def test_sizes_a_network_cannot_reproduce_are_refused(name, options):
    with pytest.raises(InputShapeError, match="size"):
        zoo.load(name, **options)


def _copy_shared(source, target):
    from zoo.generative.pggan import copy_shared

    assert copy_shared(source, target) > 0


def test_pggan_fade_in_is_the_low_path_at_0_and_the_high_path_at_1():
    from zoo.generative.pggan import set_alpha

    common = dict(base_filters=4, max_filters=8)
    g8 = zoo.load("pggan_generator", input_shape=(8, 8, 1), latent_dim=6, fade=False, **common)
    g16 = zoo.load("pggan_generator", input_shape=(16, 16, 1), latent_dim=6, **common)
    plain16 = zoo.load("pggan_generator", input_shape=(16, 16, 1), latent_dim=6, fade=False,
                       **common)
    _copy_shared(g8, g16)
    _copy_shared(g16, plain16)
    z = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    low = g8.predict(z, verbose=0).repeat(2, axis=1).repeat(2, axis=2)  # nearest up-sampling
    high = plain16.predict(z, verbose=0)
    assert np.abs(low - high).max() > 1e-3  # the two paths differ: the test can fail
    for alpha, want in ((0.0, low), (1.0, high), (0.25, 0.75 * low + 0.25 * high)):
        set_alpha([g16], alpha)
        np.testing.assert_allclose(g16.predict(z, verbose=0), want, atol=1e-5)

    d8 = zoo.load("pggan_discriminator", input_shape=(8, 8, 1), include_top=True, num_classes=1,
                  fade=False, **common)
    d16 = zoo.load("pggan_discriminator", input_shape=(16, 16, 1), include_top=True,
                   num_classes=1, **common)
    plain_d16 = zoo.load("pggan_discriminator", input_shape=(16, 16, 1), include_top=True,
                         num_classes=1, fade=False, **common)
    _copy_shared(d8, d16)
    _copy_shared(d16, plain_d16)
    x = np.random.default_rng(1).standard_normal((3, 16, 16, 1)).astype(np.float32)
    pooled = x.reshape(3, 8, 2, 8, 2, 1).mean(axis=(2, 4))
    set_alpha([d16], 0.0)
    np.testing.assert_allclose(d16.predict(x, verbose=0), d8.predict(pooled, verbose=0),
                               atol=1e-5)
    set_alpha([d16], 1.0)
    np.testing.assert_allclose(d16.predict(x, verbose=0), plain_d16.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_keras_round_trip_in_safe_mode_and_saved_model(name, tmp_path):
    import tensorflow as tf

    from zoo.saving import load_model

    model = zoo.load(name, **TINY[name])
    x = _input(model)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")  # safe mode
    np.testing.assert_allclose(back.predict(x, verbose=0), want, atol=1e-6)
    if name not in EXPORTED:
        return
    path = zoo.export(model, tmp_path / "sm")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    input_name = "image"
    got = next(iter(serve(**{input_name: tf.constant(x)}).values())).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
