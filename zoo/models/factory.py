"""``zoo.load`` as a pipeline of small steps, each testable alone.

resolve (name / tag / path -> entry + card or file) -> plan (the input contract and what is
built: channels, shape, classifier top) -> build (the entry's builder behind the preprocessing;
builders never fetch: an encoder is built here and passed in) -> load weights (the format's
loader from ``zoo.weights``, into a model at the file's own shape, then ``copy_by_name``) ->
adapt (features, a new head, pooling, the MIL head). The weights' origin is recorded in the
``preprocess`` layer's config, so it survives ``.keras`` files and new heads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zoo._keras_compat import deterministic_names
from zoo._lazy import keras
from zoo.errors import InvalidArgumentError, WeightsError, did_you_mean
from zoo.hub.cards import WeightCard, all_cards
from zoo.models import adapt
from zoo.models.registry import ModelEntry, get_entry
from zoo.registry import UnknownNameError

ORIGINAL_CLASSES = 1000  # include_top=True without a card: the ImageNet classifier of the paper


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".h5", ".hdf5", ".keras")) or os.path.exists(value)


# --- resolve ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """What ``name`` and ``pretrained`` point at: the architecture, and a card or a file."""

    entry: ModelEntry
    card: WeightCard | None = None
    path: Path | None = None


def resolve_card(entry: ModelEntry, tag: str, want_top: bool) -> WeightCard:
    """The card ``arch.tag``; a ``tag_notop`` twin is taken when no classifier top is wanted."""
    cards = all_cards()
    plain, notop = cards.get(f"{entry.name}.{tag}"), cards.get(f"{entry.name}.{tag}_notop")
    if plain is None and notop is None:
        tags = sorted(c.tag for c in cards.values() if c.arch == entry.name)
        raise UnknownNameError(
            f"weights tag of {entry.name}",
            tag,
            tags,
            show_choices=bool(tags),
            hint="" if tags else f"{entry.name} has no weight cards yet.",
        )
    if plain is None:
        return notop
    if plain.include_top and not want_top and notop is not None:
        return notop
    return plain


def resolve(name: str, pretrained=None, *, want_top: bool = False) -> Resolved:
    """``arch`` or ``arch.tag`` plus ``pretrained`` (None, a tag or a path) -> Resolved."""
    arch, _, tag = name.partition(".")
    entry = get_entry(arch)
    if tag and pretrained not in (None, tag):
        raise InvalidArgumentError(
            f"load({name!r}, pretrained={pretrained!r}): the name already says tag {tag!r}."
        )
    pretrained = pretrained or tag or None
    if isinstance(pretrained, str | os.PathLike) and _looks_like_path(str(pretrained)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"pretrained={str(pretrained)!r}: no such file. Give the path of a "
                f".h5 / .weights.h5 file, or a tag from zoo.list_weights('{arch}.*')."
            )
        return Resolved(entry, path=path)
    if pretrained:
        return Resolved(entry, card=resolve_card(entry, str(pretrained), want_top))
    return Resolved(entry)


# --- plan: the input contract and what is built -----------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything the build and load steps need, decided before any layer exists.

    ``shape``: the model input (spatial sizes + ``in_chans``); ``backbone_chans``: the width the
    backbone's first layer takes (3 for a grey input on an RGB checkpoint, broadcast inside the
    preprocessing); ``file_chans``: the checkpoint's own; ``use_top``: the builder's classifier
    is built (``top_classes`` wide).
    """

    entry: ModelEntry
    card: WeightCard | None
    path: Path | None
    fmt: str | None
    shape: tuple
    in_chans: int
    backbone_chans: int
    file_chans: int
    mode: str
    use_top: bool
    top_classes: int

    @property
    def input_range(self) -> tuple[float, float]:
        """The values the model takes: its card's range, else raw 8-bit pixels [0, 255]."""
        return tuple(self.card.input_range) if self.card else (0.0, 255.0)

    @property
    def file_top(self) -> tuple[bool, int]:
        """(include_top, num_classes) of the checkpoint itself."""
        return (
            (self.card.include_top, self.card.num_classes)
            if self.card
            else (self.use_top, self.top_classes)
        )


def _check_num_classes(num_classes, include_top, features) -> None:
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 0
    ):
        raise InvalidArgumentError(
            f"num_classes={num_classes!r}: use None, 0 (no classifier) or a positive int."
        )
    if include_top not in (None, True, False):
        raise InvalidArgumentError(
            f"include_top={include_top!r}: use True (the architecture's own "
            "classifier), False (the backbone) or None (decided by num_classes)."
        )
    if include_top and features:
        raise InvalidArgumentError(
            "include_top=True with features=...: the feature maps come from the "
            "backbone; drop one of the two."
        )
    if include_top is False and num_classes:
        raise InvalidArgumentError(
            f"include_top=False with num_classes={num_classes}: a fresh head is "
            "include_top=None (the default) with num_classes; False gives the backbone."
        )


def _default_in_chans(entry, card, input_shape) -> int:
    """The channels of a given (H, W, C) input_shape, else the checkpoint's, else 3."""
    if (
        input_shape is not None
        and len(input_shape) == entry.spatial_dims + 1
        and input_shape[-1] is not None
    ):
        return adapt.check_in_chans(input_shape[-1])
    return card.in_chans if card else 3


def _top(resolved, num_classes, include_top, features) -> tuple[bool, int]:
    """(use_top, top_classes): whether the builder's own classifier is built, and how wide."""
    card = resolved.card
    if include_top and card is not None and not card.include_top:
        raise InvalidArgumentError(
            f"include_top=True: {card.name} has no classifier top; load the architecture without "
            "weights for its own classifier, or use num_classes=... for a fresh head on "
            f"{card.name}."
        )
    if include_top and card is not None and num_classes not in (None, card.num_classes):
        raise InvalidArgumentError(
            f"include_top=True keeps {card.name}'s own classifier of {card.num_classes} classes, "
            f"not {num_classes}; drop num_classes, or drop include_top for a fresh "
            f"{num_classes}-class head."
        )
    if include_top:
        return True, int(card.num_classes if card else num_classes or ORIGINAL_CLASSES)
    use_top = bool(
        card
        and card.include_top
        and num_classes in (None, card.num_classes)
        and not features
        and include_top is None
    )
    return use_top, int(card.num_classes if use_top else num_classes or 0)  # segmenters need it too


def plan(
    resolved: Resolved,
    *,
    in_chans=None,
    input_shape=None,
    num_classes=None,
    features=False,
    include_top=None,
) -> Plan:
    """Decide channels, input shape and classifier top for ``resolved`` (no model is built)."""
    entry, card, path = resolved.entry, resolved.card, resolved.path
    _check_num_classes(num_classes, include_top, features)
    if in_chans is None:
        in_chans = _default_in_chans(entry, card, input_shape)
    in_chans = adapt.check_in_chans(in_chans)
    if card and input_shape is None:
        input_shape = tuple(card.input_size[:-1])
    use_top, top_classes = _top(resolved, num_classes, include_top, features)
    if (
        use_top
        and card
        and card.fixed_input_size
        and tuple(input_shape)[:2] != tuple(card.input_size[:2])
    ):
        raise InvalidArgumentError(
            f"{card.name} has a classifier top that only takes {tuple(card.input_size[:2])} "
            "inputs; use that input_shape, or num_classes=... for a fresh head on the "
            f"{entry.name}.{card.tag}_notop weights."
        )
    shape = adapt.check_input_shape(input_shape, entry, in_chans)
    fmt, file_chans = (card.format, card.in_chans) if card else (None, in_chans)
    if path is not None:
        from zoo.weights import get_format, sniff_format

        fmt = sniff_format(path)
        file_chans = get_format(fmt).inspect(path).in_chans or in_chans
    backbone_chans = file_chans if (in_chans == 1 and file_chans == 3) else in_chans
    return Plan(
        entry,
        card,
        path,
        fmt,
        shape,
        in_chans,
        backbone_chans,
        file_chans,
        card.preprocess if card else entry.preprocess,
        use_top,
        top_classes,
    )


# --- build --------------------------------------------------------------------------------------


def _check_arguments(entry, input_shape, classifier_activation, options) -> None:
    """Arguments the builders would reject with a raw TypeError/ValueError, named with the fix."""
    if input_shape is not None and (
        isinstance(input_shape, str | bytes)
        or not isinstance(input_shape, tuple | list | np.ndarray)
        or not all(
            s is None or (isinstance(s, int | np.integer) and not isinstance(s, bool))
            for s in input_shape
        )
    ):
        example = (64,) * entry.spatial_dims
        raise InvalidArgumentError(
            f"input_shape={input_shape!r}: give a tuple of {entry.spatial_dims} spatial sizes "
            f"(plus optional channels), e.g. input_shape={example}."
        )
    if classifier_activation is not None and not callable(classifier_activation):
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise InvalidArgumentError(
                f"classifier_activation={classifier_activation!r} is not a Keras activation; "
                "use 'softmax', "
                "'sigmoid', None (logits) or another name from keras.activations."
            ) from None
    _check_options(entry, options)


def _check_options(entry, options) -> None:
    import inspect

    params = inspect.signature(entry.builder).parameters
    if not options or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    # a functools.partial's own settings
    bound = set(getattr(entry.builder, "keywords", None) or ())
    known = sorted(
        n
        for n, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and n not in ("include_top", "num_classes", "classifier_activation", "output_shape",
                      *bound)
    )
    if entry.takes_encoder:
        known.append("encoder_weights")
    unknown = sorted(set(options) - set(known))
    if unknown:
        public = sorted(
            n for n in inspect.signature(load).parameters if n not in ("name", "options")
        )
        raise InvalidArgumentError(
            f"zoo.load({entry.name!r}, ...) got unknown keyword argument(s) {', '.join(unknown)}."
            + "".join(did_you_mean(u, [*known, *public]) for u in unknown)
            + f" zoo.load takes {', '.join(public)}"
            + (f"; {entry.name} also takes {', '.join(known)}." if known else ".")
        )


def build_encoder(entry: ModelEntry, options: dict, shape: tuple) -> dict:
    """``options`` with ``encoder="name"`` replaced by that backbone's features model (its card's
    weights when ``encoder_weights`` names one), built for inputs of ``shape`` (of any size when
    ``encoder_depth`` cuts it); the builder only wires it in."""
    if not entry.takes_encoder or not isinstance(options.get("encoder"), str):
        return options
    options = dict(options)
    name, weights = options.pop("encoder"), options.pop("encoder_weights", None)
    encoder = get_entry(name)  # UnknownModelError, with suggestions, for a name not registered
    dims = entry.spatial_dims
    if (
        encoder.spatial_dims != dims
        or encoder.feature_layers is None
        or encoder.task != "classification"
    ):
        raise InvalidArgumentError(
            f"encoder={name!r} cannot be a {dims}D U-Net encoder: it needs a {dims}D "
            "classification backbone "
            "with multi-scale features (e.g. resnet50, densenet121, vgg16, simple_cnn)."
        )
    if options.get("encoder_depth") is not None:
        # built for any size: the builder cuts it after encoder_depth levels (unet._shallower),
        # so the deeper stages, which the input may be too small for, never see the input
        shape = (*(None,) * dims, shape[-1])
    options["encoder"] = load(name, weights, in_chans=shape[-1], input_shape=shape, features=True)
    return options


def build(
    p: Plan,
    *,
    classifier_activation="softmax",
    options=None,
    channels: int | None = None,
    top: tuple[bool, int] | None = None,
):
    """The entry's builder behind the preprocessing, as a Functional model without weights.

    ``channels`` and ``top`` (include_top, num_classes) build the checkpoint's own shape instead
    of the one asked for (the model a converter or a legacy file is loaded into).
    """
    from zoo.layers.preprocess import Normalize, normalization_params

    entry, card = p.entry, p.card
    in_chans, backbone_chans = (channels, channels) if channels else (p.in_chans, p.backbone_chans)
    use_top, top_classes = top or (p.use_top, p.top_classes)
    options = dict(options or {})
    if entry.latent_dim:  # a generator: a latent vector in, an image of the planned shape out
        width = int(options.get("latent_dim", entry.latent_dim))
        inputs = keras.Input(shape=(width,), name="latent")
        options["output_shape"] = (*p.shape[:-1], in_chans)
        source, scale, offset = normalization_params("none", width, width)
        input_range = (-math.inf, math.inf)
    else:
        inputs = keras.Input(shape=(*p.shape[:-1], in_chans), name="image")
        source, scale, offset = normalization_params(
            p.mode, in_chans, backbone_chans, getattr(card, "mean", None),
            getattr(card, "std", None)
        )
        input_range = p.input_range
    x = Normalize(
        source, scale, offset, mode=p.mode, input_range=input_range, name="preprocess"
    )(inputs)
    with deterministic_names():
        try:
            out = entry.builder(
                x,
                include_top=use_top,
                num_classes=top_classes,
                classifier_activation=classifier_activation,
                **options,
            )
        except TypeError as e:
            if "unexpected keyword argument" not in str(e) and "unexpected options" not in str(e):
                raise
            raise InvalidArgumentError(
                f"zoo.load({entry.name!r}, ...): {e}; see help(zoo.load) and "
                f"zoo.model_info({entry.name!r}) for the arguments it takes."
            ) from None
    # already a Functional model from `inputs`: no second graph walk
    if isinstance(out, keras.Model):
        return out
    # a builder with inputs of its own (e.g. scalar features beside the image)
    if isinstance(out, dict):
        return keras.Model([inputs, *out["inputs"]], out["outputs"], name=entry.name)
    return keras.Model(inputs, out, name=entry.name)


def build_plain(arch: str, in_chans: int):
    """``arch`` without weights at its minimum size (the 2D network of an inflated file)."""
    entry = get_entry(arch)
    size = (entry.min_size,) * entry.spatial_dims
    return build(
        plan(Resolved(entry), in_chans=in_chans, input_shape=size, num_classes=0), options={}
    )


# --- load weights -------------------------------------------------------------------------------


def weights_in_file_head(model, p: Plan, num_classes, features) -> bool:
    """Whether a user's ``.weights.h5`` file holds a classifier head (loaded into the final model).

    A file does not say its class count, so such a file needs num_classes=<its count>.
    """
    if (
        p.path is None
        or p.card is not None
        or p.fmt != "keras-weights-h5"
        or p.entry.task != "classification"
        or features
    ):
        return False
    from zoo.weights import get_format

    extra_arrays = get_format(p.fmt).inspect(p.path).arrays - len(model.weights)
    if extra_arrays > 0 and num_classes is None:
        raise WeightsError(
            f"pretrained={str(p.path)!r} holds {extra_arrays} weight arrays more than "
            f"{p.entry.name} without a classifier: it was saved with a classifier head. A file "
            "does not say its class count, so pass num_classes=<the number of classes it was "
            "saved with> to load the head too, or num_classes=0 for the backbone only."
        )
    return extra_arrays > 0 and bool(num_classes)


def fetch_weights(p: Plan) -> Plan:
    """The plan with ``path`` set to the card's verified local file (downloaded if needed)."""
    if p.card is None:
        return p
    from zoo.hub.fetch import fetch
    from zoo.weights import get_format

    get_format(p.fmt).before_fetch(p.card)  # e.g. no download that cannot be converted
    return replace(p, path=fetch(p.card))


def load_weights(model, p: Plan, *, classifier_activation="softmax", options=None) -> None:
    """Fill ``model`` from ``p.path`` through its format's loader.

    The loader fills a model of the file's own shape: ``model`` itself when it has that shape,
    else a twin built at the file's channels and top, copied into ``model`` by layer name.
    """
    from zoo.weights import get_format
    from zoo.weights.copying import copy_by_name

    loader = get_format(p.fmt)
    file_top = p.file_top
    own_shape = p.backbone_chans == p.file_chans and (
        not loader.converted or file_top[0] == p.use_top
    )
    target = (
        model
        if own_shape
        else build(
            p,
            classifier_activation=classifier_activation,
            options=options,
            channels=p.file_chans,
            top=file_top if loader.converted else None,
        )
    )
    loader.load_into(target, p.path, p.card, build=build_plain)
    if target is not model:
        copy_by_name(target, model)


def record_origin(model, p: Plan) -> dict:
    """Write where the weights came from (card name or file, and the file's sha256) into the
    ``preprocess`` layer's config; ``model.zoo_weights`` keeps the name for older callers."""
    from zoo.hub.fetch import file_hash

    origin = {"card": p.card.name} if p.card else {"file": str(p.path)}
    origin["sha256"] = file_hash(p.path, "sha256")
    model.get_layer("preprocess").weights_origin = origin
    model.zoo_weights = p.card.name if p.card else str(p.path)
    return origin


def weights_origin(model) -> dict | None:
    """Where a zoo model's weights came from: ``{"card" or "file": ..., "sha256": ...}``, or None
    for random weights. Kept in the model's config: it survives ``.keras`` files and new heads."""
    origin = next(
        (
            getattr(layer, "weights_origin", None)
            for layer in model.layers
            if layer.name == "preprocess"
        ),
        None,
    )
    if origin:
        return dict(origin)
    for layer in model.layers:  # a pretrained encoder nested in a U-Net
        inner = weights_origin(layer) if isinstance(layer, keras.Model) else None
        if inner:
            return {**inner, "part": layer.name}
    return None


# --- adapt --------------------------------------------------------------------------------------


def _inputs_of(model):
    """A one-input model's input as a tensor, not a one-element list: Keras 3 warns on every call
    ("The structure of `inputs` doesn't match") when a model built on [x] gets a tensor."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def adapt_model(
    model,
    p: Plan,
    *,
    num_classes=None,
    pooling="avg",
    dropout=0.0,
    classifier_activation="softmax",
    features=False,
):
    """The loaded backbone as asked: feature maps, a fresh head, a pooled backbone, or as is."""
    entry = p.entry
    if features:
        return keras.Model(
            _inputs_of(model),
            adapt.feature_outputs(model, entry, features),
            name=f"{entry.name}_features",
        )
    if p.use_top or entry.task not in adapt.HEAD_TASKS:
        return model
    # extra: auxiliary classifiers, kept as they are
    main, extra = (model.outputs[0], model.outputs[1:])
    if num_classes:
        out = adapt.classifier_head(main, int(num_classes), pooling, dropout, classifier_activation)
    elif pooling is None:
        return model
    else:
        out = adapt.global_pool(main, pooling, name="head_pool")
    return keras.Model(_inputs_of(model), [out, *extra] if extra else out, name=entry.name)


def _mil(
    name,
    pretrained,
    *,
    in_chans,
    input_shape,
    num_classes,
    pooling,
    dropout,
    classifier_activation,
    features,
    head,
    head_options,
    mil_pooling,
    options,
):
    """``head="mil"``: a multiple-instance head on the multi-scale features of the backbone."""
    from zoo.heads.builder import attach_head

    if pooling is not adapt.POOLING:
        raise InvalidArgumentError(
            f"pooling={pooling!r} with head={head!r}: pooling is the global pooling of a "
            "classifier; "
            f"name the MIL pooling with mil_pooling={pooling!r} instead (default {mil_pooling!r})."
        )
    backbone = load(
        name,
        pretrained,
        in_chans=in_chans,
        input_shape=input_shape,
        features=features or True,
        **options,
    )
    # logits
    activation = None if classifier_activation is adapt.ACTIVATION else classifier_activation
    return attach_head(
        backbone,
        head,
        num_classes=num_classes,
        pooling=mil_pooling,
        dropout=dropout,
        activation=activation,
        **(head_options or {}),
    )


def card_options(card: WeightCard | None) -> dict:
    """The builder options a card records (``[arch.tag.builder_options]``, written when a model
    built with non-default options is published, e.g. a GAN's widths): the defaults of
    ``zoo.load`` for that card, so the weights fit the model it builds. A card with a top may
    also name its head's ``output_activation`` (a translation generator's tanh), used unless
    ``classifier_activation`` is given."""
    table = card.extra.get("builder_options") if card is not None else None
    return dict(table) if isinstance(table, dict) else {}


def load(
    name: str,
    pretrained=None,
    *,
    in_chans: int | None = None,
    num_classes: int | None = None,
    input_shape=None,
    pooling: str | None = adapt.POOLING,
    dropout: float = 0.0,
    classifier_activation: str | None = adapt.ACTIVATION,
    features=False,
    head: str | None = None,
    head_options: dict | None = None,
    include_top: bool | None = None,
    mil_pooling: str = "lse",
    **options,
):
    """Build ``name`` (``arch`` or ``arch.tag``) as a Functional ``keras.Model``; see ``zoo.load``.

    resolve -> plan -> build -> fetch and load weights -> adapt: each step a function here.
    """
    if head is not None:  # weak-label heads: built on the multi-scale features
        return _mil(
            name,
            pretrained,
            in_chans=in_chans,
            input_shape=input_shape,
            num_classes=num_classes,
            pooling=pooling,
            dropout=dropout,
            classifier_activation=classifier_activation,
            features=features,
            head=head,
            head_options=head_options,
            mil_pooling=mil_pooling,
            options=options,
        )
    entry = get_entry(name.partition(".")[0])
    _check_arguments(entry, input_shape, classifier_activation, options)
    want_top = bool(include_top) or (include_top is None and num_classes is None and not features)
    p = plan(
        resolve(name, pretrained, want_top=want_top),
        in_chans=in_chans,
        input_shape=input_shape,
        num_classes=num_classes,
        features=features,
        include_top=include_top,
    )
    options = build_encoder(entry, {**card_options(p.card), **options},
                            (*p.shape[:-1], p.backbone_chans))
    if p.card is not None and p.use_top and classifier_activation is adapt.ACTIVATION:
        # an image-to-image generator's card: its head's own activation (tanh), not softmax
        classifier_activation = p.card.extra.get("output_activation", classifier_activation)
    model = build(p, classifier_activation=classifier_activation, options=options)
    head_in_file = weights_in_file_head(model, p, num_classes, features)
    p = fetch_weights(p)
    if p.path is not None and not head_in_file:
        load_weights(model, p, classifier_activation=classifier_activation, options=options)
    final = adapt_model(
        model,
        p,
        num_classes=num_classes,
        pooling=pooling,
        dropout=dropout,
        classifier_activation=classifier_activation,
        features=features,
    )
    if head_in_file:
        from zoo.weights.keras_h5 import load_with_keras

        load_with_keras(final, p.path, p.fmt)
    if p.path is not None:
        record_origin(final, p)
    return final


def input_contract(model) -> dict:
    """Kept for old imports: lives in zoo.layers.preprocess (imported on use: keeps this light)."""
    from zoo.layers.preprocess import input_contract as contract

    return contract(model)
