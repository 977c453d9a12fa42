"""``zoo.ssl.pretrain``: data -> pretext task around a zoo encoder -> training -> registry entry.

Training runs on the zoo's one engine (``zoo.train.engine.Engine``) with the task's trainer
(``zoo.ssl.trainers``): each epoch draws fresh augmentations from the task and serves them in a
seeded order, ``batch_size`` at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from zoo.data.value_range import check_value_range
from zoo.errors import DataError, InputShapeError, InvalidArgumentError
from zoo.ssl.tasks import Data, Task, get_task


@dataclass
class PretrainResult:
    encoder: object  # the trained encoder (feature map output), a Functional keras.Model
    model: object  # the whole pretext model (for BYOL and the adversarial context encoder: the
    # engine task holding its networks, zoo.ssl.trainers)
    history: list[float]  # loss per epoch
    card: object = None  # the WeightCard written, when a tag was given
    evaluation: dict = field(default_factory=dict)
    seconds: float = 0.0


def synthetic_data(task: Task, n: int | None = None, seed: int = 0) -> Data:
    """The zoo's data for ``task``: 64-px phantoms (larger where tiles need it) or volumes."""
    if task.data == "volumes":
        from zoo.data.volumes import make_volumes

        v = make_volumes(n or 32, depth=16, size=32, seed=seed)
        return Data(v.volumes, v.subjects)
    from zoo.data.synthetic import make_phantoms

    return Data(make_phantoms(n or 256, size=max(64, task.min_side(32)), seed=seed).images)


def as_data(data, task: Task, seed: int = 0) -> Data:
    """Accept "synthetic", a Phantoms / Volumes object, a Data, or an array in [0, 255]."""
    if isinstance(data, str):
        if data != "synthetic":
            raise InvalidArgumentError(
                f"data={data!r}: give an array, a Phantoms/Volumes object, or 'synthetic'."
            )
        return synthetic_data(task, seed=seed)
    if isinstance(data, Data):
        out = data
    elif hasattr(data, "volumes") and hasattr(data, "subjects"):
        out = Data(np.asarray(data.volumes), np.asarray(data.subjects))
    elif hasattr(data, "images"):
        out = Data(np.asarray(data.images))
    else:
        out = Data(np.asarray(data))
    a = out.array
    if a.ndim not in (4, 5) or not np.issubdtype(a.dtype, np.number):
        raise DataError(
            f"data of shape {a.shape} ({a.dtype}): give numeric images (N, H, W, C) or volumes (N, "
            "D, H, W, C), channels last; add a trailing axis of 1 for grey-scale."
        )
    if len(a) < 2:
        raise DataError(f"data holds {len(a)} sample(s); pretraining needs at least 2.")
    if not np.isfinite(a).all():
        raise DataError(
            f"data of shape {a.shape} hold NaN or inf values; replace them (e.g. np.nan_to_num) "
            "first."
        )
    check_value_range(a, (0.0, 255.0), "data")
    return Data(a.astype(np.float32, copy=False), out.subjects)


def check_encoder(task: Task, entry, data: Data) -> tuple[int, ...]:
    """The encoder input shape, or a ZooError naming task, encoder and sizes."""
    if entry.spatial_dims != task.dims:
        raise InvalidArgumentError(
            f"task {task.name!r} trains a {task.dims}D encoder but {entry.name} is "
            f"{entry.spatial_dims}D; "
            + (
                "use simple_cnn3d (or another 3D encoder)."
                if task.dims == 3
                else "use a 2D encoder such as simple_cnn."
            )
        )
    task.check_data(data)
    shape = task.encoder_shape(data)
    if min(shape) < entry.min_size:
        size = "x".join(str(s) for s in data.array.shape[1:-1])
        need = task.min_side(entry.min_size)
        raise InputShapeError(
            f"{size} {task.data} are too small for task {task.name!r} with {entry.name}: its "
            f"encoder would see {'x'.join(map(str, shape))} inputs but needs every size >= "
            f"{entry.min_size}. Give {task.data} of at least {need} pixels a side (resize or pad), "
            "or a smaller encoder."
        )
    return shape


def pretrain(
    task: str,
    encoder: str = "simple_cnn",
    data="synthetic",
    *,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    tag: str | None = None,
    out=None,
    seed: int = 0,
    init=None,
    eval_data=None,
    modality: str = "",
    data_description: str = "",
    license: str = "user-provided",
    overwrite: bool = False,
    verbose="auto",
    **task_options,
) -> PretrainResult:
    """Pretrain ``encoder`` (a registered name) on unlabelled ``data`` with pretext ``task``.

    data: images (N, H, W, C) or volumes (N, D, H, W, C) in [0, 255], a Phantoms / Volumes object,
        or "synthetic" (the zoo's phantoms). task_options go to the task (see zoo.ssl.list_tasks()).
    init: weights to start from (a card tag such as "imagenet", a file, or None for random init).
    tag: when given, the encoder weights and a weight card are written (zoo.train.publish), after
        which ``zoo.load(encoder, pretrained=tag)`` loads them; ``out`` is the weights folder
        (default: beside the card in zoo_home()/"cards").
    eval_data: (images, labels) to score the frozen encoder with a linear probe and k-NN (half for
        training the probe, half for testing); the scores go into the card.
    """
    import keras

    from zoo.models.factory import load
    from zoo.models.registry import get_entry

    t0 = time.time()
    _check_counts(epochs=epochs, batch_size=batch_size)
    if tag is not None:
        from zoo.train.publish import check_tag

        check_tag(encoder, tag, overwrite)  # fail before training, not after
    the_task = get_task(task, **task_options)
    entry = get_entry(encoder)
    synthetic = isinstance(data, str) or type(data).__name__ in ("Phantoms", "Volumes")
    data = as_data(data, the_task, seed)
    shape = check_encoder(the_task, entry, data)
    chans = int(data.array.shape[-1])

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    enc = load(encoder, pretrained=init, in_chans=chans, input_shape=shape, num_classes=0,
               pooling=None)
    model = the_task.build(enc)
    if verbose:
        print(f"pretraining {encoder} with {the_task.describe()} on {len(data.array)} {data.kind} "
              f"{data.array.shape[1:]}, {epochs} epochs")
    history = train(the_task, model, data, rng, epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, verbose=verbose)
    evaluation = {}
    if eval_data is not None:
        evaluation = probe(enc, eval_data)
        if verbose:
            print(f"frozen-feature evaluation: {evaluation}")
    result = PretrainResult(enc, model, history, evaluation=evaluation)
    if tag is not None:
        from zoo.models.factory import _looks_like_path, resolve_card
        from zoo.train.publish import publish

        start_from_card = isinstance(init, str) and not _looks_like_path(init)
        card_entry = resolve_card(entry, init, want_top=False) if start_from_card else None
        fields = {
            "min_size": entry.min_size,
            "preprocess": card_entry.preprocess if card_entry else entry.preprocess,
            "input_range": [0.0, 255.0],
            "license": license,
            "source": "zoo.ssl.pretrain",
            "modality": modality
            or (f"synthetic {data.kind} (zoo.data)" if synthetic else "unspecified"),
            "description": f"{encoder} encoder pretrained with {the_task.describe()}",
            "paper": the_task.paper,
            "recipe": the_task.name,
            "data": data_description
            or f"{len(data.array)} {data.kind} of shape {list(data.array.shape[1:])}",
            "final_loss": history[-1],
            "pretrain_seconds": round(time.time() - t0, 1),
            "hyperparameters": {
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "optimizer": "Adam",
                "seed": seed,
                "init": str(init) if init else "random",
                **{k: list(v) if isinstance(v, tuple) else v for k, v in the_task.options.items()},
            },
            "evaluation": evaluation or None,
        }
        if card_entry and card_entry.mean:
            fields.update(mean=list(card_entry.mean), std=list(card_entry.std))
        result.card = publish(enc, encoder, tag, fields, out=out, overwrite=overwrite)
        if verbose:
            print(
                f"wrote {result.card.card_path}; load it with zoo.load({encoder!r}, "
                f"pretrained={tag!r})"
            )
    result.seconds = time.time() - t0
    return result


def _check_counts(**counts) -> None:
    """epochs >= 1 and batch_size >= 2 as plain integers (a bool or float is a caller's slip)."""
    for name, value in counts.items():
        low = 2 if name == "batch_size" else 1
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise InvalidArgumentError(f"{name}={value!r}: must be an integer >= {low}.")


class EpochData:
    """The engine's data: each epoch's fresh augmentations from the task, in a seeded order.

    ``dataset(epoch)`` draws epoch ``epoch``'s (inputs, targets) from the task with the run's
    generator once (the engine also reads the first batch of epoch 0 to check it, which must not
    draw again) and serves them shuffled by ``seed`` and the epoch, ``batch_size`` at a time.
    Floating-point arrays go in as float32.
    """

    def __init__(self, task: Task, data: Data, rng, batch_size: int, seed: int = 0):
        self.task, self.data, self.rng = task, data, rng
        self.batch_size, self.seed = batch_size, seed
        self._epoch, self._arrays = None, None

    def arrays(self, epoch: int):
        """Epoch ``epoch``'s augmentations, drawn from the task once.

        Args:
            epoch: the epoch (0-based); a new one draws afresh, the last one is kept.

        Returns:
            (inputs, targets): an array or a tuple of arrays, and an array.
        """
        if epoch != self._epoch:
            x, y = self.task.epoch(self.data, self.rng)  # fresh augmentations every epoch
            as32 = lambda a: a.astype(np.float32) if a.dtype.kind == "f" else a  # noqa: E731
            x = tuple(as32(np.asarray(a)) for a in x) if isinstance(x, tuple) else as32(x)
            self._epoch, self._arrays = epoch, (x, as32(np.asarray(y)))
        return self._arrays

    def steps(self, epoch: int = 0) -> int:
        """The number of batches of epoch ``epoch``.

        Args:
            epoch: the epoch (0-based).

        Returns:
            ceil(examples / batch_size).
        """
        return -(-len(self.arrays(epoch)[1]) // self.batch_size)

    def dataset(self, epoch: int):
        """Epoch ``epoch`` for the engine.

        Args:
            epoch: the epoch (0-based).

        Returns:
            A ``tf.data.Dataset`` of (inputs, targets) batches in a seeded order.
        """
        import tensorflow as tf

        x, y = self.arrays(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(y))
        x = tuple(a[order] for a in x) if isinstance(x, tuple) else x[order]
        ds = tf.data.Dataset.from_tensor_slices((x, y[order])).batch(self.batch_size)
        return ds.prefetch(2)


def train(task: Task, model, data: Data, rng, *, epochs: int, batch_size: int,
          learning_rate: float, seed: int = 0, verbose="auto") -> list[float]:
    """Train the pretext ``model`` on the engine; the mean training loss of each epoch.

    Args:
        task: the pretext task (it draws the epochs and names the trainer).
        model: what ``task.build`` returned.
        data: the pretraining data.
        rng: the generator of the augmentations.
        epochs: epochs to train.
        batch_size: examples per step.
        learning_rate: the (first) optimizer's learning rate (Adam).
        seed: the seed of the per-epoch order.
        verbose: 0 quiet, 2 one line per epoch, 1 or "auto" a progress bar per epoch.

    Returns:
        The mean training loss of each epoch (the generator's for the context encoder).
    """
    from zoo.train.engine import Engine

    trainer = task.trainer(model)
    source = EpochData(task, data, rng, batch_size, seed)
    engine = Engine(trainer, trainer.new_optimizers(learning_rate),
                    hooks=_progress(verbose, epochs, source))
    history = engine.fit(source, epochs)
    return [float(row[trainer.history_key]) for row in history]


def _progress(verbose, epochs: int, source: EpochData) -> list:
    """Keras' ``verbose`` convention: nothing (0), a line per epoch (2), else a progress bar."""
    from zoo.train.engine import Hook, Progress

    if not verbose:
        return []
    if verbose != 2:
        return [Progress(source.steps(), name="pretrain")]

    class EpochLine(Hook):
        def on_epoch_end(self, engine, epoch, logs):
            losses = ", ".join(f"{k} {v:.4f}" for k, v in logs.items()
                               if k not in ("epoch", "seconds", "learning_rate"))
            print(f"epoch {epoch + 1}/{epochs}: {losses} ({logs['seconds']:.1f} s)", flush=True)

    return [EpochLine()]


def probe(encoder, eval_data, k: int = 5) -> dict:
    """Linear probe and k-NN accuracy of frozen features (half ``eval_data`` trains, half tests)."""
    from zoo.ssl.evaluate import encoder_features, knn_accuracy, linear_probe

    images, labels = (
        (eval_data.images, eval_data.labels) if hasattr(eval_data, "labels") else eval_data
    )
    images, labels = np.asarray(images, np.float32), np.asarray(labels).astype(int)
    if len(images) != len(labels) or len(images) < 4:
        raise DataError(
            f"eval_data: {len(images)} images and {len(labels)} labels; give at least 4 of each, "
            "equally many."
        )
    # e.g. a tile encoder scored on whole images
    if tuple(images.shape[1:]) != tuple(encoder.input.shape[1:]):
        from zoo.models.factory import load

        resized = load(encoder.name, in_chans=int(images.shape[-1]), input_shape=images.shape[1:-1],
                       num_classes=0, pooling=None)
        # convolutional weights do not depend on the input size
        resized.set_weights(encoder.get_weights())
        encoder = resized
    f = encoder_features(encoder, images)
    half = len(f) // 2
    return {"linear_probe_accuracy": linear_probe(f[:half], labels[:half], f[half:], labels[half:]),
            "knn_accuracy": knn_accuracy(f[:half], labels[:half], f[half:], labels[half:], k),
            "eval_images": int(len(f))}

