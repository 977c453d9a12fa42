"""MIL heads on a zoo backbone: a bag prediction plus the per-class instance maps (CAMs).

``build_mil_head`` takes a built features model (``zoo.load(name, features=True)``) and puts
a 1x1 instance classifier on its deepest map, so every position gets one score per class
(the class activation map), then pools those scores into the bag score. Attention pooling
instead pools the embeddings and shares the classifier between the bag embedding and the
positions, so bag logit = sum_n a_n * instance score_n exactly.

``build_tiled_mil`` does the same for a bag of N tiles (B, N, H, W, C): the tile encoder runs
once on all B*N tiles (folded into the batch), each tile is one instance.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.heads.mil import ClassWisePooling, check_maps_per_class, make_pooling
from zoo.registry import Registry

HEADS = ("mil",)
_HEADS = Registry("head", HEADS, argument="head")
ATTENTION = ("attention", "gated_attention")


def _check_classes(num_classes) -> int:
    if num_classes is None:
        return 1
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise InvalidArgumentError(
            f"num_classes={num_classes!r}: a MIL head needs a positive number of classes (1 for a "
            "single finding scored by a sigmoid)."
        )
    return int(num_classes)


def _outputs(bag, instance_maps, activation, extra=None):
    bag = keras.layers.Activation(activation or "linear", name="bag", dtype="float32")(bag)
    maps = keras.layers.Identity(name="instance_maps", dtype="float32")(instance_maps)
    return {"bag": bag, "instance_maps": maps, **(extra or {})}


def _pool_instances(embeddings, num_classes, pooling, maps_per_class, options):
    """(bag scores, instance scores, extras) from instance embeddings (B, H, W, D) or (B, N, D)."""
    classifier = keras.layers.Dense(
        num_classes * check_maps_per_class(maps_per_class), name="mil_classifier"
    )
    scores = classifier(embeddings)  # on a map: a 1x1 convolution, i.e. the class activation maps
    bag, extra = None, {}
    # pool the embeddings; the shared classifier makes bag = sum_n a_n score_n
    if pooling in ATTENTION:
        z, attention = make_pooling(pooling, return_attention=True, **options)(embeddings)
        bag = classifier(z)
        extra["attention"] = keras.layers.Identity(name="attention", dtype="float32")(attention)
    if maps_per_class > 1:
        classwise = ClassWisePooling(maps_per_class, name="classwise_pool")
        scores = classwise(scores)
        bag = None if bag is None else classwise(bag)
    if bag is None:
        bag = make_pooling(pooling, **options)(scores)
    return bag, scores, extra


def build_mil_head(features_model, pooling="lse", num_classes=1, *, maps_per_class=1, dropout=0.0,
                   activation=None, name=None, **options):
    """A Functional model: image -> {"bag": (B, C), "instance_maps": (B, h, w, C)} (+ "attention").

    features_model: a Keras model whose (deepest, i.e. last) output is a feature map
        (B, h, w, D), e.g. ``zoo.load("resnet50", features=True)``.
    pooling: a key of ``zoo.heads.mil.POOLINGS``; ``options`` go to that layer (r, k_max, ...).
    maps_per_class: WILDCAT's M maps per class, averaged class-wise into the instance maps.
    activation: None gives bag logits (pair with ``BagCrossEntropy(from_logits=True)``);
        "sigmoid" or "softmax" gives probabilities. Instance maps are always scores (logits).
    """
    num_classes = _check_classes(num_classes)
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError(f"dropout={dropout}: must be in [0, 1).")
    outputs = features_model.outputs
    features = outputs[-1]
    if len(features.shape) != 4:
        raise InputShapeError(
            "build_mil_head needs a spatial feature map (B, H, W, C) as the last output of "
            f"{features_model.name!r}, got shape {tuple(features.shape)} (rank "
            f"{len(features.shape)}). Pass zoo.load(name, features=True, ...) or a model that "
            "stops before its global pooling."
        )
    x = keras.layers.Dropout(dropout, name="mil_dropout")(features) if dropout else features
    bag, scores, extra = _pool_instances(x, num_classes, pooling, maps_per_class, options)
    inputs = features_model.inputs
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, _outputs(bag, scores, activation, extra),
                       name=name or f"{features_model.name}_mil_{pooling}")


@keras.saving.register_keras_serializable(package="zoo")
class FoldTiles(keras.layers.Layer):
    """(B, N, H, W, C) -> (B*N, H, W, C): every tile becomes one image of the batch."""

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise InputShapeError(
                f"tiles of shape {tuple(input_shape)}: a tiled bag is (B, N, H, W, C), rank 5; "
                "stack the tiles of each image on axis 1."
            )

    def call(self, x):
        return ops.reshape(x, (-1, *x.shape[2:]))

    def compute_output_shape(self, input_shape):
        n = None if None in input_shape[:2] else input_shape[0] * input_shape[1]
        return (n, *input_shape[2:])


@keras.saving.register_keras_serializable(package="zoo")
class UnfoldTiles(keras.layers.Layer):
    """[(B*N, D), tiles (B, N, ...)] -> (B, N, D): per-tile outputs back into their bags."""

    def call(self, inputs):
        x, tiles = inputs
        return ops.reshape(x, (ops.shape(tiles)[0], ops.shape(tiles)[1], x.shape[-1]))

    def compute_output_shape(self, input_shapes):
        x, tiles = input_shapes
        return (tiles[0], tiles[1], x[-1])


def build_tiled_mil(tile_encoder, pooling="attention", num_classes=1, *, num_tiles=None,
                    maps_per_class=1, activation=None, name=None, **options):
    """A bag model: tiles (B, N, H, W, C) -> {"bag": (B, C), "instance_maps": (B, N, C)}.

    tile_encoder: a Keras model on one tile; a feature-map output (B, h, w, D) is averaged
        into the tile's embedding, a vector output (B, D) is used as it is.
    num_tiles: N, or None for bags of any size (each batch must hold bags of equal N).
    """
    num_classes = _check_classes(num_classes)
    tile = tile_encoder.outputs[-1]
    if len(tile.shape) == 4:
        tile = keras.layers.GlobalAveragePooling2D(name="tile_gap")(tile)
        tile_encoder = keras.Model(tile_encoder.inputs, tile, name="tile_encoder")
    elif len(tile.shape) != 2:
        raise InputShapeError(
            f"tile encoder {tile_encoder.name!r} gives shape {tuple(tile.shape)}; it must give a "
            "feature map (B, h, w, D) or an embedding (B, D) per tile."
        )
    tiles = keras.Input(shape=(num_tiles, *tile_encoder.inputs[0].shape[1:]), name="tiles")
    embeddings = UnfoldTiles(name="unfold_tiles")(
        [tile_encoder(FoldTiles(name="fold_tiles")(tiles)), tiles]
    )
    bag, scores, extra = _pool_instances(embeddings, num_classes, pooling, maps_per_class, options)
    return keras.Model(
        tiles, _outputs(bag, scores, activation, extra), name=name or f"tiled_mil_{pooling}"
    )


def attach_head(
    features_model, head: str, *, num_classes=None, pooling="lse", dropout=0.0, **options
):
    """``zoo.load(..., head=...)``: put the named head on a features model."""
    _HEADS.check(head)
    return build_mil_head(
        features_model, pooling=pooling, num_classes=num_classes, dropout=dropout, **options
    )
