"""The semi-supervised methods by name, and the task every one of them is on the engine.

A method is a ``MethodSpec`` in ``METHODS`` (``register_method``): its family, a one-line
summary, the backbones it supports (the docs' method x network table) and ``make_task(model, *,
num_classes, unlabelled_weight, seed, **options) -> SemiTask``. Every task trains one classifier
(image in, class probabilities out) on the same labelled stream with the same cross-entropy as the
"supervised" baseline; the unlabelled term is added only when ``unlabelled_weight > 0``, so a run
with weight 0 *is* the supervised run (same batches, same loss, same random numbers, same
BatchNorm statistics), which the tests check for every registered method.

Method modules (every ``zoo/semi/*.py`` not starting with ``_``) register themselves when the
registry is first read; importing this module imports no TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from zoo.errors import InvalidArgumentError
from zoo.registry import Registry
from zoo.train.engine import Hook, StepOutput, Task

FAMILIES = ("supervised", "consistency", "pseudo-label", "generative", "reconstruction")
_NOT_METHODS = {"methods", "api", "cli", "data", "augment"}


def _import_method_modules() -> None:
    """Import every method module of zoo.semi, so that each registers its methods."""
    import zoo.semi

    for info in pkgutil.iter_modules(zoo.semi.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_METHODS:
            importlib.import_module(f"zoo.semi.{info.name}")


METHODS = Registry(
    "semi-supervised method",
    argument="method",
    hint="zoo.semi.list_methods() (or `zoo semi --help`) lists them.",
    populate=_import_method_modules,
)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: what the docs show, and the factory of its task."""

    name: str
    family: str
    summary: str
    backbones: str
    make_task: Callable

    def options(self) -> list[str]:
        """The options ``make_task`` takes beyond the common ones."""
        common = {"model", "num_classes", "unlabelled_weight", "seed"}
        params = inspect.signature(self.make_task).parameters.values()
        return [p.name for p in params
                if p.kind is p.KEYWORD_ONLY and p.name not in common]

    def check_options(self, options) -> None:
        """An InvalidArgumentError for an option ``make_task`` does not take."""
        accepted = self.options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InvalidArgumentError(
                f"method={self.name!r} takes no option {', '.join(map(repr, unknown))}; its "
                f"options are {', '.join(accepted) or 'none'}.")

    def task(self, model, *, num_classes: int, unlabelled_weight: float = 1.0, seed: int = 0,
             **options) -> SemiTask:
        """The method's task; an option it does not take is an InvalidArgumentError first."""
        self.check_options(options)
        return self.make_task(model, num_classes=num_classes,
                              unlabelled_weight=unlabelled_weight, seed=seed, **options)


def register_method(name: str, *, family: str, summary: str, backbones: str):
    """Decorator: register ``make_task`` as method ``name`` (family one of ``FAMILIES``)."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: one of {', '.join(FAMILIES)}.")

    def put(make_task: Callable) -> Callable:
        METHODS.register(name, MethodSpec(name, family, summary, backbones, make_task))
        return make_task

    return put


def check_weight(value, name: str = "unlabelled_weight") -> float:
    """A finite number >= 0, else an InvalidArgumentError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise InvalidArgumentError(f"{name}={value!r}: give a finite number >= 0 (0 trains on "
                                   "the labelled images only).")
    return float(value)


def check_fraction(value, name: str, low_open: bool = False) -> float:
    """A number in [0, 1] ((0, 1] with ``low_open``), else an InvalidArgumentError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
    if not ok or (low_open and value == 0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise InvalidArgumentError(f"{name}={value!r}: give a number in {interval}.")
    return float(value)


def labelled_part(inputs):
    """The labelled images of a batch: the stream's dict, or plain images (validation)."""
    return inputs["labelled"] if isinstance(inputs, dict) else inputs


class SemiTask(Task):
    """A classifier trained on labelled cross-entropy plus ``unlabelled_weight`` x a method's
    unlabelled loss; subclasses give ``unlabelled_loss`` (and may add models, EMA pairs).

    ``classifier``: the Keras model ``fit`` returns (softmax outputs). ``iterations``: the
    training steps taken (a variable, created in the strategy's scope), which keys the stateless
    random numbers of augmentations and the ramp-ups, so runs are reproducible.
    """

    def __init__(self, classifier, *, num_classes: int, unlabelled_weight: float = 1.0,
                 seed: int = 0):
        import tensorflow as tf

        from zoo.train.tasks import Classification

        self.classifier = classifier
        self.num_classes = int(num_classes)
        self.unlabelled_weight = check_weight(unlabelled_weight)
        self.seed = int(seed)
        self.supervised = Classification(classifier)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    needs_index = False  # keeps state per unlabelled image (needs the pool as an array)
    unlabelled_metrics: tuple[str, ...] = ()  # the metrics unlabelled_loss reports

    def models(self) -> dict:
        return {"classifier": self.classifier}

    def final_classifier(self):
        """The classifier ``fit`` returns and publishes (FixMatch: its weights' moving average)."""
        return self.classifier

    def prepare(self, stream, epochs: int) -> None:
        """Create per-pool state (in the strategy's scope) once the stream is known."""

    def state_variables(self) -> dict:
        """The method's own state beyond its models' variables, by name: what a resumed run must
        get back (``TaskState`` puts it in the engine's checkpoints). The step counter keys the
        ramp-up, the augmentations' random draws and the ramp; subclasses add theirs."""
        return {"iterations": self.iterations}

    def hooks(self) -> list:
        """Engine hooks the method needs (e.g. the curriculum's stages)."""
        return []

    def trainable(self, name: str) -> list:
        return self.classifier.trainable_variables

    def regularized(self, name: str) -> list:
        return [self.classifier]

    def step(self, batch, training: bool) -> StepOutput:
        import tensorflow as tf

        inputs, y, w = batch
        out = self.supervised.forward(labelled_part(inputs), training)
        w = tf.cast(w, tf.float32)
        loss = self.supervised.per_example(y, out) * w
        metrics = self.supervised.metrics(y, out, w)
        if training:
            self.iterations.assign_add(1)
        more = {}
        if training and self.unlabelled_weight > 0 and isinstance(inputs, dict):
            extra, more = self.unlabelled_loss(inputs, training)
            loss = loss + self.unlabelled_weight * self.ramp() * extra
        for name in self.unlabelled_metrics:  # the same layout in every step (engine's rule)
            metrics[name] = more.get(name, (tf.constant(0.0), tf.constant(0.0)))
        return StepOutput({"main": loss}, metrics)

    def ramp(self):
        """The factor of the unlabelled weight at this step (1: no ramp-up)."""
        return 1.0

    def unlabelled_loss(self, inputs, training: bool):
        """(scalar unlabelled loss, {metric: (sum, count)}) for the batch's unlabelled part."""
        raise NotImplementedError

    def predict(self, x):
        return self.classifier(labelled_part(x), training=False)

    def check(self, x, y) -> None:
        self.supervised.check(labelled_part(x), y)

    def step_seed(self, purpose: int):
        """A stateless seed for this step and ``purpose`` (a small integer per random draw)."""
        import tensorflow as tf

        return tf.stack([tf.cast(self.seed * 1000 + purpose, tf.int64), self.iterations])


class TaskState(Hook):
    """The task's ``state_variables`` in the engine's checkpoints (a hook's ``arrays``), put back
    on resume: without them a resumed run would restart its ramp-up, augmentation draws,
    temporal ensemble or admitted pseudo-labels. Models (an EMA teacher) the engine saves itself."""

    def __init__(self, task: SemiTask):
        self.task = task

    def arrays(self) -> dict:
        return {name: v.numpy() for name, v in self.task.state_variables().items()}

    def load(self, state: dict, arrays: dict) -> None:
        for name, variable in self.task.state_variables().items():
            if name not in arrays or tuple(arrays[name].shape) != tuple(variable.shape):
                from zoo.errors import ResumeError

                raise ResumeError(
                    f"the checkpoint holds no {name!r} of shape {tuple(variable.shape)} for this "
                    "semi-supervised method; resume with the same method, data and settings, or "
                    "give a new checkpoint folder.")
            variable.assign(arrays[name])


class Supervised(SemiTask):
    """The baseline: labelled cross-entropy only, on the same stream as every method."""

    def __init__(self, classifier, *, num_classes: int, unlabelled_weight: float = 1.0,
                 seed: int = 0):
        super().__init__(classifier, num_classes=num_classes, unlabelled_weight=0.0, seed=seed)


@register_method("supervised", family="supervised",
                 summary="labelled cross-entropy only (the baseline every method is compared with)",
                 backbones="any zoo classifier (2D/3D)")
def make_supervised(model, *, num_classes: int, unlabelled_weight: float, seed: int) -> SemiTask:
    """The baseline's task; ``unlabelled_weight`` is ignored (it uses no unlabelled image)."""
    check_weight(unlabelled_weight)
    return Supervised(model, num_classes=num_classes, seed=seed)
