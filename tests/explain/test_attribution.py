"""SmoothGrad, integrated gradients and occlusion against independent computations, and the
one API's refusals (explain_batch, zoo.explain.METHODS)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError, UnknownNameError
from zoo.explain import METHODS, explain_batch
from zoo.explain.attribution import completeness_gap, integrated_gradients, occlusion, smoothgrad
from zoo.explain.saliency import saliency


def _linear(shape, classes=3, seed=0):
    """Dense(Flatten(x)) with a random bias: f_c(x) = sum(W_c * x) + b_c exactly."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    model = keras.Model(
        inp,
        keras.layers.Dense(classes, bias_initializer="random_normal", name="fc")(
            keras.layers.Flatten()(inp)
        ),
        name="linear",
    )
    return model, model.get_layer("fc").kernel.numpy().reshape(*shape, classes)


@pytest.fixture(scope="module")
def cnn():
    """simple_cnn at its smallest input with a softmax head (explained before the softmax)."""
    keras.utils.set_random_seed(0)
    model = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    return model, x


def test_smoothgrad_with_sigma_zero_is_saliency(cnn):
    model, x = cnn
    for raw in (dict(absolute=False, channel_reduce=None, normalize=False), {}):
        np.testing.assert_allclose(
            smoothgrad(model, x, class_index=2, sigma=0.0, **raw),
            saliency(model, x, class_index=2, **raw),
            rtol=1e-6,
            atol=1e-9,
        )
    noisy = smoothgrad(model, x, class_index=2, sigma=0.2, samples=3)
    assert noisy.shape == (2, 32, 32) and not np.allclose(noisy, saliency(model, x, class_index=2))


def test_smoothgrad_of_a_linear_model_is_its_weights_at_any_noise():
    model, w = _linear((4, 5, 2))
    x = np.random.default_rng(1).normal(size=(3, 4, 5, 2)).astype("float32")
    g = smoothgrad(
        model,
        x,
        class_index=1,
        sigma=0.5,
        samples=4,
        absolute=False,
        channel_reduce=None,
        normalize=False,
    )
    np.testing.assert_allclose(g, np.broadcast_to(w[..., 1], x.shape), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_of_a_linear_model_is_weights_times_the_difference():
    model, w = _linear((4, 5, 2))
    rng = np.random.default_rng(2)
    x, base = (
        rng.normal(size=(2, 4, 5, 2)).astype("float32"),
        rng.normal(size=(4, 5, 2)).astype("float32"),
    )
    a = integrated_gradients(model, x, class_index=0, baseline=base, steps=4, channel_reduce=None)
    np.testing.assert_allclose(a, w[..., 0] * (x - base), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness_on_the_shipped_checkpoint(zoo_env):
    """Attributions sum to logit(x) - logit(black), within 1%, the logits computed here from
    the features and the classifier's kernel."""
    from zoo.data.synthetic import make_phantoms
    from zoo.demo import SOURCE_TASK

    model = zoo.load("simple_cnn.phantom")
    task = {k: v for k, v in SOURCE_TASK.items() if k not in ("n", "seed")}
    x = make_phantoms(2, seed=SOURCE_TASK["seed"] + 9999, positive_fraction=1.0, **task).images
    a = integrated_gradients(model, x, class_index=1)  # (B, H, W): summed over channels
    fc = model.get_layer("head_fc")
    features = keras.Model(model.inputs, fc.input)

    def logit(v):
        return features([v], training=False).numpy() @ fc.kernel.numpy()[:, 1] + fc.bias.numpy()[1]

    delta = logit(x) - logit(np.zeros_like(x))
    assert np.all(np.abs(delta) > 1.0)  # a real difference to be complete about
    np.testing.assert_allclose(a.reshape(2, -1).sum(1), delta, rtol=0.01)
    assert np.all(completeness_gap(model, x, a, class_index=1) < 0.01)
    # too few steps miss it: the test can fail
    assert (
        completeness_gap(model, x, integrated_gradients(model, x, class_index=1, steps=2), 1).max()
        > 0.01
    )


def _occlusion_reference(w, x, base, patch, stride):
    """Per pixel, the mean over the windows covering it of sum(w * (x - base)) in the window."""
    contrib = (w * (x - base)).sum(-1)  # (B, *spatial)
    spatial = contrib.shape[1:]
    starts = []
    for n, p, s in zip(spatial, patch, stride):
        axis = list(range(0, n - p + 1, s))
        starts.append(axis if axis[-1] == n - p else axis + [n - p])
    total, count = np.zeros_like(contrib), np.zeros(spatial)
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(spatial)):
        win = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        total[(slice(None), *win)] += contrib[(slice(None), *win)].sum(
            axis=tuple(range(1, contrib.ndim)), keepdims=True
        )
        count[win] += 1
    return total / count


@pytest.mark.parametrize(
    "shape, patch, stride",
    [
        ((6, 7, 2), 1, 1),
        ((6, 7, 2), (2, 3), (1, 2)),
        ((4, 5, 6, 1), 1, 1),
        ((4, 5, 6, 1), 2, (1, 2, 2)),
    ],
)
def test_occlusion_of_a_linear_model_is_weights_times_occluded_values(shape, patch, stride):
    model, w = _linear(shape)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, *shape)).astype("float32")
    base = 0.5 if len(shape) == 3 else 0.0
    maps = occlusion(
        model, x, class_index=1, patch=patch, stride=stride, baseline=base, batch_size=16
    )
    spatial = len(shape) - 1
    patch_t = (patch,) * spatial if isinstance(patch, int) else patch
    stride_t = (stride,) * spatial if isinstance(stride, int) else stride
    assert maps.shape == x.shape[:-1]
    np.testing.assert_allclose(
        maps, _occlusion_reference(w[..., 1], x, base, patch_t, stride_t), rtol=1e-4, atol=1e-5
    )
    if patch == 1:  # 1-pixel patches: the weights times the occluded values, summed over channels
        np.testing.assert_allclose(maps, (w[..., 1] * (x - base)).sum(-1), rtol=1e-4, atol=1e-5)


def test_explain_batch_runs_every_registered_method(cnn):
    model, x = cnn
    assert {
        "gradcam",
        "cam",
        "saliency",
        "smoothgrad",
        "integrated_gradients",
        "occlusion",
        "perturbation",
    } <= set(METHODS)
    fast = {
        "smoothgrad": {"samples": 2},
        "integrated_gradients": {"steps": 4},
        "occlusion": {"patch": 8},
        "perturbation": {"steps": 3},
    }
    for method in METHODS:
        maps = explain_batch(model, x[:1], method, class_index=1, **fast.get(method, {}))
        assert maps.shape == (1, 32, 32) and np.isfinite(maps).all(), method
    np.testing.assert_allclose(
        explain_batch(model, x, "saliency", class_index=0), saliency(model, x, 0)
    )


def test_explain_batch_refuses_bad_inputs_with_the_fix(cnn):
    model, x = cnn
    with pytest.raises(
        UnknownNameError,
        match=r"method='smoothgard': unknown explanation method\. "
        r"Did you mean 'smoothgrad'",
    ):
        explain_batch(model, x, "smoothgard")
    with pytest.raises(InputShapeError, match=r"3D volumes was given to a 2D model.*simple_cnn3d"):
        explain_batch(model, x[:, None].repeat(4, 1), "occlusion")
    with pytest.raises(InputShapeError, match=r"\(32, 32, 1\).*add a batch axis: images\[None\]"):
        explain_batch(model, x[0], "saliency")
    with pytest.raises(
        InputShapeError, match=r"\(2, 16, 16, 1\) do not fit .*axes \[1, 2\].*resize"
    ):
        explain_batch(model, x[:, :16, :16], "gradcam")
    with pytest.raises(InputShapeError, match=r"axes \[3\] differ\); convert the channels"):
        explain_batch(model, np.repeat(x, 3, -1), "gradcam")
    with pytest.raises(
        InvalidArgumentError, match=r"'head_fc' is not a spatial \(B, H, W, C\) layer"
    ):
        explain_batch(model, x, "gradcam", layer_name="head_fc")
    with pytest.raises(InvalidArgumentError, match=r"patch=\(40, 40\) is larger than the input"):
        explain_batch(model, x, "occlusion", patch=(40, 40))
    with pytest.raises(
        InvalidArgumentError, match=r"stride=\(9, 9\) is larger than patch=\(8, 8\)"
    ):
        explain_batch(model, x, "occlusion", patch=8, stride=9)
    with pytest.raises(InvalidArgumentError, match=r"sigma=-1"):
        explain_batch(model, x, "smoothgrad", sigma=-1)
    with pytest.raises(InvalidArgumentError, match=r"baseline of shape \(3,\) does not broadcast"):
        explain_batch(model, x, "integrated_gradients", baseline=np.zeros(3))
    with pytest.raises(InputShapeError, match="NaN or infinite"):
        explain_batch(model, np.where(x > 250, np.nan, x), "saliency")
    a, b = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    joined = keras.layers.Flatten()(keras.layers.Concatenate()([a, b]))
    two = keras.Model([a, b], keras.layers.Dense(2)(joined), name="two")
    with pytest.raises(InvalidArgumentError, match="model 'two' has 2 inputs.*takes one input"):
        explain_batch(two, x, "saliency")
    with pytest.raises(InvalidArgumentError, match="class_index=7"):
        explain_batch(model, x, "occlusion", class_index=7)
