"""``zoo.load``: card -> fetch -> builder -> adapt, giving a ready Functional model."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from zoo._keras_compat import deterministic_names
from zoo._lazy import keras
from zoo.errors import InvalidArgumentError, UnknownModelError, WeightsError, did_you_mean
from zoo.hub.cards import WeightCard, all_cards
from zoo.models import adapt
from zoo.models.registry import ModelEntry, get_entry
from zoo.registry import UnknownNameError


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".h5", ".hdf5", ".keras")) or os.path.exists(value)


def resolve_card(entry: ModelEntry, tag: str, want_top: bool) -> WeightCard:
    """The card ``arch.tag``; a ``tag_notop`` twin is taken when no classifier top is wanted."""
    cards = all_cards()
    plain, notop = cards.get(f"{entry.name}.{tag}"), cards.get(f"{entry.name}.{tag}_notop")
    if plain is None and notop is None:
        tags = sorted(c.tag for c in cards.values() if c.arch == entry.name)
        raise UnknownNameError(f"weights tag of {entry.name}", tag, tags, show_choices=bool(tags),
                               hint="" if tags else f"{entry.name} has no weight cards yet.")
    if plain is None:
        return notop
    if plain.include_top and not want_top and notop is not None:
        return notop
    return plain


def inspect_weights_file(path: Path) -> tuple[str, int | None]:
    """(format, input channels of the first layer) of a weights file given by path.

    Legacy Keras .h5 files (keras.applications) list their layers in order, so the first
    kernel tells the channel count; for Keras 3 .weights.h5 files it is left unknown (None).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                return "keras-weights-h5", None
            for name in group.attrs["layer_names"]:
                layer = group[name.decode() if isinstance(name, bytes) else name]
                weights = layer.attrs.get("weight_names", [])
                if len(weights):
                    first = weights[0].decode() if isinstance(weights[0], bytes) else weights[0]
                    shape = layer[first].shape
                    return "keras-legacy-h5", (int(shape[-2]) if len(shape) >= 3 else None)
            return "keras-legacy-h5", None
    except OSError as e:
        raise WeightsError(f"weights file {path} is not a readable HDF5 file ({e}); "
                           "re-download it or point pretrained= at a .h5 / .weights.h5 file.") from None


def count_weight_arrays(path: Path) -> int:
    """How many arrays (variables) a Keras 3 ``.weights.h5`` file holds."""
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: found.append(1) if isinstance(obj, h5py.Dataset) else None)
    return len(found)


def load_weights_file(model, path: Path, fmt: str, arch: str) -> None:
    """Load by Keras' own rules (legacy .h5 by layer order; .weights.h5 by structure).

    Nothing is written beside the user's file: a ``.weights.h5`` file under another name is
    reached through a symlink in a private temporary folder (Keras dispatches on the suffix).
    Keras' per-layer warnings are shown only when the load succeeds; a file that does not fit
    gives one WeightsError instead of a screenful of warnings.
    """
    import tempfile
    import warnings

    with contextlib.ExitStack() as stack:
        target = Path(path)
        if fmt == "keras-weights-h5" and not target.name.endswith(".weights.h5"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-weights-")))
            link = folder / "model.weights.h5"
            try:
                os.symlink(target.resolve(), link)
            except OSError:  # no symlinks on this file system: read a private copy
                import shutil

                shutil.copyfile(target, link)
            target = link
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        try:
            model.load_weights(str(target))
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise WeightsError(
                f"weights file {path} does not fit {arch} as built ({str(e).splitlines()[0]}). "
                f"Use a file saved from {arch} with the same options, or load the architecture it was saved from."
            ) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _adapted(w_src: np.ndarray, w_dst) -> np.ndarray:
    """``w_src`` for variable ``w_dst``; a first-conv kernel of another channel count is adapted."""
    if w_src.shape != tuple(w_dst.shape):
        if w_src.ndim < 3 or w_src.shape[-1] != w_dst.shape[-1]:
            raise WeightsError(f"cannot adapt weight {w_dst.path} from {w_src.shape} to {w_dst.shape}.")
        w_src = adapt.adapt_first_conv(w_src, w_dst.shape[-2])
    return w_src


def _copy_adapting(source, target) -> None:
    """Copy weights layer by layer, in order."""
    src = [layer for layer in source.layers if layer.weights]
    dst = [layer for layer in target.layers if layer.weights]
    for a, b in zip(src, dst, strict=True):
        b.set_weights([_adapted(w, v) for w, v in zip(a.get_weights(), b.weights, strict=True)])


def _load_torch(reference, path, card) -> None:
    from zoo.hub.convert_torch import load_torch_checkpoint

    load_torch_checkpoint(reference, path, card)


def _load_inflated(reference, path, card) -> None:
    """A 3D backbone from its 2D ImageNet file: build the 2D model, inflate every kernel."""
    from zoo.models.inflate3d import inflate_weights

    arch2d = card.extra["inflate_from"]
    two_d = load(arch2d, pretrained=str(path), in_chans=reference.inputs[0].shape[-1], num_classes=0, pooling=None,
                 input_shape=(get_entry(arch2d).min_size,) * 2)
    inflate_weights(two_d, reference)


# weights formats loaded into a reference model at the file's channel count, then copied by name
CONVERTED_FORMATS = {"torch-state-dict": _load_torch, "inflated-2d": _load_inflated}


def copy_by_name(source, target) -> None:
    """Copy every weighted layer of ``target`` from the same-named layer of ``source``.

    A first-conv kernel of another channel count is adapted (timm's rule); layers of
    ``source`` that ``target`` lacks (a classifier top) are left out.
    """
    for layer in target.layers:
        if layer.weights:
            src = source.get_layer(layer.name).get_weights()
            layer.set_weights([_adapted(w, v) for w, v in zip(src, layer.weights, strict=True)])


def _backbone(entry, shape, in_chans, backbone_chans, mode, card, *, include_top, num_classes,
              classifier_activation, options):
    from zoo.layers.preprocess import Normalize, normalization_params

    inputs = keras.Input(shape=(*shape[:-1], in_chans), name="image")
    source, scale, offset = normalization_params(
        mode, in_chans, backbone_chans, getattr(card, "mean", None), getattr(card, "std", None))
    input_range = card.input_range if card else (0.0, 255.0)
    x = Normalize(source, scale, offset, mode=mode, input_range=input_range, name="preprocess")(inputs)
    with deterministic_names():
        try:
            out = entry.builder(x, include_top=include_top, num_classes=num_classes,
                                classifier_activation=classifier_activation, **options)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e) and "unexpected options" not in str(e):
                raise
            raise InvalidArgumentError(f"zoo.load({entry.name!r}, ...): {e}; see help(zoo.load) and "
                                       f"zoo.model_info({entry.name!r}) for the arguments it takes.") from None
    if isinstance(out, keras.Model):  # already a Functional model from `inputs`: no second graph walk
        return out
    if isinstance(out, dict):  # a builder with inputs of its own (e.g. scalar features beside the image)
        return keras.Model([inputs, *out["inputs"]], out["outputs"], name=entry.name)
    return keras.Model(inputs, out, name=entry.name)


def _check_arguments(entry, input_shape, classifier_activation, options) -> None:
    """Arguments the builders would reject with a raw TypeError/ValueError, named with the fix."""
    if input_shape is not None and (isinstance(input_shape, str | bytes) or not isinstance(input_shape, tuple | list | np.ndarray)
                                    or not all(s is None or (isinstance(s, int | np.integer) and not isinstance(s, bool))
                                               for s in input_shape)):
        example = (64,) * entry.spatial_dims
        raise InvalidArgumentError(f"input_shape={input_shape!r}: give a tuple of {entry.spatial_dims} spatial sizes "
                                   f"(plus optional channels), e.g. input_shape={example}.")
    if classifier_activation is not None and not callable(classifier_activation):
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise InvalidArgumentError(
                f"classifier_activation={classifier_activation!r} is not a Keras activation; use 'softmax', "
                "'sigmoid', None (logits) or another name from keras.activations.") from None
    import inspect

    params = inspect.signature(entry.builder).parameters
    if options and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bound = set(getattr(entry.builder, "keywords", None) or ())  # a functools.partial's own settings
        known = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                       and n not in ("include_top", "num_classes", "classifier_activation", *bound))
        unknown = sorted(set(options) - set(known))
        if unknown:
            public = sorted(n for n in inspect.signature(load).parameters if n not in ("name", "options"))
            raise InvalidArgumentError(
                f"zoo.load({entry.name!r}, ...) got unknown keyword argument(s) {', '.join(unknown)}."
                + "".join(did_you_mean(u, [*known, *public]) for u in unknown)
                + f" zoo.load takes {', '.join(public)}"
                + (f"; {entry.name} also takes {', '.join(known)}." if known else "."))


def load(name: str, pretrained=None, *, in_chans: int | None = None, num_classes: int | None = None,
         input_shape=None, pooling: str | None = "avg", dropout: float = 0.0,
         classifier_activation: str | None = "softmax", features=False, head: str | None = None,
         head_options: dict | None = None, **options):
    """Build ``name`` (``arch`` or ``arch.tag``) as a Functional ``keras.Model``.

    pretrained: None (random init, explicitly), a card tag such as "imagenet", or a path to a
        weights file (.h5 legacy or .weights.h5). A missing or bad file is an error, never a
        silent random init.
    in_chans: input channels; default the checkpoint's (3 without one). 1 on a 3-channel
        checkpoint broadcasts the grey channel inside
        the preprocessing (exact: the model on g equals the RGB model on (g, g, g)); any other
        count adapts the first convolution by timm's repeat-and-scale rule.
    num_classes: None keeps a card's classifier when it has one (else no classifier); a weights
        file saved with a classifier head needs num_classes=<its class count> to keep that head
        (num_classes=None is then an error naming the fix, 0 takes the backbone only);
        0 gives the backbone, pooled by ``pooling`` ("avg", "max" or None for the feature map);
        any other number gives a fresh head named ``head_*`` on the pretrained backbone.
    input_shape: (H, W) or (H, W, C); default the card's or the architecture's size.
    features: True (or a tuple of strides) returns the multi-scale feature maps instead.
    head: "mil" puts a multiple-instance head on the deepest feature map (zoo.heads.builder):
        ``pooling`` names the MIL pooling, ``head_options`` its settings (r, k_max, ...);
        ``features`` may pick the map (e.g. (8,) for stride 8; default the deepest).
    The input contract: float pixel values in the card's ``input_range`` (ImageNet cards:
    RGB or grey in [0, 255]); the preprocessing is inside the model (layer ``preprocess``).
    """
    if head is not None:  # weak-label heads: built on the multi-scale features
        from zoo.heads.builder import attach_head

        backbone = load(name, pretrained, in_chans=in_chans, input_shape=input_shape, features=features or True, **options)
        return attach_head(backbone, head, num_classes=num_classes, pooling=pooling, dropout=dropout, **(head_options or {}))
    arch, _, tag = name.partition(".")
    entry = get_entry(arch)
    _check_arguments(entry, input_shape, classifier_activation, options)
    if in_chans is not None:
        in_chans = adapt.check_in_chans(in_chans)
    if tag and pretrained not in (None, tag):
        raise InvalidArgumentError(f"load({name!r}, pretrained={pretrained!r}): the name already says tag {tag!r}.")
    pretrained = pretrained or tag or None
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 0):
        raise InvalidArgumentError(f"num_classes={num_classes!r}: use None, 0 (no classifier) or a positive int.")
    want_top = num_classes is None and not features

    card, path = None, None
    if isinstance(pretrained, str | os.PathLike) and _looks_like_path(str(pretrained)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsError(f"pretrained={str(pretrained)!r}: no such file. Give the path of a "
                               f".h5 / .weights.h5 file, or a tag from zoo.list_weights('{arch}.*').")
    elif pretrained:
        card = resolve_card(entry, str(pretrained), want_top)
    if in_chans is None:
        in_chans = card.in_chans if card else 3
    if card and input_shape is None:
        input_shape = tuple(card.input_size[:-1])
    use_top = bool(card and card.include_top and num_classes in (None, card.num_classes) and not features)
    if use_top and card.extra.get("fixed_input_size") and tuple(input_shape)[:2] != tuple(card.input_size[:2]):
        raise InvalidArgumentError(
            f"{card.name} has a classifier top that only takes {tuple(card.input_size[:2])} inputs; "
            f"use that input_shape, or num_classes=... for a fresh head on the {arch}.{card.tag}_notop weights.")
    shape = adapt.check_input_shape(input_shape, entry, in_chans, divisor=int(entry.options.get("divisor", 1)))

    mode = card.preprocess if card else entry.preprocess
    fmt, file_chans = (card.format, card.in_chans) if card else (None, in_chans)
    if path is not None:
        fmt, found = inspect_weights_file(path)
        file_chans = found or in_chans
    backbone_chans = file_chans if (in_chans == 1 and file_chans == 3) else in_chans
    top_classes = card.num_classes if use_top else int(num_classes or 0)  # segmentation/aux heads need it
    build = dict(include_top=use_top, num_classes=top_classes, classifier_activation=classifier_activation,
                 options=options)
    model = _backbone(entry, shape, in_chans, backbone_chans, mode, card, **build)

    head_in_file = False  # a user's .weights.h5 saved with a classifier head: loaded into the final model
    if path is not None and card is None and fmt == "keras-weights-h5" and entry.task == "classification" \
            and not features:
        extra_arrays = count_weight_arrays(path) - len(model.weights)
        if extra_arrays > 0 and num_classes is None:
            raise WeightsError(
                f"pretrained={str(path)!r} holds {extra_arrays} weight arrays more than {arch} without a "
                "classifier: it was saved with a classifier head. A file does not say its class count, so "
                "pass num_classes=<the number of classes it was saved with> to load the head too, or "
                "num_classes=0 for the backbone only.")
        head_in_file = extra_arrays > 0 and bool(num_classes)
    if card is not None:
        from zoo.hub.fetch import fetch

        if card.format == "torch-state-dict":  # no download that cannot be converted
            from zoo.hub.convert_torch import check_convertible

            check_convertible(card)
        path = fetch(card)
    if path is not None and fmt in CONVERTED_FORMATS:
        reference = model
        if backbone_chans != file_chans or use_top != card.include_top:  # convert into the file's own shape
            reference = _backbone(entry, (*shape[:-1], file_chans), file_chans, file_chans, mode, card,
                                  **{**build, "include_top": card.include_top, "num_classes": card.num_classes})
        CONVERTED_FORMATS[fmt](reference, path, card)
        if reference is not model:
            copy_by_name(reference, model)
        model.zoo_weights = card.name
    elif path is not None and head_in_file:
        model.zoo_weights = str(path)
    elif path is not None:
        if backbone_chans == file_chans:
            load_weights_file(model, path, fmt, arch)
        else:
            reference = _backbone(entry, (*shape[:-1], file_chans), file_chans, file_chans, mode, card, **build)
            load_weights_file(reference, path, fmt, arch)
            _copy_adapting(reference, model)
        model.zoo_weights = card.name if card else str(path)

    if features:
        return keras.Model(_inputs_of(model), adapt.feature_outputs(model, entry, features), name=f"{arch}_features")
    if use_top or entry.task != "classification":
        return model
    main, extra = model.outputs[0], model.outputs[1:]  # extra: auxiliary classifiers, kept as they are
    if num_classes:
        out = adapt.classifier_head(main, int(num_classes), pooling, dropout, classifier_activation)
    elif pooling is None:
        return model
    else:
        out = adapt.global_pool(main, pooling, name="head_pool")
    final = keras.Model(_inputs_of(model), [out, *extra] if extra else out, name=arch)
    if head_in_file:
        load_weights_file(final, path, fmt, arch)
        final.zoo_weights = str(path)
    return final


def _inputs_of(model):
    """A one-input model's input as a tensor, not a one-element list: Keras 3 warns on every call
    ("The structure of `inputs` doesn't match") when a model built on [x] is called with a tensor."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def input_contract(model) -> dict:
    """Kept for old imports: lives in zoo.layers.preprocess (imported on use: keeps this light)."""
    from zoo.layers.preprocess import input_contract as contract

    return contract(model)


def backbone_features(arch: str, x, pretrained=None) -> dict:
    """Multi-scale features of ``arch`` applied to the Keras tensor ``x`` (for encoder-decoders)."""
    entry = get_entry(arch)
    if entry.task != "classification" or entry.feature_layers is None:
        raise UnknownModelError(f"{arch!r} cannot serve as an encoder: it has no multi-scale features.")
    shape = tuple(x.shape[1:])
    model = load(arch, pretrained, in_chans=shape[-1], input_shape=shape, features=True)
    outputs = model(x)
    names = list(model.output_names)
    return {int(n.removeprefix("features_stride")): o for n, o in zip(names, outputs, strict=True)}
