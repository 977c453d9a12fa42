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


# --- the model ---------------------------------------------------------------------------------


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
                input_range=(0.0, 1.0), encoder: str | None = None) -> SDNet:
    """SDNet for 2D images of ``input_shape`` (H, W, C): the segmenter is ``zoo.load("sdnet")``
    (zoo.models.sdnet), so a published card rebuilds exactly it.

    Args:
        input_shape: (H, W, C) with H and W divisible by 2**depth.
        num_classes: classes of the masks, background included (softmax outputs).
        n_anatomy: channels of the anatomy factor.
        z_dim: size of the modality factor.
        depth, base_filters: the anatomy U-Net's (``zoo.load("unet", depth=, base_filters=)``).
        width: channels of the segmentor, the decoder and the modality encoder.
        input_range: (low, high) of the pixel values, mapped to [0, 1] inside the models.
        encoder: None (the plain U-Net) or a 2D zoo backbone as the U-Net's encoder
            ("simple_cnn", "resnet50", ...).

    Returns:
        An ``SDNet`` of Keras models.
    """
    import keras

    from zoo.models import sdnet as S
    from zoo.models.factory import load

    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise InvalidArgumentError(
            f"input_shape={input_shape!r}: SDNet here is 2D; give (H, W, C).")
    num_classes = _positive_int(num_classes, "num_classes")
    n_anatomy, z_dim, width = (_positive_int(v, n) for v, n in (
        (n_anatomy, "n_anatomy"), (z_dim, "z_dim"), (width, "width")))
    lo, hi = S.check_input_range(input_range)
    segmenter = load("sdnet", in_chans=shape[-1], input_shape=shape[:-1],
                     num_classes=num_classes, **builder_options(
                         n_anatomy=n_anatomy, depth=depth, base_filters=base_filters,
                         width=width, input_range=(lo, hi), encoder=encoder))
    anatomy = keras.Model(segmenter.inputs[0], segmenter.get_layer("anatomy_round").output,
                          name="sdnet_anatomy")
    modality = S.modality_encoder(shape, n_anatomy=n_anatomy, z_dim=z_dim, width=width,
                                  input_range=(lo, hi))
    decoder = S.decoder(shape, n_anatomy=n_anatomy, z_dim=z_dim, width=width)
    return SDNet(anatomy, segmenter.get_layer("sdnet_segmentor"), modality, decoder, segmenter,
                 (lo, hi))


def builder_options(*, n_anatomy, depth, base_filters, width, input_range, encoder) -> dict:
    """zoo.load("sdnet")'s options (what the card records as ``builder_options``)."""
    options = dict(n_anatomy=n_anatomy, depth=depth, base_filters=base_filters, width=width,
                   input_range=[float(v) for v in input_range])
    return {**options, "encoder": encoder} if encoder is not None else options


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

    def state_variables(self) -> dict:
        """The modality sampler's generator state: a resumed run draws what the uninterrupted
        one would (saved by zoo.semi.methods.TaskState)."""
        return {"modality_sampling_seed": self.sampling.seed_generator.state}

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
    """What ``fit_sdnet`` returns: the segmenter (image -> probabilities), all parts, history,
    and the weight card when ``tag=`` published it."""

    segmenter: object
    net: SDNet
    history: list
    card: object = None


def _check_run(epochs, tag, overwrite, encoder, resume, checkpoint_dir) -> int:
    """The run's own arguments, checked before anything is built."""
    from zoo.models.registry import get_entry
    from zoo.train.publish import check_tag

    if encoder is not None:
        get_entry(encoder)  # an unknown backbone: the registry's did-you-mean
    if resume and checkpoint_dir is None:
        raise InvalidArgumentError("resume=True continues from checkpoint_dir=; give the folder "
                                   "the interrupted run wrote its checkpoints to.")
    if tag is not None:
        check_tag("sdnet", tag, overwrite)
    return _positive_int(epochs, "epochs")


def _range_of(x, u, input_range) -> tuple[float, float]:
    """``input_range``, else the minimum and maximum of all the training images."""
    if input_range is not None:
        return input_range
    lo, hi = float(min(x.min(), u.min())), float(max(x.max(), u.max()))
    return lo, hi if hi > lo else lo + 1.0


def fit_sdnet(images, masks_labelled, unlabelled_images, *, num_classes: int = 2,
              epochs: int = 1, batch_size: int = 4, unlabelled_batch_size: int | None = None,
              learning_rate: float = 1e-3, seed: int = 0, unlabelled_weight: float = 1.0,
              seg_weight: float = 10.0, rec_weight: float = 1.0, kl_weight: float = 0.01,
              loss="dice", n_anatomy: int = 8, z_dim: int = 8, depth: int = 3,
              base_filters: int = 16, width: int = 16, input_range=None,
              encoder: str | None = None, tag: str | None = None, out=None,
              overwrite: bool = False, checkpoint_dir=None, checkpoint_every: int | None = None,
              resume: bool = False, data: str | None = None, verbose: int = 0) -> SDNetResult:
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
        encoder: a 2D zoo backbone as the anatomy U-Net's encoder ("simple_cnn", "resnet50").
        tag: publish the segmenter as card ``sdnet.TAG`` (``zoo.load("sdnet", pretrained=TAG)``);
            ``out``: the weights folder; ``overwrite``: replace an own card of that tag;
            ``data``: the card's data description (default: the image counts).
        checkpoint_dir, checkpoint_every, resume: the engine's checkpoints, as zoo.semi.fit.
        verbose: 1 prints a progress bar per epoch.

    Returns:
        An ``SDNetResult``; ``result.segmenter`` is a Keras model image -> class probabilities.

    Raises:
        DataError: masks of another shape than the images, classes outside 0..num_classes-1,
            unlabelled images of another size, no unlabelled images, NaN.
        InvalidArgumentError: a negative weight, a bad size or count, a bad tag.
        UnknownNameError: an unknown encoder.
    """
    import keras

    from zoo.semi.methods import TaskState
    from zoo.train.engine import Engine, Progress

    num_classes = _positive_int(num_classes, "num_classes")
    x, y, u = check_sdnet_inputs(images, masks_labelled, unlabelled_images, num_classes)
    batch_size = _positive_int(batch_size, "batch_size")
    ub = _positive_int(unlabelled_batch_size or batch_size, "unlabelled_batch_size")
    epochs = _check_run(epochs, tag, overwrite, encoder, resume, checkpoint_dir)
    keras.utils.set_random_seed(seed)
    arch = dict(n_anatomy=n_anatomy, depth=depth, base_filters=base_filters, width=width,
                input_range=_range_of(x, u, input_range), encoder=encoder)
    net = build_sdnet(x.shape[1:], num_classes=num_classes, z_dim=z_dim, **arch)
    hyper = dict(unlabelled_weight=unlabelled_weight, seg_weight=seg_weight,
                 rec_weight=rec_weight, kl_weight=kl_weight, loss=loss, seed=seed)
    task = SDNetTask(net, **hyper)
    stream = PairedStream(x, y, u, batch_size, ub, seed)
    hooks = [TaskState(task)] + ([Progress(len(stream), "sdnet")] if verbose else [])
    engine = Engine(task, keras.optimizers.Adam(learning_rate), hooks=hooks,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    result = SDNetResult(net.segmenter, net, engine.fit(stream, epochs, resume=bool(resume)))
    if tag is not None:
        from zoo.semi.api import publish_semi

        arch["input_range"] = net.input_range
        result.card = publish_semi(
            net.segmenter, "sdnet", tag, recipe="sdnet", history=result.history,
            description=f"SDNet segmenter ({num_classes} classes, background included) trained "
            "semi-supervised", data=data or f"{len(x)} labelled and {len(u)} unlabelled images",
            hyper=dict(hyper, epochs=epochs, learning_rate=learning_rate, z_dim=z_dim,
                       batch_size=batch_size, unlabelled_batch_size=ub),
            out=out, overwrite=overwrite, task="segmentation", num_classes=num_classes,
            preprocess="none", input_range=list(net.input_range),
            builder_options=builder_options(**arch))
    return result
