"""A semi-supervised run killed mid-epoch and resumed from the engine's checkpoint ends exactly as
the uninterrupted run: the method's own state (step counter of the ramp-up and augmentations,
temporal ensemble, EMA teacher, admitted pseudo-labels) travels in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError
from zoo.semi import fit
from zoo.train import engine as engine_module


class Killed(Exception):
    """Stands in for the SIGKILL of ZOO_TEST_KILL_AFTER_STEPS, in this process."""


def _model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
        keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3),
        keras.layers.Dense(2, activation="softmax")])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    u = rng.uniform(0, 255, (12, 8, 8, 1)).astype(np.float32)
    return x, np.array([0, 1] * 3), u


def _fit(method, data, folder=None, resume=False, **options):
    x, y, u = data
    result = fit(method, _model(), (x, y), u, epochs=2, batch_size=3, unlabelled_batch_size=6,
                 seed=4, checkpoint_dir=folder, checkpoint_every=1 if folder else None,
                 resume=resume, ramp_up=10, **options)
    return result


def _state(result):
    task = result.task
    weights = [np.asarray(w) for m in task.models().values() for w in m.get_weights()]
    own = [np.asarray(v.numpy()) for v in task.state_variables().values()]
    return weights + own, [row["loss"] for row in result.history]


_UNINTERRUPTED: dict = {}


def _uninterrupted(method, data, **options):
    if method not in _UNINTERRUPTED:
        _UNINTERRUPTED[method] = _state(_fit(method, data, **options))
    return _UNINTERRUPTED[method]


@pytest.mark.parametrize("method, options", [("mean_teacher", {"decay": 0.7}),
                                             ("temporal_ensembling", {"alpha": 0.5})])
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(method, options, data, tmp_path,
                                                            monkeypatch):
    want, want_loss = _uninterrupted(method, data, **options)

    def kill():
        raise Killed

    monkeypatch.setattr(engine_module, "_kill_self", kill)
    monkeypatch.setenv("ZOO_TEST_KILL_AFTER_STEPS", "3")  # step 3 of 4: mid epoch 2
    with pytest.raises(Killed):
        _fit(method, data, tmp_path, **options)
    monkeypatch.delenv("ZOO_TEST_KILL_AFTER_STEPS")
    names = sorted(p.name for p in tmp_path.glob("ckpt-*.npz"))
    assert names[-1] == "ckpt-000000002.npz"  # step 3 (of 4) trained, its checkpoint not written
    resumed = _fit(method, data, tmp_path, resume=True, **options)
    got, got_loss = _state(resumed)
    assert int(resumed.task.iterations.numpy()) == 4
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if method == "temporal_ensembling":  # every image's ensemble counted in each of 2 epochs
        assert resumed.task.count.numpy().tolist() == [2] * 12


def test_resume_without_the_method_state_would_differ(data, tmp_path, monkeypatch):
    """The check above can fail: a checkpoint whose task state is dropped resumes differently
    (the ramp-up and augmentation draws restart at step 0)."""
    want, _ = _uninterrupted("mean_teacher", data, decay=0.7)
    monkeypatch.setattr(engine_module, "_kill_self", lambda: (_ for _ in ()).throw(Killed()))
    monkeypatch.setenv("ZOO_TEST_KILL_AFTER_STEPS", "3")
    with pytest.raises(Killed):
        _fit("mean_teacher", data, tmp_path, decay=0.7)
    monkeypatch.delenv("ZOO_TEST_KILL_AFTER_STEPS")
    from zoo.semi.methods import TaskState

    monkeypatch.setattr(TaskState, "load", lambda self, state, arrays: None)
    got, _ = _state(_fit("mean_teacher", data, tmp_path, resume=True, decay=0.7))
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want, strict=True))


def test_resume_needs_a_checkpoint_folder(data):
    x, y, u = data
    with pytest.raises(InvalidArgumentError, match="resume=True continues from checkpoint_dir"):
        fit("mean_teacher", _model(), (x, y), u, resume=True)
