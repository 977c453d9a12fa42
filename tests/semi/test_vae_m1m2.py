"""M1, M2 and M1 + M2 against independent computations: the M2 bounds of a tiny model against a
numpy Monte-Carlo estimate of the ELBO (fixed weights, many draws, tolerance from the MC error;
Bernoulli and Gaussian likelihoods), the unlabelled weight 0 giving the supervised update exactly,
and errors before training (a collapsed M1 among them)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import ZooError
from zoo.semi.methods import METHODS
from zoo.semi.vae_m1m2 import M1M2Task, M1Task, M2Task, entropy, m1_features
from zoo.train.engine import Engine

K, SHAPE = 3, (2, 2, 1)


def _classifier(seed=0, shape=SHAPE, k=K):
    keras.utils.set_random_seed(seed)
    x = keras.Input(shape=shape, name="image")
    h = keras.layers.Dense(5, activation="relu", name="hidden")(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(k, activation="softmax", name="head_fc")(h))


def _dense(model, name):
    w, b = model.get_layer(name).get_weights()
    return lambda v: v @ w + b


def _numpy_bound(task, x, y, n, rng):
    """-ELBO(x, y) by Monte Carlo in numpy: E_q[log p(x|y,z) + log p(z) - log q(z|x,y)] + log p(y),
    every term drawn (no closed-form KL), from the encoder's and decoder's weights."""
    enc, dec = task.encoder, task.decoder
    onehot = np.eye(K)[y]
    h = np.maximum(_dense(enc, "enc_hidden0")(np.concatenate([x, onehot])), 0)
    mu, log_var = _dense(enc, "z_mean")(h), _dense(enc, "z_log_var")(h)
    z = mu + np.exp(0.5 * log_var) * rng.standard_normal((n, len(mu)))
    hz = np.maximum(_dense(dec, "dec_hidden0")(np.concatenate([z, np.tile(onehot, (n, 1))], 1)), 0)
    if task.gaussian:  # N(x; mean, exp(log_var)) per value
        mean, var_log = _dense(dec, "x_mean")(hz), _dense(dec, "x_log_var")(hz)
        log_px = np.sum(-0.5 * (np.log(2 * np.pi) + var_log + (x - mean) ** 2 / np.exp(var_log)),
                        1)
    else:
        logits = _dense(dec, "logits")(hz)
        log_px = np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), 1)
    log_pz = np.sum(-0.5 * (np.log(2 * np.pi) + z**2), 1)
    log_qz = np.sum(-0.5 * (np.log(2 * np.pi) + log_var + (z - mu) ** 2 / np.exp(log_var)), 1)
    elbo = log_px + log_pz - log_qz - np.log(K)
    return -elbo.mean(), elbo.std() / np.sqrt(n)


def _m2(likelihood):
    return M2Task(_classifier(), num_classes=K, unlabelled_weight=1.0, seed=0, latent_dim=2,
                  hidden=(4,), value_range=(0, 1), likelihood=likelihood)


@pytest.fixture(scope="module")
def m2():
    return _m2("bernoulli")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_m2_bounds_equal_a_numpy_monte_carlo_elbo(likelihood, m2):
    m2 = m2 if likelihood == "bernoulli" else _m2(likelihood)
    rng = np.random.default_rng(0)
    x = np.array([0.1, 0.9, 0.6, 0.3], np.float32)
    n = 100_000
    reps = np.tile(x, (n, 1))
    for y in range(K):
        want, err = _numpy_bound(m2, x, y, n, rng)
        got = np.asarray(m2.bound(reps, np.eye(K, dtype="float32")[[y] * n], training=False))
        sem = np.sqrt(err**2 + (got.std() / np.sqrt(n)) ** 2)
        assert abs(got.mean() - want) < 5 * sem + 1e-4, (y, got.mean(), want, sem)
    # U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), q from the classifier's own forward pass in numpy
    bounds = np.array([_numpy_bound(m2, x, y, n, rng)[0] for y in range(K)])
    h = np.maximum(_dense(m2.classifier, "hidden")(x), 0)
    logits = _dense(m2.classifier, "head_fc")(h)
    q = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    want = q @ bounds + np.sum(q * np.log(q))
    probs = np.tile(q, (n // 10, 1)).astype("float32")
    got = np.asarray(m2.unlabelled_bound(reps[: n // 10], probs))
    assert abs(got.mean() - want) < 5 * got.std() / np.sqrt(n // 10) + 0.02


def test_grey_values_get_a_gaussian_likelihood_by_default():
    """Bernoulli's bound is nearly flat on grey values far from 0 and 1 (the issue's toys), so the
    default decodes a mean and a log-variance per pixel; 'bernoulli' stays for binary images."""
    task = M2Task(_classifier(), num_classes=K, value_range=(0, 1))
    assert task.gaussian and [t.name for t in task.decoder.outputs] != ["logits"]
    assert len(task.decoder.outputs) == 2
    m1 = M1Task(_classifier(), num_classes=K, value_range=(0, 1))
    assert m1.gaussian and len(m1.decoder.outputs) == 2


def test_m1_beta_weighs_exactly_the_kl_term():
    """bound(beta=1) - bound(beta=b) = (1 - b) KL, the closed-form Gaussian KL from the latent
    heads' weights in numpy (same initialisation and the same draw of z for both tasks)."""
    x = np.random.default_rng(0).uniform(size=(4, *SHAPE)).astype("float32")

    def task(beta):
        model = _classifier()  # seeds keras, so both tasks get the same heads and sampler
        return M1Task(model, num_classes=K, seed=0, latent_dim=2, hidden=(4,),
                      value_range=(0, 1), beta=beta)

    full, light = task(1.0), task(0.25)
    h = np.asarray(full.trunk(x))
    mu, log_var = _dense(full.heads, "z_mean")(h), _dense(full.heads, "z_log_var")(h)
    kl = 0.5 * np.sum(np.exp(log_var) + mu**2 - 1 - log_var, axis=1)
    diff = np.asarray(full.bound(x)) - np.asarray(light.bound(x))
    np.testing.assert_allclose(diff, 0.75 * kl, rtol=1e-4, atol=1e-5)
    assert np.all(kl > 1e-3)  # the KL term is there to weigh


def _constant_m1(shape=SHAPE):
    """An image -> (B, 2) model whose means never move: a VAE after posterior collapse."""
    x = keras.Input(shape=shape)
    dense = keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer="ones")
    return keras.Model(x, dense(keras.layers.Flatten()(x)), name="collapsed")


def test_a_collapsed_m1_is_refused_before_training():
    from zoo.errors import DataError

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, *SHAPE)).astype("float32")
    u = rng.uniform(0, 1, (12, *SHAPE)).astype("float32")
    with pytest.raises(DataError, match="'collapsed'.*collapsed to its prior.*beta"):
        zoo.semi.fit("m1m2", _classifier(), (x, np.arange(6) % K), u, num_classes=K, epochs=1,
                     batch_size=3, m1=_constant_m1(), latent_dim=2, hidden=(4,))
    # the count is over the means' per-unit variance (> 1e-4): one moving unit is enough
    means = np.stack([np.zeros(20), np.linspace(-1, 1, 20)], 1)
    from zoo.semi.vae_m1m2 import check_active

    assert check_active(means, "m") == 1


def test_entropy_and_the_labelled_bound_include_log_k(m2):
    q = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    np.testing.assert_allclose(entropy(q), [0.0, np.log(3)], atol=1e-6)
    assert m2.alpha == 4.0 and m2.log_k == pytest.approx(np.log(3))


def _stream(seed=0, n_l=6, n_u=12):
    from zoo.semi.data import SemiStream

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n_l, *SHAPE)).astype("float32")
    u = rng.uniform(0, 1, (n_u, *SHAPE)).astype("float32")
    return SemiStream((x, np.arange(n_l) % K), u, batch_size=3, unlabelled_batch_size=4, seed=seed)


def _vae(shape=SHAPE):
    return zoo.load("vae", input_shape=shape, latent_dim=2, filters=(2,), value_range=(0, 1))


def _train(method, weight, **options):
    task = METHODS[method].task(_classifier(seed=1), num_classes=K, unlabelled_weight=weight,
                                     seed=0, **options)
    history = Engine(task, keras.optimizers.Adam(1e-2)).fit(_stream(), 1)
    return task.classifier.get_weights(), history[-1]


@pytest.fixture(scope="module")
def supervised():
    return _train("supervised", 0.0)[0]


@pytest.mark.parametrize("method", ["m1", "m2", "m1m2"])
def test_weight_zero_is_the_supervised_update_exactly_and_unlabelled_images_change_it(
        method, supervised):
    options = {"latent_dim": 2, "hidden": (4,)}
    options.update({"m1": _vae()} if method == "m1m2" else {"value_range": (0, 1)})
    zero, _ = _train(method, 0.0, **options)
    for a, b in zip(supervised, zero, strict=True):
        np.testing.assert_array_equal(a, b)
    one, row = _train(method, 1.0, **options)
    assert "unlabelled_bound" in row and np.isfinite(row["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(zero, one, strict=True))


def test_m2_models_round_trip_keras_safe_mode(tmp_path, m2):
    from zoo.saving import load_model

    r = np.random.default_rng(0).uniform(0, 1, (3, 4)).astype("float32")
    y = np.eye(K, dtype="float32")[[0, 1, 2]]
    for model, inputs in ((m2.encoder, [r, y]), (m2.decoder, [r[:, :2], y])):
        model.save(tmp_path / f"{model.name}.keras")
        loaded = load_model(tmp_path / f"{model.name}.keras")
        for a, b in zip(keras.tree.flatten(model(inputs)), keras.tree.flatten(loaded(inputs)),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_m1_features_are_the_vae_posterior_means():
    vae = _vae((4, 4, 1))
    x = np.random.default_rng(0).uniform(0, 1, (5, 4, 4, 1)).astype("float32")
    from zoo.models.vae import parts

    want, _ = parts(vae).encoder(x)
    np.testing.assert_allclose(m1_features(vae, x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, model, options, words", [
    (M1M2Task, None, {}, "needs m1="),
    (M1M2Task, None, {"m1": "vae"}, "m1=str"),
    (M2Task, None, {"alpha": 0.0, "value_range": (0, 1)}, "alpha=0.0"),
    (M2Task, None, {}, "give value_range"),
    (M2Task, None, {"latent_dim": 0, "value_range": (0, 1)}, "latent_dim=0"),
    (M2Task, None, {"likelihood": "poisson", "value_range": (0, 1)}, "likelihood='poisson'"),
    (M1Task, "softmax_last", {"value_range": (0, 1)}, "last Dense"),
    (M1Task, None, {"beta": 0.0, "value_range": (0, 1)}, "beta=0.0"),
])
def test_bad_options_are_zoo_errors_before_training(cls, model, options, words):
    if model is None:
        model = _classifier()
    else:
        x = keras.Input(shape=SHAPE)
        model = keras.Model(x, keras.layers.Softmax()(keras.layers.Flatten()(x)))
    with pytest.raises(ZooError, match=words):
        cls(model, num_classes=K, unlabelled_weight=1.0, seed=0, **options)


def test_registered_as_generative_methods():
    for name in ("m1", "m2", "m1m2"):
        assert METHODS[name].family == "generative" and METHODS[name].backbones
