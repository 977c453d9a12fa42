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
def test_each_task_trains_one_epoch(name, zoo_env, capsys):
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
    assert capsys.readouterr().out == ""  # verbose=0: no progress output at all


@pytest.mark.slow
def test_adversarial_inpainting_trains_both_networks(zoo_env, capsys):
    import keras

    keras.utils.set_random_seed(0)  # pretrain(seed=0) builds both networks from these very weights
    task = get_task("inpainting", adversarial=True)
    start = task.build(zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=0, pooling=None))
    result = zoo.ssl.pretrain("inpainting", "simple_cnn", IMAGES, epochs=2, batch_size=3, verbose=2, adversarial=True)
    model = result.model
    assert type(model).__name__ == "ContextEncoderGAN" and np.isfinite(result.history).all()
    assert model.adv_weight == 0.001 and model.reconstruction.weight == 0.999
    for name in ("generator", "discriminator"):
        before, after = getattr(start, name).get_weights(), getattr(model, name).get_weights()
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True)), f"the {name} did not train"
    lines = capsys.readouterr().out.splitlines()  # verbose=2: a header, then one line per epoch
    assert len(lines) == 3 and lines[1].startswith("epoch 1/2: generator_loss ") and "discriminator_loss" in lines[2]
    assert f"generator_loss {result.history[1]:.4f}" in lines[2]


def test_listing_models_stays_free_of_tensorflow():
    code = "import zoo; zoo.list_models(); import zoo.ssl; zoo.ssl.list_tasks(); import sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("loss", ["SparseCategoricalCrossentropy", "MeanSquaredError", "BinaryCrossentropy",
                                  "MaskedL2", "NTXent"])
def test_loss_task_gives_the_loss_keras_compile_gives(loss):
    """The engine's generic pretext task reproduces a compiled Keras loss (the reference) on a batch,
    targets of one rank less than the output (binary (N,) against (N, 1)) included."""
    import keras
    import tensorflow as tf

    from zoo.ssl.losses import MaskedL2, NTXent
    from zoo.ssl.trainers import LossTask
    from zoo.train.engine import Engine

    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    units = {"SparseCategoricalCrossentropy": 4, "BinaryCrossentropy": 1, "NTXent": 8}
    if loss in units:
        h = keras.layers.GlobalAveragePooling2D()(inputs)
        act = {"SparseCategoricalCrossentropy": "softmax", "BinaryCrossentropy": "sigmoid"}.get(loss)
        out = keras.layers.Dense(units[loss], activation=act)(h)
    else:
        out = keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)
    model = keras.Model(inputs, out)
    x = rng.uniform(0, 1, (5, 6, 6, 2)).astype(np.float32)
    y = {"SparseCategoricalCrossentropy": rng.integers(0, 4, 5), "BinaryCrossentropy": rng.integers(0, 2, 5).astype(np.float32),
         "MeanSquaredError": rng.uniform(0, 1, (5, 6, 6, 1)).astype(np.float32),
         "MaskedL2": np.concatenate([rng.uniform(0, 1, (5, 6, 6, 1)), rng.integers(0, 2, (5, 6, 6, 1))], -1).astype(np.float32),
         "NTXent": np.zeros((5, 1), np.float32)}[loss]
    objects = {"MaskedL2": MaskedL2(0.5), "NTXent": NTXent(0.3)}
    task = LossTask(model, objects.get(loss, loss))
    got = Engine(task, keras.optimizers.SGD(0.0)).evaluate(tf.data.Dataset.from_tensors((x, y)))["loss"]
    model.compile(loss=objects.get(loss, loss.replace("MeanSquaredError", "mse")))
    assert got == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-5)


def test_loss_task_refuses_a_loss_without_a_per_example_form():
    import keras

    from zoo.errors import InvalidArgumentError
    from zoo.ssl.trainers import LossTask

    inputs = keras.Input((2,))
    with pytest.raises(InvalidArgumentError, match="keras.losses.Loss or its class name"):
        LossTask(keras.Model(inputs, keras.layers.Dense(1)(inputs)), "mse")
