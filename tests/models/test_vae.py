"""The VAE's building blocks against independent computations: the Sampling layer's statistics,
the closed-form KL and the log-likelihoods in numpy/scipy, and the models' .keras round trip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError, ZooError
from zoo.layers.vae import Sampling, bernoulli_log_likelihood, gaussian_kl, gaussian_log_likelihood
from zoo.models import vae as V
from zoo.models.registry import get_entry
from zoo.saving import load_model


def _kl_numpy(mu, log_var):
    """KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2, summed per row."""
    s = np.exp(0.5 * log_var)
    return np.sum(-np.log(s) + (s**2 + mu**2) / 2 - 0.5, axis=1)


def test_sampling_draws_have_the_posterior_mean_and_variance_and_inference_gives_the_mean():
    n = 40000
    mean = np.tile(np.array([[1.0, -2.0]], np.float32), (n, 1))
    log_var = np.tile(np.log(np.array([[4.0, 0.25]], np.float32)), (n, 1))
    layer = Sampling(seed=3)
    z = np.asarray(layer([mean, log_var], training=True))
    sd = np.array([2.0, 0.5])
    assert np.all(np.abs(z.mean(0) - [1.0, -2.0]) < 4 * sd / np.sqrt(n))
    # the variance of a sample variance: 2 sigma^4 / (n - 1)
    assert np.all(np.abs(z.var(0) - sd**2) < 4 * np.sqrt(2 * sd**4 / (n - 1)))
    assert np.corrcoef(z.T)[0, 1] == pytest.approx(0.0, abs=4 / np.sqrt(n))
    assert np.array_equal(np.asarray(layer([mean, log_var], training=False)), mean)
    again = np.asarray(Sampling(seed=3)([mean, log_var], training=True))
    assert np.array_equal(again, z)  # the seed fixes the draws


def test_closed_form_terms_equal_numpy_and_scipy():
    rng = np.random.default_rng(0)
    mu, lv = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(gaussian_kl(mu, lv), _kl_numpy(mu, lv), rtol=1e-5)
    np.testing.assert_allclose(gaussian_kl(np.zeros((2, 4)), np.zeros((2, 4))), 0.0, atol=1e-7)
    x, logits = rng.uniform(size=(4, 2, 3)), rng.normal(scale=3, size=(4, 2, 3))
    p = 1 / (1 + np.exp(-logits))
    want = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2))
    np.testing.assert_allclose(bernoulli_log_likelihood(x, logits), want, rtol=1e-5)
    y, m, v = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    want = stats.norm.logpdf(y, m, np.exp(0.5 * v)).sum(1)
    np.testing.assert_allclose(gaussian_log_likelihood(y, m, v), want, rtol=1e-5)
    want = stats.norm.logpdf(y, m, 1.0).sum(1)
    np.testing.assert_allclose(gaussian_log_likelihood(y, m), want, rtol=1e-5)


@pytest.fixture(scope="module")
def vae2d():
    return zoo.load("vae", input_shape=(16, 16, 1), latent_dim=3, filters=(4, 8),
                    value_range=(0, 255), seed=1)


def test_the_vae_kl_term_is_the_closed_form_of_its_encoder_outputs(vae2d):
    x = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    p = V.parts(vae2d)
    mean, log_var = (np.asarray(t, np.float64) for t in p.encoder(x / 255.0))
    nll, kl = p.terms(x, training=False)
    np.testing.assert_allclose(kl, _kl_numpy(mean, log_var), rtol=1e-4, atol=1e-6)
    recon = np.asarray(vae2d(x, training=False), np.float64) / 255.0
    u = x / 255.0
    want = -np.sum(u * np.log(recon) + (1 - u) * np.log(1 - recon), axis=(1, 2, 3))
    np.testing.assert_allclose(nll, want, rtol=1e-4)


def test_generator_and_mean_encoder_share_the_vae_weights(vae2d):
    x = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 1)).astype("float32")
    z = V.mean_encoder(vae2d)(x)
    np.testing.assert_allclose(V.generator(vae2d)(z), vae2d(x, training=False), rtol=1e-5,
                               atol=1e-3)
    assert V.parts(vae2d).value_range == (0.0, 255.0)


@pytest.mark.parametrize("name, shape", [("vae", (16, 16, 1)), ("vae3d", (8, 8, 8, 2))])
def test_round_trip_keras_safe_mode_equal_outputs(tmp_path, name, shape):
    model = zoo.load(name, input_shape=shape, latent_dim=2, filters=(4,), value_range=(0, 1))
    x = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe mode
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    assert loaded.get_layer("z").get_config()["seed"] == model.get_layer("z").get_config()["seed"]
    assert V.generator(loaded)(np.zeros((1, 2), "float32")).shape == (1, *shape)


def test_registered_as_generators():
    assert zoo.list_models("vae*") == ["vae", "vae3d"]
    assert get_entry("vae").task == get_entry("vae3d").task == "generator"
    assert get_entry("vae3d").spatial_dims == 3


@pytest.mark.parametrize("name, shape, options, error, words", [
    ("vae", (16, 16, 1), {"latent_dim": 0}, InvalidArgumentError, "latent_dim=0"),
    ("vae", (16, 16, 1), {"filters": ()}, InvalidArgumentError, "filters"),
    ("vae", (16, 16, 1), {"value_range": (1, 1)}, InvalidArgumentError, "value_range"),
    ("vae", (12, 12, 1), {"filters": (4, 8, 8)}, InputShapeError, "multiples of 8"),
    ("vae3d", (4, 16, 16, 1), {"filters": (4, 8, 8)}, InputShapeError, "input spatial size 4"),
])
def test_bad_options_are_zoo_errors_naming_the_input(name, shape, options, error, words):
    with pytest.raises(error, match=words):
        zoo.load(name, input_shape=shape, **options)


def test_parts_of_a_model_that_is_not_a_vae():
    with pytest.raises(ZooError, match="not a zoo VAE"):
        V.parts(zoo.load("simple_cnn", input_shape=(32, 32, 1), num_classes=2))
