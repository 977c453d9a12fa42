"""Semi-supervised VAEs (Kingma, Rezende, Mohamed & Welling 2014): M1, M2 and M1 + M2.

- **M2** (``"m2"``): the label is a latent variable. The classifier q(y|x) is the given model;
  an encoder q(z|x,y) and a decoder p(x|y,z) (``zoo.models.vae.mlp_encoder/mlp_decoder`` on the
  flattened image scaled to [0, 1]; ``likelihood="gaussian"`` (default: a mean and a log-variance
  per pixel, for grey values) or ``"bernoulli"`` (near-binary images, the paper's MNIST)) are
  built around it. With the negative
  bound ``L(x,y) = -log p(x|y,z) + KL(q(z|x,y) || N(0, I)) + log K`` (one draw of z, uniform
  p(y)) and ``U(x) = sum_y q(y|x) L(x,y) - H(q(y|x))``, Kingma's objective
  ``sum L + sum U + alpha * CE`` is minimised as ``CE + (L + w * U) / alpha`` per labelled
  example (w = ``unlabelled_weight``; the default ``alpha`` is the number of input values, so the
  bound counts per pixel), which keeps the classifier's cross-entropy gradient the supervised
  method's own: with w = 0 the classifier's update is the supervised one exactly (the labelled
  bound moves only the encoder and decoder, and no unlabelled image is seen). Kingma's
  alpha = 0.1 N (N images, sums over the data) is about alpha = 0.1 in these per-batch means: on
  gap clusters (seeds 10-12, Gaussian) it drove the classifier to one class in 2 of 3 runs (0.59),
  while alpha = D, D / 10, D / 100 gave 0.86, 0.83, 0.86: D stays the default.
- **M1 + M2** (``"m1m2"``): M2 on the latent means of a trained M1 VAE (``m1=``, a zoo VAE or an
  image -> vector model, frozen), Gaussian likelihood p(z1|y,z2); the classifier is still the
  given model on the image (a model built on the M1 features, as in the paper, is one choice).
- **M1** (``"m1"``): a VAE whose encoder is the given classifier's own feature trunk (the input
  of its last Dense layer -> z_mean, z_log_var) and whose decoder reconstructs the image; its
  bound on the unlabelled images, weighted by w, shapes the features the classifier's head uses.
  The two-stage M1 of the paper (a VAE trained first, then any classifier on its latent means) is
  ``m1_features`` on a VAE from ``zoo.generative.vae.fit_vae`` + KNN / logistic regression
  (benchmarks/bench_m1m2.py).

Batches are ``zoo.semi.data.SemiStream``'s ``({"labelled", "unlabelled", "index"}, y, w)``.
"""

from __future__ import annotations

import math

import numpy as np

from zoo._lazy import keras
from zoo.errors import DataError, InvalidArgumentError
from zoo.models import vae as V
from zoo.semi.methods import SemiTask, labelled_part, register_method


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise InvalidArgumentError(f"{name}={value!r}: must be a finite number > 0.")
    return float(value)


def _unit_map(model, value_range) -> tuple[float, float]:
    """(scale, offset) mapping the pixel range onto [0, 1]: value_range, else the model's
    input contract (its ``preprocess`` layer's range)."""
    if value_range is None:
        try:
            value_range = model.get_layer("preprocess").input_range
        except ValueError:
            raise InvalidArgumentError(
                f"model {model.name!r} has no zoo 'preprocess' layer saying its pixel range; "
                "give value_range=(low, high) of the images.") from None
    lo, hi = V.check_value_range(value_range)
    return 1.0 / (hi - lo), -lo / (hi - lo)


def _flat_unit(x, scale: float, offset: float):
    """Images -> (B, D) in [0, 1]: the Bernoulli likelihood's domain."""
    from keras import ops

    flat = ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))
    return ops.clip(flat * scale + offset, 0.0, 1.0)


LIKELIHOODS = ("gaussian", "bernoulli")
# the default of M1 and M2 on pixels: grey values (CT, MR, the cluster toys) sit far from 0 and 1,
# where a Bernoulli bound hardly depends on the reconstruction (|L(x, 0) - L(x, 1)| = 0.6 nats on
# gap clusters), so neither the latent nor the classifier learns from it
LIKELIHOOD = "gaussian"


def _check_likelihood(likelihood) -> bool:
    """True for the Gaussian likelihood, False for the Bernoulli; else InvalidArgumentError."""
    if likelihood not in LIKELIHOODS:
        raise InvalidArgumentError(
            f"likelihood={likelihood!r}: give 'gaussian' (grey values: a mean and a log-variance "
            "per pixel) or 'bernoulli' (near-binary images such as MNIST strokes).")
    return likelihood == "gaussian"


def _nll(target, out, gaussian: bool):
    """-log p(target | decoder output) per example: Gaussian ``[mean, log_var]`` or Bernoulli
    logits, summed over the values (never averaged: the KL must not outweigh it)."""
    from zoo.layers.vae import bernoulli_log_likelihood, gaussian_log_likelihood

    if gaussian:
        return -gaussian_log_likelihood(target, out[0], out[1])
    return -bernoulli_log_likelihood(target, out)


def _input_size(model) -> int:
    return math.prod(int(s) for s in model.inputs[0].shape[1:])


def _mean_with_count(values) -> tuple:
    from keras import ops

    return (ops.sum(values), ops.cast(ops.shape(values)[0], "float32"))


def entropy(probs):
    """H(q) per row, in nats (0 log 0 = 0).

    Args:
        probs: (B, K) probabilities.

    Returns:
        (B,) entropies.
    """
    from keras import ops

    probs = ops.cast(probs, "float32")
    return -ops.sum(probs * ops.log(ops.clip(probs, 1e-12, 1.0)), axis=-1)


class M2Task(SemiTask):
    """M2 (and, with ``m1``, M1 + M2) on the engine; see the module docstring.

    Args:
        model: the classifier q(y|x) (softmax outputs).
        num_classes: K.
        unlabelled_weight: w, the weight of U(x).
        seed: the sampler's seed.
        latent_dim: the size of z.
        hidden: the encoder's and decoder's hidden widths.
        alpha: the weight of the cross-entropy against the bound (None: the input size).
        value_range: the pixel range mapped onto [0, 1] (None: the model's input contract).
        likelihood: ``"gaussian"`` (grey values) or ``"bernoulli"``.
    """

    unlabelled_metrics = ("unlabelled_bound",)

    m1 = None  # M1 + M2: the frozen M1 encoder (images -> latent means)

    def __init__(self, model, *, num_classes: int, unlabelled_weight: float = 1.0, seed: int = 0,
                 latent_dim: int = 16, hidden=(128,), alpha=None, value_range=None,
                 likelihood: str = LIKELIHOOD):
        from zoo.layers.vae import Sampling

        super().__init__(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                         seed=seed)
        # M1 + M2 models M1's real-valued latent means: always Gaussian
        self.gaussian = self.m1 is not None or _check_likelihood(likelihood)
        if self.m1 is None:
            self.scale, self.offset = _unit_map(model, value_range)
            self.size = _input_size(model)
        else:
            self.size = int(self.m1.outputs[0].shape[-1])
        self.alpha = float(self.size) if alpha is None else _check_positive(alpha, "alpha")
        k = self.num_classes
        self.encoder = V.mlp_encoder(self.size, latent_dim, hidden, cond_dim=k, name="m2_encoder")
        self.decoder = V.mlp_decoder(latent_dim, self.size, hidden, cond_dim=k,
                                     gaussian=self.gaussian, name="m2_decoder")
        self.sampling = Sampling(seed=seed, name="m2_z")
        self.log_k = math.log(k)

    def models(self) -> dict:
        models = {"classifier": self.classifier, "m2_encoder": self.encoder,
                  "m2_decoder": self.decoder}
        return {**models, "m1": self.m1} if self.m1 is not None else models

    def trainable(self, name: str) -> list:
        return [v for m in (self.classifier, self.encoder, self.decoder)
                for v in m.trainable_variables]

    def represent(self, x):
        """What M2 models: the image flattened onto [0, 1], or M1's latent means (frozen)."""
        from keras import ops

        if self.m1 is not None:
            return ops.stop_gradient(ops.cast(self.m1(x, training=False), "float32"))
        return _flat_unit(x, self.scale, self.offset)

    def bound(self, r, y_onehot, training: bool = True):
        """L(x, y) per example: the negative ELBO of (representation, label), one draw of z.

        Args:
            r: (B, D) representations (``represent``).
            y_onehot: (B, K) labels.
            training: the encoder's and decoder's mode (z is always drawn).

        Returns:
            (B,) ``-log p(r|y,z) + KL(q(z|r,y) || N(0, I)) + log K`` in nats.
        """
        from keras import ops

        from zoo.layers.vae import gaussian_kl

        r, y_onehot = ops.cast(r, "float32"), ops.cast(y_onehot, "float32")
        mean, log_var = self.encoder([r, y_onehot], training=training)
        z = self.sampling([mean, log_var], training=True)
        out = self.decoder([z, y_onehot], training=training)
        return _nll(r, out, self.gaussian) + gaussian_kl(mean, log_var) + self.log_k

    def unlabelled_bound(self, r, probs, training: bool = True):
        """U(x) per example: ``sum_y q(y|x) L(x, y) - H(q(y|x))``, all K classes in one batch.

        Args:
            r: (B, D) representations.
            probs: (B, K) the classifier's q(y|x).
            training: as in ``bound``.

        Returns:
            (B,) U(x) in nats.
        """
        from keras import ops

        k, n = self.num_classes, ops.shape(r)[0]
        tiled = ops.tile(ops.cast(r, "float32"), (k, 1))  # rows c*n .. c*n + n - 1: class c
        labels = ops.repeat(ops.arange(k), n)
        per = self.bound(tiled, ops.one_hot(labels, k), training)
        per_class = ops.transpose(ops.reshape(per, (k, n)))
        return ops.sum(ops.cast(probs, "float32") * per_class, axis=1) - entropy(probs)

    def step(self, batch, training: bool):
        """The supervised step (+ w U), plus the labelled bound / alpha while training."""
        from keras import ops

        out = super().step(batch, training)
        inputs, y, w = batch
        if training and isinstance(inputs, dict):
            onehot = ops.one_hot(ops.cast(y, "int32"), self.num_classes)
            lab = self.bound(self.represent(labelled_part(inputs)), onehot, training)
            w = ops.cast(w, "float32")
            out.losses["main"] = out.losses["main"] + lab * w / self.alpha
            out.metrics["labelled_bound"] = (ops.sum(lab * w), ops.sum(w))
        else:  # the same metrics in every step (the engine's rule), 0 / 0 when not computed
            out.metrics["labelled_bound"] = (ops.zeros(()), ops.zeros(()))
        return out

    def unlabelled_loss(self, inputs, training: bool):
        """mean U(x) / alpha over the batch's unlabelled images."""
        from keras import ops

        xu = inputs["unlabelled"]
        probs = self.classifier(xu, training=training)
        unl = self.unlabelled_bound(self.represent(xu), probs, training)
        return ops.mean(unl) / self.alpha, {"unlabelled_bound": _mean_with_count(unl)}


class M1M2Task(M2Task):
    """M2 on the latent means of a trained M1 VAE (``m1``, required, kept frozen).

    Args:
        model: the classifier q(y|x).
        num_classes: K.
        unlabelled_weight: w.
        seed: the sampler's seed.
        m1: a trained zoo VAE (or an image -> (B, d) Keras model).
        latent_dim: the size of M2's z2.
        hidden: M2's hidden widths.
        alpha: as in M2Task (None: M1's latent size).
    """

    def __init__(self, model, *, num_classes: int, unlabelled_weight: float = 1.0, seed: int = 0,
                 m1=None, latent_dim: int = 16, hidden=(128,), alpha=None):
        if m1 is None:
            raise InvalidArgumentError(
                "method 'm1m2' needs m1=<a trained zoo VAE>: train M1 first, e.g. "
                "zoo.generative.vae.fit_vae(all_images, ...).model, then pass it as m1=.")
        self.m1 = _m1_encoder(m1)
        super().__init__(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                         seed=seed, latent_dim=latent_dim, hidden=hidden, alpha=alpha)

    def prepare(self, stream, epochs: int) -> None:
        """Refuse a collapsed M1 before training: M2 on constant means only adds noise."""
        if self.unlabelled_weight > 0:
            pool = np.asarray(stream.unlabelled, np.float32)[:ACTIVE_SAMPLE]
            check_active(np.asarray(self.m1.predict(pool, batch_size=256, verbose=0)),
                         self.m1.name)


# a latent unit carries information when its mean's std over the pool exceeds 0.01 (the prior's
# std is 1): gap clusters' collapsed VAE reached 1e-6 at most, an untrained zoo VAE 3e-3 or more
# (Burda et al.'s "active units" use 0.01, which an untrained encoder would fail)
ACTIVE_VARIANCE = 1e-4
ACTIVE_SAMPLE = 1024  # unlabelled images the check encodes


def check_active(means: np.ndarray, name: str) -> int:
    """The number of active units of M1's latent means over the pool; none: a DataError.

    A VAE whose KL to the prior went to 0 (posterior collapse: e.g. a Bernoulli likelihood on
    low-contrast grey values, whose curvature is far below the pixels' noise) encodes every image
    to the same mean; M1 + M2 on it lost to supervised training (0.59 vs 0.77 on gap clusters).
    """
    active = int(np.sum(np.var(means, axis=0) > ACTIVE_VARIANCE))
    if active == 0:
        raise DataError(
            f"m1={name!r}: none of its {means.shape[-1]} latent means varies over the unlabelled "
            f"images (variance <= {ACTIVE_VARIANCE}): the VAE collapsed to its prior and its "
            "features carry no information. Retrain it with a smaller KL weight (fit_vae(..., "
            "beta=0.001) on grey values) or a likelihood that fits the images.")
    return active


def _m1_encoder(m1):
    """A zoo VAE -> its mean encoder; an image -> (B, d) Keras model as it is."""
    if not isinstance(m1, keras.Model):
        raise InvalidArgumentError(
            f"m1={type(m1).__name__}: give a trained zoo VAE (zoo.generative.vae.fit_vae(...)"
            ".model) or a Keras model from images to latent vectors.")
    names = {layer.name for layer in m1.layers}
    if {"encoder", "reconstruction"} <= names:
        return V.mean_encoder(m1)
    if len(m1.outputs) != 1 or len(m1.outputs[0].shape) != 2:
        raise InvalidArgumentError(
            f"m1={m1.name!r} outputs {[tuple(t.shape) for t in m1.outputs]}; M1 + M2 needs one "
            "(batch, latent) output: a zoo VAE or its mean encoder.")
    return m1


class M1Task(SemiTask):
    """M1 with the classifier's trunk as the VAE's encoder; see the module docstring.

    Args:
        model: a classifier ending in a Dense layer.
        num_classes: K.
        unlabelled_weight: w, the weight of the unlabelled bound (per input value).
        seed: the sampler's seed.
        latent_dim: the size of z.
        hidden: the decoder's hidden widths.
        value_range: the pixel range mapped onto [0, 1] (None: the model's input contract).
        likelihood: ``"gaussian"`` (grey values) or ``"bernoulli"``.
        beta: the KL term's weight (beta-VAE); below 1 the code keeps more of the image.
    """

    unlabelled_metrics = ("unlabelled_bound",)

    def __init__(self, model, *, num_classes: int, unlabelled_weight: float = 1.0, seed: int = 0,
                 latent_dim: int = 16, hidden=(128,), value_range=None,
                 likelihood: str = LIKELIHOOD, beta: float = 1.0):
        from zoo.layers.vae import Sampling

        super().__init__(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                         seed=seed)
        head = model.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise InvalidArgumentError(
                f"model {model.name!r} ends in {type(head).__name__} {head.name!r}: M1 takes the "
                "classifier's features at the input of its last Dense layer (a zoo classifier's "
                "head_fc); give a model that ends in a Dense classifier.")
        V.check_latent_dim(latent_dim)
        self.gaussian = _check_likelihood(likelihood)
        self.beta = _check_positive(beta, "beta")
        self.scale, self.offset = _unit_map(model, value_range)
        self.size = _input_size(model)
        self.trunk = keras.Model(model.inputs[0], head.input, name="m1_trunk")
        feats = keras.Input(shape=tuple(head.input.shape[1:]), name="features")
        self.heads = keras.Model(feats, [keras.layers.Dense(latent_dim, name="z_mean")(feats),
                                         keras.layers.Dense(latent_dim, name="z_log_var")(feats)],
                                 name="m1_latent")
        self.decoder = V.mlp_decoder(latent_dim, self.size, hidden, gaussian=self.gaussian,
                                     name="m1_decoder")
        self.sampling = Sampling(seed=seed, name="m1_z")

    def models(self) -> dict:
        return {"classifier": self.classifier, "m1_latent": self.heads, "m1_decoder": self.decoder}

    def trainable(self, name: str) -> list:
        # with weight 0 the VAE's heads and decoder take no gradient: the classifier alone
        models = self.models().values() if self.unlabelled_weight else [self.classifier]
        return [v for m in models for v in m.trainable_variables]

    def bound(self, x, training: bool = True):
        """-ELBO per image: the reconstruction of the [0, 1] pixels + KL, one draw."""
        from zoo.layers.vae import gaussian_kl

        mean, log_var = self.heads(self.trunk(x, training=training), training=training)
        z = self.sampling([mean, log_var], training=True)
        out = self.decoder(z, training=training)
        unit = _flat_unit(x, self.scale, self.offset)
        return _nll(unit, out, self.gaussian) + self.beta * gaussian_kl(mean, log_var)

    def unlabelled_loss(self, inputs, training: bool):
        """The mean -ELBO of the unlabelled images, per input value."""
        from keras import ops

        unl = self.bound(inputs["unlabelled"], training)
        return ops.mean(unl) / self.size, {"unlabelled_bound": _mean_with_count(unl)}


def m1_features(vae, images, batch_size: int = 256) -> np.ndarray:
    """M1's features: the posterior means of a trained zoo VAE, as numpy (any classifier next).

    Args:
        vae: a zoo VAE (zoo.generative.vae.fit_vae(...).model or zoo.load("vae", ...)).
        images: images of the VAE's input shape.
        batch_size: images per forward pass.

    Returns:
        (N, latent_dim) float32.
    """
    encoder = V.mean_encoder(vae)
    return np.asarray(encoder.predict(np.asarray(images, np.float32), batch_size=batch_size,
                                      verbose=0), np.float32)


register_method("m1", family="generative",
                summary="M1: a VAE on the classifier's own feature trunk; its unlabelled bound "
                        "shapes the features (two-stage M1 + KNN: m1_features)",
                backbones="any zoo classifier ending in a Dense head (2D/3D)")(M1Task)
register_method("m2", family="generative",
                summary="M2: label as a latent variable, labelled + unlabelled ELBO, entropy of "
                        "q(y|x), alpha-weighted cross-entropy (Kingma et al. 2014)",
                backbones="any zoo classifier (2D/3D); the VAE is a dense pair on the pixels")(
                    M2Task)
register_method("m1m2", family="generative",
                summary="M1 + M2: M2 on the latent means of a trained M1 VAE (m1=...)",
                backbones="any zoo classifier (2D/3D) + a trained zoo VAE as m1")(M1M2Task)
