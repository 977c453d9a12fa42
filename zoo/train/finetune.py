"""``zoo.finetune``: the two-stage transfer-learning recipe as the default path.

Stage 1 trains the new head on the frozen backbone (on cached features when there is no
augmentation); stage 2 unfreezes the backbone from a chosen layer (BatchNorm stays in
inference mode) and trains on with a lower learning rate and a fresh AdamW optimizer, and is
kept only if it beats stage 1 on validation. Augmentation (the same in both stages) never
resamples: whole-pixel shifts and intensity jitter, optionally 90-degree turns and flips
(see Augment for why). Both stages: decoupled weight decay (not on biases or
normalisation parameters), class weights, early stopping on the validation set with the best
weights restored, the best model saved as ``best.keras`` (once, at the end; the engine's
checkpoints hold the best weights meanwhile), TensorBoard scalars, a progress
bar, and ``run.json`` (library versions, arguments, metrics per epoch) next to the checkpoint.
Training runs on the zoo's one engine (zoo.train.engine, the task from zoo.train.tasks) under
``strategy``; the engine checkpoints each epoch (and every ``checkpoint_every`` steps) into
``checkpoints/`` so ``resume=True`` continues a killed run. Validation metrics of zoo.metrics
(AUC, sensitivity/specificity, balanced accuracy, ECE with bootstrap CIs, per patient when the
split was by patient) go into run.json, with ``reliability.png``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError, ResumeError
from zoo.train.batches import Batches, class_weights_to_samples, finish_batches
from zoo.train.feature_cache import check_budget

NO_DECAY = ["bias", "gamma", "beta"]


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced; ``model`` holds the best weights."""

    model: object
    history: list[dict]
    best_epoch: int
    best_value: float
    monitor: str
    checkpoint: Path | None
    record: Path | None
    log_dir: Path | None
    cached_stage1: bool
    strategy: dict = field(default_factory=dict)
    # False: stage 2 did not improve on stage 1, whose weights the model keeps
    stage2_kept: bool | None = None

    def to_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "monitor": self.monitor,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "record": str(self.record) if self.record else None,
            "log_dir": str(self.log_dir) if self.log_dir else None,
            "cached_stage1": self.cached_stage1,
            "stage2_kept": self.stage2_kept,
            "strategy": self.strategy,
            "history": self.history,
        }


def _is_dataset(data) -> bool:
    return hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator")


def _arrays(data, what: str, classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(x float32, y) from in-memory (x, y) or an object with .images/.labels, checked; ``classes``:
    the labels must be integer class indices (single-label classification)."""
    x, y = _numeric_pair(data, what)
    if not classes:
        if len(y) != len(x):
            raise DataError(
                f"{what}: {len(x)} images but {len(y)} labels; give one label (row) per image."
            )
        return x, y
    return _class_pair(x, y, what)


def _numeric_pair(data, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 with a channel axis, y) from any accepted form: non-empty, finite, numeric."""
    if data is None:
        raise DataError(f"{what} is None; give (images, labels) arrays.")
    if hasattr(data, "images") and hasattr(data, "labels"):
        data = (data.images, data.labels)
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise DataError(
            f"{what}: give (images, labels), an object with .images and .labels, or a "
            "tf.data.Dataset of (images, labels) batches."
        )
    y = np.asarray(data[1])
    if y.dtype.kind not in "biuf":
        raise DataError(
            f"{what}: labels of type {y.dtype} (e.g. {y.ravel()[:2].tolist()}); give integer class "
            "indices, e.g. names, y = np.unique(labels, return_inverse=True)."
        )
    try:
        x = np.asarray(data[0], dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{what}: images cannot be read as numbers ({err}); give a numeric array (N, H, W[, "
            "C])."
        ) from None
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0 or len(y) == 0:
        raise DataError(
            f"{what} is empty ({x.size} image values, {y.size} labels); give at least one labelled "
            "image (and leave val_data=None to hold out part of the training data)."
        )
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: images contain NaN or infinity; clean or drop those images.")
    if x.ndim == 3:
        x = x[..., None]
    return x, y


def _class_pair(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y int32) checked for single-label classification: (N, H, W, C) and one index each."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{what}: images of shape {x.shape}; need (N, H, W) or (N, H, W, C).")
    if y.ndim == 2 and len(y) == len(x) and y.shape[1] > 1:
        raise DataError(
            f"{what}: labels of shape {y.shape} (several per image) for single-label "
            "classification; use task='multilabel' for several findings per image, or give one "
            "class index per image."
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{what}: {len(x)} images but labels of shape {y.shape}; need one integer class per "
            "image."
        )
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{what}: labels must be integer class indices (got {y.dtype}).")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be class indices >= 0 (found {y.min()}).")
    return x, y.astype(np.int32)


@dataclass(frozen=True)
class Augment:
    """Augmentations that keep the noise and small-lesion statistics of the images: no resampling.

    Bilinear shifts, rotations and zooms low-pass filter the pixels (on the demo phantoms they
    halve the pixel-to-pixel noise and drop the shipped checkpoint from 0.81 to 0.65 accuracy),
    so a model trained on them learns a blurred domain and is tested on a sharp one. Here:
    shifts by whole pixels (borders mirrored), optional 90-degree rotations and flips (off by
    default: laterality and orientation often matter in medical images) and a small intensity
    gain and offset. ``shift`` and ``offset`` are fractions of the image side and of the input
    range.
    """

    shift: float = 0.0625
    rot90: bool = False
    flip: bool = False
    gain: float = 0.05
    offset: float = 0.02

    def __post_init__(self):
        for name in ("shift", "gain", "offset"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < 0.5
            ):
                raise InvalidArgumentError(f"Augment({name}={value!r}): give a number in [0, 0.5).")


def augment_policy(augment):
    """``augment`` as an Augment, a list of Keras layers (applied as given), or None (none)."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment()
    if augment == "rot90":
        return Augment(rot90=True, flip=True)
    if isinstance(augment, Augment):
        return augment
    if isinstance(augment, dict):
        return Augment(**augment)
    if isinstance(augment, list | tuple) and all(callable(layer) for layer in augment):
        return list(augment)
    raise InvalidArgumentError(
        f"augment={augment!r}: use True (integer shifts, intensity jitter), 'rot90' (also "
        "90-degree rotations and flips), False, a zoo.train.finetune.Augment, or a list of Keras "
        "preprocessing layers."
    )


def _layers_fn(layers):
    def apply(x, y, w):
        for layer in layers:
            x = layer(x, training=True)
        return x, y, w

    return apply


class _AugmentedBatches(Batches):
    """Batches whose images are augmented per epoch by an Augment, with parameters drawn by numpy
    from (seed, epoch): the same run gives the same views, independent of TensorFlow's RNG state."""

    def __init__(self, x, y, batch_size, seed, sample_weight, policy: Augment, value_range,
                 masks: bool = False):
        super().__init__(x, y, batch_size, True, seed, sample_weight)
        self.policy, self.value_range, self.masks = policy, value_range, masks

    def _params(self, epoch: int, n: int) -> dict:
        p, (h, w) = self.policy, self.x.shape[1:3]
        rng = np.random.default_rng([self.seed, epoch, 1])
        sy, sx = int(round(p.shift * h)), int(round(p.shift * w))
        lo, hi = self.value_range or (0.0, 255.0)
        turns = rng.integers(0, 4, n) if p.rot90 else np.zeros(n, np.int64)
        if h != w:
            turns = turns - turns % 2  # half turns only: a quarter turn would change the shape
        return {"dy": rng.integers(-sy, sy + 1, n) + sy, "dx": rng.integers(-sx, sx + 1, n) + sx,
                "turns": turns.astype(np.int32), "flip": rng.random(n) < (0.5 if p.flip else 0.0),
                "gain": rng.uniform(1 - p.gain, 1 + p.gain, n).astype(np.float32),
                "offset": (rng.uniform(-p.offset, p.offset, n) * (hi - lo)).astype(np.float32)}

    def dataset(self, epoch: int, map_fn=None):
        import tensorflow as tf

        idx = self.order(epoch)
        (h, w, _), p = self.x.shape[1:], self.policy
        sy, sx = int(round(p.shift * h)), int(round(p.shift * w))
        params = self._params(epoch, len(idx))
        weight = (
            np.ones(len(self.y), np.float32) if self.sample_weight is None else self.sample_weight
        )
        value_range, masks = self.value_range, self.masks

        def move(t, prm):
            """The geometric part, for an image (h, w, c) or a mask (h, w[, k])."""
            shape = tf.shape(t)
            t = t if t.shape.rank == 3 else t[..., None]
            t = tf.pad(t, [[sy, sy], [sx, sx], [0, 0]], mode="SYMMETRIC") if sy or sx else t
            t = tf.slice(t, tf.stack([prm["dy"], prm["dx"], 0]), [h, w, tf.shape(t)[-1]])
            t = tf.image.rot90(t, prm["turns"])
            t = tf.cond(prm["flip"], lambda: tf.reverse(t, [1]), lambda: t)
            return tf.reshape(t, shape)

        def view(x, y, wt, prm):
            x = move(x, prm) * prm["gain"] + prm["offset"]
            if value_range is not None:
                x = tf.clip_by_value(x, *value_range)
            return x, (move(y, prm) if masks else y), wt

        ds = tf.data.Dataset.from_tensor_slices(
            (self.x[idx], self.y[idx], weight[idx].astype(np.float32), params))
        ds = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
            self.batch_size
        )
        return finish_batches(ds, map_fn)


def deterministic(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TensorFlow's ops deterministic: same seed, same
    numbers.

    Global and process-wide (TensorFlow offers no scope for it), so the entry points call it
    (``zoo finetune``, ``zoo demo``), not ``finetune`` itself.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    from zoo._version import zoo_version

    return {
        "zoo": zoo_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value) if not hasattr(value, "shape") else f"<array {tuple(value.shape)}>"


def _pair(value, name: str) -> tuple:
    pair = tuple(value) if isinstance(value, list | tuple) else (value, value)
    if len(pair) != 2:
        raise InvalidArgumentError(
            f"{name}={value!r}: give one value or a (stage 1, stage 2) pair."
        )
    return pair


def _build(
    model_or_name,
    strat,
    precision,
    *,
    pretrained,
    num_classes,
    in_chans,
    input_shape,
    dropout,
    **options,
):
    import tensorflow as tf

    from zoo.models.factory import load
    from zoo.train.precision import policy, rebuild

    if isinstance(model_or_name, str):
        with strat.scope(), policy(precision):
            model = load(model_or_name, pretrained, in_chans=in_chans, num_classes=num_classes,
                         input_shape=input_shape, dropout=dropout, **options)
        # a checkpoint's own top: keep the output float32
        if any(t.dtype != "float32" for t in model.outputs):
            model = rebuild(model, precision, strat)
        return model
    if not hasattr(model_or_name, "get_config") or not hasattr(model_or_name, "inputs"):
        raise InvalidArgumentError(
            f"model_or_name={model_or_name!r}: give a zoo model name or a Functional keras.Model."
        )
    if precision == "fp32" and strat is tf.distribute.get_strategy():
        return model_or_name
    return rebuild(model_or_name, precision, strat)


from zoo.train.engine import scalar  # noqa: E402,F401  (re-exported: zoo.train.finetune.scalar)

ACTIVATIONS = {
    "classification": "softmax",
    "multilabel": "sigmoid",
    "regression": None,
    "segmentation": "softmax",
}


class _Run:
    """State of one fine-tuning run across both stages: history, the best weights, the files.

    Also the engine hook of each stage (``hook(stage)``): it logs each epoch, keeps the best
    weights (``best.keras`` is written at the end of the run), stops a stage early, and is saved
    in the engine's checkpoints, so a resumed run continues with the same history, best value
    and patience count.
    """

    def __init__(self, model, out_dir, monitor, chief, verbose):
        self.model, self.monitor, self.chief, self.verbose = model, monitor, chief, verbose
        self.history: list[dict] = []
        self.best_value, self.best_epoch, self.best_weights = None, -1, None
        # stage 2: the other validation metric of stage 1's best epoch
        self.floor: dict[str, float] = {}
        self.out = Path(out_dir)
        self.checkpoint = self.out / "best.keras"
        self.log_dir = self.out / "logs"
        self.writers = None

    def improved(self, row: dict) -> bool:
        """``row`` improves on the best so far and falls below no floor on the other metric."""
        value = row[self.monitor]
        better = self.best_value is None or (
            value < self.best_value if self.monitor.endswith("loss") else value > self.best_value
        )
        for metric, bound in self.floor.items():
            better = better and (
                row[metric] <= bound if metric.endswith("loss") else row[metric] >= bound
            )
        if better:
            self.best_value = float(value)
        return better

    def log(self, row: dict) -> None:
        import tensorflow as tf

        self.history.append(row)
        if self.verbose:
            print(
                " ".join(
                    f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
        if self.chief:
            if self.writers is None:
                self.writers = {
                    k: tf.summary.create_file_writer(str(self.log_dir / k))
                    for k in ("train", "validation")
                }
            for split, prefix in (("train", ""), ("validation", "val_")):
                with self.writers[split].as_default():
                    for key, value in row.items():
                        if (
                            key.startswith(prefix)
                            and (prefix or not key.startswith("val_"))
                            and key not in ("epoch", "stage", "seconds", "learning_rate")
                            and isinstance(value, float)
                        ):
                            scalar("epoch_" + key.removeprefix(prefix), value, row["epoch"])
                    if split == "train":
                        scalar("learning_rate", row["learning_rate"], row["epoch"])
                self.writers[split].flush()

    def save_best(self, epoch: int) -> None:
        """Keep the best weights in memory (the engine's checkpoints carry them for a resume);
        ``best.keras`` is written once, by ``write_best`` at the end of the run: a ResNet-50
        file took ~2 s per improving epoch, on the training's critical path."""
        self.best_epoch = epoch
        self.best_weights = self.model.get_weights()

    def write_best(self) -> None:
        """``best.keras`` from the model holding the best weights (atomic: a partial file, then
        a rename)."""
        if self.chief and self.best_weights is not None:
            partial = self.checkpoint.with_name("best.partial.keras")
            self.model.save(partial)
            os.replace(partial, self.checkpoint)

    def best_arrays(self) -> dict:
        """The best weights that differ from the model's current ones (by index), for a
        checkpoint: after an improving epoch (and for a frozen backbone) they are the same
        values the engine saves or the run's model already holds, so they are not written twice
        (ResNet-50: 94 MB less per epoch-end checkpoint)."""
        if self.best_weights is None:
            return {}
        current = self.model.get_weights()
        return {f"w{i}": w for i, (w, now) in enumerate(zip(self.best_weights, current))
                if w.shape != now.shape or not np.array_equal(w, now)}

    def load_state(self, state: dict, arrays: dict) -> None:
        """A checkpoint's history, best value and epoch, floor and best weights (those it left
        out, see ``best_arrays``, stay None until ``resolve_best``)."""
        self.history, self.best_value = state["history"], state["best_value"]
        self.best_epoch, self.floor = state["best_epoch"], state["floor"]
        if state["best_weights"] is not None:
            self.best_weights = [arrays.get(f"w{i}") for i in range(state["best_weights"])]

    def resolve_best(self) -> None:
        """Fill in the best weights a checkpoint left out (``best_arrays``) from the model, once
        the engine has restored its variables."""
        if self.best_weights is not None and any(w is None for w in self.best_weights):
            current = self.model.get_weights()
            self.best_weights = [now if w is None else w
                                 for w, now in zip(self.best_weights, current)]

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def hook(self, stage: str, patience: int):
        from zoo.train.engine import Hook

        run = self

        class StageHook(Hook):
            wait = 0

            def on_epoch_end(self, engine, epoch, logs):
                row = {
                    "epoch": len(run.history),
                    "stage": stage,
                    **{
                        k: v
                        for k, v in logs.items()
                        if k not in ("epoch", "seconds", "learning_rate")
                    },
                    "seconds": logs["seconds"],
                    "learning_rate": logs["learning_rate"],
                }
                run.log(row)
                if run.improved(row):
                    self.wait = 0
                    run.save_best(row["epoch"])
                else:
                    self.wait += 1
                    if self.wait >= patience:
                        if run.verbose:
                            print(
                                f"{stage}: early stop, no {run.monitor} improvement in {patience} "
                                "epochs"
                            )
                        engine.stop = True

            def on_train_begin(self, engine):
                run.resolve_best()  # a resumed run: the engine has restored the variables

            def on_train_end(self, engine):
                run.restore_best()

            def state(self):
                return {"wait": self.wait, "history": run.history, "best_value": run.best_value,
                        "best_epoch": run.best_epoch, "floor": run.floor,
                        "best_weights": None if run.best_weights is None else len(run.best_weights)}

            def arrays(self):
                return run.best_arrays()

            def load(self, state, arrays):
                self.wait = state["wait"]
                run.load_state(state, arrays)

        return StageHook()


RUN_FILES = ("best.keras", "run.json", "curves.png", "logs", "checkpoints", "reliability.png",
             "feature_cache")


def prepare_out_dir(out_dir, overwrite: bool = False, resume: bool = False) -> Path:
    """The run folder, claimed before any training under the zoo's one overwrite rule (zoo.outputs).

    A new or empty folder is used; an earlier run folder is replaced only with ``overwrite=True``;
    a folder holding anything the zoo did not write is refused, naming those files. With
    ``resume``, an earlier ``zoo.finetune`` folder is kept as it is (its checkpoints continue).
    """
    from zoo.outputs import MANIFEST, claim_dir

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"out_dir={os.fspath(out_dir)!r} is a file, not a folder; give a folder for "
            "best.keras, run.json and logs/ (a new name, or remove the file)."
        )
    if resume and out.is_dir() and any(out.iterdir()):
        try:
            writer = json.loads((out / MANIFEST).read_text()).get("writer")
        except (OSError, ValueError):
            writer = None
        if writer != "zoo.finetune":
            raise ResumeError(
                f"out_dir={os.fspath(out_dir)!r} is not a zoo.finetune run folder (no manifest of "
                "one); resume needs the folder a killed run wrote, or drop resume to start afresh."
            )
        return out
    return claim_dir(out, writer="zoo.finetune", overwrite=overwrite, names=RUN_FILES)


def _check_labels(y: np.ndarray, vy: np.ndarray, num_classes) -> None:
    present = np.unique(y)
    if len(present) < 2 and num_classes is None:
        raise DataError(
            f"train_data holds only class {present[0]} ({len(y)} labels); a classifier needs "
            "examples of at least two classes. Add the other class(es), or give num_classes= if "
            "the label set is larger than this training set shows."
        )


def _check_range(model, x: np.ndarray, vx: np.ndarray) -> tuple[float, float] | None:
    """The model's input range (its ``preprocess`` layer), once both image sets lie in it."""
    from zoo.data.value_range import check_value_range
    from zoo.layers.preprocess import input_contract

    try:
        value_range = tuple(float(v) for v in input_contract(model)["input_range"])
    except InvalidArgumentError:  # not built by zoo.load: its input contract is unknown
        return None
    check_value_range(x, value_range, "train_data")
    check_value_range(vx, value_range, "val_data")
    return value_range


def _first(dataset, what: str):
    """The first (x, y) batch of a streamed dataset, as numpy (for the checks before training)."""
    for batch in dataset.take(1):
        if not isinstance(batch, tuple) or len(batch) not in (2, 3):
            raise DataError(
                f"{what}: a dataset must yield (images, labels[, weights]) batches, got "
                f"{type(batch).__name__}."
            )
        x, y = np.asarray(batch[0], np.float32), np.asarray(batch[1])
        if x.ndim < 3:
            raise DataError(f"{what}: batches of shape {x.shape}; the dataset must be batched "
                            "(ds.batch(n)) and yield images (N, H, W, C).")
        if not np.all(np.isfinite(x)):
            raise DataError(f"{what}: images contain NaN or infinity; clean or drop those images.")
        return x, y
    raise DataError(
        f"{what}: the dataset yields no batches (it is empty); give at least one labelled image."
    )


def _class_weights_fn(table):
    import tensorflow as tf

    table = tf.constant(table, tf.float32)

    def weigh(*batch):
        x, y = batch[0], batch[1]
        w = tf.gather(table, tf.cast(tf.reshape(y, [-1]), tf.int32))
        return x, y, (w * batch[2] if len(batch) == 3 else w)

    return weigh


def _streamed_features(backbone, dataset, strategy, disk=None, name="features",
                       memory_budget=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of a streamed dataset through the frozen backbone: (features, labels, weights);
    the features in memory or, past ``memory_budget``, on disk (zoo.train.feature_cache)."""
    from zoo.train.feature_cache import collect, feature_batches

    labels, weights = [], []

    def images():
        for batch in dataset:
            labels.append(np.asarray(batch[1]))
            weights.append(
                np.asarray(batch[2]) if len(batch) == 3 else np.ones(len(labels[-1]), np.float32)
            )
            yield batch[0]

    features = collect(feature_batches(backbone, images(), strategy), disk, name, memory_budget)
    return features, np.concatenate(labels), np.concatenate(weights).astype(np.float32)


def _clinical(model, vx, vy, groups, batch_size, task_name) -> dict | None:
    """zoo.metrics on the validation set (per patient when the split was by patient)."""
    from zoo.metrics import classification_report
    from zoo.train.feature_cache import feature_batches

    if task_name not in ("classification", "multilabel") or vx is None:
        return None
    # one traced inference function (ResNet-50: ~3 s, against ~10 s layer by layer, eagerly)
    batches = (vx[i:i + batch_size] for i in range(0, len(vx), batch_size))
    probs = np.concatenate(list(feature_batches(model, batches))).astype(np.float64)
    try:
        return classification_report(vy, probs, groups, n_boot=200)
    except DataError as err:  # e.g. one class in a tiny validation set: report, do not fail the run
        return {"error": str(err)}


def finetune(
    model_or_name,
    train_data,
    val_data=None,
    *,
    pretrained=None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    input_shape=None,
    dropout: float = 0.0,
    epochs=(5, 5),
    learning_rate=(1e-3, 1e-4),
    weight_decay: float = 1e-4,
    batch_size: int = 32,
    unfreeze_from=None,
    unfreeze_batchnorm: bool = False,
    patience: int = 3,
    monitor: str = "val_loss",
    class_weight=None,
    augment=True,
    cache_features: bool = True,
    cache_memory: int | None = None,
    validation_split: float = 0.2,
    groups=None,
    task: str = "classification",
    loss=None,
    seed: int = 0,
    out_dir="finetune_out",
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int | None = None,
    strategy="auto",
    precision: str = "fp32",
    verbose: int = 1,
    data_source=None,
) -> FinetuneResult:
    """Fine-tune a zoo model (by name, or a Functional model with ``head_*`` layers) in two stages.

    train_data / val_data: (images, labels) with images (N, H, W[, C]) (or 3D volumes) in the
        model's input range (raw pixel values for zoo models, [0, 255]); or an object with .images
        and .labels; or a batched tf.data.Dataset of (images, labels[, weights]) -- e.g.
        ``zoo.dicom_dataset`` -- streamed batch by batch (give val_data and, with a model name,
        num_classes; its batching is kept). Without val_data, a seeded ``validation_split`` of
        in-memory training data is held out, patient-wise when ``groups``
        (one patient id per training image) is given: no patient is in both sets. Bad
        input (one class, values outside the input range, empty or mismatched arrays, string
        labels, labels that do not fit ``task``) is refused before training.
    task: "classification" (integer classes), "multilabel" ((N, K) 0/1, sigmoid), "regression"
        (numbers), "segmentation" (masks: zoo.train.tasks.Segmentation): integer masks
        (N, *spatial) of class indices against softmax outputs, or, when the masks have a last
        axis of K > 1 channels (N, *spatial, K), one 0/1 channel per label against K sigmoid
        outputs (a model built here by name gets that activation and K outputs). Masks must
        have the model output's spatial shape; fractions, classes outside 0..K-1 and other
        shapes are refused before training (a stream: on its first batch). Validation metric
        ``dice``; a model with several outputs (``deep_supervision=True`` U-Nets) is trained
        on all of them (nnU-Net's halving weights) and judged on the first.
    loss: segmentation only: a name from zoo.train.seg_losses.SEG_LOSSES ("dice_ce" when None;
        "dice", "ce", "focal", "dice_focal", "tversky", "focal_tversky") or a built
        ``zoo.train.seg_losses.segmentation_loss(name, **options)`` for options such as
        ``gamma`` or ``include_background=False``.
    epochs, learning_rate: one value or a (stage 1, stage 2) pair; stage 2 with 0 epochs is skipped.
        Stage 2 is kept only if it improves ``monitor`` on the validation set without worsening
        the other validation metric (accuracy or loss) of stage 1's best epoch; otherwise the
        model keeps stage 1's weights (``result.stage2_kept`` is False, run.json says so).
    unfreeze_from: where stage 2 unfreezes (layer index, name or block prefix; None: the whole
        backbone). BatchNorm stays frozen (inference mode, the checkpoint's statistics) unless
        ``unfreeze_batchnorm``.
    class_weight: None, "balanced" or {class: weight}: classification weighs each image by its
        class; segmentation weighs the classes (multi-label: channels) inside the loss (the
        cross-entropy terms and the Dice class mean; a sequence of K weights also works), and
        "balanced" there counts pixels of the in-memory training masks.
    augment: True (whole-pixel shifts and a small intensity jitter: see Augment), "rot90" (also
        90-degree rotations and flips, for images without a fixed orientation), an Augment,
        False, or a list of Keras preprocessing layers. The same policy in both stages: with
        augmentation, stage 1 runs through the frozen backbone instead of a feature cache.
        A streamed dataset takes only False or Keras layers (augment inside its pipeline).
        An Augment moves 2D images only (volumes: False, or augment in the tf.data pipeline);
        segmentation masks move with their images (Keras layers see the images only: give
        intensity layers there).
    cache_features: train stage 1 on the frozen backbone's features, computed once (only
        without augmentation: a cache holds one view per image).
    cache_memory: bytes of cached features held in memory (None: 1 GiB); past it they go to
        ``out_dir/feature_cache/`` and stage 1 streams them from disk (same results; the folder
        is removed after stage 1). See zoo.train.feature_cache.
    out_dir: the run folder (best.keras, run.json, curves.png, logs/, checkpoints/); an earlier
        run there is replaced only with ``overwrite=True``, a folder with other files is refused
        (zoo.outputs). resume: continue the killed run in ``out_dir`` from its newest checkpoint
        (checkpoints are written at each epoch's end, and every ``checkpoint_every`` steps).
    strategy: a name for zoo.train.strategy or a tf.distribute.Strategy. precision: fp32, bf16,
    fp16.
    For runs that repeat exactly, call keras.utils.set_random_seed and
    tf.config.experimental.enable_op_determinism() first (``zoo finetune`` and ``zoo demo`` do).
    data_source: where streamed data came from, for run.json (e.g. a
        ``zoo.train.dicom_folder.DicomFolderData``): its ``source`` dict becomes ``data.source``
        (its ``"split"``, when present, ``data.split``) and its ``validation_metrics(model)`` the
        clinical metrics of a streamed validation set, so run.json is written once, complete.
    """
    arguments = {
        k: v for k, v in dict(locals()).items()
        if k not in ("train_data", "val_data", "groups", "data_source")
    }
    # ids stay private
    arguments["groups"] = (
        None if groups is None else f"{len(np.unique(np.asarray(groups)))} patients"
    )
    import keras

    from zoo.train.distribute import describe, is_chief
    from zoo.train.distribute import strategy as make_strategy
    from zoo.train.precision import check_precision

    arguments["model_or_name"] = (
        model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "name", "?")
    )
    epochs, learning_rate, metric = _check_options(
        epochs, learning_rate, weight_decay, task, monitor, validation_split, patience
    )
    _check_loss(loss, task, class_weight)
    _check_data_source(data_source)
    check_budget(cache_memory)
    policy = augment_policy(augment)
    check_precision(precision)
    strat = make_strategy(strategy)  # first: MultiWorkerMirroredStrategy must precede other TF work

    data = _load_data(train_data, val_data, model_or_name, num_classes, task, policy, groups,
                      validation_split, seed)
    multilabel_masks = task == "segmentation" and _multilabel_masks(data, model_or_name)
    if num_classes is None and isinstance(model_or_name, str):
        num_classes = _count_classes(task, data.y, data.vy, multilabel_masks)
    keras.utils.set_random_seed(seed)
    if isinstance(model_or_name, str) and task != "classification":
        build_kw = {"classifier_activation": "sigmoid" if multilabel_masks else ACTIVATIONS[task]}
    else:
        build_kw = {}
    model = _build(
        model_or_name,
        strat,
        precision,
        pretrained=pretrained,
        num_classes=num_classes,
        in_chans=in_chans or data.x.shape[-1],
        input_shape=input_shape or data.x.shape[1:-1],
        dropout=dropout,
        **build_kw,
    )
    task_options = _task_options(task, loss, class_weight, data, model, multilabel_masks)
    classes, value_range = _check_fit(model, task, data, task_options)
    sources = _Sources(data, policy, class_weight if task == "classification" else None, classes,
                       batch_size, seed, value_range, masks=task == "segmentation",
                       cache_memory=cache_memory)
    out = prepare_out_dir(out_dir, overwrite, resume) if is_chief() else Path(out_dir)

    run = _Run(model, out, monitor, is_chief(), verbose)
    stages = _Stages(run, out, task, strat, weight_decay=weight_decay, precision=precision,
                     patience=patience, verbose=verbose, checkpoint_every=checkpoint_every,
                     resume=resume, task_options=task_options)
    stage1_info, cached = _stage1(stages, sources, model, epochs[0], learning_rate[0],
                                  cache_features, strat)
    stage2_info = None
    if epochs[1]:
        stage2_info = _stage2(stages, sources, model, epochs[1], learning_rate[1], monitor, metric,
                              unfreeze_from, unfreeze_batchnorm, verbose)
    run.restore_best()
    run.write_best()

    record = None
    if run.chief:
        fields = {
            "versions": library_versions(),
            "arguments": arguments,
            "strategy": describe(strat),
            "task": task,
            "task_options": _jsonable(task_options),
            "data": _data_record(data, classes, task, groups, value_range),
            "augment": _jsonable(vars(policy) if isinstance(policy, Augment) else policy),
            "stage1": {**stage1_info, "cached_features": cached},
            "stage2": stage2_info,
        }
        record = _write_record(run, model, data, fields, batch_size, task, monitor, data_source)
    return FinetuneResult(
        model=model,
        history=run.history,
        best_epoch=run.best_epoch,
        best_value=run.best_value,
        monitor=monitor,
        checkpoint=run.checkpoint if run.chief else None,
        record=record,
        log_dir=run.log_dir if run.chief else None,
        cached_stage1=cached,
        strategy=describe(strat),
        stage2_kept=stage2_info["kept"] if stage2_info else None,
    )


def _check_options(epochs, learning_rate, weight_decay, task, monitor, validation_split,
                   patience) -> tuple[tuple, tuple, str]:
    """(epochs, learning_rate pairs, the task's metric) once every plain option is valid.

    Checked before TensorFlow is touched, so a typo fails in a second, not after a model build.
    """
    epochs, learning_rate = _pair(epochs, "epochs"), _pair(learning_rate, "learning_rate")
    if (
        any(isinstance(e, bool) or not isinstance(e, int | np.integer) or e < 0 for e in epochs)
        or epochs[0] + epochs[1] == 0
    ):
        raise InvalidArgumentError(f"epochs={epochs}: give non-negative integers, not both 0.")
    if any(not lr > 0 for lr in learning_rate):
        raise InvalidArgumentError(f"learning_rate={learning_rate}: must be positive.")
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, int | float)
        or not 0 <= weight_decay < np.inf
    ):
        raise InvalidArgumentError(
            f"weight_decay={weight_decay!r}: must be a number >= 0 (0 turns decay off; 1e-4 is the "
            "default)."
        )
    if task not in ACTIVATIONS:
        from zoo.errors import UnknownNameError

        raise UnknownNameError("fine-tuning task", task, ACTIVATIONS, argument="task")
    metric = (
        "accuracy"
        if task in ("classification", "multilabel")
        else {"regression": "mae", "segmentation": "dice"}[task]
    )
    if monitor not in ("val_loss", f"val_{metric}"):
        raise InvalidArgumentError(f"monitor={monitor!r}: use 'val_loss' or 'val_{metric}'.")
    if not 0 < validation_split < 1:
        raise InvalidArgumentError(f"validation_split={validation_split}: must be in (0, 1).")
    if not isinstance(patience, int) or patience < 1:
        raise InvalidArgumentError(f"patience={patience!r}: must be a positive integer.")
    return epochs, learning_rate, metric


@dataclass
class _Data:
    """The run's training and validation data: arrays, or a stream and its first batch."""

    train_data: object
    val_data: object
    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    streamed: bool
    val_streamed: bool
    val_groups: np.ndarray | None


def _load_data(train_data, val_data, model_or_name, num_classes, task, policy, groups,
               validation_split, seed) -> _Data:
    """Training and validation examples (in memory, or each stream's first batch), checked."""
    streamed, val_groups = _is_dataset(train_data), None
    classes_task = task == "classification"
    if streamed:
        _check_stream(val_data, policy, model_or_name, num_classes, task)
        x, y = _first(train_data, "train_data")
        vx, vy = _first(val_data, "val_data")
        if groups is not None:
            raise InvalidArgumentError(
                "groups= splits in-memory data; a streamed dataset is split before it is built."
            )
    else:
        x, y, vx, vy, val_groups = _memory_data(train_data, val_data, classes_task, groups,
                                                validation_split, seed)
    if classes_task and not streamed:
        _check_labels(y, vy, num_classes)
    if isinstance(policy, Augment) and x.ndim != 4:
        raise InvalidArgumentError(
            f"augment: the built-in augmentation moves 2D images, not images of shape "
            f"{x.shape[1:]}; pass augment=False (or Keras layers), or augment volumes in a "
            "tf.data pipeline (zoo.data)."
        )
    return _Data(train_data, val_data, x, y, vx, vy, streamed, _is_dataset(val_data), val_groups)


def _check_stream(val_data, policy, model_or_name, num_classes, task) -> None:
    """The options a streamed training set cannot take: no split, augmentation or class count."""
    if val_data is None or not _is_dataset(val_data):
        raise DataError(
            "train_data is a tf.data.Dataset: give val_data as a dataset too (a stream is not "
            "split here; split the file list, by patient, before building the two pipelines)."
        )
    if isinstance(policy, Augment):
        raise InvalidArgumentError(
            "augment: the built-in augmentation works on in-memory images; for a tf.data "
            "pipeline augment inside it (zoo.dicom_dataset(augment=...)) and pass "
            "augment=False, or give a list of Keras preprocessing layers."
        )
    if (
        num_classes is None
        and isinstance(model_or_name, str)
        and task in ("classification", "segmentation")
    ):
        raise InvalidArgumentError(
            "num_classes=None with a streamed dataset: give the number of classes (the zoo "
            "does not read the whole stream to count them)."
        )


def _memory_data(train_data, val_data, classes_task, groups, validation_split, seed):
    """(x, y, vx, vy, validation groups) for in-memory training data; split when no val_data."""
    x, y = _arrays(train_data, "train_data", classes_task)
    if groups is not None and len(groups) != len(x):
        raise DataError(
            f"groups has {len(groups)} entries for {len(x)} training images; give one patient "
            "id per image, in the order of train_data."
        )
    if val_data is None:
        from zoo.metrics import validation_split as split

        if len(x) < 2:
            raise DataError(
                f"train_data has {len(x)} examples: too few to hold out a validation set; give "
                "val_data."
            )
        train_idx, val_idx = split(len(x), validation_split, groups=groups, seed=seed)
        val_groups = None if groups is None else np.asarray(groups)[val_idx]
        return x[train_idx], y[train_idx], x[val_idx], y[val_idx], val_groups
    if _is_dataset(val_data):
        vx, vy = _first(val_data, "val_data")
    else:
        vx, vy = _arrays(val_data, "val_data", classes_task)
    return x, y, vx, vy, None


def _check_loss(loss, task: str, class_weight) -> None:
    """``loss`` is for segmentation and names a registered loss, ``class_weight`` for a task
    with classes (checked before TensorFlow)."""
    if class_weight is not None and task not in ("classification", "segmentation"):
        raise InvalidArgumentError(
            f"class_weight= is for task='classification' or 'segmentation' (task={task!r})."
        )
    if loss is None:
        return
    if task != "segmentation":
        raise InvalidArgumentError(
            f"loss={loss!r} is for task='segmentation'; task={task!r} has its own loss."
        )
    from zoo.train.seg_losses import SEG_LOSSES, SegmentationLoss

    if isinstance(loss, SegmentationLoss):
        if class_weight is not None and loss.class_weight is not None:
            raise InvalidArgumentError(
                "class_weight= given twice: to zoo.finetune and inside the built loss; give it "
                "once."
            )
        return
    SEG_LOSSES.check(loss)


def _multilabel_masks(data: _Data, model_or_name) -> bool:
    """Whether the masks are multi-label, by zoo.train.tasks.masks_are_multilabel against the
    given model's output, or (a model still to build) a channel axis of K > 1 on the masks."""
    from zoo.train.tasks import masks_are_multilabel

    if hasattr(model_or_name, "outputs"):
        return masks_are_multilabel(data.y.shape[1:], tuple(model_or_name.outputs[0].shape[1:]))
    return data.y.ndim == data.x.ndim and data.y.shape[-1] > 1


def _task_options(task: str, loss, class_weight, data: _Data, model, multilabel: bool) -> dict:
    """The segmentation task's loss and class weights ("balanced": from the training masks)."""
    from zoo.train.seg_losses import class_weights_from_masks, segmentation_loss

    if task != "segmentation":
        return {}
    classes = int(model.outputs[0].shape[-1])
    classes = classes if multilabel else max(classes, 2)
    if isinstance(class_weight, str) and class_weight == "balanced":
        if data.streamed:
            raise InvalidArgumentError(
                "class_weight='balanced' counts the pixels of in-memory masks; with a streamed "
                "dataset give one weight per class."
            )
        class_weight = class_weights_from_masks(data.y, classes, multilabel)
    if class_weight is None:
        return {"loss": segmentation_loss(loss or "dice_ce")}
    if not isinstance(class_weight, dict | list | tuple | np.ndarray):
        raise InvalidArgumentError(
            f"class_weight={class_weight!r}: use None, 'balanced', {{class: weight}} or one "
            "weight per class."
        )
    if loss is None or isinstance(loss, str):
        return {"loss": segmentation_loss(loss or "dice_ce", class_weight=class_weight)}
    options = {**loss.options(), "class_weight": class_weight}  # a built loss: the same, weighted
    return {"loss": segmentation_loss(loss.name, **options)}


def _count_classes(task: str, y: np.ndarray, vy: np.ndarray, multilabel_masks=False) -> int:
    """The model's output count implied by the labels when num_classes is not given."""
    if multilabel_masks:
        return int(y.shape[-1])
    if task == "segmentation":
        return max(int(max(y.max(), vy.max())) + 1, 2)
    if task == "classification":
        return int(max(y.max(), vy.max())) + 1
    if task == "multilabel":
        return int(y.shape[1]) if y.ndim == 2 else 1
    return int(np.prod(y.shape[1:], dtype=int))


def _check_fit(model, task: str, data: _Data,
               task_options: dict) -> tuple[int, tuple[float, float] | None]:
    """(classes, input value range) once labels, shapes and values fit the built model."""
    from zoo.train.tasks import make_task

    x, y, vx, vy = data.x, data.y, data.vx, data.vy
    classes = int(model.outputs[0].shape[-1])
    if task == "classification" and (y.max() >= classes or vy.max() >= classes):
        raise DataError(
            f"labels go up to {max(y.max(), vy.max())} but the model has {classes} outputs; give "
            "num_classes= the number of classes."
        )
    if (
        tuple(x.shape[1:]) != tuple(model.inputs[0].shape[1:])
        and None not in model.inputs[0].shape[1:]
    ):
        raise DataError(
            f"images of shape {x.shape[1:]} but the model takes "
            f"{tuple(model.inputs[0].shape[1:])}; resize the images or build the model with "
            "input_shape=."
        )
    value_range = _check_range(model, x, vx)
    for images, labels, what in ((x, y, "train_data"), (vx, vy, "val_data")):
        try:
            make_task(task, model, **task_options).check(images, labels)
        except DataError as err:
            raise DataError(f"{what}: {err}") from None
    return classes, value_range


class _Sources:
    """Each stage's training and validation input: batches, augmented batches or the stream."""

    def __init__(self, data: _Data, policy, class_weight, classes, batch_size, seed, value_range,
                 masks: bool = False, cache_memory: int | None = None):
        self.data, self.policy, self.class_weight = data, policy, class_weight
        self.cache_memory = cache_memory
        self.classes, self.batch_size, self.seed = classes, batch_size, seed
        self.value_range, self.masks = value_range, masks  # masks: labels move with the images
        self.weights = (
            None if data.streamed else class_weights_to_samples(data.y, class_weight, classes)
        )

    def training(self):
        """A fresh training source (the engine takes a Batches, a callable or a dataset)."""
        data, policy = self.data, self.policy
        if data.streamed:
            return self._streamed()
        if isinstance(policy, Augment):
            return _AugmentedBatches(data.x, data.y, self.batch_size, self.seed, self.weights,
                                     policy, self.value_range, self.masks)
        batches = Batches(data.x, data.y, self.batch_size, True, self.seed, self.weights)
        map_fn = _layers_fn(policy) if policy else None
        return (lambda epoch: batches.dataset(epoch, map_fn)) if map_fn else batches

    def _streamed(self):
        """The training stream, with per-sample class weights and Keras augmentation layers."""
        ds = self.data.train_data
        if self.class_weight is not None:
            if self.class_weight == "balanced":
                raise InvalidArgumentError(
                    "class_weight='balanced' needs the class counts; with a streamed dataset "
                    "give {class: weight}."
                )
            table = class_weights_to_samples(np.arange(self.classes), self.class_weight,
                                             self.classes)
            ds = ds.map(_class_weights_fn(table))
        if self.policy:
            from zoo.train.engine import epoch_source

            ds = epoch_source(ds)(0).map(_layers_fn(self.policy))
        return ds

    def val(self):
        data = self.data
        return data.val_data if data.val_streamed else Batches(data.vx, data.vy, self.batch_size,
                                                               False)

    def cached(self, model, source, strat, info: dict, disk=None):
        """(head, training batches, validation batches) on backbone features computed once, in
        memory or, past ``cache_memory`` bytes, in ``disk`` (zoo.train.feature_cache)."""
        from zoo.train.feature_cache import compute_features, split_head

        data, batch_size, budget = self.data, self.batch_size, self.cache_memory
        backbone, head = split_head(model)
        t0 = time.perf_counter()
        if data.streamed:
            features, fy, fw = _streamed_features(backbone, source, strat, disk, "train", budget)
            source = Batches(features, fy, batch_size, True, self.seed, fw)
        else:
            features = compute_features(backbone, data.x, strategy=strat, disk=disk, name="train",
                                        memory_budget=budget)
            source = Batches(features, data.y, batch_size, True, self.seed, self.weights)
        if data.val_streamed:
            vfeatures, fvy, _ = _streamed_features(backbone, data.val_data, strat, disk,
                                                   "validation", budget)
            val = Batches(vfeatures, fvy, batch_size, False)
        else:
            vfeatures = compute_features(backbone, data.vx, strategy=strat, disk=disk,
                                         name="validation", memory_budget=budget)
            val = Batches(vfeatures, data.vy, batch_size, False)
        info["cache_seconds"] = round(time.perf_counter() - t0, 4)
        info["cache_shape"] = list(features.shape[1:])
        info["cache_on_disk"] = [name for name, f in (("train", features),
                                                      ("validation", vfeatures))
                                 if isinstance(f, np.memmap)]
        return head, source, val


class _Stages:
    """Runs a stage on the engine: its own optimizer, hooks and checkpoint folder."""

    def __init__(self, run: _Run, out: Path, task: str, strat, *, weight_decay, precision,
                 patience, verbose, checkpoint_every, resume, task_options=None):
        self.run, self.out, self.task, self.strat = run, out, task, strat
        self.task_options = task_options or {}
        self.weight_decay, self.precision, self.patience = weight_decay, precision, patience
        self.verbose, self.checkpoint_every, self.resume = verbose, checkpoint_every, resume

    def optimizer(self, lr):
        """AdamW without decay on biases and normalisation, built in the strategy's scope."""
        import keras

        from zoo.train.precision import wrap_optimizer

        with self.strat.scope():
            opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=self.weight_decay,
                                         name="adamw")
            opt.exclude_from_weight_decay(var_names=NO_DECAY)
            return wrap_optimizer(opt, self.precision)

    def __call__(self, name, target, source, val, n_epochs, lr, whole_epoch=False):
        from zoo.train.engine import Engine, Progress
        from zoo.train.tasks import make_task

        run = self.run
        offset = len(run.history)  # the run's epoch number seeds the order and the augmentation
        n_steps = len(source) if hasattr(source, "__len__") and not _is_dataset(source) else None
        if hasattr(source, "dataset"):
            batches = source
            source = lambda epoch: batches.dataset(epoch + offset)  # noqa: E731
        elif callable(source) and not _is_dataset(source):
            inner = source
            source = lambda epoch: inner(epoch + offset)  # noqa: E731
        hooks = [run.hook(name, self.patience)]
        if self.verbose and not whole_epoch:
            hooks.append(Progress(n_steps, name))
        engine = Engine(
            make_task(self.task, target, **self.task_options),
            self.optimizer(lr),
            self.strat,
            hooks=hooks,
            checkpoint_dir=self.out / "checkpoints" / name,
            checkpoint_every=self.checkpoint_every,
            whole_epoch=whole_epoch,
            chief=run.chief,
        )
        engine.fit(source, n_epochs, val, resume=self.resume)
        return engine


def _stage1(stages: _Stages, sources: _Sources, model, n_epochs, lr, cache_features, strat):
    """(stage 1 summary, cached): the head alone on the frozen backbone, from cache if it can."""
    from zoo.train.feature_cache import DiskCache
    from zoo.train.transfer import freeze, trainable_summary

    freeze(model)
    info = trainable_summary(model)
    cached = False
    if n_epochs:
        target, source, val = model, sources.training(), sources.val()
        if cache_features and sources.policy is None and len(model.outputs) == 1:
            disk = DiskCache(stages.out) if stages.run.chief else None  # workers: memory
            target, source, val = sources.cached(model, source, strat, info, disk)
            cached = True
        stages("stage1", target, source, val, n_epochs, lr, whole_epoch=cached)
        if cached and disk is not None:
            disk.remove()
    return info, cached


def _stage2(stages: _Stages, sources: _Sources, model, n_epochs, lr, monitor, metric,
            unfreeze_from, unfreeze_batchnorm, verbose) -> dict:
    """Stage 2's summary: the unfrozen model, kept only if it beats stage 1 on both metrics."""
    from zoo.train.transfer import trainable_summary, unfreeze

    run = stages.run
    before = (run.best_epoch, run.best_value)
    if before[0] >= 0:  # stage 2 must not end below stage 1 on either validation metric
        other = f"val_{metric}" if monitor == "val_loss" else "val_loss"
        run.floor = {other: run.history[before[0]][other]}
    unfreeze(model, unfreeze_from, batchnorm=unfreeze_batchnorm)
    info = trainable_summary(model)
    stages("stage2", model, sources.training(), sources.val(), n_epochs, lr)
    kept = before[0] < 0 or run.best_epoch != before[0]
    info["kept"] = kept
    if not kept:
        info["note"] = (
            f"stage 2 did not improve {monitor} on stage 1's best {before[1]:.4f} without "
            f"worsening {other} ({run.floor[other]:.4f}); the model keeps stage 1's weights "
            f"(epoch {before[0] + 1})"
        )
    if verbose or not kept:
        shown = f"kept, best {monitor} {run.best_value:.4f}" if kept else info["note"]
        print(f"stage 2: {shown}")
    return info


def _data_record(data: _Data, classes, task, groups, value_range) -> dict:
    """run.json's description of the data: shapes, class counts, how validation was split."""
    counted = task == "classification" and not data.streamed
    return {
        "train": None if data.streamed else list(data.x.shape),
        "validation": None if data.val_streamed else list(data.vx.shape),
        "streamed": data.streamed,
        "classes": classes,
        "train_class_counts": np.bincount(data.y, minlength=classes).tolist() if counted else None,
        "split": "patient" if groups is not None and data.val_data is None else "image",
        "input_range": list(value_range) if value_range else None,
    }


def _check_data_source(data_source) -> None:
    """Refuse a ``data_source`` run.json could not record, before any training."""
    if data_source is None:
        return
    source = getattr(data_source, "source", None)
    if not isinstance(source, dict) or not callable(getattr(data_source, "validation_metrics",
                                                            None)):
        raise InvalidArgumentError(
            f"data_source={type(data_source).__name__}: give an object with a `source` dict and "
            "a `validation_metrics(model)` method (e.g. zoo.train.dicom_folder.DicomFolderData), "
            "or None.")


def _write_record(run: _Run, model, data: _Data, fields: dict, batch_size, task, monitor,
                  data_source=None) -> Path:
    """run.json (``fields``, the best epoch, clinical validation metrics, history) and figures,
    written once; a ``data_source`` adds where streamed data came from and its metrics."""
    from zoo.figures import reliability_diagram, training_curves
    from zoo.outputs import finish_dir

    if data.val_streamed:
        clinical = None if data_source is None else data_source.validation_metrics(model)
    else:
        clinical = _clinical(model, data.vx, data.vy, data.val_groups, batch_size, task)
    if data_source is not None:
        fields["data"]["source"] = data_source.source
        if "split" in data_source.source:
            fields["data"]["split"] = data_source.source["split"]
    best = {
        "epoch": run.best_epoch,
        monitor: run.best_value,
        "checkpoint": str(run.checkpoint),
        "stage": run.history[run.best_epoch]["stage"] if run.best_epoch >= 0 else None,
    }
    content = {**fields, "best": best, "validation_metrics": clinical, "history": run.history}
    record = run.out / "run.json"
    record.write_text(json.dumps(_jsonable(content), indent=2))
    training_curves(record, run.out / "curves.png")
    if clinical and "calibration" in clinical:
        reliability_diagram(clinical["calibration"], run.out / "reliability.png")
    finish_dir(run.out, writer="zoo.finetune")
    return record
