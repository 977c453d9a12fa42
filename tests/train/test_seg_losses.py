"""Segmentation losses (zoo.train.seg_losses), deep supervision and task='segmentation' fine-tuning.

Every loss value is checked against a numpy reference written as explicit loops over images,
classes and pixels (2D and 3D, multi-class and multi-label, with class weights); the Dice
gradient against central differences in float64; the identities the docs promise (perfect
prediction, focal with gamma=0 is cross-entropy, Tversky 0.5/0.5 is Dice with doubled smoothing,
two-class softmax focal is the sigmoid focal); the deep-supervision loss against the weighted
sum by hand; and a small U-Net fine-tuned on phantom lesions against its untrained self.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError
from zoo.models.unet import main_output
from zoo.train.engine import Engine
from zoo.train.finetune import Augment, _AugmentedBatches, finetune
from zoo.train.seg_losses import (
    SEG_LOSSES,
    class_weights_from_masks,
    deep_supervision_weights,
    segmentation_loss,
)
from zoo.train.tasks import Segmentation

EPS = 1e-7


# --- numpy references: loops, one image and one class at a time ----------------------------


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _class_mean(values, w):
    return sum(wk * v for wk, v in zip(w, values)) / sum(w)


def ref_region(t, p, w, kind, smooth, a=0.5, b=0.5, gamma=1.0):
    """1 - mean Dice / Tversky, or the focal Tversky sum, per image."""
    out = []
    for ti, pi in zip(t, p):
        per = []
        for k in range(t.shape[-1]):
            tk, pk = ti[..., k].ravel(), pi[..., k].ravel()
            tp, fp, fn = (tk * pk).sum(), ((1 - tk) * pk).sum(), (tk * (1 - pk)).sum()
            if kind == "dice":
                per.append(1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth))
            else:
                index = (tp + smooth) / (tp + a * fp + b * fn + smooth)
                per.append(max(1 - index, EPS) ** gamma if kind == "focal_tversky" else 1 - index)
        out.append(_class_mean(per, w))
    return np.array(out)


def ref_pixel(t, p, w, multilabel, gamma=0.0, alpha=None):
    """Pixel-averaged (focal) cross-entropy per image, class-weighted."""
    n, k = len(t), t.shape[-1]
    tt, pp = t.reshape(n, -1, k), np.clip(p.reshape(n, -1, k), EPS, 1)
    out = []
    for ti, pi in zip(tt, pp):
        terms = []
        for tpix, ppix in zip(ti, pi):
            if multilabel:
                for c in range(k):
                    q, y = ppix[c], tpix[c]
                    a = 1.0 if alpha is None else (alpha if y else 1 - alpha)
                    pt = q if y else 1 - q
                    terms.append(w[c] * a * -(1 - pt) ** gamma * np.log(max(pt, EPS)))
            else:
                c = int(np.argmax(tpix))
                a = 1.0 if alpha is None else (alpha if c > 0 else 1 - alpha)
                terms.append(w[c] * a * -(1 - ppix[c]) ** gamma * np.log(ppix[c]))
        out.append(np.mean(terms))
    return np.array(out)


def reference(name, t, p, w, multilabel, **o):
    """The numpy value of loss ``name`` with options ``o`` (the registered defaults otherwise)."""
    s = o.get("smooth", 1e-5)
    if name == "dice":
        return ref_region(t, p, w, "dice", s)
    if name == "ce":
        return ref_pixel(t, p, w, multilabel)
    if name == "focal":
        return ref_pixel(t, p, w, multilabel, o.get("gamma", 2.0), o.get("alpha"))
    if name == "tversky":
        return ref_region(t, p, w, "tversky", s, o.get("alpha", 0.3), o.get("beta", 0.7))
    if name == "focal_tversky":
        return ref_region(t, p, w, "focal_tversky", s, o.get("alpha", 0.3), o.get("beta", 0.7),
                          o.get("gamma", 0.75))
    if name == "dice_ce":
        return ref_region(t, p, w, "dice", s) + ref_pixel(t, p, w, multilabel)
    if name == "dice_focal":
        return ref_region(t, p, w, "dice", s) + ref_pixel(t, p, w, multilabel, 2.0)
    raise AssertionError(name)


def _case(dims, multilabel, k=3, n=2, seed=0):
    """(target, probabilities) of random masks: one-hot classes, or independent 0/1 channels."""
    rng = np.random.default_rng(seed)
    spatial = (5, 4) if dims == 2 else (4, 3, 3)
    if multilabel:
        t = (rng.random((n, *spatial, k)) < 0.4).astype(np.float64)
        return t, rng.uniform(0.02, 0.98, (n, *spatial, k))
    t = np.eye(k)[rng.integers(0, k, (n, *spatial))]
    return t, rng.dirichlet(np.ones(k), (n, *spatial))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("multilabel", [False, True], ids=["multiclass", "multilabel"])
@pytest.mark.parametrize("name", list(SEG_LOSSES))
def test_every_loss_equals_its_numpy_reference(name, multilabel, dims):
    t, p = _case(dims, multilabel, seed=dims)
    weights = [0.5, 2.0, 1.0]
    for w in ([1.0, 1.0, 1.0], weights):
        loss = segmentation_loss(name, class_weight=None if w[0] == 1.0 else w)
        got = np.asarray(loss(t, p, multilabel=multilabel))
        assert got.shape == (len(t),) and got.dtype == np.float64
        np.testing.assert_allclose(got, reference(name, t, p, w, multilabel), rtol=1e-10)
    # the same value from logits (log-softmax / log-sigmoid: no clipping, same number here)
    z = np.log(p / (1 - p)) if multilabel else np.log(p) - np.log(p).mean(-1, keepdims=True)
    from_logits = segmentation_loss(name, class_weight=weights, from_logits=True)
    np.testing.assert_allclose(np.asarray(from_logits(t, z, multilabel=multilabel)),
                               reference(name, t, p, weights, multilabel), rtol=1e-8)


def test_options_background_and_dict_weights_follow_the_reference():
    t, p = _case(2, False, k=4, seed=3)
    got = segmentation_loss("dice", include_background=False, smooth=0.5)(t, p)
    np.testing.assert_allclose(got, ref_region(t, p, [0, 1, 1, 1], "dice", 0.5), rtol=1e-10)
    got = segmentation_loss("tversky", alpha=0.9, beta=0.1, class_weight={2: 3.0})(t, p)
    np.testing.assert_allclose(got, ref_region(t, p, [1, 1, 3, 1], "tversky", 1e-5, 0.9, 0.1),
                               rtol=1e-10)
    got = segmentation_loss("focal", gamma=1.5, alpha=0.25)(t, p)
    np.testing.assert_allclose(got, ref_pixel(t, p, [1] * 4, False, 1.5, 0.25), rtol=1e-10)
    # multi-label: every channel is a label, so include_background changes nothing there
    t, p = _case(3, True, seed=4)
    a = segmentation_loss("dice", include_background=False)(t, p, multilabel=True)
    np.testing.assert_allclose(a, segmentation_loss("dice")(t, p, multilabel=True))


@pytest.mark.parametrize("multilabel", [False, True], ids=["multiclass", "multilabel"])
def test_dice_gradient_matches_central_differences_on_the_logits(multilabel):
    """tf.GradientTape of the float64 Dice loss on logits against central differences of the
    numpy reference: max relative error below 1e-6 (measured 1.1e-8 and 1.5e-8)."""
    rng = np.random.default_rng(7)
    t, _ = _case(2, multilabel, seed=7)
    z = rng.normal(0, 1.5, t.shape)

    def numpy_loss(z):
        p = 1 / (1 + np.exp(-z)) if multilabel else _softmax(z)
        return ref_region(t, p, [1, 2, 1], "dice", 1e-5).sum()

    zt = tf.Variable(z)
    loss = segmentation_loss("dice", from_logits=True, class_weight=[1, 2, 1])
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(t, zt, multilabel=multilabel))
    grad = tape.gradient(value, zt).numpy()
    h, numeric = 1e-6, np.zeros_like(z)
    for i in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (numpy_loss(up) - numpy_loss(down)) / (2 * h)
    rel = np.abs(grad - numeric).max() / np.abs(numeric).max()
    print(f"dice gradient, {'multi-label' if multilabel else 'multi-class'}: max rel err {rel:.2e}")
    assert rel < 1e-6 and np.abs(numeric).max() > 1e-3


def test_identities_the_docs_promise():
    for multilabel in (False, True):
        t, p = _case(3, multilabel, seed=11)
        # a perfect prediction: Dice loss 0 (also without background, also with smoothing 1)
        for kw in ({}, {"include_background": False}, {"smooth": 1.0}):
            assert np.abs(segmentation_loss("dice", **kw)(t, t, multilabel=multilabel)).max() < 1e-12
        # focal with gamma=0 (and no alpha) is the cross-entropy, class weights included
        w = [2.0, 0.5, 1.0]
        ce = segmentation_loss("ce", class_weight=w)(t, p, multilabel=multilabel)
        focal = segmentation_loss("focal", gamma=0.0, class_weight=w)(t, p, multilabel=multilabel)
        np.testing.assert_allclose(focal, ce, rtol=1e-12)
        # Tversky with alpha = beta = 0.5 is Dice with the smoothing doubled
        tv = segmentation_loss("tversky", alpha=0.5, beta=0.5, smooth=0.3)
        np.testing.assert_allclose(tv(t, p, multilabel=multilabel),
                                   segmentation_loss("dice", smooth=0.6)(t, p, multilabel=multilabel),
                                   rtol=1e-12)
    # two-class softmax focal with alpha equals the one-channel sigmoid focal with alpha
    rng = np.random.default_rng(2)
    q = rng.uniform(0.05, 0.95, (2, 6, 6, 1))
    y = (rng.random((2, 6, 6, 1)) < 0.3).astype(float)
    focal = segmentation_loss("focal", gamma=2.0, alpha=0.25)
    two = focal(np.concatenate([1 - y, y], -1), np.concatenate([1 - q, q], -1))
    np.testing.assert_allclose(two, focal(y, q, multilabel=True), rtol=1e-12)


def test_class_weights_from_masks_and_bad_options():
    masks = np.array([[0, 0, 0, 1], [0, 2, 2, 0]])  # counts 5, 1, 2 of 8
    np.testing.assert_allclose(class_weights_from_masks(masks, 4), [8 / 20, 8 / 4, 8 / 8, 0])
    channels = np.zeros((2, 4, 2))
    channels[0, :3, 0], channels[1, :1, 1] = 1, 1  # positives 3 and 1
    np.testing.assert_allclose(class_weights_from_masks(channels, 2, multilabel=True), [4 / 6, 2])
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(UnknownNameError, match="Did you mean 'dice_ce'"):
        segmentation_loss("dice_cee")
    with pytest.raises(InvalidArgumentError, match="takes no option 'gamma'"):
        segmentation_loss("dice", gamma=2)
    with pytest.raises(InvalidArgumentError, match="alpha=1.5"):
        segmentation_loss("focal", alpha=1.5)
    with pytest.raises(InvalidArgumentError, match="give 3 weights"):
        segmentation_loss("dice", class_weight=[1, 1])(*_case(2, False))
    with pytest.raises(InvalidArgumentError, match="class_weights_from_masks"):
        segmentation_loss("ce", class_weight="balanced")


# --- deep supervision ---------------------------------------------------------------------------


def test_deep_supervision_unet_outputs_loss_and_one_step():
    keras.utils.set_random_seed(0)
    model = zoo.load("unet", input_shape=(16, 16), in_chans=1, num_classes=3, depth=3,
                     base_filters=4, norm="instance", deep_supervision=True)
    assert model.output_names == ["head_conv", "head_ds2", "head_ds3"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 3, (2, 16, 16))
    outs = [o.numpy().astype(np.float64) for o in model(x)]
    assert all(o.shape == (2, 16, 16, 3) for o in outs)
    np.testing.assert_allclose(outs[2].sum(-1), 1, atol=1e-5)  # each head is a softmax
    # head_ds3 (stride 4) is nearest up-sampled: constant over each 4 x 4 block
    blocks = outs[2].reshape(2, 4, 4, 4, 4, 3)
    assert np.abs(blocks - blocks[:, :, :1, :, :1]).max() == 0
    task = Segmentation(model, "dice_ce")
    got = task.per_example(tf.constant(y), [tf.constant(o, tf.float32) for o in outs]).numpy()
    onehot = np.eye(3)[y]
    want = sum(w * reference("dice_ce", onehot, o, [1, 1, 1], False)
               for w, o in zip([4 / 7, 2 / 7, 1 / 7], outs))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    heads = {v.path: v.numpy().copy() for v in model.trainable_variables if "head_ds" in v.path}
    engine = Engine(task, keras.optimizers.Adam(1e-2))
    history = engine.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1)
    assert np.isfinite(history[0]["loss"]) and 0 <= history[0]["dice"] <= 1
    moved = [p for p, v in heads.items()
             if not np.allclose(v, next(w for w in model.trainable_variables if w.path == p))]
    assert len(moved) == len(heads) == 4  # both auxiliary heads' kernels and biases trained
    assert len(main_output(model).outputs) == 1
    assert engine.predict(tf.data.Dataset.from_tensors(x)).shape == (2, 16, 16, 3)


def test_deep_supervision_in_3d_and_its_errors():
    model = zoo.load("unet3d", input_shape=(16, 16, 16), in_chans=1, num_classes=2, depth=2,
                     base_filters=2, norm="instance", deep_supervision=1)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(16, 16, 16, 2)] * 2
    with pytest.raises(InvalidArgumentError, match="padding='same'"):
        zoo.load("unet", input_shape=(140, 140), in_chans=1, num_classes=2, depth=2,
                 base_filters=2, padding="valid", deep_supervision=True)
    with pytest.raises(InvalidArgumentError, match="no coarser level"):
        zoo.load("unet", input_shape=(16, 16), in_chans=1, num_classes=2, depth=1,
                 base_filters=2, deep_supervision=True)
    with pytest.raises(InvalidArgumentError, match=r"1\.\.1"):
        zoo.load("unet", input_shape=(16, 16), in_chans=1, num_classes=2, depth=2,
                 base_filters=2, deep_supervision=3)
    task = Segmentation(model, "dice", deep_supervision_weights=[1.0])
    with pytest.raises(InvalidArgumentError, match="give 2 weights"):
        task.check(np.zeros((1, 16, 16, 16, 1)), np.zeros((1, 16, 16, 16), int))


# --- zoo.finetune(task="segmentation") ----------------------------------------------------------


def _fg_dice(model, x, masks) -> float:
    """Mean per-image hard Dice of the foreground (arg-max), the task's own rule, in numpy."""
    pred = np.asarray(main_output(model)(x, training=False)).argmax(-1) == 1
    truth = masks == 1
    inter, total = (pred & truth).sum((1, 2)), pred.sum((1, 2)) + truth.sum((1, 2))
    return float(np.mean(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)))


def test_finetune_segmentation_learns_phantom_lesions(tmp_path):
    """A small deep-supervision U-Net (depth 2, 8 filters) on 32 phantoms 32 x 32 with one
    lesion each: three epochs lift the validation Dice from 0.03-0.07 (untrained) to 0.61-0.86
    (seeds 0-4 of this recipe; the smallest gain 0.54, seed 0 here 0.065 -> 0.612); the margin
    asserted is 0.4."""
    ph = make_phantoms(48, size=32, seed=0, positive_fraction=1.0, lesion_area=(0.02, 0.05))
    x, masks = ph.images, ph.masks.astype("int32")
    keras.utils.set_random_seed(0)
    model = zoo.load("unet", input_shape=(32, 32), in_chans=1, num_classes=2, depth=2,
                     base_filters=8, norm="instance", deep_supervision=True)
    before = _fg_dice(model, x[32:], masks[32:])
    result = finetune(model, (x[:32], masks[:32]), (x[32:], masks[32:]), task="segmentation",
                      loss="dice_ce", epochs=(0, 3), learning_rate=(1e-3, 3e-3), batch_size=4,
                      augment=False, monitor="val_dice", patience=3, strategy="cpu", verbose=0,
                      out_dir=tmp_path / "run")
    after = _fg_dice(result.model, x[32:], masks[32:])
    print(f"phantom lesions: Dice {before:.3f} untrained -> {after:.3f} after 3 epochs")
    assert before < 0.15 and after > before + 0.4
    assert after == pytest.approx(result.best_value, abs=1e-4)  # val_dice is this Dice
    record = json.loads(result.record.read_text())
    assert record["task_options"]["loss"].startswith("segmentation_loss('dice_ce'")


def _tiny_segmenter(k, activation, size=16):
    inputs = keras.Input((size, size, 1))
    body = keras.layers.Conv2D(4, 3, padding="same", name="body")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(k, 1, activation=activation,
                                                   name="head_conv")(body))


def test_finetune_multilabel_masks_and_balanced_class_weights(tmp_path):
    """(N, H, W, K) 0/1 masks train a sigmoid model, Dice per channel; class_weight='balanced'
    becomes pixel-frequency weights inside the loss (recorded in run.json); a built loss takes
    finetune's class weights; a streamed dataset of (image, uint8 mask) batches trains."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 16, 16, 1)).astype("float32")
    masks = np.stack([x[..., 0] > 200, x[..., 0] < 40], -1).astype("int32")
    kw = dict(epochs=(1, 0), batch_size=8, augment=False, strategy="cpu", verbose=0,
              cache_features=False)
    result = finetune(_tiny_segmenter(2, "sigmoid"), (x[:12], masks[:12]),
                      (x[12:], masks[12:]), task="segmentation", class_weight="balanced",
                      loss="dice_focal", out_dir=tmp_path / "ml", **kw)
    assert 0 <= result.history[0]["val_dice"] <= 1
    options = json.loads(result.record.read_text())["task_options"]
    want = class_weights_from_masks(masks[:12], 2, multilabel=True)
    assert f"class_weight={want!r}" in options["loss"]
    built = segmentation_loss("tversky", alpha=0.2, beta=0.8)
    result = finetune(_tiny_segmenter(3, "softmax"), (x, (x[..., 0] // 90).astype(int)),
                      task="segmentation", loss=built, class_weight={0: 0.5},
                      out_dir=tmp_path / "mc", **kw)
    options = json.loads(result.record.read_text())["task_options"]
    assert "alpha=0.2" in options["loss"] and "class_weight={0: 0.5}" in options["loss"]
    # any batched tf.data.Dataset of (image, mask) works, uint8 masks included
    stream = tf.data.Dataset.from_tensor_slices((x, (x[..., 0] > 128).astype("uint8"))).batch(8)
    result = finetune(_tiny_segmenter(2, "softmax"), stream, stream, task="segmentation",
                      loss="focal", class_weight=[1.0, 3.0], out_dir=tmp_path / "stream", **kw)
    assert 0 <= result.history[0]["val_dice"] <= 1 and np.isfinite(result.history[0]["loss"])


def test_finetune_refuses_bad_masks_and_options(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 16, 16, 1)).astype("float32")
    masks = (x[..., 0] > 128).astype("int32")
    kw = dict(epochs=(1, 0), batch_size=4, augment=False, strategy="cpu", verbose=0,
              task="segmentation", out_dir=tmp_path / "bad")
    two, multi = _tiny_segmenter(2, "softmax"), _tiny_segmenter(2, "sigmoid")
    cases = [
        (two, masks * 0.5, "not fractions"),
        (two, masks * 2, r"classes 0\.\.2 but the model has 2 classes"),
        (two, masks[:, :8], r"masks of shape \(8, 16\)"),
        (two, np.stack([masks] * 3, -1), "with 3 channels but the model outputs 2"),
        (multi, np.stack([masks, masks * 2], -1), "must hold 0 or 1"),
    ]
    for model, bad, match in cases:
        with pytest.raises(DataError, match=match):
            finetune(model, (x, bad), (x, bad), **kw)
    ds = tf.data.Dataset.from_tensor_slices((x, masks * 3)).batch(4)
    with pytest.raises(DataError, match="classes 0..3"):  # a stream: its first batch
        finetune(two, ds, ds, **kw)
    with pytest.raises(UnknownNameError, match="Did you mean 'tversky'"):
        finetune("unet", (x, masks), loss="tverski", **kw)
    with pytest.raises(InvalidArgumentError, match="is for task='segmentation'"):
        finetune(two, (x, masks), **{**kw, "task": "classification"}, loss="dice")
    with pytest.raises(InvalidArgumentError, match="give 2 weights"):
        finetune(two, (x, masks), (x, masks), class_weight=[1, 2, 3], **kw)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_augmented_segmentation_batches_move_masks_with_images():
    """Integer shifts, quarter turns and flips move the mask exactly as the image: the mask of
    a thresholded image stays the threshold of the augmented image."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (6, 12, 12, 1)).astype("float32")
    for y in ((x[..., 0] > 128).astype("int32"), (x > 128).astype("int32")):
        policy = Augment(shift=0.25, rot90=True, flip=True, gain=0.0, offset=0.0)
        batches = _AugmentedBatches(x, y, 6, 0, None, policy, (0.0, 255.0), masks=True)
        for epoch in range(3):
            ax, ay, _ = next(iter(batches.dataset(epoch)))
            assert ay.shape == y.shape
            np.testing.assert_array_equal(ay.numpy().reshape(6, 12, 12),
                                          ax.numpy()[..., 0] > 128)
        assert not np.array_equal(ax.numpy(), x[batches.order(2)])  # the views did move
