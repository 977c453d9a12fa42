"""CycleGAN (Zhu et al. 2017): unpaired translation between domains A and B.

Generators ``g_ab`` (A -> B) and ``g_ba`` (B -> A), discriminators ``d_a`` and ``d_b``. The
generators' loss: adversarial (both directions) + ``cycle_weight`` x (|g_ba(g_ab(a)) - a| +
|g_ab(g_ba(b)) - b|) + ``identity_weight`` x ``cycle_weight`` x (|g_ab(b) - b| + |g_ba(a) - a|);
the discriminators see real images and generated ones drawn from an ``ImagePool`` of earlier
generations (Shrivastava et al. 2017), so they do not chase the generator's latest output.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.generative.base import (
    GANResult,
    GANTask,
    UnpairedBatches,
    check_images,
    check_options,
    check_positive_number,
    check_same_shape,
    to_unit,
    train_task,
)
from zoo.generative.losses import gan_loss, l1
from zoo.train.engine import StepOutput


class ImagePool:
    """A buffer of ``size`` generated images, in graph (TensorFlow variables).

    While it fills, every image is stored and returned as it is. Once full, each image is, with
    probability 1/2, returned as it is, or swapped for a random stored one (returned) and kept in
    its place. ``size=0`` returns every batch unchanged. Within one batch two images may draw the
    same slot: both get the stored image and the later one is kept. The buffer is one
    process's (not mirrored across replicas of a distribution strategy).
    """

    def __init__(self, size: int, image_shape, seed: int = 0):
        import tensorflow as tf

        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgumentError(f"pool_size={size!r}: give an integer >= 0 (50 in the "
                                       "paper; 0: no pool).")
        self.size = size
        if size:
            if any(s is None for s in image_shape):
                raise InvalidArgumentError(
                    f"an image pool needs fixed image sizes, not {tuple(image_shape)}; build the "
                    "generators with input_shape=(H, W, C).")
            self.images = tf.Variable(tf.zeros((size, *image_shape)), trainable=False,
                                      name="image_pool")
            self.count = tf.Variable(0, trainable=False, name="image_pool_count")
            self.rng = tf.random.Generator.from_seed(seed)

    def __call__(self, images):
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        if not self.size:
            return images
        n = tf.shape(images)[0]
        slot = self.count + tf.range(n)
        filling = slot < self.size
        swap = tf.logical_and(tf.logical_not(filling), self.rng.uniform([n]) < 0.5)
        drawn = self.rng.uniform([n], 0, self.size, dtype=tf.int32)
        stored = tf.gather(self.images, drawn)
        mask = tf.reshape(swap, tf.concat([[n], tf.ones([tf.rank(images) - 1], tf.int32)], 0))
        out = tf.where(mask, stored, images)
        write = tf.where(tf.logical_or(filling, swap))[:, 0]
        where = tf.gather(tf.where(filling, slot, drawn), write)
        with tf.control_dependencies([out]):
            self.images.scatter_nd_update(where[:, None], tf.gather(images, write))
            self.count.assign(tf.minimum(self.count + n, self.size))
        return out


class CycleGANTask(GANTask):
    """Batches are (a, b) from the two domains in [-1, 1], unpaired."""

    def __init__(self, g_ab, g_ba, d_a, d_b, *, cycle_weight: float = 10.0,
                 identity_weight: float = 0.5, loss: str = "lsgan", pool_size: int = 50,
                 seed: int = 0):
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.groups = {"gen": {"g_ab": g_ab, "g_ba": g_ba}, "disc": {"d_a": d_a, "d_b": d_b}}
        self.cycle_weight = check_positive_number(cycle_weight, "cycle_weight", allow_zero=True)
        self.identity_weight = check_positive_number(identity_weight, "identity_weight",
                                                     allow_zero=True)
        self.loss = gan_loss(loss)
        self.pool_a = ImagePool(pool_size, g_ba.output.shape[1:], seed)
        self.pool_b = ImagePool(pool_size, g_ab.output.shape[1:], seed + 1)

    def cycle(self, a, b, training: bool = False):
        """(fake_a, fake_b, cycle loss per example): |g_ba(g_ab(a)) - a| + |g_ab(g_ba(b)) - b|."""
        fake_b = self.g_ab(a, training=training)
        fake_a = self.g_ba(b, training=training)
        rec_a = self.g_ba(fake_b, training=training)
        rec_b = self.g_ab(fake_a, training=training)
        return fake_a, fake_b, l1(a, rec_a) + l1(b, rec_b)

    def identity(self, a, b, training: bool = False):
        """|g_ab(b) - b| + |g_ba(a) - a| per example (each generator leaves its target alone)."""
        return l1(b, self.g_ab(b, training=training)) + l1(a, self.g_ba(a, training=training))

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        a, b, w = batch
        a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
        fake_a, fake_b, cyc = self.cycle(a, b, training)
        adv = (self.loss.generator(self.d_b(fake_b, training=training))
               + self.loss.generator(self.d_a(fake_a, training=training)))
        g_loss = adv + self.cycle_weight * cyc
        if self.identity_weight:
            g_loss = g_loss + self.identity_weight * self.cycle_weight * self.identity(
                a, b, training)
        pooled_a = self.pool_a(ops.stop_gradient(fake_a))
        pooled_b = self.pool_b(ops.stop_gradient(fake_b))
        d_loss = 0.5 * (
            self.loss.discriminator(self.d_a(a, training=training),
                                    self.d_a(pooled_a, training=training))
            + self.loss.discriminator(self.d_b(b, training=training),
                                      self.d_b(pooled_b, training=training)))
        w = ops.cast(w, "float32")
        return StepOutput({"gen": g_loss * w, "disc": d_loss * w},
                          {"cycle": (ops.sum(cyc * w), ops.sum(w))})

    def predict(self, x):
        return self.g_ab(x, training=False)


def build_cyclegan(shape_a, shape_b, *, base_filters: int = 16, n_blocks: int = 3,
                   n_layers: int = 2, disc_filters: int = 16, norm: str = "instance"):
    """(g_ab, g_ba, d_a, d_b) by ``zoo.load``: ResNet generators, PatchGAN discriminators."""
    from zoo.models.factory import load

    shape_a, shape_b = tuple(int(s) for s in shape_a), tuple(int(s) for s in shape_b)

    def gen(src, dst):
        return load("cyclegan_resnet", input_shape=src, num_classes=dst[-1],
                    base_filters=base_filters, n_blocks=n_blocks, norm=norm)

    def disc(shape):
        return load("patchgan", input_shape=shape, include_top=True, num_classes=1,
                    n_layers=n_layers, base_filters=disc_filters, norm=norm)

    return gen(shape_a, shape_b), gen(shape_b, shape_a), disc(shape_a), disc(shape_b)


def train_cyclegan(a, b, *, range_a, range_b, epochs: int = 5, batch_size: int = 8,
                   learning_rate: float = 2e-4, cycle_weight: float = 10.0,
                   identity_weight: float = 0.5, loss: str = "lsgan", pool_size: int = 50,
                   seed: int = 0, hooks=(), **model_options) -> GANResult:
    """Train CycleGAN on unpaired image sets ``a`` and ``b`` (any numbers of images, one
    (H, W, C) for both: the identity loss feeds each domain to the other's generator)."""
    import keras

    a, b = check_images(a, "domain A"), check_images(b, "domain B")
    check_same_shape(a, b, ("domain A", "domain B"),
                     "CycleGAN's generators map one image shape to the same shape (and the "
                     "identity loss feeds each domain to the other's generator).")
    xa, xb = to_unit(a, range_a, "domain A"), to_unit(b, range_b, "domain B")
    gan_loss(loss)
    check_options(model_options, build_cyclegan, what="train_cyclegan")
    keras.utils.set_random_seed(seed)
    g_ab, g_ba, d_a, d_b = build_cyclegan(a.shape[1:], b.shape[1:], **model_options)
    task = CycleGANTask(g_ab, g_ba, d_a, d_b, cycle_weight=cycle_weight,
                        identity_weight=identity_weight, loss=loss, pool_size=pool_size,
                        seed=seed)
    history = train_task(task, UnpairedBatches(xa, xb, batch_size, seed), epochs=epochs,
                         learning_rate=learning_rate, hooks=hooks)
    return GANResult({"g_ab": g_ab, "g_ba": g_ba, "d_a": d_a, "d_b": d_b}, history,
                     (tuple(range_a), tuple(range_b)))


def pool_array(pool: ImagePool) -> np.ndarray:
    """The images the pool holds (its filled part), for inspection."""
    return np.asarray(pool.images[: int(pool.count)]) if pool.size else np.zeros((0,))
