"""Adversarial domain adaptation (DANN, Ganin et al. 2016) as a task of the zoo's one engine.

Labelled source images (x, y) and unlabelled target images x go through the same network in one
batch; the loss is the supervised task's loss on the source half plus ``domain_weight`` times the
domain discriminator's binary cross-entropy on both halves (source 0, target 1):

    L = mean_i [w_i task(y_i, f(xs_i)) + domain_weight (bce(0, d(xs_i)) + bce(1, d(xt_i))) / 2]

The discriminator sits behind a ``GradientReversal`` layer (``attach_discriminator``), so the
one optimizer that minimises L trains the discriminator to separate the domains and the shared
features to confuse it. ``ReversalSchedule`` raises lambda by DANN's 2 / (1 + exp(-10 p)) - 1.

Data: ``DomainBatches(xs, ys, xt, batch_size)`` yields ({"source": xs, "target": xt}, ys, w)
batches with as many target as source images (target images cycled in a seeded order), and
checks before training that both domains are there and have the same image shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.train.engine import Hook, StepOutput, Task

SUPERVISED = ("classification", "segmentation")


def check_domains(source: np.ndarray, target: np.ndarray) -> None:
    """Both domains present, with the same image shape (a DataError before any training)."""
    source, target = np.asarray(source), np.asarray(target)
    if len(source) == 0 or len(target) == 0:
        empty = "source" if len(source) == 0 else "target"
        raise DataError(
            f"the {empty} domain holds no images; domain adaptation needs labelled source images "
            "and unlabelled target images (the new scanner's), at least one of each.")
    if source.shape[1:] != target.shape[1:]:
        raise DataError(
            f"source images of shape {source.shape[1:]} but target images of shape "
            f"{target.shape[1:]}; resample or crop both domains to one image shape and channel "
            "count before adapting.")


def split_by_domain(x, y, domain, source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled data with a domain label per image -> (source x, source y, target x).

    Args:
        x: images of both domains. y: their labels (only the source ones are used).
        domain: one domain label per image (e.g. scanner names); exactly two distinct values.
        source: the value of ``domain`` whose images are labelled (the other is the target).
    """
    domain = np.asarray(domain)
    values = list(dict.fromkeys(domain.tolist()))
    if len(domain) != len(x):
        raise DataError(f"{len(x)} images but {len(domain)} domain labels; give one per image.")
    if len(values) != 2:
        raise DataError(
            f"the domain labels hold {len(values)} value(s) {values[:5]}; adversarial adaptation "
            "needs exactly two domains (source and target): add the other scanner's images, or "
            "train without adaptation when there is only one domain.")
    if source not in values:
        raise DataError(f"source={source!r} is not one of the domain labels {values}.")
    is_source = domain == source
    return np.asarray(x)[is_source], np.asarray(y)[is_source], np.asarray(x)[~is_source]


@dataclass
class DomainBatches:
    """Source (x, y) and target x as engine batches ({"source", "target"}, y, w), seeded per epoch.

    Each batch pairs ``batch_size`` source images with as many target images; the target set is
    cycled (a fresh seeded permutation per pass) so both domains weigh the same in every step.
    """

    x_source: np.ndarray
    y_source: np.ndarray
    x_target: np.ndarray
    batch_size: int
    seed: int = 0

    def __post_init__(self):
        from zoo.train.batches import Batches

        check_domains(self.x_source, self.x_target)
        self._source = Batches(self.x_source, self.y_source, self.batch_size, seed=self.seed)

    def __len__(self) -> int:
        return len(self._source)

    def _target_order(self, epoch: int) -> np.ndarray:
        n, need = len(self.x_target), len(self.x_source)
        rng = np.random.default_rng([self.seed, epoch, 1])
        passes = math.ceil(need / n)
        return np.concatenate([rng.permutation(n) for _ in range(passes)])[:need]

    def dataset(self, epoch: int):
        """A tf.data pipeline of ({"source": xs, "target": xt}, ys, w) batches."""
        import tensorflow as tf

        from zoo.train.batches import finish_batches

        idx, tdx = self._source.order(epoch), self._target_order(epoch)
        x = {"source": self.x_source[idx], "target": self.x_target[tdx]}
        w = np.ones(len(idx), np.float32)
        ds = tf.data.Dataset.from_tensor_slices((x, self.y_source[idx], w))
        return finish_batches(ds.batch(self.batch_size))


def _check_task(task: str) -> str:
    from zoo.registry import Registry

    return Registry("adaptation task", SUPERVISED, argument="task").check(task)


class DomainAdversarial(Task):
    """DANN on the engine: the supervised loss on source plus the reversed domain loss.

    Args:
        model: the adapted model of ``attach_discriminator`` (outputs [task, domain logit]).
        task: "classification" or "segmentation" (``zoo.train.tasks``' losses and metrics).
        domain_weight: the domain loss's weight in L (0: source-only training of the same model).
        **task_options: the supervised task's options (e.g. ``loss="dice_ce"``).
    """

    def __init__(self, model, task: str = "classification", *, domain_weight: float = 1.0,
                 **task_options):
        from zoo.domain.discriminator import task_model
        from zoo.train.tasks import TASKS

        if len(getattr(model, "outputs", ())) != 2:
            raise InvalidArgumentError(
                f"{getattr(model, 'name', model)!r} is not an adapted model; build it with "
                "zoo.domain.attach_discriminator(model, layers) (outputs: task, domain logit).")
        if not (math.isfinite(domain_weight) and domain_weight >= 0):
            raise InvalidArgumentError(f"domain_weight={domain_weight!r}: give a number >= 0.")
        self.model, self.task_name = model, _check_task(task)
        self.domain_weight = float(domain_weight)
        self.supervised = TASKS[self.task_name](task_model(model), **task_options)

    def models(self) -> dict:
        return {"model": self.model}

    def trainable(self, name: str) -> list:
        return self.model.trainable_variables

    def domain_losses(self, logit_source, logit_target):
        """Per source/target pair: (bce(0, d(xs)) + bce(1, d(xt))) / 2, and the number right."""
        import tensorflow as tf

        ls, lt = (tf.reshape(tf.cast(t, tf.float32), [-1]) for t in (logit_source, logit_target))
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        per = 0.5 * (bce(tf.zeros_like(ls), ls) + bce(tf.ones_like(lt), lt))
        right = tf.reduce_sum(tf.cast(ls < 0, tf.float32)) + tf.reduce_sum(
            tf.cast(lt > 0, tf.float32))
        return per, right

    def step(self, batch, training: bool) -> StepOutput:
        import tensorflow as tf

        x, y, w = batch
        xs, xt = x["source"], x["target"]
        n = tf.shape(xs)[0]
        out, logit = self.model(tf.concat([xs, xt], 0), training=training)
        out = tf.cast(out, tf.float32)
        w = tf.cast(w, tf.float32)
        task = self.supervised.per_example(y, out[:n])
        domain, right = self.domain_losses(logit[:n], logit[n:])
        metrics = self.supervised.metrics(y, out[:n], w)
        metrics["task_loss"] = (tf.reduce_sum(task * w), tf.cast(n, tf.float32))
        metrics["domain_loss"] = (tf.reduce_sum(domain), tf.cast(n, tf.float32))
        metrics["domain_accuracy"] = (right, tf.cast(2 * n, tf.float32))
        return StepOutput({"main": task * w + self.domain_weight * domain}, metrics)

    def predict(self, x):
        return self.model(x, training=False)[0]

    def check(self, x, y) -> None:
        if not isinstance(x, dict) or set(x) != {"source", "target"}:
            raise DataError(
                "domain adaptation batches must be ({'source': xs, 'target': xt}, ys[, w]); use "
                "zoo.domain.adversarial.DomainBatches(xs, ys, xt, batch_size).")
        check_domains(x["source"], x["target"])
        from zoo.models.adapt import check_batch

        check_batch(self.model, x["source"])
        self.supervised.check(x["source"], y)


class ReversalSchedule(Hook):
    """Sets every GradientReversal lambda by DANN's 2 / (1 + exp(-gamma p)) - 1, p = step / total.

    Set before each step (``on_batch_end`` for the next one); with ``whole_epoch`` once per epoch.
    """

    def __init__(self, total_steps: int, gamma: float = 10.0, scale: float = 1.0):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise InvalidArgumentError(f"total_steps={total_steps!r}: give a positive integer.")
        if not (math.isfinite(scale) and scale >= 0):
            raise InvalidArgumentError(f"max_lambda={scale!r}: give a finite number >= 0.")
        self.total, self.gamma, self.scale = total_steps, float(gamma), float(scale)
        self.layers = None

    def _set(self, engine) -> None:
        from zoo.domain.discriminator import reversal_layers
        from zoo.layers.gradient_reversal import dann_lambda

        if self.layers is None:
            self.layers = [g for m in engine.task.models().values() for g in reversal_layers(m)]
        value = self.scale * dann_lambda(min(engine.step_count / self.total, 1.0), self.gamma)
        for layer in self.layers:
            layer.set_lambda(value)

    def on_train_begin(self, engine) -> None:
        self._set(engine)

    def on_epoch_begin(self, engine, epoch: int) -> None:
        self._set(engine)

    def on_batch_end(self, engine, step: int, logs) -> None:
        self._set(engine)


def fit_adversarial(model, layers, x_source, y_source, x_target, *, task: str = "classification",
                    epochs: int = 5, batch_size: int = 16, learning_rate: float = 1e-3,
                    domain_weight: float = 1.0, max_lambda: float = 1.0, seed: int = 0,
                    width: int = 32, verbose: int = 0, **task_options):
    """Attach a discriminator to ``model`` at ``layers`` and train DANN with the lambda schedule.

    ``max_lambda`` scales DANN's schedule (1 in Ganin et al.; Kamnitsas et al. ramp their
    adversarial weight to 0.05). Every input is checked (domains, shapes, labels, layer names)
    before the first step.

    Returns:
        (adapted model [task, domain logit], history); ``task_model(adapted)`` is the deployable
        network (it shares ``model``'s layers, so ``model`` itself is trained too).
    """
    import keras

    from zoo.domain.discriminator import attach_discriminator
    from zoo.train.engine import Engine

    _check_task(task)
    data = DomainBatches(np.asarray(x_source, np.float32), np.asarray(y_source),
                         np.asarray(x_target, np.float32), batch_size, seed=seed)
    adapted = attach_discriminator(model, layers, width=width)
    dann = DomainAdversarial(adapted, task, domain_weight=domain_weight, **task_options)
    first = next(iter(data.dataset(0).take(1)))
    dann.check({k: np.asarray(v) for k, v in first[0].items()}, np.asarray(first[1]))
    hooks = [ReversalSchedule(max(1, epochs * len(data)), scale=max_lambda)]
    engine = Engine(dann, keras.optimizers.Adam(learning_rate), hooks=hooks, verbose=verbose)
    history = engine.fit(data, epochs)
    return adapted, history
