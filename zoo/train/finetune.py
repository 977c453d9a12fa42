"""``zoo.finetune``: the two-stage transfer-learning recipe as the default path.

Stage 1 trains the new head on the frozen backbone (on cached features when possible,
without augmentation either way, so caching does not change the result);
stage 2 unfreezes the backbone from a chosen layer and trains on with a lower learning rate
and a fresh AdamW optimizer. Both stages: decoupled weight decay (not on biases or
normalisation parameters), class weights, early stopping on the validation set with the best
weights restored, the best model saved as ``best.keras``, TensorBoard scalars, a progress
bar, and ``run.json`` (library versions, arguments, metrics per epoch) next to the checkpoint.
Training runs the zoo's own distributed step (zoo.train.trainer) under ``strategy``.
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

from zoo.errors import DataError, InvalidArgumentError

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

    def to_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_value": self.best_value, "monitor": self.monitor,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "record": str(self.record) if self.record else None,
                "log_dir": str(self.log_dir) if self.log_dir else None,
                "cached_stage1": self.cached_stage1, "strategy": self.strategy, "history": self.history}


def as_arrays(data, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32, y int32) from (x, y), an object with .images/.labels, or a tf.data.Dataset of (x, y)."""
    if data is None:
        raise DataError(f"{what} is None; give (images, labels) arrays.")
    if hasattr(data, "images") and hasattr(data, "labels"):
        data = (data.images, data.labels)
    elif hasattr(data, "as_numpy_iterator"):
        xs, ys = [], []
        for item in data.as_numpy_iterator():
            if not isinstance(item, tuple) or len(item) != 2:
                raise DataError(f"{what}: a dataset must yield (image, label) pairs, got {type(item).__name__}.")
            xs.append(item[0])
            ys.append(item[1])
        batched = bool(xs) and np.ndim(ys[0]) == 1
        data = (np.concatenate(xs) if batched else np.stack(xs), np.concatenate(ys) if batched else np.array(ys))
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise DataError(f"{what}: give (images, labels), an object with .images and .labels, or a tf.data.Dataset.")
    x, y = np.asarray(data[0], dtype=np.float32), np.asarray(data[1])
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{what}: images of shape {x.shape}; need (N, H, W) or (N, H, W, C).")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{what}: {len(x)} images but labels of shape {y.shape}; need one integer class per image.")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{what}: labels must be integer class indices (got {y.dtype}).")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be class indices >= 0 (found {y.min()}).")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: images contain NaN or infinity; clean or drop those images.")
    return x, y.astype(np.int32)


def default_augmentation(seed: int):
    """Small geometric jitter that keeps anatomy plausible (no flips: laterality matters)."""
    import keras

    return [keras.layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed, name="aug_translate"),
            keras.layers.RandomRotation(0.02, fill_mode="nearest", seed=seed + 1, name="aug_rotate"),
            keras.layers.RandomZoom(0.05, fill_mode="nearest", seed=seed + 2, name="aug_zoom")]


def _augment_fn(augment, seed: int):
    if augment is None or augment is False:
        return None
    layers = default_augmentation(seed) if augment is True else list(augment)

    def apply(x, y, w):
        for layer in layers:
            x = layer(x, training=True)
        return x, y, w

    return apply


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    import zoo

    return {"zoo": zoo.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.platform()}


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
        raise InvalidArgumentError(f"{name}={value!r}: give one value or a (stage 1, stage 2) pair.")
    return pair


def _build(model_or_name, strat, precision, *, pretrained, num_classes, in_chans, input_shape, dropout):
    import tensorflow as tf

    import zoo
    from zoo.train.precision import policy, rebuild

    if isinstance(model_or_name, str):
        with strat.scope(), policy(precision):
            model = zoo.load(model_or_name, pretrained, in_chans=in_chans, num_classes=num_classes,
                             input_shape=input_shape, dropout=dropout)
        if any(t.dtype != "float32" for t in model.outputs):  # a checkpoint's own top: keep the output float32
            model = rebuild(model, precision, strat)
        return model
    if not hasattr(model_or_name, "get_config") or not hasattr(model_or_name, "inputs"):
        raise InvalidArgumentError(f"model_or_name={model_or_name!r}: give a zoo model name or a Functional keras.Model.")
    if precision == "fp32" and strat is tf.distribute.get_strategy():
        return model_or_name
    return rebuild(model_or_name, precision, strat)


def scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar through TensorFlow's core summary op.

    ``tf.summary.scalar`` lives in the tensorboard package, which TensorFlow 2.21 no longer
    installs; the event (with the scalars plugin's metadata) is the same, and TensorBoard is
    then only needed to look at the logs.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step), metadata=metadata)


class _Stage:
    """Epoch loop shared by both stages: metrics, early stopping, checkpoint, logs."""

    def __init__(self, run, trainer, batches, val_batches, map_fn, name, whole_epoch=False):
        self.run, self.trainer, self.whole_epoch = run, trainer, whole_epoch
        self.batches, self.val_batches, self.map_fn, self.name = batches, val_batches, map_fn, name

    def fit(self, epochs: int, patience: int) -> None:
        import keras

        run, wait = self.run, 0
        for _ in range(epochs):
            epoch = len(run.history)
            bar = keras.utils.Progbar(len(self.batches), verbose=1) if run.verbose else None
            if bar is not None:
                print(f"{self.name} epoch {epoch + 1}")
            t0 = time.perf_counter()
            train = self.trainer.train_epoch(self.batches, epoch, self.map_fn, bar, self.whole_epoch)
            seconds = time.perf_counter() - t0
            val = self.trainer.evaluate(self.val_batches)
            row = {"epoch": epoch, "stage": self.name, "loss": train["loss"], "accuracy": train["accuracy"],
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": round(seconds, 4),
                   "learning_rate": float(keras.ops.convert_to_numpy(self.trainer.optimizer.learning_rate))}
            run.log(row)
            if run.improved(row[run.monitor]):
                wait = 0
                run.save_best(epoch)
            else:
                wait += 1
                if wait >= patience:
                    if run.verbose:
                        print(f"{self.name}: early stop, no {run.monitor} improvement in {patience} epochs")
                    break
        run.restore_best()


class _Run:
    """State of one fine-tuning run: history, the best weights and where things are written."""

    def __init__(self, model, out_dir, monitor, chief, verbose):
        import tensorflow as tf

        self.model, self.monitor, self.chief, self.verbose = model, monitor, chief, verbose
        self.history: list[dict] = []
        self.best_value, self.best_epoch, self.best_weights = None, -1, None
        self.out = Path(out_dir)
        self.checkpoint = self.out / "best.keras"
        self.log_dir = self.out / "logs"
        if chief:
            self.out.mkdir(parents=True, exist_ok=True)
            self.writers = {k: tf.summary.create_file_writer(str(self.log_dir / k)) for k in ("train", "validation")}

    def improved(self, value: float) -> bool:
        better = self.best_value is None or (value < self.best_value if self.monitor.endswith("loss") else value > self.best_value)
        if better:
            self.best_value = float(value)
        return better

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.verbose:
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if self.chief:
            for split, prefix in (("train", ""), ("validation", "val_")):
                with self.writers[split].as_default():
                    scalar("epoch_loss", row[prefix + "loss"], row["epoch"])
                    scalar("epoch_accuracy", row[prefix + "accuracy"], row["epoch"])
                    if split == "train":
                        scalar("learning_rate", row["learning_rate"], row["epoch"])
                self.writers[split].flush()

    def save_best(self, epoch: int) -> None:
        self.best_epoch = epoch
        self.best_weights = self.model.get_weights()
        if self.chief:
            self.model.save(self.checkpoint)

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def finetune(model_or_name, train_data, val_data=None, *, pretrained=None, num_classes: int | None = None,
             in_chans: int | None = None, input_shape=None, dropout: float = 0.0,
             epochs=(5, 5), learning_rate=(1e-3, 1e-4), weight_decay: float = 1e-4, batch_size: int = 32,
             unfreeze_from=None, unfreeze_batchnorm: bool = False, patience: int = 3, monitor: str = "val_loss",
             class_weight=None, augment=True, cache_features: bool = True, validation_split: float = 0.2,
             seed: int = 0, out_dir="finetune_out", strategy="auto", precision: str = "fp32",
             verbose: int = 1) -> FinetuneResult:
    """Fine-tune a zoo model (by name, or a Functional model with ``head_*`` layers) in two stages.

    train_data / val_data: (images, labels) with images (N, H, W[, C]) in the model's input
        range (raw pixel values for zoo models) and integer labels; or an object with .images
        and .labels; or a tf.data.Dataset of (image, label). Without val_data, a seeded
        ``validation_split`` of the training data is held out.
    epochs, learning_rate: one value or a (stage 1, stage 2) pair; stage 2 with 0 epochs is skipped.
    unfreeze_from: where stage 2 unfreezes (layer index, name or block prefix; None: the whole
        backbone). BatchNorm stays frozen unless ``unfreeze_batchnorm``.
    class_weight: None, "balanced" or {class: weight}.
    augment: True (small translation/rotation/zoom), False, or a list of Keras preprocessing layers;
        applied in stage 2 only. Stage 1 sees each image as is, cached or not (a cache holds one
        view per image), so caching never changes its result.
    cache_features: train stage 1 on the frozen backbone's features, computed once.
    strategy: a name for zoo.train.strategy or a tf.distribute.Strategy. precision: fp32, bf16, fp16.
    """
    arguments = {k: v for k, v in dict(locals()).items() if k not in ("train_data", "val_data")}
    import keras

    from zoo.train.distribute import describe, is_chief
    from zoo.train.distribute import strategy as make_strategy
    from zoo.train.feature_cache import compute_features, split_head
    from zoo.train.precision import check_precision, wrap_optimizer
    from zoo.train.trainer import Batches, Trainer, class_weights_to_samples
    from zoo.train.transfer import freeze, trainable_summary, unfreeze

    arguments["model_or_name"] = model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "name", "?")
    epochs, learning_rate = _pair(epochs, "epochs"), _pair(learning_rate, "learning_rate")
    if any(isinstance(e, bool) or not isinstance(e, int | np.integer) or e < 0 for e in epochs) or epochs[0] + epochs[1] == 0:
        raise InvalidArgumentError(f"epochs={epochs}: give non-negative integers, not both 0.")
    if any(not lr > 0 for lr in learning_rate):
        raise InvalidArgumentError(f"learning_rate={learning_rate}: must be positive.")
    if monitor not in ("val_loss", "val_accuracy"):
        raise InvalidArgumentError(f"monitor={monitor!r}: use 'val_loss' or 'val_accuracy'.")
    if not 0 < validation_split < 1:
        raise InvalidArgumentError(f"validation_split={validation_split}: must be in (0, 1).")
    if not isinstance(patience, int) or patience < 1:
        raise InvalidArgumentError(f"patience={patience!r}: must be a positive integer.")
    check_precision(precision)
    strat = make_strategy(strategy)  # first: MultiWorkerMirroredStrategy must precede other TF work

    x, y = as_arrays(train_data, "train_data")
    if val_data is None:
        order = np.random.default_rng(seed).permutation(len(x))
        n_val = max(1, int(round(validation_split * len(x))))
        if n_val >= len(x):
            raise DataError(f"train_data has {len(x)} examples: too few to hold out a validation set; give val_data.")
        (x, y), (vx, vy) = (x[order[n_val:]], y[order[n_val:]]), (x[order[:n_val]], y[order[:n_val]])
    else:
        vx, vy = as_arrays(val_data, "val_data")
    if num_classes is None and isinstance(model_or_name, str):
        num_classes = int(max(y.max(), vy.max())) + 1
    keras.utils.set_random_seed(seed)
    model = _build(model_or_name, strat, precision, pretrained=pretrained, num_classes=num_classes,
                   in_chans=in_chans or x.shape[-1], input_shape=input_shape or x.shape[1:3], dropout=dropout)
    classes = int(model.outputs[0].shape[-1])
    if y.max() >= classes or vy.max() >= classes:
        raise DataError(f"labels go up to {max(y.max(), vy.max())} but the model has {classes} outputs; "
                        "give num_classes= the number of classes.")
    if tuple(x.shape[1:]) != tuple(model.inputs[0].shape[1:]) and None not in model.inputs[0].shape[1:]:
        raise DataError(f"images of shape {x.shape[1:]} but the model takes {tuple(model.inputs[0].shape[1:])}; "
                        "resize the images or build the model with input_shape=.")
    weights = class_weights_to_samples(y, class_weight, classes)

    def optimizer(lr):
        with strat.scope():
            opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, name="adamw")
            opt.exclude_from_weight_decay(var_names=NO_DECAY)
            return wrap_optimizer(opt, precision)

    run = _Run(model, out_dir, monitor, is_chief(), verbose)
    freeze(model)
    stage1_info = trainable_summary(model)
    cached = False
    if epochs[0]:
        target = model
        data, val = x, vx
        if cache_features:
            backbone, head = split_head(model)
            t0 = time.perf_counter()
            data = compute_features(backbone, x, strategy=strat)
            val = compute_features(backbone, vx, strategy=strat)
            stage1_info["cache_seconds"] = round(time.perf_counter() - t0, 4)
            stage1_info["cache_shape"] = list(data.shape[1:])
            target, cached = head, True
        trainer = Trainer(target, optimizer(learning_rate[0]), strat)
        _Stage(run, trainer, Batches(data, y, batch_size, True, seed, weights), Batches(val, vy, batch_size, False),
               None, "stage1", whole_epoch=cached).fit(epochs[0], patience)
    stage2_info = None
    if epochs[1]:
        unfreeze(model, unfreeze_from, batchnorm=unfreeze_batchnorm)
        stage2_info = trainable_summary(model)
        trainer = Trainer(model, optimizer(learning_rate[1]), strat)
        _Stage(run, trainer, Batches(x, y, batch_size, True, seed, weights), Batches(vx, vy, batch_size, False),
               _augment_fn(augment, seed), "stage2").fit(epochs[1], patience)
    run.restore_best()

    record = None
    if run.chief:
        record = run.out / "run.json"
        record.write_text(json.dumps(_jsonable({
            "versions": library_versions(), "arguments": arguments, "strategy": describe(strat),
            "data": {"train": list(x.shape), "validation": list(vx.shape), "classes": classes,
                     "train_class_counts": np.bincount(y, minlength=classes).tolist()},
            "stage1": {**stage1_info, "cached_features": cached}, "stage2": stage2_info,
            "best": {"epoch": run.best_epoch, monitor: run.best_value, "checkpoint": str(run.checkpoint)},
            "history": run.history}), indent=2))
    return FinetuneResult(model=model, history=run.history, best_epoch=run.best_epoch, best_value=run.best_value,
                          monitor=monitor, checkpoint=run.checkpoint if run.chief else None, record=record,
                          log_dir=run.log_dir if run.chief else None, cached_stage1=cached, strategy=describe(strat))
