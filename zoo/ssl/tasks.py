"""The pretext tasks: each wraps any zoo encoder in a Keras model with its head, loss and data.

A task answers five questions for the runner: which data it takes (2D images or volumes),
which encoder input shape that data gives (the whole image, a tile, a slice), how to build
the trainable model around the encoder, how the training engine trains it (``trainer``: an
engine task of ``zoo.ssl.trainers``) and how to draw one epoch of (inputs, targets).
New tasks subclass ``Task`` and add themselves to ``TASKS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import (
    DataError,
    InputShapeError,
    InvalidArgumentError,
)
from zoo.layers import dims as D
from zoo.registry import Registry
from zoo.ssl import transforms as T


@dataclass(frozen=True)
class Data:
    """Pretraining data: images (N,H,W,C) or volumes (N,D,H,W,C) in [0, 255]; volume subject ids."""

    array: np.ndarray
    subjects: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return "volumes" if self.array.ndim == 5 else "images"


def _layers():
    import keras

    return keras.layers


def _pool(x, name):
    return D.global_pool("avg", D.spatial_dims_of(x))(name=name)(x)


class Task:
    """Base class. ``data`` is "images" or "volumes"; ``dims`` the encoder's spatial dimensions."""

    name = ""
    paper = ""
    data = "images"
    dims = 2
    loss = "SparseCategoricalCrossentropy"  # a keras.losses class (name) or instance

    def __init__(self, **options):
        unknown = set(options) - set(self.defaults())
        if unknown:
            raise InvalidArgumentError(
                f"task {self.name!r} has no option(s) {sorted(unknown)}; its options are "
                f"{sorted(self.defaults()) or 'none'}."
            )
        self.options = {**self.defaults(), **options}

    def defaults(self) -> dict:
        return {}

    def check_data(self, data: Data) -> None:
        if data.kind != self.data:
            want = "(N, H, W, C) images" if self.data == "images" else "(N, D, H, W, C) volumes"
            raise DataError(
                f"task {self.name!r} takes {want}; got an array of shape {data.array.shape}. "
                + (
                    "Use a volume task (slice_order, subject, genesis3d) for volumes."
                    if data.kind == "volumes"
                    else "Stack slices into volumes, or use a 2D image task."
                )
            )

    def encoder_shape(self, data: Data) -> tuple[int, ...]:
        """The spatial input shape of the encoder for this data (default: the whole image)."""
        return tuple(data.array.shape[1:-1])

    def min_side(self, encoder_min: int) -> int:
        """The smallest image side this task can use with an encoder that needs ``encoder_min``."""
        return encoder_min

    def build(self, encoder):
        raise NotImplementedError

    def epoch(self, data: Data, rng: np.random.Generator):
        raise NotImplementedError

    def trainer(self, model):
        """The engine task that trains ``model`` (what ``build`` returned).

        Args:
            model: the pretext model.

        Returns:
            A ``zoo.ssl.trainers`` task: by default ``model`` and the task's ``loss``.
        """
        from zoo.ssl.trainers import LossTask

        return LossTask(model, self.loss)

    def describe(self) -> str:
        return f"{self.name} ({self.paper})"


def check_reconstructable(task: Task, encoder, shape) -> int:
    """Decoder tasks upsample the last map by powers of 2 back to ``shape``; returns the steps."""
    feat = tuple(encoder.output.shape[1:-1])
    factors = {s // f if f and s % f == 0 else 0 for s, f in zip(shape, feat)}
    factor = factors.pop() if len(factors) == 1 else 0
    if factor < 1 or factor & (factor - 1):
        raise InputShapeError(
            f"task {task.name!r} reconstructs {shape} images through {encoder.name}'s {feat} "
            "feature map, which is not an exact power-of-2 downsampling; give sizes that are "
            "multiples of the encoder's stride (32 for the 5-stage 2D networks, 16 for "
            "simple_cnn3d)."
        )
    return int(math.log2(factor))


def decoder(x, steps: int, channels: int, name: str):
    """Transposed convolutions (stride 2, halving the width each step), sigmoid output in [0, 1]."""
    layers, dims = _layers(), D.spatial_dims_of(x)
    up, conv = D.conv_transpose(dims), D.conv(dims)
    width = int(x.shape[-1])
    for i in range(steps):
        width = max(8, width // 2)
        x = up(width, 3, strides=2, padding="same", name=f"{name}_up{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    return conv(channels, 1, activation="sigmoid", dtype="float32", name=f"{name}_out")(x)


def _input(encoder, name):
    import keras

    return keras.Input(shape=tuple(encoder.input.shape[1:]), name=name)


def _classifier(x, units: int, name: str, hidden: int = 0):
    if hidden:
        x = _layers().Dense(hidden, activation="relu", name=f"{name}_fc1")(x)
    return _layers().Dense(units, activation="softmax", dtype="float32", name=f"{name}_fc")(x)


class Rotation(Task):
    name, paper = "rotation", "Gidaris et al. 2018, arXiv:1803.07728"

    def check_data(self, data):
        super().check_data(data)
        if data.array.shape[1] != data.array.shape[2]:
            raise DataError(
                f"task 'rotation' needs square images, got {data.array.shape[1:3]}; crop or pad "
                "them."
            )

    def build(self, encoder):
        import keras

        x = _input(encoder, "image")
        return keras.Model(
            x, _classifier(_pool(encoder(x), "rotation_pool"), 4, "rotation"), name="rotation"
        )

    def epoch(self, data, rng):
        return T.rotations(data.array)


class _Reconstruction(Task):
    """Encoder + decoder back to the input size (inpainting, cross-window, Genesis)."""

    loss = "MeanSquaredError"

    def out_channels(self, encoder) -> int:
        return int(encoder.input.shape[-1])

    def build(self, encoder):
        import keras

        shape = tuple(encoder.input.shape[1:-1])
        steps = check_reconstructable(self, encoder, shape)
        x = _input(encoder, "image")
        out = decoder(encoder(x), steps, self.out_channels(encoder), self.name)
        return keras.Model(x, out, name=self.name)


class Inpainting(_Reconstruction):
    name, paper = "inpainting", "Pathak et al. 2016 (context encoder), arXiv:1604.07379"

    def defaults(self):
        return {
            "fraction": 0.5,
            "mask": "random",
            "adversarial": False,
            "rec_weight": 0.999,
            "adv_weight": 0.001,
        }

    def build(self, encoder):
        from zoo.ssl.losses import MaskedL2

        if not 0 < self.options["fraction"] < 1:
            raise InvalidArgumentError(
                f"inpainting fraction={self.options['fraction']}: the hidden square must be 0 < "
                "fraction < 1 of the side."
            )
        self.loss = MaskedL2(self.options["rec_weight"])
        generator = super().build(encoder)
        if not self.options["adversarial"]:
            return generator
        import keras

        from zoo.ssl.trainers import ContextEncoderGAN

        shape = tuple(generator.output.shape[1:])
        d_in = keras.Input(shape=shape, name="completed")
        h = d_in
        for i, width in enumerate((16, 32, 64), start=1):
            h = keras.layers.Conv2D(width, 4, strides=2, padding="same", name=f"disc_conv{i}")(h)
            h = keras.layers.LeakyReLU(0.2, name=f"disc_relu{i}")(h)
        h = keras.layers.GlobalAveragePooling2D(name="disc_pool")(h)
        d_out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="disc_fc")(h)
        discriminator = keras.Model(d_in, d_out, name="discriminator")
        return ContextEncoderGAN(
            generator, discriminator, self.options["rec_weight"], self.options["adv_weight"]
        )

    def trainer(self, model):
        """The adversarial model is its own engine task; else the masked L2 on the generator."""
        return model if self.options["adversarial"] else super().trainer(model)

    def epoch(self, data, rng):
        images = data.array
        mask = T.inpaint_mask(images.shape[:3], rng, self.options["fraction"], self.options["mask"])
        target = np.concatenate([images / 255.0, mask[..., None]], axis=-1).astype(np.float32)
        return T.mask_images(images, mask), target


class CrossWindow(_Reconstruction):
    """Split-brain style for grey CT: predict one intensity window from another; for colour
    (3-channel)
    images, Zhang 2016's colorization: predict the colours from the grey (channel mean) image."""

    name, paper = (
        "colorization",
        "Zhang et al. 2016 (colorization) and 2017 (split-brain), arXiv:1611.09842",
    )

    def defaults(self):
        return {"source_window": (0.0, 128.0), "target_window": (96.0, 255.0)}

    def epoch(self, data, rng):
        images = data.array
        if images.shape[-1] == 3:  # colorization: grey in, colour out
            grey = np.repeat(images.mean(-1, keepdims=True), 3, axis=-1)
            return grey.astype(np.float32), (images / 255.0).astype(np.float32)
        (a_lo, a_hi), (b_lo, b_hi) = self.options["source_window"], self.options["target_window"]
        return T.window(images, a_lo, a_hi) * 255.0, T.window(images, b_lo, b_hi)


class _Genesis(_Reconstruction):
    paper = "Zhou et al. 2019 (Models Genesis), arXiv:1908.06912"

    def defaults(self):
        return dict(T.GENESIS_RATES)

    def epoch(self, data, rng):
        x, y = T.genesis(data.array / 255.0, rng, **self.options)
        return x * 255.0, y


class Genesis2D(_Genesis):
    name = "genesis2d"


class Genesis3D(_Genesis):
    name, data, dims = "genesis3d", "volumes", 3


class _Tiles(Task):
    """Tasks on a 3 x 3 grid of tiles: the encoder sees one tile."""

    def defaults(self):
        return {"gap": 2, "jitter": 1}

    def tile(self, data) -> int:
        h, w = data.array.shape[1:3]
        return (min(h, w) - 2 * self.options["gap"]) // 3

    def encoder_shape(self, data):
        t = self.tile(data)
        return (t, t)

    def min_side(self, encoder_min):
        return 3 * encoder_min + 2 * self.options["gap"]


class RelativePosition(_Tiles):
    name, paper = "relative_position", "Doersch et al. 2015, arXiv:1505.05192"

    def build(self, encoder):
        import keras

        a, b = _input(encoder, "centre"), _input(encoder, "neighbour")
        f = keras.layers.Concatenate(name="pair_concat")(
            [_pool(encoder(a), "centre_pool"), _pool(encoder(b), "neighbour_pool")]
        )
        return keras.Model(
            [a, b], _classifier(f, 8, "relpos", hidden=128), name="relative_position"
        )

    def epoch(self, data, rng):
        t = self.tile(data)
        centre, other, labels = T.relative_position(
            data.array, t, self.options["gap"], rng, self.options["jitter"]
        )
        return (centre, other), labels


class Jigsaw(_Tiles):
    name, paper = "jigsaw", "Noroozi & Favaro 2016, arXiv:1603.09246"

    def defaults(self):
        return {**super().defaults(), "permutations": 24}

    @property
    def perms(self):
        return T.jigsaw_permutations(self.options["permutations"])  # deterministic (seed 0)

    def build(self, encoder):
        import keras

        tiles = [_input(encoder, f"tile{i}") for i in range(9)]
        pooled = keras.layers.GlobalAveragePooling2D(name="tile_pool")
        f = keras.layers.Concatenate(name="tiles_concat")([pooled(encoder(t)) for t in tiles])
        return keras.Model(
            tiles, _classifier(f, len(self.perms), "jigsaw", hidden=128), name="jigsaw"
        )

    def epoch(self, data, rng):
        tiles, labels = T.jigsaw(
            data.array,
            self.perms,
            self.tile(data),
            self.options["gap"],
            rng,
            self.options["jitter"],
        )
        return tuple(tiles[:, i] for i in range(9)), labels


class SliceOrder(Task):
    name, paper, data = (
        "slice_order",
        "Yan et al. 2016 (P-CNN body-part recognition), IEEE TMI 35(5)",
        "volumes",
    )

    def defaults(self):
        return {"min_gap": 2, "pairs_per_volume": 4}

    def encoder_shape(self, data):
        return tuple(data.array.shape[2:4])

    def build(self, encoder):
        import keras

        a, b = _input(encoder, "slice_a"), _input(encoder, "slice_b")
        f = keras.layers.Concatenate(name="pair_concat")(
            [_pool(encoder(a), "a_pool"), _pool(encoder(b), "b_pool")]
        )
        return keras.Model([a, b], _classifier(f, 2, "order", hidden=64), name="slice_order")

    def epoch(self, data, rng):
        a, b, y = T.slice_order_pairs(data.array, rng, self.options["min_gap"],
                                      count=len(data.array) * self.options["pairs_per_volume"])
        return (a, b), y


class Subject(Task):
    name, paper, data = (
        "subject",
        "siamese subject discrimination (as in the spinal MRI work)",
        "volumes",
    )
    loss = "BinaryCrossentropy"

    def defaults(self):
        return {"pairs_per_volume": 4}

    def encoder_shape(self, data):
        return tuple(data.array.shape[2:4])

    def build(self, encoder):
        import keras

        a, b = _input(encoder, "slice_a"), _input(encoder, "slice_b")
        fa, fb = _pool(encoder(a), "a_pool"), _pool(encoder(b), "b_pool")
        d = keras.layers.Subtract(name="pair_diff")([fa, fb])
        d = keras.layers.Multiply(name="pair_sqdiff")([d, d])  # symmetric in (a, b)
        out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="subject_fc")(d)
        return keras.Model([a, b], out, name="subject")

    def epoch(self, data, rng):
        subjects = data.subjects if data.subjects is not None else np.arange(len(data.array))
        a, b, y = T.subject_pairs(
            data.array, subjects, rng, count=len(data.array) * self.options["pairs_per_volume"]
        )
        return (a, b), y.astype(np.float32)


def _projector(name: str, hidden: int, out: int):
    layers = _layers()
    return [layers.Dense(hidden, use_bias=False, name=f"{name}_fc1"),
            layers.BatchNormalization(momentum=0.9, name=f"{name}_bn"),
            layers.ReLU(name=f"{name}_relu"),
            layers.Dense(out, dtype="float32", name=f"{name}_fc2")]


def _apply(stack, x):
    for layer in stack:
        x = layer(x)
    return x


class SimCLR(Task):
    name, paper = "simclr", "Chen et al. 2020 (SimCLR, NT-Xent), arXiv:2002.05709"

    def defaults(self):
        return {
            "temperature": 0.5,
            "projection": 64,
            "crop": (0.4, 1.0),
            "jitter": 0.4,
            "noise": 0.05,
        }

    def build(self, encoder):
        import keras

        from zoo.ssl.losses import NTXent

        self.loss = NTXent(self.options["temperature"])
        v1, v2 = _input(encoder, "view1"), _input(encoder, "view2")
        pool = _layers().GlobalAveragePooling2D(name="view_pool")
        head = _projector("projector", 128, self.options["projection"])
        z1, z2 = (_apply(head, pool(encoder(v))) for v in (v1, v2))
        out = keras.layers.Concatenate(name="views_concat", dtype="float32")([z1, z2])
        return keras.Model([v1, v2], out, name="simclr")

    def epoch(self, data, rng):
        kw = {k: self.options[k] for k in ("crop", "jitter", "noise")}
        views = (T.simclr_views(data.array, rng, **kw), T.simclr_views(data.array, rng, **kw))
        return views, np.zeros((len(data.array), 1), np.float32)


class BYOL(SimCLR):
    name, paper = "byol", "Grill et al. 2020 (BYOL), arXiv:2006.07733"

    def defaults(self):
        return {
            "momentum": 0.99,
            "projection": 64,
            "crop": (0.4, 1.0),
            "jitter": 0.4,
            "noise": 0.05,
        }

    def build(self, encoder):
        import keras

        from zoo.ssl.trainers import MomentumTrainer

        v = _input(encoder, "view")
        z = _apply(
            _projector("projector", 128, self.options["projection"]), _pool(encoder(v), "view_pool")
        )
        online = keras.Model(v, z, name="byol_online")
        p_in = keras.Input(shape=(self.options["projection"],), name="projection")
        predictor = keras.Model(
            p_in,
            _apply(_projector("predictor", 128, self.options["projection"]), p_in),
            name="byol_predictor",
        )
        return MomentumTrainer(online, predictor, self.options["momentum"])

    def trainer(self, model):
        """The momentum trainer ``build`` made is the engine task itself."""
        return model


TASKS: Registry = Registry(
    "pretext task",
    {
        cls.name: cls
        for cls in (
            Rotation,
            Inpainting,
            CrossWindow,
            RelativePosition,
            Jigsaw,
            SliceOrder,
            Subject,
            SimCLR,
            BYOL,
            Genesis2D,
            Genesis3D,
        )
    },
    hint="See zoo.ssl.list_tasks().",
)


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str, **options) -> Task:
    """The task ``name`` with its options (see each task's ``defaults()``)."""
    return TASKS.get(name)(**options)  # UnknownNameError (an UnknownModelError) with suggestions
