"""Every pretext task builds around a zoo encoder, and trains: loss finite, encoder weights move."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import zoo.ssl
from zoo.data.synthetic import make_phantoms
from zoo.data.volumes import make_volumes
from zoo.ssl.runner import as_data, check_encoder
from zoo.ssl.tasks import get_task, list_tasks

IMAGES = make_phantoms(6, size=32, seed=0).images
TILES = make_phantoms(4, size=100, seed=0).images
VOLUMES = make_volumes(4, depth=16, size=32, seed=0)

CASES = {  # task: (encoder, data, options)
    "rotation": ("simple_cnn", IMAGES, {}),
    "inpainting": ("simple_cnn", IMAGES, {}),
    "colorization": ("simple_cnn", IMAGES, {}),
    "relative_position": ("simple_cnn", TILES, {}),
    "jigsaw": ("simple_cnn", TILES, {"permutations": 10}),
    "slice_order": ("simple_cnn", VOLUMES, {}),
    "subject": ("simple_cnn", VOLUMES, {}),
    "simclr": ("simple_cnn", IMAGES, {}),
    "byol": ("simple_cnn", IMAGES, {}),
    "genesis2d": ("simple_cnn", IMAGES, {}),
    "genesis3d": ("simple_cnn3d", VOLUMES, {}),
}


def test_every_task_is_covered():
    assert sorted(CASES) == list_tasks()


def test_task_models_have_the_right_inputs_and_outputs():
    import zoo
    from zoo.models.registry import get_entry

    expected = {"rotation": (4,), "inpainting": (32, 32, 1), "colorization": (32, 32, 1), "relative_position": (8,),
                "jigsaw": (10,), "slice_order": (2,), "subject": (1,), "simclr": (128,),
                "genesis2d": (32, 32, 1), "genesis3d": (16, 32, 32, 1)}
    inputs = {"relative_position": 2, "jigsaw": 9, "slice_order": 2, "subject": 2, "simclr": 2}
    for name, (arch, data, options) in CASES.items():
        if name == "byol":
            continue  # a momentum trainer, tested in test_momentum.py
        task = get_task(name, **options)
        d = as_data(data, task)
        shape = check_encoder(task, get_entry(arch), d)
        encoder = zoo.load(arch, in_chans=1, input_shape=shape, num_classes=0, pooling=None)
        model = task.build(encoder)
        assert tuple(model.output.shape[1:]) == expected[name], name
        assert len(model.inputs) == inputs.get(name, 1), name
        assert all(tuple(i.shape[1:]) == tuple(encoder.input.shape[1:]) for i in model.inputs), name
        assert encoder in model.layers  # one shared encoder, also in the siamese tasks
        x, y = task.epoch(d, np.random.default_rng(0))
        x = list(x) if isinstance(x, tuple) else [x]
        assert [a.shape[1:] for a in x] == [tuple(i.shape[1:]) for i in model.inputs], name
        assert all(a.min() >= 0 and a.max() <= 255 for a in x), name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_task_trains_one_epoch(name, zoo_env):
    arch, data, options = CASES[name]
    import keras

    import zoo
    from zoo.models.registry import get_entry

    task = get_task(name, **options)
    shape = check_encoder(task, get_entry(arch), as_data(data, task))
    keras.utils.set_random_seed(0)  # pretrain(seed=0) starts from these very weights
    before = zoo.load(arch, in_chans=1, input_shape=shape, num_classes=0, pooling=None).get_weights()
    result = zoo.ssl.pretrain(name, arch, data, epochs=1, batch_size=4, verbose=0, **options)
    assert len(result.history) == 1 and np.isfinite(result.history[0])
    after = result.encoder.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True)), "the encoder did not train"


@pytest.mark.slow
def test_adversarial_inpainting_trains_both_networks(zoo_env):
    result = zoo.ssl.pretrain("inpainting", "simple_cnn", IMAGES, epochs=1, batch_size=3, verbose=0, adversarial=True)
    model = result.model
    assert type(model).__name__ == "ContextEncoderGAN" and np.isfinite(result.history[0])
    assert model.adv_weight == 0.001 and model.reconstruction.weight == 0.999
    assert model.d_optimizer.iterations.numpy() == 2 and model.optimizer.iterations.numpy() == 2


def test_listing_models_stays_free_of_tensorflow():
    code = "import zoo; zoo.list_models(); import zoo.ssl; zoo.ssl.list_tasks(); import sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
