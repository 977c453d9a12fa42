"""The same invariants over every model this branch registers (timm's habit).

Forward on a small input, backward reaches every trainable weight, a new head has the right
shape, freeze() leaves only the head trainable, multi-scale features have the documented sizes (computed by hand below), and the
model round-trips through a .keras file with safe_mode=True.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.train.transfer import freeze, unfreeze

# name: (small input (spatial), options, {stride: feature size by hand}, heavy)
CASES = {
    "alexnet": ((64, 64), {}, {8: 7, 16: 3, 32: 1}, False),  # 68 -> conv 15 -> pool 7 -> 3 -> 1
    "alexnet_2012": ((64, 64), {"variant": "2012"}, {8: 7, 16: 3, 32: 1}, False),
    "googlenet": ((32, 32), {}, {4: 8, 8: 4, 16: 2, 32: 1}, False),
    "googlenet_aux": ((32, 32), {"aux_logits": True}, {4: 8, 8: 4, 16: 2, 32: 1}, False),
    "unet": ((32, 32), {"depth": 2, "base_filters": 4}, {1: 32, 2: 16, 4: 8}, False),
    "unet_bilinear_group": ((32, 32), {"depth": 2, "base_filters": 4, "upsampling": "bilinear", "norm": "group"},
                            {1: 32, 2: 16, 4: 8}, False),
    "unet_encoder": ((32, 32), {"encoder": "simple_cnn", "decoder_filters": (8, 8, 8, 8, 8)},
                     {1: 32, 2: 16, 4: 8, 8: 4, 16: 2}, False),
    "unet3d": ((16, 16, 16), {"depth": 2, "base_filters": 2, "norm": "instance"}, {1: 16, 2: 8, 4: 4}, False),
    "dilated_cnn": ((32, 32), {"filters": 4, "head_filters": 8}, {1: 32}, False),
    "patch_cnn29": ((29, 29), {"n_scalars": 2, "dense": (16,)}, {2: 12, 4: 4}, False),  # 29 -> 25 -> 12 -> 8 -> 4
    "multiscale_patch_cnn": ((87, 87), {"dense": (16,)}, {2: 12, 4: 4}, False),
    "triplanar_cnn": ((29, 29, 29), {"n_scalars": 3, "dense": (16,)}, {2: 12, 4: 4}, False),
    "resnet50_3d": ((32, 32, 32), {}, {2: 16, 4: 8, 8: 4, 16: 2, 32: 1}, True),
    "densenet121_3d": ((32, 32, 32), {}, {2: 16, 4: 8, 8: 4, 16: 2, 32: 1}, True),
    "vgg16_3d": ((32, 32, 32), {}, {2: 16, 4: 8, 8: 4, 16: 2, 32: 1}, True),
}
NEW_ARCHS = {"alexnet", "googlenet", "unet", "unet3d", "dilated_cnn", "patch_cnn29", "multiscale_patch_cnn",
             "triplanar_cnn", "resnet50_3d", "densenet121_3d", "vgg16_3d"}


def arch_of(case: str) -> str:
    return next(a for a in sorted(NEW_ARCHS, key=len, reverse=True) if case.startswith(a))


def test_every_new_registered_model_is_covered():
    assert NEW_ARCHS <= set(zoo.list_models())
    assert {arch_of(c) for c in CASES} == NEW_ARCHS


def batch(model, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(0, 255, (2, *t.shape[1:])).astype("float32") for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


@pytest.mark.numerics
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if CASES[c][3] else c for c in CASES])
def test_invariants(case, tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before (no unlucky dead unit)
    size, options, feature_sizes, _ = CASES[case]
    arch = arch_of(case)
    segmentation = zoo.model_info(arch)["task"] == "segmentation"
    model = zoo.load(arch, input_shape=size, in_chans=1, num_classes=3, **options)
    x = batch(model)

    with tf.GradientTape() as tape:
        outs = model(x, training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        loss = sum(tf.reduce_sum(o * tf.random.stateless_normal(o.shape, seed=(1, i))) for i, o in enumerate(outs))
    assert tuple(outs[0].shape) == ((2, *size, 3) if segmentation else (2, 3))
    assert all(np.isfinite(o.numpy()).all() for o in outs)
    grads = tape.gradient(loss, model.trainable_weights)
    unreached = [w.path for w, g in zip(model.trainable_weights, grads) if g is None or not np.any(g.numpy())]
    assert not unreached, unreached

    freeze(model)  # the transfer helpers: everything but the head_* layers
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    if options.get("aux_logits"):  # freeze() works by layer position; aux heads branch off mid-network
        trainable -= {"aux1_fc2", "aux2_fc2"}
    assert trainable and all(name.startswith("head_") for name in trainable), trainable
    unfreeze(model)

    plain = {k: v for k, v in options.items() if k != "aux_logits"}  # auxiliary heads need classes, not features
    features = zoo.load(arch, input_shape=size, in_chans=1, features=True, **plain)
    names = [t._keras_history.operation.name for t in features.outputs]
    got = {int(n.removeprefix("features_stride")): int(t.shape[1]) for n, t in zip(names, features.outputs)}
    assert got == feature_sizes

    path = tmp_path / f"{case}.keras"
    model.save(path)
    again = zoo.load_model(path)
    after = again(x, training=False)
    after = after if isinstance(after, list | tuple) else [after]
    assert len(after) == len(outs)
    assert_deep_close([b.numpy() for b in after], [a.numpy() for a in outs], depth_of(arch),
                      what=f"{case} .keras round trip ")
