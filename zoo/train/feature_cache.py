"""Feature caching: with the backbone frozen, compute its features once and train the head on them.

The model is cut in two at the start of its *head*: the longest chain of single-input layers
ending at the output that holds no frozen weights, moved forward past every weightless
deterministic layer (activations, pooling, global pooling, flatten) so the cache holds small
pooled vectors. The head starts at the first layer with weights or randomness (a dropout
layer, which owns a SeedGenerator), and reuses the model's own layer objects, so training it
trains the model.

Same result rule: the frozen backbone runs in inference mode both ways (frozen BatchNorm
does so in Keras 3), so the cached and the uncached stage 1 reach the same head weights for
the same seed and data order -- provided the inputs are not randomly augmented (a cache
holds one view of each image; stage 1 with a cache trains without augmentation) and the
frozen part holds no dropout.

Memory or disk: features are collected in memory while they fit in ``memory_budget`` bytes
(float32, 4 bytes per value: e.g. ResNet-50's 2048 pooled values are 8 KiB per image, so 1 GiB
holds ~130k images); the first batch that would pass the budget moves the collection to a raw
float32 file in the run folder (``feature_cache/NAME.f32``, claimed and removed under the
``zoo.outputs`` rule), which stage 1 then reads batch by batch through ``numpy.memmap``
(``zoo.train.batches.Batches`` streams a memmap in the same seeded order as an array). The
features are the same bytes either way, so both modes train to the same head.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from zoo._keras_compat import layer_inputs, producing_layer
from zoo.errors import InvalidArgumentError


def _fixed(layer) -> bool:
    """A layer without weights and without a random seed: its output can be cached."""
    import keras

    return not layer.weights and not any(
        isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()
    )


def _single_input_layer(tensor):
    """The layer that produced ``tensor`` and its one input tensor (None when it has several)."""
    inputs = layer_inputs(tensor)
    return producing_layer(tensor), (inputs[0] if len(inputs) == 1 else None)


def split_head(model):
    """(backbone, head): backbone maps the model input to the cached features, head maps them to the
    output.

    Raises InvalidArgumentError when nothing is frozen, when the model has several outputs,
    or when a trainable weight lies before the head (then there is nothing fixed to cache).
    """
    import keras

    if len(model.outputs) != 1:
        raise InvalidArgumentError(
            f"feature caching needs a one-output model; {model.name!r} has {len(model.outputs)}."
        )
    chain, tensor = [], model.outputs[0]
    while True:
        layer, parent = _single_input_layer(tensor)
        if (
            parent is None
            or isinstance(layer, keras.layers.InputLayer)
            or layer.non_trainable_weights
            or not layer.trainable
            and layer.weights
        ):
            break
        chain.append(layer)
        tensor = parent
    chain.reverse()
    while chain and _fixed(chain[0]):
        tensor = chain.pop(0).output
    if not chain:
        raise InvalidArgumentError(
            f"model {model.name!r} has no trainable head after a frozen backbone; freeze the "
            "backbone first (zoo.train.transfer.freeze) or train without a feature cache."
        )
    backbone = keras.Model(model.inputs, tensor, name=f"{model.name}_cached_part")
    if backbone.trainable_weights:
        first = next(
            layer.name for layer in backbone.layers if layer.trainable and layer.trainable_weights
        )
        raise InvalidArgumentError(
            f"layer {first!r} of {model.name!r} is trainable but lies before the head; a feature "
            "cache would hold it fixed. Freeze the backbone (zoo.train.transfer.freeze) or pass "
            "cache_features=False."
        )
    features = keras.Input(shape=tuple(tensor.shape[1:]), dtype="float32", name="features")
    x = features
    for layer in chain:
        x = layer(x)
    return backbone, keras.Model(features, x, name=f"{model.name}_head")


MEMORY_BUDGET = 1 << 30  # bytes of cached features held in memory before they go to disk


def compute_features(backbone, x: np.ndarray, batch_size: int = 64, strategy=None, *,
                     disk: DiskCache | None = None, name: str = "features",
                     memory_budget: int | None = None):
    """The backbone's inference-mode output for every input, as one float32 array.

    With ``disk``, features beyond ``memory_budget`` bytes go to its folder and the result is a
    read-only ``numpy.memmap`` (see the module docstring).
    """
    batches = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    return collect(feature_batches(backbone, batches, strategy), disk, name, memory_budget)


def feature_batches(backbone, batches, strategy=None):
    """Yield the backbone's float32 features of each batch of images, one batch at a time."""
    import tensorflow as tf

    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    with scope:
        for batch in batches:
            batch = tf.convert_to_tensor(batch)
            yield _feature_function(backbone, batch)(batch).numpy()


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _feature_function(backbone, batch):
    """The backbone's inference function for batches like ``batch``, traced once per backbone,
    input dtype and image shape for any batch size: the training and the validation pass (and a
    last, smaller batch) share one trace (ResNet-50: ~2 s per trace saved on 2 cores).

    Its concrete function, called directly: through the ``tf.function`` each new backbone's
    trace counted towards TensorFlow's frequent-retracing warning (one Python code object for
    all of them), which fired from the third fine-tuning run in a process although nothing was
    traced twice (zoo.train.engine.CompiledStep has the details)."""
    import tensorflow as tf

    functions = _FUNCTIONS.setdefault(backbone, {})
    key = (batch.dtype, tuple(batch.shape[1:]))
    if key not in functions:
        spec = tf.TensorSpec((None, *batch.shape[1:]), batch.dtype)
        model = weakref.ref(backbone)  # the cache must not keep the backbone alive
        functions[key] = tf.function(
            lambda x: tf.cast(model()(x, training=False), tf.float32), input_signature=[spec])
    return functions[key].get_concrete_function()


def check_budget(memory_budget) -> int:
    """The budget in bytes (None: ``MEMORY_BUDGET``); InvalidArgumentError for anything else."""
    if memory_budget is None:
        return MEMORY_BUDGET
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | np.integer) or (
            memory_budget < 0):
        raise InvalidArgumentError(
            f"memory_budget={memory_budget!r}: give the bytes of features to hold in memory (an "
            "integer >= 0; 0 puts every feature on disk) or None for 1 GiB.")
    return int(memory_budget)


def collect(parts, disk: DiskCache | None = None, name: str = "features",
            memory_budget: int | None = None):
    """Concatenate float32 feature batches: in memory up to ``memory_budget`` bytes, then (with
    ``disk``) in the raw file ``NAME.f32`` of its folder, returned as a read-only memmap."""
    budget = check_budget(memory_budget)
    held, size, count, file, path = [], 0, 0, None, None
    try:
        for part in parts:
            part = np.ascontiguousarray(part, np.float32)
            size, count = size + part.nbytes, count + len(part)
            if file is None and disk is not None and size > budget:
                path = disk.file(name)
                file = open(path, "wb")  # noqa: SIM115 - closed below, also on error
                for earlier in held:
                    file.write(earlier.tobytes())
                held = []
            if file is not None:
                file.write(part.tobytes())
            else:
                held.append(part)
    finally:
        if file is not None:
            file.close()
    if path is None:
        return np.concatenate(held)
    disk.finish()
    return np.memmap(path, np.float32, "r", shape=(count, *part.shape[1:]))


class DiskCache:
    """A run folder's ``feature_cache/``: claimed when the first feature goes to disk, removed
    after stage 1, both through ``zoo.outputs`` (a folder holding anything the cache did not
    write is refused, never deleted)."""

    NAMES = ("train.f32", "validation.f32")

    def __init__(self, run_dir):
        self.folder = Path(run_dir) / "feature_cache"
        self.claimed = False

    def file(self, name: str) -> Path:
        """The path of cache file ``name``, the folder claimed first."""
        from zoo.outputs import claim_dir

        if not self.claimed:
            claim_dir(self.folder, writer="zoo.feature_cache", overwrite=True, names=self.NAMES)
            self.claimed = True
        return self.folder / f"{name}.f32"

    def finish(self) -> None:
        from zoo.outputs import finish_dir

        finish_dir(self.folder, writer="zoo.feature_cache")

    def remove(self) -> None:
        """Delete the cache once stage 1 is done."""
        import shutil

        from zoo.outputs import check_target

        if self.claimed and self.folder.exists():
            check_target(self.folder, overwrite=True)
            shutil.rmtree(self.folder)
            self.claimed = False
