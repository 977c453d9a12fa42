"""The invariants every registered model keeps, derived from the registry (timm's habit).

One case per name in ``zoo.list_models()``, chosen by the entry's ``task`` (classifiers and
segmenters; a model of any other task, e.g. a generator, is skipped with the reason), built once
at the entry's minimum input size and checked for: forward (shape, finite), backward reaching
every trainable weight, the new head (``num_classes``) and ``freeze()`` leaving only it
trainable, multi-scale feature strides equal to the analytic receptive-field stride, a receptive
field, the ``.keras`` round trip in safe mode, and SavedModel export for the small models with
layers of the zoo's own (see ``exports``). A newly registered model is tested without editing
anything here; VARIANTS only adds option sets whose code paths the defaults leave unbuilt.

Time: building is most of the cost and each model is built once, for all checks. The steps that
cost another build or a trace are bounded, as timm bounds its tests by input size: the round trip
by the layer count (not resnet101/152, densenet121/169/201, inception_v3, densenet121_3d: deeper
repeats of layer classes that resnet50 and googlenet round-trip), export by the parameter count
(not googlenet, its aux variant and the 3D backbones, so CeilMaxPooling2D and SpatialPadding are
round-tripped through .keras here and in test_archs_layers.py but never exported).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo._keras_compat import all_layers
from zoo.models import receptive_field
from zoo.models.registry import get_entry
from zoo.train.transfer import freeze

TASKS = ("classification", "segmentation")
NUM_CLASSES = 3
ROUND_TRIP_MAX_LAYERS = 250  # resnet50 (178), googlenet (217), resnet50_3d (194) round-trip
EXPORT_MAX_PARAMS = 5_000_000  # googlenet (5.6 M) alone costs more than all smaller exports
BATCH = 1  # a second image would double the 3D networks' cost and test nothing more
# Sizes the entry's min_size (the lower bound over all options) is too small for with the
# default options: multiscale_patch_cnn's default 29-pixel patch at scale 3 needs 87.
DEFAULT_SIZE_AT_LEAST = {"multiscale_patch_cnn": 87}
# name: [(options, spatial size or None for the case's own)]: code paths the defaults leave unbuilt
VARIANTS = {
    "alexnet": [({"variant": "2012"}, None)],  # LRN and the two towers (grouped convolutions)
    "googlenet": [({"aux_logits": True}, None)],  # three outputs; aux heads branch off mid-network
    "unet": [({"depth": 2, "base_filters": 4, "upsampling": "bilinear", "norm": "group"}, None),
             ({"encoder": "simple_cnn", "decoder_filters": (8, 8, 8, 8, 8)}, 32),  # nested encoder
             ({"depth": 3, "base_filters": 2, "deep_supervision": True}, None)],  # extra outputs
    "unet3d": [({"depth": 2, "base_filters": 2, "norm": "instance"}, None),
               ({"depth": 2, "base_filters": 2, "deep_supervision": True}, None)],
    "patch_cnn29": [({"n_scalars": 2, "dense": (16,)}, None)],  # second input: scalar features
    "triplanar_cnn": [({"n_scalars": 3, "dense": (16,)}, None)],
}


def _cases():
    for name in zoo.list_models():
        entry = get_entry(name)
        # keras.applications and inflated 3D backbones: slow to build
        marks = [pytest.mark.slow] if entry.family != "zoo" else []
        if entry.task not in TASKS:
            why = f"{name}: task {entry.task!r} has no invariants here; only {', '.join(TASKS)}"
            marks.append(pytest.mark.skip(reason=why))
        yield pytest.param(name, {}, None, id=name, marks=marks)
        for options, size in VARIANTS.get(name, []):
            shown = {k: v for k, v in options.items() if k not in ("depth", "base_filters")}
            label = "-".join(f"{k}={v}" for k, v in shown.items())
            yield pytest.param(name, options, size, id=f"{name}[{label}]", marks=marks)


def test_variants_name_registered_models():
    assert set(VARIANTS) | set(DEFAULT_SIZE_AT_LEAST) <= set(zoo.list_models())


def test_a_model_of_another_task_is_skipped_with_the_reason(monkeypatch):
    """A generator registered later (task "generation") is collected, and skipped, not failed."""
    monkeypatch.setattr(zoo, "list_models", lambda: ["dcgan"])
    entry = SimpleNamespace(task="generation", family="zoo")
    monkeypatch.setitem(globals(), "get_entry", lambda name: entry)
    [case] = _cases()
    [skip] = [m for m in case.marks if m.name == "skip"]
    assert "generation" in skip.kwargs["reason"] and case.id == "dcgan"


def batch(model, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(0, 255, (BATCH, *t.shape[1:])).astype("float32") for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def call(model, x) -> list:
    out = model(x, training=False)
    return list(out) if isinstance(out, list | tuple) else [out]


def exports(model) -> bool:
    """SavedModel export (the cheapest format: no conversion) for small one-input models with a
    layer class of the zoo's own besides the preprocessing: their call() is what export must
    trace. Keras' own layers and ``Normalize`` (in every model) are exported by test_export.py."""
    own = {type(la).__name__ for la in all_layers(model) if type(la).__module__.startswith("zoo.")}
    small = model.count_params() <= EXPORT_MAX_PARAMS
    return len(model.inputs) == 1 and bool(own - {"Normalize"}) and small


def check_backward(model, x):
    """Every trainable weight gets a finite, non-zero gradient (of a random projection)."""
    with tf.GradientTape() as tape:
        outs = call(model, x)
        loss = sum(tf.reduce_sum(o * tf.random.stateless_normal(o.shape, seed=(1, i))) for i, o in enumerate(outs))
    grads = tape.gradient(loss, model.trainable_weights)
    unreached = [w.path for w, g in zip(model.trainable_weights, grads)
                 if g is None or not np.all(np.isfinite(g.numpy())) or not np.any(g.numpy())]
    assert model.trainable_weights and not unreached, unreached


def check_features(model, entry, size):
    """Each ``features_strideN`` layer has analytic stride N (0 across a triplanar pathway's
    plane) and at most ceil(size / N) positions per axis, fewer as N grows."""
    previous = None
    for stride, layer in sorted(entry.feature_layers(model).items()):
        rf = receptive_field(model, layer=layer)
        assert all(s in (0, stride) for s in rf.stride) and stride in rf.stride, (stride, layer, rf)
        shape = tuple(model.get_layer(layer).output.shape[1:-1])
        assert all(1 <= n <= math.ceil(size[0] / stride) for n in shape), (stride, layer, shape)
        assert previous is None or all(a >= b for a, b in zip(previous, shape)), (layer, shape)
        previous = shape


@pytest.mark.numerics
@pytest.mark.parametrize("name, options, size", list(_cases()))
def test_invariants(name, options, size, tmp_path):
    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before
    entry = get_entry(name)
    size = (size or max(entry.min_size, DEFAULT_SIZE_AT_LEAST.get(name, 0)),) * entry.spatial_dims
    model = zoo.load(name, input_shape=size, in_chans=1, num_classes=NUM_CLASSES, **options)
    x = batch(model)

    outs = call(model, x)  # forward at the minimum size
    want = (BATCH, *size, NUM_CLASSES) if entry.task == "segmentation" else (BATCH, NUM_CLASSES)
    assert [tuple(o.shape) for o in outs] == [want] * len(outs)  # auxiliary heads classify too
    assert all(np.isfinite(o.numpy()).all() for o in outs)
    check_backward(model, x)

    if entry.task == "classification":  # the new head: pooled features into head_fc
        assert model.get_layer("head_fc").units == NUM_CLASSES
    rf = receptive_field(model)
    assert len(rf.size) == len(rf.stride) == entry.spatial_dims
    planes = [a for a, s in enumerate(rf.stride) if s == 0]  # triplanar: one plane of the cube
    assert len(planes) <= 1 and all(rf.size[a] == 1 for a in planes)
    assert all(field >= step >= 1 for field, step in zip(rf.size, rf.stride) if step != 0), rf
    check_features(model, entry, size)

    depth = depth_of(name, model)
    if len(all_layers(model)) <= ROUND_TRIP_MAX_LAYERS:
        path = tmp_path / f"{name}.keras"
        model.save(path)
        again = zoo.load_model(path)
        assert zoo.input_contract(again) == zoo.input_contract(model)
        assert_deep_close([a.numpy() for a in call(again, x)], [o.numpy() for o in outs], depth,
                          what=f"{name} .keras round trip ")

    if exports(model):
        from zoo.export import export

        saved = tf.saved_model.load(str(export(model, tmp_path / "saved")))
        got = saved.signatures["serving_default"](image=tf.constant(x))
        assert_deep_close([got[n].numpy() for n in model.output_names], [o.numpy() for o in outs],
                          depth, what=f"{name} SavedModel ")

    freeze(model)  # the transfer default: everything but the head_* layers (auxiliary heads too)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable and all(n.startswith("head_") for n in trainable), trainable
