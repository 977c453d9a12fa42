"""M9 and the loading lows: a user's weights file is read, never written beside; bad arguments
and another architecture's file are one clear ZooError each."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest

import zoo
from zoo.errors import InvalidArgumentError, WeightsError


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    """The shipped phantom checkpoint (with its classifier), saved under a plain .h5 name."""
    folder = tmp_path_factory.mktemp("user_folder")
    model = zoo.load("simple_cnn.phantom")
    model.save_weights(str(folder / "keep.weights.h5"))
    os.replace(folder / "keep.weights.h5", folder / "model.h5")
    return folder / "model.h5", model


def _snapshot(folder):
    return {p.name: (p.is_symlink(), p.read_bytes() if p.is_file() else None) for p in folder.iterdir()}


def _same_weights(a, b, layer):
    for x, y in zip(a.get_layer(layer).get_weights(), b.get_layer(layer).get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_M9_stale_sibling_never_wins_and_nothing_is_written_beside(phantom_file):
    path, phantom = phantom_file
    stale = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(64, 64))  # random weights
    stale.save_weights(str(path.with_name("model.h5.weights.h5")))
    try:
        before = _snapshot(path.parent)
        model = zoo.load("simple_cnn", pretrained=str(path), in_chans=1, num_classes=2)
        assert _snapshot(path.parent) == before
    finally:
        path.with_name("model.h5.weights.h5").unlink()
    first_conv = next(la.name for la in model.layers if la.weights)
    _same_weights(model, phantom, first_conv)


def test_M9_read_only_user_folder_loads(phantom_file, monkeypatch):
    """Writing beside the file fails in a read-only folder (simulated: CI may run as root)."""
    path, phantom = phantom_file
    real_symlink = os.symlink

    def read_only(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(dst)) == str(path.parent):
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real_symlink(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", read_only)
    model = zoo.load("simple_cnn", pretrained=str(path), in_chans=1, num_classes=0)
    _same_weights(model, phantom, next(la.name for la in model.layers if la.weights))


def test_file_classifier_is_kept_with_its_class_count_and_never_dropped_silently(phantom_file):
    path, phantom = phantom_file
    with pytest.raises(WeightsError, match="num_classes=<the number of classes"):
        zoo.load("simple_cnn", pretrained=str(path), in_chans=1)
    model = zoo.load("simple_cnn", pretrained=str(path), in_chans=1, num_classes=2)
    _same_weights(model, phantom, "head_fc")
    backbone = zoo.load("simple_cnn", pretrained=str(path), in_chans=1, num_classes=0)
    assert backbone.output.shape == (None, 64)


def test_another_architectures_file_is_one_error_without_warnings(phantom_file):
    path, _ = phantom_file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError, match="does not fit resnet50"):
            zoo.load("resnet50", pretrained=str(path), input_shape=(64, 64))
    assert [str(w.message)[:80] for w in caught] == []


@pytest.mark.parametrize("kwargs, named", [
    ({"input_shape": 64}, "input_shape=64: give a tuple"),
    ({"input_shape": "64x64"}, "input_shape='64x64'"),
    ({"classifier_activation": "bogus"}, "classifier_activation='bogus' is not a Keras activation"),
    ({"bogus": 1}, "unknown keyword argument.*bogus.*zoo.load takes"),
    ({"widht": (8, 8)}, "Did you mean 'widths'"),
])
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, named):
    with pytest.raises(InvalidArgumentError, match=named):
        zoo.load("simple_cnn", **kwargs)


def test_unknown_keyword_for_a_keras_application():
    with pytest.raises(InvalidArgumentError, match="bogus"):
        zoo.load("resnet50", bogus=1)


def test_missing_file_message_names_the_architectures_tags(tmp_path):
    with pytest.raises(WeightsError, match=r"zoo.list_weights\('simple_cnn\.\*'\)"):
        zoo.load("simple_cnn", pretrained=str(tmp_path / "missing.h5"))
