"""segmentation_dataset: static shapes and dtypes a Keras model trains on, values equal to the
numpy sampler + policy they come from, determinism given the seed, lazy loading, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.data.seg_dataset import segmentation_dataset
from zoo.data.seg_sampling import PatchSampler
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError


def cases(n=3, shape=(8, 16, 16), seed=0, noise=1.0):
    """Cases with one small lesion of class 1 or 2 (alternating), image = 4 * mask + noise."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        mask = np.zeros(shape, np.int32)
        z, y, x = (int(rng.integers(1, s - 3)) for s in shape)
        mask[z:z + 2, y:y + 3, x:x + 3] = 1 + k % 2
        image = (4 * mask + rng.normal(0, noise, shape)).astype(np.float32)
        out.append((image, mask))
    return out


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_patches_train_a_keras_model_one_step():
    import keras

    ds = segmentation_dataset(cases(), "patch", patch_size=(4, 8, 8), fg_fraction=0.5,
                              augment=["flip", "rot90", "affine", "intensity"], batch_size=4,
                              samples_per_case=2, num_classes=3, drop_remainder=True)
    x_spec, y_spec = ds.element_spec
    assert x_spec.shape == (4, 4, 8, 8, 1) and x_spec.dtype == tf.float32
    assert y_spec.shape == (4, 4, 8, 8) and y_spec.dtype == tf.int32
    x, y = next(iter(ds))
    assert set(np.unique(y.numpy())) <= {0, 1, 2} and y.numpy().any()
    inputs = keras.Input(x_spec.shape[1:])
    outputs = keras.layers.Conv3D(3, 3, padding="same", activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(float(np.ravel(loss)[0]))


def test_centre_labels_2d_and_one_hot():
    data = cases(noise=0.1)
    ds = segmentation_dataset(data, "centre", patch_size=(5, 5), balance=True, batch_size=6,
                              samples_per_case=4, num_classes=3, one_hot=True)
    assert [s.shape.as_list() for s in ds.element_spec] == [[None, 5, 5, 1], [None, 3]]
    x, y = collect(ds)
    assert x.shape == (12, 5, 5, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    sparse = segmentation_dataset(data, "centre", patch_size=(5, 5), balance=True,
                                  batch_size=6, samples_per_case=4, num_classes=3)
    x2, labels = collect(sparse)
    np.testing.assert_array_equal(x, x2)  # one-hot changes only the target's encoding
    np.testing.assert_array_equal(y.argmax(axis=1), labels)
    # image = 4 * mask + N(0, 0.1): the centre pixel's value tells its label
    np.testing.assert_array_equal(np.rint(x[:, 2, 2, 0] / 4), labels)
    assert set(labels) == {0, 1, 2}


def test_values_come_from_the_seeded_numpy_side():
    ds = segmentation_dataset(cases(), "2.5d", stack=3, augment=True, batch_size=5,
                              samples_per_case=3, shuffle=False, seed=3)
    data = ds.segmentation
    assert len(data) == 9
    x, y = collect(ds)
    assert x.shape == (9, 16, 16, 3) and y.shape == (9, 16, 16)
    draws = list(tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True).take(3))
    expected = [data.samples(i, int(d)) for i, d in enumerate(draws)]
    np.testing.assert_array_equal(x, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(y, np.concatenate([e[1] for e in expected]))


def test_deterministic_given_the_seed():
    def run(seed):
        ds = segmentation_dataset(cases(), "patch", patch_size=(4, 8, 8), augment=True,
                                  batch_size=4, samples_per_case=2, seed=seed)
        return collect(ds), collect(ds)

    (a, a_next), (b, _), (c, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a_next[0])  # a second epoch draws new samples


def test_lazy_loader_and_multilabel(tmp_path):
    paths = []
    for i, (image, mask) in enumerate(cases(2)):
        stack = np.stack([mask == 1, mask > 0], axis=-1).astype(np.uint8)
        np.savez(tmp_path / f"{i}.npz", image=image, mask=stack)
        paths.append(tmp_path / f"{i}.npz")
    loaded = []

    def loader(path):
        loaded.append(path)
        with np.load(path) as f:
            return {"image": f["image"], "mask": f["mask"]}

    ds = segmentation_dataset(paths, "slice", loader=loader, batch_size=2, samples_per_case=2)
    assert loaded == paths[:1]  # only the first case, for the sample shapes
    x, y = collect(ds)
    assert x.shape == (4, 16, 16, 1) and y.shape == (4, 16, 16, 2) and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert len(loaded) == 3

    bad = [paths[0], tmp_path / "bad.npz"]
    np.savez(bad[1], image=np.zeros((8, 16, 16)), mask=np.zeros((8, 16, 15, 2)))
    ds = segmentation_dataset(bad, "slice", loader=loader, batch_size=2, shuffle=False)
    with pytest.raises(Exception, match=r"case 1 \(.*bad.npz\): the mask has shape"):
        collect(ds)


def test_bad_input():
    small = [(np.zeros((8, 6, 16)), np.zeros((8, 6, 16)))]
    with pytest.raises(DataError, match=r"case 0: the volume is \(8, 6, 16\).*\(4, 8, 8\).*pad"):
        segmentation_dataset(small, "patch", patch_size=(4, 8, 8))
    with pytest.raises(DataError, match="case 1: the mask has shape"):
        segmentation_dataset([cases(1)[0], (np.zeros((8, 16, 16)), np.zeros((8, 16, 17)))],
                             "slice")
    with pytest.raises(DataError, match="case 1 gives samples of shape"):
        segmentation_dataset([cases(1)[0], cases(1, shape=(8, 12, 12))[0]], "slice")
    with pytest.raises(DataError, match="outside the declared classes"):
        segmentation_dataset([(np.zeros((2, 8, 8)), np.full((2, 8, 8), 2))], "slice",
                             num_classes=2)
    with pytest.raises(UnknownNameError, match="sampler="):
        segmentation_dataset(cases(), "patches")
    with pytest.raises(UnknownNameError, match="augment="):
        segmentation_dataset(cases(), "slice", augment=["flip", "elastik"])
    with pytest.raises(InvalidArgumentError, match="no option 'patch'"):
        segmentation_dataset(cases(), "slice", patch=(8, 8))
    with pytest.raises(DataError, match="outside the declared classes"):
        segmentation_dataset(cases(), "slice", num_classes=2)  # the second case holds label 2
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        segmentation_dataset(cases(), "slice", one_hot=True)
    with pytest.raises(InvalidArgumentError, match="loader="):
        segmentation_dataset(["a.nii.gz"], "slice")
    with pytest.raises(InvalidArgumentError, match="holds paths.*loader="):
        segmentation_dataset([("a.nii.gz", "a_seg.nii.gz")], "slice")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        segmentation_dataset(cases(), PatchSampler((4, 8, 8)), batch_size=0)
