"""The joint loss ``lambda_c * L_c + lambda_r * L_r``: the encoder also feeds a decoder.

Any zoo classifier (2D or 3D) is an encoder and a head. A decoder without skip connections (so
the code must carry the image) reconstructs the image as the network sees it (the output of its
``preprocess`` layer or other leading Rescaling / Normalization layers, or the raw input of a
model without any). What it reads (``code``):

- ``"head"`` (default): the vector the class scores are computed from (the last Dense layer's
  input, e.g. the pooled features or a dense hidden layer), through a Dense layer onto the last
  feature map's grid, then transposed convolutions. Reconstruction then shapes the features the
  classifier uses: a decoder on an earlier feature map can be served by layers the head never
  reads (a stride-2 conv layer with 16 maps has four times as many values as the image it could
  pass through), leaving the classification features untouched.
- ``"features"``: the last spatial feature map (found by walking back from the output through
  the head), transposed convolutions only.

The loss of a step:

    lambda_c * L_c + lambda_r * L_r

``L_c``: the labelled cross-entropy (the "supervised" method's, per labelled image); ``L_r``: the
mean squared reconstruction error per image, averaged over the labelled and the unlabelled images
of the batch, and with ``normalise=True`` (default) divided by the batch's pixel variance (the
error of answering every image with the batch's mean image; no gradient through it), so that
``L_r`` is the fraction of the images' variance the code does not carry. The raw squared error
(``normalise=False``) is in the units of the image as the network sees it: for images of low
contrast (a pixel std of 0.2 on a [-1, 1] scale: a squared error of at most ~0.04) it is a
twentieth of a cross-entropy, and ``lambda_r = 1`` barely shapes the code (measured on
zoo.data.synthetic.make_gap_clusters, docs/benchmarks.md). ``lambda_r`` is ``fit``'s
``unlabelled_weight`` (the weight of the term the unlabelled images enter), ``lambda_c`` an
option (default 1). With ``lambda_r = 0`` the decoder and the unlabelled images are not run: the
step is the supervised one exactly.
"""

from __future__ import annotations

import math

from zoo.errors import InvalidArgumentError
from zoo.semi.methods import SemiTask, check_weight, labelled_part, register_method
from zoo.train.engine import StepOutput


def check_lambda(value, name: str) -> float:
    """A finite weight >= 0 (named in the error), or InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise InvalidArgumentError(f"{name}={value!r}: give a finite weight >= 0.")
    return float(value)


def model_input(model):
    """The model's one input tensor (a list only for several), as a new Functional model takes it
    so that calling it on a tensor raises no structure warning."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def feature_map(classifier):
    """The classifier's last spatial feature map (N, *spatial, C): walking back from its output
    through the head (dense, pooling, dropout) to the first tensor of rank 4 or 5."""
    from zoo._keras_compat import layer_inputs

    tensor, image = classifier.outputs[0], image_target(classifier)
    while len(tensor.shape) < 4 or tensor is image:
        inputs = layer_inputs(tensor)
        if not inputs or tensor is image:
            raise InvalidArgumentError(
                f"model {classifier.name!r} has no spatial feature map before its output (a "
                "dense-only network); the reconstruction methods decode a convolutional "
                "encoder's feature map: use a zoo CNN such as simple_cnn or resnet18.")
        tensor = inputs[0]
    return tensor


def image_target(classifier):
    """What the decoder reconstructs: the image as the network sees it, the output of its
    leading preprocessing layers (the zoo's ``preprocess``, Rescaling, Normalization), else the
    model's input."""
    target = classifier.inputs[0]
    for layer in classifier.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if layer.name != "preprocess" and kind not in ("Rescaling", "Normalization"):
            break
        target = layer.output
    return target


def build_decoder(feature_shape, target_shape, name: str = "decoder", min_width: int = 8):
    """A decoder from a feature map (*spatial, C) to an image (*SPATIAL, channels), no skips.

    Transposed convolutions of stride 2 (3x3, BatchNorm, ReLU, the width halved each time, at
    least ``min_width``) until the image size, then a linear 1x1 convolution to its channels.
    The image size must be the feature map's times a power of two per axis.
    """
    import keras

    from zoo.layers import dims as D

    feature_shape, target_shape = tuple(feature_shape), tuple(target_shape)
    dims = len(feature_shape) - 1
    ratios = {t / f for t, f in zip(target_shape[:-1], feature_shape[:-1], strict=True)}
    ratio = ratios.pop() if len(ratios) == 1 else 0
    steps = round(math.log2(ratio)) if ratio >= 1 else -1
    if steps < 0 or 2**steps != ratio:
        raise InvalidArgumentError(
            f"the feature map {feature_shape[:-1]} is not the input {target_shape[:-1]} divided by "
            "one power of two on every axis, so no stride-2 decoder reconstructs it; use input "
            "sizes that are multiples of the network's total stride (e.g. 32 for simple_cnn).")
    inp = keras.Input(feature_shape, name=f"{name}_features")
    x, width = inp, int(feature_shape[-1])
    for i in range(steps):
        width = max(min_width, width // 2)
        x = D.conv_transpose(dims)(width, 3, strides=2, padding="same", use_bias=False,
                                   name=f"{name}_up{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    out = D.conv(dims)(int(target_shape[-1]), 1, name=f"{name}_out", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def head_code(classifier):
    """The vector the class scores are computed from: the input of the classifier's last layer
    with weights (its Dense head), walking back over weightless layers (softmax, dropout)."""
    from zoo._keras_compat import layer_inputs, producing_layer

    tensor = classifier.outputs[0]
    while True:
        layer = producing_layer(tensor)
        inputs = layer_inputs(tensor)
        if not inputs:
            break
        if layer.weights:
            if len(inputs[0].shape) == 2:
                return inputs[0]
            break
        tensor = inputs[0]
    raise InvalidArgumentError(
        f"model {classifier.name!r} does not end in a Dense layer on a feature vector, so there "
        "is no code to decode (code='head'); use code='features' (the last feature map).")


def build_code_decoder(code_dim: int, feature_shape, target_shape, name: str = "decoder",
                       width: int = 32):
    """A decoder from the head's code vector: a Dense layer (ReLU) to the last feature map's
    grid with ``width`` channels (at most the map's), then ``build_decoder``'s up-sampling."""
    import keras

    grid = (*tuple(feature_shape)[:-1], min(width, int(feature_shape[-1])))
    inp = keras.Input((code_dim,), name=f"{name}_code")
    x = keras.layers.Dense(int(math.prod(grid)), activation="relu", name=f"{name}_dense")(inp)
    x = keras.layers.Reshape(grid, name=f"{name}_grid")(x)
    out = build_decoder(grid, target_shape, f"{name}_maps")(x)
    return keras.Model(inp, out, name=name)


def reconstruction_error(target, reconstruction):
    """Mean squared error per example (N,)."""
    from keras import ops

    diff = ops.cast(target, "float32") - ops.cast(reconstruction, "float32")
    return ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=1)


def pixel_variance(images):
    """Each pixel's variance over the batch, averaged over the pixels (a small floor): the
    squared error of answering every image with the batch's mean image."""
    from keras import ops

    flat = ops.reshape(ops.cast(images, "float32"), (ops.shape(images)[0], -1))
    return ops.maximum(ops.mean(ops.var(flat, axis=0)), 1e-6)


def supervised_step(task: SemiTask, batch, training: bool, lambda_c: float = 1.0) -> StepOutput:
    """The "supervised" method's step times ``lambda_c`` (exact for 1), with the task's
    ``unlabelled_metrics`` as 0 / 0, so every step reports the same metrics (the engine's rule)."""
    out = SemiTask.step(task, batch, training)
    metrics = dict(out.metrics)
    for name in task.unlabelled_metrics:
        metrics.setdefault(name, (0.0, 0.0))
    return StepOutput({"main": lambda_c * out.losses["main"]}, metrics)


class DecoderTask(SemiTask):
    """A classifier plus a ``decoder`` model that only the unlabelled loss uses (reconstruction,
    ladder): with weight 0 the decoder is not trained, so the step is the supervised one."""

    decoder = None

    def models(self) -> dict:
        return {"classifier": self.classifier, "decoder": self.decoder}

    def trainable(self, name: str) -> list:
        """The classifier's variables, and the decoder's when it is used (weight > 0)."""
        extra = self.decoder.trainable_variables if self.unlabelled_weight > 0 else []
        return self.classifier.trainable_variables + extra

    def regularized(self, name: str) -> list:
        return [self.classifier, self.decoder]


CODES = ("head", "features")


class JointReconstruction(DecoderTask):
    """``lambda_c * L_c + lambda_r * L_r`` (module docstring); ``lambda_r = unlabelled_weight``."""

    unlabelled_metrics = ("reconstruction",)  # every step reports them (0 / 0 without)

    def __init__(self, classifier, *, num_classes: int, unlabelled_weight: float = 1.0,
                 seed: int = 0, lambda_c: float = 1.0, code: str = "head",
                 normalise: bool = True):
        import keras

        super().__init__(classifier, num_classes=num_classes,
                         unlabelled_weight=unlabelled_weight, seed=seed)
        self.lambda_c = check_lambda(lambda_c, "lambda_c")
        if code not in CODES:
            raise InvalidArgumentError(f"code={code!r}: give one of {', '.join(CODES)}.")
        if not isinstance(normalise, bool):
            raise InvalidArgumentError(f"normalise={normalise!r}: give True (the error over the "
                                       "batch's pixel variance) or False (the raw error).")
        self.normalise = normalise
        features, target = feature_map(classifier), image_target(classifier)
        source = head_code(classifier) if code == "head" else features
        self.joint = keras.Model(model_input(classifier), [classifier.outputs[0], source, target],
                                 name=f"{classifier.name}_joint")
        self.decoder = (build_code_decoder(source.shape[-1], features.shape[1:], target.shape[1:])
                        if code == "head" else build_decoder(features.shape[1:], target.shape[1:]))


    def uses_unlabelled(self, inputs, training: bool) -> bool:
        return bool(training and self.unlabelled_weight > 0 and isinstance(inputs, dict))

    def reconstruct(self, x, training: bool):
        """(class probabilities, per-image squared error, the target) of one pass over ``x``."""
        from keras import ops

        probs, features, target = self.joint(x, training=training)
        target = ops.stop_gradient(ops.cast(target, "float32"))
        rec = self.decoder(features, training=training)
        return ops.cast(probs, "float32"), reconstruction_error(target, rec), target

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        inputs, y, w = batch
        if not self.uses_unlabelled(inputs, training):
            return supervised_step(self, batch, training, self.lambda_c)
        self.iterations.assign_add(1)
        w = ops.cast(w, "float32")
        probs, rec_l, target_l = self.reconstruct(labelled_part(inputs), training)
        _, rec_u, target_u = self.reconstruct(inputs["unlabelled"], training)
        l_c = self.supervised.per_example(y, probs) * w
        rec = ops.concatenate([rec_l, rec_u], 0)
        if self.normalise:
            rec = rec / pixel_variance(ops.concatenate([target_l, target_u], 0))
        metrics = self.supervised.metrics(y, probs, w)
        metrics["reconstruction"] = (ops.sum(rec), ops.cast(ops.shape(rec)[0], "float32"))
        loss = self.lambda_c * l_c + self.unlabelled_weight * ops.mean(rec)
        return StepOutput({"main": loss}, metrics)


@register_method("reconstruction", family="reconstruction",
                 summary="joint loss lambda_c * cross-entropy + lambda_r * reconstruction "
                         "(a decoder on the head's code or the last feature map, no skips)",
                 backbones="any zoo CNN classifier (2D/3D) whose input size is its feature map's "
                           "times a power of two")
def make_reconstruction(model, *, num_classes: int, unlabelled_weight: float, seed: int,
                        lambda_c: float = 1.0, code: str = "head",
                        normalise: bool = True) -> SemiTask:
    """The joint-loss task; ``unlabelled_weight`` is ``lambda_r``; ``code``: what the decoder
    reads; ``normalise``: L_r over the batch's pixel variance (module docstring)."""
    check_weight(unlabelled_weight)
    return JointReconstruction(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                               seed=seed, lambda_c=lambda_c, code=code, normalise=normalise)
