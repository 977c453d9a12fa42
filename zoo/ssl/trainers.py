"""How the pretext models train: each is a ``Task`` of the zoo's one engine (``zoo.train.engine``).

- ``LossTask``: a pretext model and its Keras loss on the task's targets (rotation, jigsaw,
  SimCLR's NT-Xent, the reconstruction tasks, ...): what ``compile(loss=...)`` and ``fit`` did.
- ``MomentumTrainer``: BYOL's online network regresses a momentum target, which the engine moves
  by its EMA mechanism after each step (``Task.ema``), never by a gradient.
- ``ContextEncoderGAN``: the context encoder's generator and discriminator, one optimizer each
  (``Task.optimizers``), from one forward pass.

Each also gives the optimizers its engine needs (``new_optimizers``) and the epoch-log entry
that ``zoo.ssl.pretrain`` reports as the loss (``history_key``).
"""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import InvalidArgumentError
from zoo.ssl.losses import MaskedL2, byol_distance
from zoo.train.engine import StepOutput, Task


def momentum_copy(model):
    """An exact copy of ``model``: ``clone_model`` makes fresh variables; values copied after.

    Args:
        model: a Functional or Sequential Keras model.

    Returns:
        A new model with the same graph and equal (but distinct) variables.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _inputs(x):
    """Several inputs as the list a Functional model expects (tf.data yields tuples)."""
    return list(x) if isinstance(x, tuple) else x


class PretextTrainer(Task):
    """What the SSL trainers share: one Adam optimizer by default, the loss reported as ``loss``."""

    history_key = "loss"

    def new_optimizers(self, learning_rate: float) -> dict:
        """The optimizers for an ``Engine`` running this task.

        Args:
            learning_rate: the (first) optimizer's learning rate.

        Returns:
            ``{name: optimizer}`` for every name in ``optimizers``.
        """
        return {"main": keras.optimizers.Adam(learning_rate)}


class LossTask(PretextTrainer):
    """A pretext model trained on one Keras loss of its output against the task's targets.

    ``loss``: a ``keras.losses.Loss`` or its class name (``"MeanSquaredError"``); its unreduced
    ``call`` gives the per-example losses, which the engine averages over the global batch; a loss
    of the whole batch (NT-Xent) is a scalar, averaged over replicas. The model's own ``losses``
    (regularisers) are added, as ``fit`` added them.
    """

    def __init__(self, model, loss):
        self.model = model
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if not isinstance(loss, keras.losses.Loss):
            raise InvalidArgumentError(
                f"loss={loss!r}: give a keras.losses.Loss or its class name, such as "
                "'MeanSquaredError' (a loss function has no unreduced per-example form here).")
        self.loss = loss

    def models(self) -> dict:
        return {"model": self.model}

    def trainable(self, name: str) -> list:
        return self.model.trainable_variables

    def step(self, batch, training: bool) -> StepOutput:
        x, y, w = batch
        out = ops.cast(self.model(_inputs(x), training=training), "float32")
        if keras.backend.is_float_dtype(y.dtype):
            y = ops.cast(y, "float32")
        value = ops.cast(self.loss.call(y, out), "float32")
        if len(value.shape) == 0:  # a loss of the whole batch (NT-Xent): the engine averages it
            return StepOutput({"main": value})
        per = ops.mean(ops.reshape(value, (ops.shape(value)[0], -1)), axis=1)
        return StepOutput({"main": per * ops.cast(w, "float32")})


class MomentumTrainer(PretextTrainer):
    """BYOL (Grill et al. 2020): online encoder+projector+predictor regresses the momentum target.

    The engine updates the target after each step (``ema``): every target variable, BatchNorm
    moving statistics included, becomes ``m * target + (1 - m) * online``. The target runs with
    batch statistics (training mode), as in the paper, inside a ``keras.StatelessScope``, so its
    forward pass moves none of its statistics: the average is its only update.
    """

    def __init__(self, online, predictor, momentum: float = 0.99):
        self.online, self.predictor = online, predictor
        self.target = momentum_copy(online)
        self.momentum = float(momentum)
        self.ema = ((self.target, self.online, self.momentum),)

    def models(self) -> dict:
        return {"online": self.online, "predictor": self.predictor, "target": self.target}

    def trainable(self, name: str) -> list:
        return self.online.trainable_variables + self.predictor.trainable_variables

    def regularized(self, name: str) -> list:
        return [self.online, self.predictor]  # never the target: it takes no gradient

    def _target(self, view):
        with keras.StatelessScope():  # batch statistics, but no update of the moving ones
            return ops.stop_gradient(self.target(view, training=True))

    def step(self, batch, training: bool) -> StepOutput:
        (v1, v2), _, w = batch
        t1, t2 = self._target(v1), self._target(v2)
        p1 = self.predictor(self.online(v1, training=training), training=training)
        p2 = self.predictor(self.online(v2, training=training), training=training)
        per = byol_distance(p1, t2) + byol_distance(p2, t1)  # symmetric, one value per pair
        return StepOutput({"main": per * ops.cast(w, "float32")})

    def predict(self, x):
        return self.online(x, training=False)


class ContextEncoderGAN(PretextTrainer):
    """Pathak 2016's joint loss: ``rec_weight`` x masked L2 + ``adv_weight`` x adversarial, with a
    small discriminator that tells real images from images completed by the generator.

    Two optimizers: ``generator`` (Adam at the run's learning rate) takes the joint loss,
    ``discriminator`` (Adam at ``d_learning_rate``, beta_1 0.5) the real/fake cross-entropy; each
    updates its own network only. Targets ``y`` hold the image channels and one mask channel.
    """

    optimizers = ("generator", "discriminator")
    history_key = "generator_loss"

    def __init__(self, generator, discriminator, rec_weight: float = 0.999,
                 adv_weight: float = 0.001, d_learning_rate: float = 1e-4):
        self.generator, self.discriminator = generator, discriminator
        self.reconstruction = MaskedL2(rec_weight)
        self.adv_weight, self.d_learning_rate = float(adv_weight), float(d_learning_rate)

    def models(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def trainable(self, name: str) -> list:
        return self.models()[name].trainable_variables

    def regularized(self, name: str) -> list:
        return [self.models()[name]]

    def new_optimizers(self, learning_rate: float) -> dict:
        """The generator's Adam at ``learning_rate``, the discriminator's at ``d_learning_rate``.

        Args:
            learning_rate: the generator's learning rate.

        Returns:
            ``{"generator": ..., "discriminator": ...}``.
        """
        return {"generator": keras.optimizers.Adam(learning_rate),
                "discriminator": keras.optimizers.Adam(self.d_learning_rate, beta_1=0.5)}

    def step(self, batch, training: bool) -> StepOutput:
        x, y, w = batch
        y = ops.cast(y, "float32")
        target, mask = y[..., :-1], y[..., -1:]
        pred = ops.cast(self.generator(x, training=training), "float32")
        completed = target * (1.0 - mask) + pred * mask
        real = self.discriminator(target, training=training)
        fake = self.discriminator(completed, training=training)
        bce = keras.losses.binary_crossentropy  # per example (the last axis is the one score)
        d_loss = bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake)
        rec = self.reconstruction.call(y, pred)
        g_loss = rec + self.adv_weight * bce(ops.ones_like(fake), fake)
        w = ops.cast(w, "float32")
        count = ops.cast(ops.shape(rec)[0], "float32")
        return StepOutput({"generator": g_loss * w, "discriminator": d_loss * w},
                          {"reconstruction": (ops.sum(rec * w), count)})

    def predict(self, x):
        return self.generator(x, training=False)
