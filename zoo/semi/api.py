"""``zoo.semi.fit``: check everything, build the method's task, train it on the engine, publish.

Every check (method, options, weights, labels, shapes, value ranges, tag) runs before a model is
built, so bad input is a ZooError in a second, not after an epoch. A named network is built with
its own classifier (``zoo.load(arch, include_top=True, num_classes=K)``), so the published card
(``include_top = true``) rebuilds exactly the trained classifier: ``zoo.load(arch,
pretrained=tag)``. ``arch.tag`` starts from that card's backbone weights (copied by layer name).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.semi.data import SemiStream, _is_dataset, _positive, check_inputs
from zoo.semi.methods import METHODS, SemiTask, TaskState, check_weight


@dataclass
class SemiResult:
    """What ``fit`` returns: the trained classifier, the engine's history, the card (if tagged)."""

    classifier: object
    history: list
    card: object = None
    task: object = None
    info: dict = field(default_factory=dict)


def build_task(method: str, model, *, num_classes: int, unlabelled_weight: float = 1.0,
               seed: int = 0, **options) -> SemiTask:
    """The task of ``method`` for ``model``; unknown names, options and weights fail here."""
    spec = METHODS.get(method)
    check_weight(unlabelled_weight)
    return spec.task(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                     seed=seed, **options)


def _arrays(labelled, unlabelled, num_classes):
    """(x, y, u, num_classes) as arrays, checked (None for the parts given as pipelines)."""
    if _is_dataset(labelled):
        if num_classes is None:
            raise InvalidArgumentError("labelled= is a tf.data pipeline: pass num_classes=.")
        return None, None, None, num_classes
    if not isinstance(labelled, tuple | list) or len(labelled) != 2:
        raise InvalidArgumentError(
            "labelled= must be (images, labels) arrays or a tf.data.Dataset of batches.")
    x, y = np.asarray(labelled[0]), np.asarray(labelled[1])
    if num_classes is None:
        num_classes = max(2, int(np.max(y)) + 1) if y.size else 2
    if _is_dataset(unlabelled):
        check_inputs(x, y, x[:1], num_classes)
        return x, y, None, num_classes
    u = np.asarray(unlabelled)
    check_inputs(x, y, u, num_classes)
    return x, y, u, num_classes


def _check_val(val, x) -> tuple | None:
    if val is None:
        return None
    if not isinstance(val, tuple | list) or len(val) != 2:
        raise InvalidArgumentError("val= must be (images, labels) arrays.")
    vx, vy = np.asarray(val[0], np.float32), np.asarray(val[1])
    if x is not None and vx.shape[1:] != x.shape[1:]:
        raise DataError(f"validation images of shape {vx.shape[1:]} but training ones of shape "
                        f"{x.shape[1:]}; give both the same shape.")
    return vx, vy


def check_val_outside_pool(vx, u) -> None:
    """A DataError when a validation image is also in the unlabelled pool (trained on)."""
    if vx is None or u is None:
        return
    import hashlib

    def digests(a):
        a = np.ascontiguousarray(a, np.float32)
        return {hashlib.sha1(row.tobytes()).hexdigest(): i for i, row in enumerate(a)}

    pool = digests(u)
    shared = [i for d, i in digests(vx).items() if d in pool]
    if shared:
        raise DataError(
            f"{len(shared)} validation images (e.g. #{shared[0]}) are also in the unlabelled pool, "
            "which is trained on; keep validation and test patients out of the unlabelled images.")


def _copy_backbone(source, target) -> None:
    """Weights of every layer of ``target`` that ``source`` has by name (not the new top)."""
    names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def classifier_for(model_or_name, num_classes: int, shape: tuple):
    """A softmax classifier: a zoo network with its own top, or the user's model, checked."""
    from zoo.models.factory import load

    if isinstance(model_or_name, str):
        arch, _, tag = model_or_name.partition(".")
        kwargs = dict(in_chans=shape[-1], input_shape=tuple(shape[:-1]))
        model = load(arch, include_top=True, num_classes=num_classes, **kwargs)
        if tag:
            _copy_backbone(load(model_or_name, num_classes=0, **kwargs), model)
        return model
    outputs = getattr(model_or_name, "outputs", None)
    if not outputs or int(outputs[0].shape[-1]) != num_classes:
        raise InvalidArgumentError(
            f"the model gives {outputs[0].shape[-1] if outputs else 'no'} outputs for "
            f"{num_classes} classes; give a softmax classifier with num_classes outputs "
            "(zoo.load(name, num_classes=...)).")
    want = tuple(model_or_name.inputs[0].shape[1:])
    if any(w is not None and w != s for w, s in zip(want, shape, strict=False)) or len(
            want) != len(shape):
        raise DataError(f"the model takes inputs of shape {want} but the images are {shape}.")
    return model_or_name


def _check_tag(tag, model_or_name, overwrite) -> None:
    if tag is None:
        return
    if not isinstance(model_or_name, str):
        raise InvalidArgumentError(
            "tag= publishes a zoo network by name; give model_or_name as an architecture name "
            "(e.g. 'simple_cnn'), or save your own model with model.save(...).")
    from zoo.train.publish import check_tag

    check_tag(model_or_name.partition(".")[0], tag, overwrite)


def fit(method: str, model_or_name, labelled, unlabelled, *, num_classes: int | None = None,
        val=None, epochs: int = 10, batch_size: int = 32,
        unlabelled_batch_size: int | None = None, unlabelled_weight: float = 1.0,
        learning_rate: float = 1e-3, seed: int = 0, tag: str | None = None, out=None,
        overwrite: bool = False, verbose: int = 0, checkpoint_dir=None,
        checkpoint_every: int | None = None, resume: bool = False, recompute_bn: bool = True,
        **options) -> SemiResult:
    """Train a classifier with semi-supervised ``method`` on labelled and unlabelled images.

    Args:
        method: a name in ``zoo.semi.list_methods()`` ("supervised" is the baseline).
        model_or_name: an architecture ("simple_cnn"), "arch.tag" (start from that card's
            backbone) or a Keras softmax classifier.
        labelled: (images, labels) arrays, or a tf.data.Dataset of (x, y[, w]) batches.
        unlabelled: images (same shape and value range), or a tf.data.Dataset of batches.
        num_classes: default max(label) + 1. val: (images, labels) for per-epoch validation.
        epochs: passes over the unlabelled images. batch_size / unlabelled_batch_size: images
            of each kind per step. unlabelled_weight: the unlabelled loss's weight (0: the
            supervised run exactly). learning_rate: Adam's. seed: fixes every random draw.
        tag: publish the classifier as card ``arch.tag`` (``zoo.load(arch, pretrained=tag)``);
            ``out``: the weights folder; ``overwrite``: replace an own card of that tag.
        checkpoint_dir: the engine's checkpoints (every epoch, and every ``checkpoint_every``
            steps); ``resume``: continue from the newest one with the same call, the method's
            own state (ramp-up step, ensembles, teacher, admitted pseudo-labels) included.
        recompute_bn: at the end, set the returned classifier's BatchNorm moving statistics to
            those of the labelled + unlabelled images under its final weights
            (``zoo.train.batchnorm.recompute_batchnorm``); every method and the baseline alike,
            so weight 0 still is the supervised run. False: the moving averages as training
            left them.
        **options: the method's own (``METHODS[method].options()``), e.g. ``tau`` of FixMatch.

    Returns:
        SemiResult(classifier, history, card, task).

    Raises:
        UnknownNameError, InvalidArgumentError, DataError: before any training.
    """
    spec = METHODS.get(method)
    spec.check_options(options)
    if isinstance(model_or_name, str):  # an unknown network: the registry's error, first
        from zoo.models.registry import get_entry

        get_entry(model_or_name.partition(".")[0])
    weight = check_weight(unlabelled_weight)
    _positive(epochs, "epochs")
    if not isinstance(recompute_bn, bool):
        raise InvalidArgumentError(f"recompute_bn={recompute_bn!r}: give True (BatchNorm "
                                   "statistics of the final weights) or False (the moving ones).")
    if resume and checkpoint_dir is None:
        raise InvalidArgumentError("resume=True continues from checkpoint_dir=; give the folder "
                                   "the interrupted run wrote its checkpoints to.")
    x, y, u, num_classes = _arrays(labelled, unlabelled, num_classes)
    vxy = _check_val(val, x)
    check_val_outside_pool(vxy[0] if vxy else None, u)
    _check_tag(tag, model_or_name, overwrite)
    stream = SemiStream(labelled if x is None else (x, y), unlabelled if u is None else u,
                        batch_size=batch_size, unlabelled_batch_size=unlabelled_batch_size,
                        seed=seed)
    return _train(spec, model_or_name, stream, num_classes, vxy, epochs=epochs,
                  weight=weight, learning_rate=learning_rate, seed=seed, tag=tag, out=out,
                  overwrite=overwrite, verbose=verbose, options=options,
                  recompute_bn=recompute_bn, checkpoints=dict(checkpoint_dir=checkpoint_dir,
                                   checkpoint_every=checkpoint_every, resume=bool(resume)))


def _stream_images(stream, limit: int = 100):
    """The labelled then the unlabelled images of ``stream``, in batches of the unlabelled batch
    size (a tf.data pipeline: its batches, at most ``limit`` of an endless one)."""
    import tensorflow as tf

    def from_dataset(ds):
        finite = int(ds.cardinality()) >= 0
        for item in (ds if finite else ds.take(limit)):
            yield tf.cast(item[0] if isinstance(item, tuple | list) else item, tf.float32)

    size = stream.unlabelled_batch_size
    for part in (stream.labelled, stream.unlabelled):
        if _is_dataset(part):
            yield from from_dataset(part)
            continue
        images = part[0] if isinstance(part, tuple) else part
        for start in range(0, len(images), size):
            yield tf.constant(images[start:start + size], tf.float32)


def _image_shape(stream) -> tuple:
    if not _is_dataset(stream.labelled):
        return tuple(stream.labelled[0].shape[1:])
    spec = stream.labelled.element_spec[0]
    return tuple(spec.shape[1:])


def _train(spec, model_or_name, stream, num_classes, vxy, *, epochs, weight, learning_rate,
           seed, tag, out, overwrite, verbose, options, checkpoints,
           recompute_bn=True) -> SemiResult:
    import keras

    from zoo.train.batches import Batches
    from zoo.train.engine import Engine, Progress

    keras.utils.set_random_seed(seed)
    model = classifier_for(model_or_name, num_classes, _image_shape(stream))
    task = spec.task(model, num_classes=num_classes, unlabelled_weight=weight, seed=seed,
                     **options)
    if task.needs_index and _is_dataset(stream.unlabelled) and weight > 0:
        raise DataError(f"method={spec.name!r} keeps state per unlabelled image: give the "
                        "unlabelled images as an array, not a tf.data pipeline.")
    if not _is_dataset(stream.unlabelled):
        task.prepare(stream, epochs)
    hooks = [TaskState(task), *task.hooks()] + (
        [Progress(len(stream), spec.name)] if verbose else [])
    # one compiled step per batch: a method may add metrics in training only (the whole-epoch
    # mode needs the evaluation step's metric layout)
    resume = checkpoints.pop("resume")
    engine = Engine(task, keras.optimizers.Adam(learning_rate), hooks=hooks, **checkpoints)
    t0 = time.time()
    val = None if vxy is None else Batches(*vxy, batch_size=256, shuffle=False)
    history = engine.fit(stream, epochs, val=val, resume=resume)
    if recompute_bn:
        from zoo.train.batchnorm import recompute_batchnorm

        recompute_batchnorm(task.final_classifier(), _stream_images(stream),
                            like=task.classifier)
    result = SemiResult(task.final_classifier(), history, task=task,
                        info={"seconds": round(time.time() - t0, 1), "method": spec.name})
    if tag is not None:
        result.card = _publish(task, spec, model_or_name, tag, out, overwrite, stream, history,
                               dict(epochs=epochs, unlabelled_weight=weight,
                                    recompute_bn=recompute_bn,
                                    learning_rate=learning_rate, seed=seed, **options))
    return result


def _publish(task, spec, name, tag, out, overwrite, stream, history, hyper):
    from zoo.hub.cards import get_card
    from zoo.models.registry import get_entry

    arch, _, init = name.partition(".")
    start = get_card(name) if init else None
    entry = get_entry(arch)
    n_lab = len(stream.labelled[0]) if not _is_dataset(stream.labelled) else "a pipeline of"
    n_unl = len(stream.unlabelled) if not _is_dataset(stream.unlabelled) else "a pipeline of"
    fields = {"num_classes": task.num_classes, "source": "zoo.semi.fit",
              "preprocess": start.preprocess if start else entry.preprocess}
    if start is not None and start.mean:
        fields.update(mean=list(start.mean), std=list(start.std))
    return publish_semi(task.final_classifier(), arch, tag, recipe=spec.name,
                        description=f"{arch} classifier trained semi-supervised with {spec.name}",
                        data=f"{n_lab} labelled and {n_unl} unlabelled images", history=history,
                        hyper=hyper, out=out, overwrite=overwrite, **fields)


def _card_value(value):
    """A hyperparameter as TOML can hold it: a Keras model (M1 + M2's m1) by its weights' name."""
    if hasattr(value, "count_params"):
        return str(getattr(value, "zoo_weights", None) or value.name)
    if isinstance(value, tuple | list):
        return [_card_value(v) for v in value]
    return value


def publish_semi(model, arch: str, tag: str, *, recipe: str, description: str, data: str,
                 history: list, hyper: dict, out=None, overwrite: bool = False, **fields):
    """Card ``arch.tag`` for a semi-supervised model (every method's, SDNet's too): the model
    with its own top (``include_top``), the method (``recipe``) and its options
    (``hyperparameters``), the data, the last loss; ``fields``: the task's own (classes,
    preprocessing, input range, builder options).

    Returns:
        The WeightCard (``zoo.load(arch, pretrained=tag)`` rebuilds ``model``).
    """
    from zoo.train.publish import publish

    card = {
        "include_top": True,
        "input_range": [0.0, 255.0],
        "license": "same as the training data",
        "source": "zoo.semi",
        "description": description,
        "recipe": recipe,
        "data": data,
        "final_loss": float(history[-1]["loss"]) if history else float("nan"),
        "hyperparameters": {k: _card_value(v) for k, v in hyper.items() if v is not None},
        **fields,
    }
    return publish(model, arch, tag, card, out=out, overwrite=overwrite)
