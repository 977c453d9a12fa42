"""SDNet-style semi-supervised segmentation (Chartsias et al. 2019, arXiv:1903.09467), in 2D.

An image is split into two factors:

- the **anatomy** factor ``s``: a zoo U-Net (``zoo.models.unet``) whose ``n_anatomy``-channel
  softmax is rounded to 0/1 per pixel (straight-through, ``zoo.layers.sdnet``): a binary-ish
  spatial map of "which structure is here";
- the **modality** factor ``z``: a VAE-style vector (mean and log-variance from the image and
  ``s``, sampled by ``zoo.layers.vae.Sampling`` while training, the mean at inference):
  "how the structures look".

A decoder redraws the image from ``s`` modulated by ``z`` (FiLM), and a small segmentor reads
the masks off ``s`` alone. Only the segmentor needs labels, so every image, labelled or not,
trains the anatomy encoder through the reconstruction: that is why SDNet holds its Dice with few
labelled images. The loss of a step (one scalar, averaged per stream):

    mean_labelled(seg_weight * Seg + rec_weight * L1 + kl_weight * KL)
        + unlabelled_weight * mean_unlabelled(rec_weight * L1 + kl_weight * KL)

``Seg``: a segmentation loss of ``zoo.train.seg_losses`` (soft Dice by default), per image;
``L1``: mean absolute reconstruction error per image; ``KL``: the closed-form KL divergence of
N(mu, exp(logvar)) from N(0, I), summed over the latent dimensions. The defaults follow the
paper's weights (Dice 10, reconstruction 1, KL 0.01); the paper's adversarial mask
discriminator and latent-regression terms are left out. With ``unlabelled_weight=0`` the
unlabelled images are not even run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.train.engine import StepOutput, Task


def _weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
        value >= 0 and math.isfinite(value)
    ):
        raise InvalidArgumentError(f"{name}={value!r}: give a finite number >= 0.")
    return float(value)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r}: give a positive integer.")
    return int(value)


# --- the model --------------------------------------------------------------------------------


def _modality_encoder(image, s, z_dim: int, width: int):
    """[image, s] -> (mu, logvar): two strided convolutions, global pooling, two Dense heads."""
    import keras

    x = keras.layers.Concatenate(name="modality_concat")([image, s])
    for i in (1, 2):
        x = keras.layers.Conv2D(width * i, 3, strides=2, padding="same",
                                name=f"modality_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"modality_bn{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"modality_act{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="modality_pool")(x)
    x = keras.layers.Dense(4 * z_dim, activation="relu", name="modality_fc")(x)
    mu = keras.layers.Dense(z_dim, name="z_mean", dtype="float32")(x)
    logvar = keras.layers.Dense(z_dim, name="z_log_var", dtype="float32")(x)
    return mu, logvar


def _decoder(s, z, channels: int, width: int):
    """[s, z] -> image: convolutions on the anatomy, each scaled and shifted by FiLM(z)."""
    import keras

    from zoo.layers.sdnet import FiLM

    x = s
    for i in (1, 2, 3):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"decoder_conv{i}")(x)
        gamma = keras.layers.Dense(width, name=f"decoder_film{i}_gamma",
                                   bias_initializer="ones")(z)
        beta = keras.layers.Dense(width, name=f"decoder_film{i}_beta")(z)
        x = FiLM(name=f"decoder_film{i}")([x, gamma, beta])
        x = keras.layers.LeakyReLU(0.2, name=f"decoder_act{i}")(x)
    return keras.layers.Conv2D(channels, 1, name="decoder_out", dtype="float32")(x)


def _segmentor(s, num_classes: int, width: int):
    """s -> class probabilities: two 3x3 conv-BN-ReLU and a 1x1 softmax convolution."""
    import keras

    x = s
    for i in (1, 2):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"segmentor_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"segmentor_bn{i}")(x)
        x = keras.layers.ReLU(name=f"segmentor_relu{i}")(x)
    return keras.layers.Conv2D(num_classes, 1, activation="softmax", name="segmentor_out",
                               dtype="float32")(x)


@dataclass
class SDNet:
    """SDNet's four parts (Keras models) and the segmenter ``fit_sdnet`` returns.

    ``anatomy``: image -> s (the image first mapped from ``input_range`` to [0, 1]);
    ``segmentor``: s -> class probabilities; ``modality``: [image, s] -> [mu, logvar];
    ``decoder``: [s, z] -> image; ``segmenter``: image -> class probabilities (anatomy then
    segmentor, the same layers), the model to evaluate, save and export.
    """

    anatomy: object
    segmentor: object
    modality: object
    decoder: object
    segmenter: object
    input_range: tuple[float, float] = (0.0, 1.0)

    def normalise(self, x):
        """Images as the anatomy and modality encoders see them (``input_range`` -> [0, 1]): the
        decoder's target, so the reconstruction error does not depend on the pixel units."""
        from keras import ops

        lo, hi = self.input_range
        return (ops.cast(x, "float32") - lo) / (hi - lo)


def build_sdnet(input_shape, *, num_classes: int = 2, n_anatomy: int = 8, z_dim: int = 8,
                depth: int = 3, base_filters: int = 16, width: int = 16,
                input_range=(0.0, 1.0)) -> SDNet:
    """SDNet for 2D images of ``input_shape`` (H, W, C); the anatomy U-Net is the zoo's ``unet``.

    Args:
        input_shape: (H, W, C) with H and W divisible by 2**depth.
        num_classes: classes of the masks, background included (softmax outputs).
        n_anatomy: channels of the anatomy factor.
        z_dim: size of the modality factor.
        depth, base_filters: the anatomy U-Net's (``zoo.load("unet", depth=, base_filters=)``).
        width: channels of the segmentor, the decoder and the modality encoder.
        input_range: (low, high) of the pixel values, mapped to [0, 1] inside the models.

    Returns:
        An ``SDNet`` of Keras models.
    """
    import keras

    from zoo.layers.sdnet import StraightThroughRound
    from zoo.models.factory import load

    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise InvalidArgumentError(
            f"input_shape={input_shape!r}: SDNet here is 2D; give (H, W, C).")
    num_classes = _positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise InvalidArgumentError(
            f"num_classes={num_classes}: count the background too (2 for one structure).")
    n_anatomy, z_dim, width = (_positive_int(v, n) for v, n in (
        (n_anatomy, "n_anatomy"), (z_dim, "z_dim"), (width, "width")))
    lo, hi = (float(v) for v in input_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InvalidArgumentError(
            f"input_range={input_range!r}: give (low, high) pixel values with high > low.")
    rescale = keras.layers.Rescaling(1.0 / (hi - lo), -lo / (hi - lo), name="input_rescale")
    unet = load("unet", in_chans=shape[-1], input_shape=shape, num_classes=n_anatomy,
                classifier_activation="softmax", depth=depth, base_filters=base_filters)
    image = keras.Input(shape, name="image")
    s = StraightThroughRound(name="anatomy_round")(unet(rescale(image)))
    anatomy = keras.Model(image, s, name="sdnet_anatomy")
    s_in = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    segmentor = keras.Model(s_in, _segmentor(s_in, num_classes, width), name="sdnet_segmentor")
    m_image = keras.Input(shape, name="image")
    m_s = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    m_x = keras.layers.Rescaling(1.0 / (hi - lo), -lo / (hi - lo), name="modality_rescale")(
        m_image)
    modality = keras.Model([m_image, m_s], list(_modality_encoder(m_x, m_s, z_dim, width)),
                           name="sdnet_modality")
    d_s = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    d_z = keras.Input((z_dim,), name="modality")
    decoder = keras.Model([d_s, d_z], _decoder(d_s, d_z, shape[-1], width), name="sdnet_decoder")
    x = keras.Input(shape, name="image")
    segmenter = keras.Model(x, segmentor(anatomy(x)), name="sdnet")
    return SDNet(anatomy, segmentor, modality, decoder, segmenter, (lo, hi))


# --- the loss -----------------------------------------------------------------------------------


class SDNetTask(Task):
    """SDNet's step on the engine; batches are ``({"labelled": xl, "unlabelled": xu}, masks, w)``.

    Options as in the module docstring; ``loss`` and ``loss_options`` pick the segmentation loss
    (``zoo.train.seg_losses.segmentation_loss``).
    """

    def __init__(self, net: SDNet, *, unlabelled_weight: float = 1.0, seg_weight: float = 10.0,
                 rec_weight: float = 1.0, kl_weight: float = 0.01, loss="dice", seed: int = 0,
                 loss_options: dict | None = None):
        from zoo.layers.vae import Sampling
        from zoo.train.seg_losses import segmentation_loss

        self.net = net
        self.unlabelled_weight = _weight(unlabelled_weight, "unlabelled_weight")
        self.seg_weight = _weight(seg_weight, "seg_weight")
        self.rec_weight = _weight(rec_weight, "rec_weight")
        self.kl_weight = _weight(kl_weight, "kl_weight")
        self.loss = segmentation_loss(loss, **(loss_options or {}))
        self.num_classes = int(net.segmenter.outputs[0].shape[-1])
        self.sampling = Sampling(seed=seed, name="modality_sampling")

    def models(self) -> dict:
        n = self.net
        return {"segmenter": n.segmenter, "modality": n.modality, "decoder": n.decoder}

    def predict(self, x):
        return self.net.segmenter(x, training=False)

    def parts(self, x, training: bool) -> dict:
        """Every intermediate of one pass: s, seg, mu, logvar, z, rec (z = mu at inference)."""
        from keras import ops

        n = self.net
        x = ops.cast(x, "float32")
        s = n.anatomy(x, training=training)
        mu, logvar = n.modality([x, s], training=training)
        z = self.sampling([mu, logvar], training=training)
        return {"s": s, "seg": n.segmentor(s, training=training), "mu": mu, "logvar": logvar,
                "z": z, "rec": n.decoder([s, z], training=training)}

    def _unsupervised(self, x, p):
        """Per image: rec_weight * L1 + kl_weight * KL, and the two terms."""
        from keras import ops

        from zoo.layers.vae import gaussian_kl

        l1 = ops.mean(ops.reshape(ops.abs(self.net.normalise(x) - p["rec"]),
                                  (ops.shape(x)[0], -1)), axis=1)
        kl = gaussian_kl(p["mu"], p["logvar"])
        return self.rec_weight * l1 + self.kl_weight * kl, l1, kl

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        x, y, w = batch
        xl = x["labelled"]
        p = self.parts(xl, training)
        target = ops.one_hot(ops.cast(ops.reshape(y, ops.shape(xl)[:-1]), "int32"),
                             self.num_classes)
        seg = self.loss(target, p["seg"])
        unsup, l1, kl = self._unsupervised(xl, p)
        w = ops.cast(w, "float32")
        total = ops.sum((self.seg_weight * seg + unsup) * w) / ops.sum(w)
        n = ops.cast(ops.shape(seg)[0], "float32")
        metrics = {"seg_loss": (ops.sum(seg), n), "reconstruction": (ops.sum(l1), n),
                   "kl": (ops.sum(kl), n)}
        if self.unlabelled_weight:
            u = self.parts(x["unlabelled"], training)
            unsup_u, l1_u, _ = self._unsupervised(x["unlabelled"], u)
            total = total + self.unlabelled_weight * ops.mean(unsup_u)
            m = ops.cast(ops.shape(l1_u)[0], "float32")
            metrics["unlabelled_reconstruction"] = (ops.sum(l1_u), m)
        return StepOutput({"main": total}, metrics)


# --- data and fitting -------------------------------------------------------------------------


def _as_images(x, what: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) finite floats as (N, H, W, C) float32."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim not in (3, 4):
        raise DataError(
            f"{what} of shape {x.shape} and type {x.dtype}: give 2D images as a numeric array "
            "(N, H, W) or (N, H, W, C).")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what} hold NaN or infinity; fix or drop those images.")
    return x[..., None] if x.ndim == 3 else x


def check_sdnet_inputs(images, masks, unlabelled, num_classes: int):
    """Images, masks and unlabelled images as arrays, or a DataError naming what is wrong.

    Returns:
        (images (N, H, W, C) float32, masks (N, H, W) int32, unlabelled (M, H, W, C) float32).
    """
    x = _as_images(images, "images")
    u = _as_images(unlabelled, "unlabelled_images")
    y = np.asarray(masks)
    if y.ndim == 4 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.shape != x.shape[:-1]:
        raise DataError(
            f"masks_labelled of shape {np.shape(masks)} for images of shape {x.shape}: give one "
            f"mask per labelled image, {x.shape[:-1]} (class indices, no channel axis).")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise DataError("masks_labelled must hold class indices (0, 1, ...); threshold soft masks.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"masks_labelled hold classes {y.min()}..{y.max()} but num_classes={num_classes}; "
            "give num_classes= the number of classes, background included.")
    if len(u) == 0:
        raise DataError("unlabelled_images is empty; SDNet needs images without masks too.")
    if u.shape[1:] != x.shape[1:]:
        raise DataError(
            f"unlabelled_images of shape {u.shape[1:]} per image but the labelled images are "
            f"{x.shape[1:]}; resample or crop them to the same size and channels.")
    return x, y.astype(np.int32), u


@dataclass
class PairedStream:
    """Labelled (images, masks) and unlabelled images as the engine's per-epoch datasets.

    One epoch is one pass over the unlabelled images (full batches of ``unlabelled_batch_size``);
    the labelled ones are reshuffled and cycled as often as that needs. The order is a function
    of ``seed`` and the epoch only.
    """

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    batch_size: int
    unlabelled_batch_size: int
    seed: int = 0

    def __len__(self) -> int:
        return max(1, len(self.u) // self.unlabelled_batch_size)

    def dataset(self, epoch: int):
        import tensorflow as tf

        rng = np.random.default_rng([self.seed, epoch])
        steps, b, ub = len(self), self.batch_size, self.unlabelled_batch_size
        order_u = np.resize(rng.permutation(len(self.u)), steps * ub)
        rounds = -(-steps * b // len(self.x))
        order_l = np.concatenate([rng.permutation(len(self.x)) for _ in range(rounds)])
        order_l = order_l[: steps * b]
        inputs = {"labelled": self.x[order_l].reshape(steps, b, *self.x.shape[1:]),
                  "unlabelled": self.u[order_u].reshape(steps, ub, *self.u.shape[1:])}
        y = self.y[order_l].reshape(steps, b, *self.y.shape[1:])
        return tf.data.Dataset.from_tensor_slices((inputs, y, np.ones((steps, b), np.float32)))


@dataclass
class SDNetResult:
    """What ``fit_sdnet`` returns: the segmenter (image -> probabilities), all parts, history."""

    segmenter: object
    net: SDNet
    history: list


def fit_sdnet(images, masks_labelled, unlabelled_images, *, num_classes: int = 2,
              epochs: int = 1, batch_size: int = 4, unlabelled_batch_size: int | None = None,
              learning_rate: float = 1e-3, seed: int = 0, unlabelled_weight: float = 1.0,
              seg_weight: float = 10.0, rec_weight: float = 1.0, kl_weight: float = 0.01,
              loss="dice", n_anatomy: int = 8, z_dim: int = 8, depth: int = 3,
              base_filters: int = 16, width: int = 16, input_range=None,
              verbose: int = 0) -> SDNetResult:
    """Train SDNet on labelled (image, mask) pairs and unlabelled images (module docstring).

    Args:
        images: labelled 2D images (N, H, W) or (N, H, W, C), e.g. scaled to [0, 1].
        masks_labelled: their masks (N, H, W) of class indices 0..num_classes-1.
        unlabelled_images: images without masks (M, H, W[, C]), the same size and channels.
        num_classes: classes, background included.
        epochs: passes over the unlabelled images.
        batch_size, unlabelled_batch_size: per step (the latter defaults to ``batch_size``).
        learning_rate: Adam's.
        seed: weights, order and sampling.
        unlabelled_weight, seg_weight, rec_weight, kl_weight, loss: the loss (module docstring).
        n_anatomy, z_dim, depth, base_filters, width: the model (``build_sdnet``).
        input_range: (low, high) pixel values mapped to [0, 1] inside the models (None: the
            minimum and maximum of all the training images).
        verbose: 1 prints a progress bar per epoch.

    Returns:
        An ``SDNetResult``; ``result.segmenter`` is a Keras model image -> class probabilities.

    Raises:
        DataError: masks of another shape than the images, classes outside 0..num_classes-1,
            unlabelled images of another size, no unlabelled images, NaN.
        InvalidArgumentError: a negative weight, a bad size or count.
    """
    import keras

    from zoo.train.engine import Engine, Progress

    num_classes = _positive_int(num_classes, "num_classes")
    x, y, u = check_sdnet_inputs(images, masks_labelled, unlabelled_images, num_classes)
    batch_size = _positive_int(batch_size, "batch_size")
    ub = _positive_int(unlabelled_batch_size or batch_size, "unlabelled_batch_size")
    keras.utils.set_random_seed(seed)
    if input_range is None:
        lo, hi = float(min(x.min(), u.min())), float(max(x.max(), u.max()))
        input_range = (lo, hi if hi > lo else lo + 1.0)
    net = build_sdnet(x.shape[1:], num_classes=num_classes, n_anatomy=n_anatomy, z_dim=z_dim,
                      depth=depth, base_filters=base_filters, width=width,
                      input_range=input_range)
    task = SDNetTask(net, unlabelled_weight=unlabelled_weight, seg_weight=seg_weight,
                     rec_weight=rec_weight, kl_weight=kl_weight, loss=loss, seed=seed)
    stream = PairedStream(x, y, u, batch_size, ub, seed)
    hooks = [Progress(len(stream), "sdnet")] if verbose else []
    engine = Engine(task, keras.optimizers.Adam(learning_rate), hooks=hooks)
    history = engine.fit(stream, epochs)
    return SDNetResult(net.segmenter, net, history)
