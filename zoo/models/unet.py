"""U-Net in 2D and 3D (Ronneberger et al. 2015; Cicek et al. 2016), and U-Net on any backbone.

``unet`` / ``unet3d``: ``depth`` poolings, ``base_filters`` doubled per level, two 3x3 convs
per level, normalisation none/batch/group/instance, up-sampling by transposed convolution or
linear interpolation + 1x1 conv, 'same' padding (output = input size, sizes divisible by
2**depth) or the paper's 'valid' padding with centre-cropped skips (572 -> 388).
``encoder="resnet50"`` (any registered backbone with multi-scale features) replaces the
contracting path by that backbone's ``features_strideN`` maps, pretrained when
``encoder_weights`` names a card, frozen with ``freeze_encoder=True``; ``encoder_depth=k`` keeps
only its first k feature levels (strides 2 .. 2**k for most backbones; the deeper stages are not
built into the model), for volumes whose sizes are not multiples of the full stride.
``deep_supervision=True`` (nnU-Net) adds one output per coarser decoder level, up-sampled to
full size, after the main output; ``main_output(model)`` drops them again for inference.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.layers import dims as D
from zoo.models import _blocks
from zoo.models.registry import register_model

UPSAMPLING = ("transpose", "bilinear")


def _check_options(depth, base_filters, upsampling, padding):
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InvalidArgumentError(
            f"depth={depth!r}: the number of poolings must be a positive integer (4 in the paper)."
        )
    if not isinstance(base_filters, int) or base_filters < 1:
        raise InvalidArgumentError(
            f"base_filters={base_filters!r}: must be a positive integer (64 in the paper)."
        )
    if upsampling not in UPSAMPLING:
        raise InvalidArgumentError(
            f"upsampling={upsampling!r}: use one of {UPSAMPLING} ('bilinear' is trilinear in 3D)."
        )
    if padding not in ("same", "valid"):
        raise InvalidArgumentError(
            f"padding={padding!r}: use 'same' (output = input size) or 'valid' (the paper)."
        )


def check_sizes(sizes, depth: int, padding: str, name: str) -> None:
    """'same': sizes divisible by 2**depth; 'valid': every pooled size even (572, 1-pixel-exact)."""
    for size in sizes:
        if size is None:
            continue
        if padding == "same" and size % 2**depth:
            lo, hi = size - size % 2**depth, size - size % 2**depth + 2**depth
            raise InputShapeError(
                f"input size {size}: {name} with depth={depth} needs spatial sizes divisible by "
                f"2**{depth} = {2**depth}; pad or crop to {lo or hi} or {hi}, or use a smaller "
                "depth."
            )
        s = size
        for level in range(depth):
            s -= 4 if padding == "valid" else 0
            if s < 2 or s % 2:
                raise InputShapeError(
                    f"input size {size}: {name} ('valid', depth={depth}) reaches an odd or empty "
                    f"size {s} before pooling {level + 1}; use a size such as 572 (the paper's) "
                    "where every level is even."
                )
            s //= 2
        if padding == "valid" and s <= 4:
            raise InputShapeError(
                f"input size {size}: too small for {name} ('valid', depth={depth})."
            )


def up_block(x, skip, filters, name, *, dims, norm, upsampling, padding):
    """Up-sample x2, concatenate the (centre-cropped) skip, two convolutions."""
    if upsampling == "transpose":
        x = D.conv_transpose(dims)(filters, 2, strides=2, name=f"{name}_upconv")(x)
    # Keras' bilinear in 2D (same values, faster: benchmarks/bench_archs.py); it has no trilinear
    else:
        up = D.linear_upsample(dims, name=f"{name}_upsample")
        x = D.conv(dims)(filters, 1, name=f"{name}_upconv")(up(x))
    if skip is not None:
        crop = [(s - t) // 2 for s, t in zip(skip.shape[1:-1], x.shape[1:-1])]
        if any(crop):
            cropping = [(c, s - t - c) for c, s, t in zip(crop, skip.shape[1:-1], x.shape[1:-1])]
            skip = D.layer("crop", dims)(cropping, name=f"{name}_crop")(skip)
        x = keras.layers.Concatenate(name=f"{name}_concat")([skip, x])
    for i in (1, 2):
        x = _blocks.conv_norm_act(
            x, filters, 3, f"{name}_{i}", dims=dims, norm=norm, padding=padding
        )
    return x


def _head(x, num_classes, activation, dims):
    return D.conv(dims)(num_classes or 2, 1, activation=activation, name="head_conv",
                        dtype="float32")(x)


def _check_deep_supervision(deep_supervision, levels: int, padding: str) -> int:
    """The number of extra outputs ``deep_supervision`` asks for (True: every coarser level)."""
    if deep_supervision is False or deep_supervision is None:
        return 0
    if levels < 2:
        raise InvalidArgumentError(
            f"deep_supervision={deep_supervision!r} with one decoder level: there is no coarser "
            "level to supervise; use depth >= 2."
        )
    n = levels - 1 if deep_supervision is True else deep_supervision
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= levels - 1:
        raise InvalidArgumentError(
            f"deep_supervision={deep_supervision!r}: give True (every decoder level below the "
            f"full-resolution one: {levels - 1} here), False, or a number of levels in "
            f"1..{levels - 1}."
        )
    if padding != "same":
        raise InvalidArgumentError(
            "deep_supervision with padding='valid': the coarse outputs do not up-sample onto the "
            "cropped full-resolution output; use padding='same'."
        )
    return n


def _deep_heads(decoded: dict, n: int, num_classes, activation, dims) -> list:
    """Extra outputs of decoder levels 2..n+1 (stride 2**(k-1)): a 1x1 convolution to the classes
    (``head_ds{k}_conv``, with the model's activation) and nearest up-sampling to full size
    (``head_ds{k}``). Nearest up-sampling makes the loss of a coarse output against the
    full-resolution mask the loss against the block-averaged (soft) mask, so the mask is never
    resampled and every output has the main output's shape."""
    up = D.layer("upsample", dims)
    heads = []
    for k in range(2, n + 2):
        y = D.conv(dims)(num_classes or 2, 1, activation=activation, name=f"head_ds{k}_conv",
                         dtype="float32")(decoded[k])
        heads.append(up(2 ** (k - 1), name=f"head_ds{k}", dtype="float32")(y))
    return heads


def _unet(
    x,
    *,
    dims,
    num_classes,
    classifier_activation,
    depth,
    base_filters,
    norm,
    upsampling,
    padding,
    name,
    deep_supervision=False,
):
    _blocks.check_norm(norm)
    _check_options(depth, base_filters, upsampling, padding)
    n_deep = _check_deep_supervision(deep_supervision, depth, padding)
    check_sizes(x.shape[1:-1], depth, padding, name)
    pool = D.pool("max", dims)
    skips = []
    for level in range(depth + 1):
        filters = base_filters * 2**level
        for i in (1, 2):
            x = _blocks.conv_norm_act(
                x, filters, 3, f"enc{level + 1}_{i}", dims=dims, norm=norm, padding=padding
            )
        if level < depth:
            skips.append(x)
            x = pool(2, name=f"enc{level + 1}_pool")(x)
    decoded = {}
    for level in reversed(range(depth)):
        x = up_block(
            x,
            skips[level],
            base_filters * 2**level,
            f"dec{level + 1}",
            dims=dims,
            norm=norm,
            upsampling=upsampling,
            padding=padding,
        )
        decoded[level + 1] = x
    main = _head(x, num_classes, classifier_activation, dims)
    if not n_deep:
        return main
    return [main, *_deep_heads(decoded, n_deep, num_classes, classifier_activation, dims)]


def _features(model) -> dict[int, str]:
    """Decoder outputs (``dec{k}``, stride 2**(k-1)) and, without an encoder, the bottleneck."""
    names = {layer.name for layer in model.layers}
    out = {}
    for k in range(1, 12):
        if f"dec{k}_2_relu" in names:
            out[2 ** (k - 1)] = f"dec{k}_2_relu"
        if f"enc{k}_pool" in names and f"enc{k + 1}_2_relu" in names:
            out[2**k] = f"enc{k + 1}_2_relu"
    return out


def _shallower(encoder, depth):
    """The features model ``encoder`` cut after its first ``depth`` feature levels (None: all).

    A Functional model of the same layers up to the last kept output: deeper stages are left out
    of the graph (and of the weights), and the layers keep their weights and origin."""
    n = len(encoder.outputs)
    if depth is None:
        return encoder
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= n:
        raise InvalidArgumentError(
            f"encoder_depth={depth!r}: give the number of encoder feature levels to use, 1 .. {n} "
            f"for {encoder.name.removesuffix('_features')} (None: all {n})."
        )
    if depth == n:
        return encoder
    inputs = encoder.inputs[0] if len(encoder.inputs) == 1 else encoder.inputs
    return keras.Model(inputs, encoder.outputs[:depth], name=encoder.name)


def _encoder_unet(
    x,
    *,
    dims,
    num_classes,
    classifier_activation,
    encoder,
    freeze_encoder,
    norm,
    upsampling,
    decoder_filters,
    deep_supervision=False,
    encoder_depth=None,
):
    """The decoder on ``encoder``, a zoo.load features model (``features_strideN`` outputs)."""
    if not isinstance(encoder, keras.Model):
        raise InvalidArgumentError(
            f"encoder={encoder!r}: the U-Net builder takes a features model; name an architecture "
            "through zoo.load('unet', encoder=\"resnet50\", encoder_weights=...), which builds it.")
    encoder = _shallower(encoder, encoder_depth)
    encoder.trainable = not freeze_encoder
    names = list(encoder.output_names)
    outputs = encoder(x)
    feats = {int(n.removeprefix("features_stride")): o for n, o in zip(names, outputs, strict=True)}
    encoder = encoder.name.removesuffix("_features")
    strides = sorted(feats)
    for s in strides:
        want = [None if n is None else n // s for n in x.shape[1:-1]]
        if (
            any(n is not None and n % s for n in x.shape[1:-1])
            or list(feats[s].shape[1:-1]) != want
        ):
            raise InputShapeError(
                f"input {tuple(x.shape[1:-1])}: the {encoder} encoder's stride-{s} features are "
                f"{tuple(feats[s].shape[1:-1])}, not input/{s}; use sizes divisible by "
                f"{strides[-1]}"
                + (
                    " (its 'valid' padding never gives exact strides; pick another encoder)"
                    if encoder == "inception_v3"
                    else ""
                )
                + "."
            )
    y = feats[strides[-1]]
    skips = [feats[s] for s in reversed(strides[:-1])] + [None] * (
        strides[-1].bit_length() - len(strides)
    )
    filters = list(decoder_filters)
    if len(filters) < len(skips):
        raise InvalidArgumentError(
            f"decoder_filters={decoder_filters}: {encoder} needs {len(skips)} decoder widths."
        )
    n_deep = _check_deep_supervision(deep_supervision, len(skips), "same")
    decoded = {}
    for i, skip in enumerate(skips):
        decoded[len(skips) - i] = y = up_block(
            y,
            skip,
            filters[i],
            f"dec{len(skips) - i}",
            dims=dims,
            norm=norm,
            upsampling=upsampling,
            padding="same",
        )
    main = _head(y, num_classes, classifier_activation, dims)
    if not n_deep:
        return main
    return [main, *_deep_heads(decoded, n_deep, num_classes, classifier_activation, dims)]


def _register(name, dims, size, paper):
    @register_model(
        name,
        family="zoo",
        default_size=(size,) * dims,
        min_size=16,
        preprocess="none",
        spatial_dims=dims,
        task="segmentation",
        feature_layers=_features,
        description=f"{dims}D U-Net (depth, base_filters, norm, upsampling, padding configurable; "
        "encoder=any backbone)",
        paper=paper,
        takes_encoder=True,
    )
    def build(
        x,
        *,
        include_top,
        num_classes,
        classifier_activation,
        depth=4,
        base_filters=64 if dims == 2 else 32,
        norm="batch",
        upsampling="transpose",
        padding="same",
        encoder=None,
        freeze_encoder=False,
        decoder_filters=(256, 128, 64, 32, 16),
        deep_supervision=False,
        encoder_depth=None,
    ):
        """num_classes: output channels of the 1x1 head (2 when not given); encoder: a features
        model (zoo.load builds it from encoder="resnet50" and encoder_weights=...);
        encoder_depth: the encoder's first k feature levels only (None: all);
        deep_supervision: True (or a number of levels) adds outputs of the coarser decoder
        levels, up-sampled to full size, after the main one (see ``_deep_heads``)."""
        activation = classifier_activation
        if encoder is None and encoder_depth is not None:
            raise InvalidArgumentError(
                f"encoder_depth={encoder_depth!r} without encoder=: the plain U-Net's depth is "
                "depth=...; encoder_depth cuts a backbone given as encoder=."
            )
        if encoder is not None:
            return _encoder_unet(
                x,
                dims=dims,
                num_classes=num_classes,
                classifier_activation=activation,
                encoder=encoder,
                freeze_encoder=freeze_encoder,
                norm=norm,
                upsampling=upsampling,
                decoder_filters=decoder_filters,
                deep_supervision=deep_supervision,
                encoder_depth=encoder_depth,
            )
        return _unet(
            x,
            dims=dims,
            num_classes=num_classes,
            classifier_activation=activation,
            depth=depth,
            base_filters=base_filters,
            norm=norm,
            upsampling=upsampling,
            padding=padding,
            name=name,
            deep_supervision=deep_supervision,
        )

    return build


build_unet = _register("unet", 2, 256, "Ronneberger et al. 2015, arXiv:1505.04597")
build_unet3d = _register("unet3d", 3, 64, "Cicek et al. 2016, arXiv:1606.06650")


def main_output(model):
    """``model`` with its first output only (a deep-supervision U-Net as a one-output model for
    inference and export; the same layers and weights)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                       model.outputs[0], name=model.name)
