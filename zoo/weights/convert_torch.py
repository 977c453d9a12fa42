"""PyTorch state dicts (torchvision checkpoints) -> the zoo's Keras models, once, cached.

The checkpoint is read with ``torch.load(weights_only=True)``: tensors only, no pickled code
is executed. Keras layer names are the state-dict module names with dots as underscores
(``inception3a_branch2_0_conv`` <- ``inception3a.branch2.0.conv``), so the mapping is
generic: convolutions (OIHW -> HWIO), dense layers (transposed) and BatchNorm statistics.
Models flatten channels-first before their dense layers where torch does (a Permute layer),
so no dense kernel needs reordering. The converted weights are cached in the card's cache folder
as ``<name>.<structure digest>.weights.h5``; later loads skip torch entirely. Beside each converted
file, ``<file>.json`` records its own sha256 and size and the hash of the checkpoint it came from;
a converted file that does not match its record (truncated, altered, written by an older zoo) is
never loaded: it is converted again, and ``zoo verify`` deletes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from zoo.errors import OptionalDependencyError, WeightsError, ZooError

INSTALL_HINT = 'pip install "medzoo[torch]"'


def torch_available() -> bool:
    """Whether ``import torch`` would work, without importing it (a None entry means blocked)."""
    import importlib.util
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def check_convertible(card) -> None:
    """Before downloading a torch checkpoint: fail now, not after the download, when torch is
    missing and no converted copy of this card is cached."""
    if torch_available():
        return
    from zoo.hub.fetch import cache_path

    stem = card.file_name.removesuffix(".pth").removesuffix(".pt")
    if any(cache_path(card).parent.glob(f"{stem}.*.weights.h5")):
        return
    raise OptionalDependencyError(
        f"{card.name} is a PyTorch checkpoint and converting it (once) needs torch, which is not "
        f"installed; nothing was downloaded. Run `{INSTALL_HINT}` (CPU wheels suffice) and load it "
        "again."
    )


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a torch checkpoint as numpy arrays
    (``torch.load(..., weights_only=True)``)."""
    try:
        import torch
    except ImportError:
        raise OptionalDependencyError(
            f"{path} is a PyTorch checkpoint and converting it needs torch, which is not "
            f"installed. Run `{INSTALL_HINT}` (CPU wheels suffice), or load a converted "
            ".weights.h5 instead."
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise WeightsError(
            f"{path} is not a readable PyTorch state dict ({type(e).__name__}: {str(e)[:200]}); "
            "re-download it (zoo verify) or check the file."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return {
        k.removeprefix("module."): v.detach().numpy()
        for k, v in state.items()
        if hasattr(v, "detach")
    }


def _keras_values(layer, module: str, state: dict) -> tuple[list[np.ndarray], list[str]]:
    """The values of ``layer``'s variables from torch ``module``'s tensors, and the keys used."""
    kind = type(layer).__name__
    if kind.startswith("Conv") and "Transpose" not in kind:
        names, convert = (
            ["weight", "bias"],
            [lambda w: np.transpose(w, (*range(2, w.ndim), 1, 0)), None],
        )
    elif kind == "Dense":
        names, convert = ["weight", "bias"], [np.transpose, None]
    elif kind == "BatchNormalization":
        names, convert = ["weight", "bias", "running_mean", "running_var"], [None] * 4
        names = [n for n, on in zip(names, (layer.scale, layer.center, True, True)) if on]
    else:
        raise WeightsError(f"layer {layer.name} ({kind}) has no torch conversion rule.")
    names = names[:len(layer.weights)]
    keys = [f"{module}.{n}" for n in names]
    missing = [k for k in keys if k not in state]
    if missing:
        raise WeightsError(
            f"the checkpoint has no {', '.join(missing)} for Keras layer {layer.name}; it was "
            "saved from another architecture or variant."
        )
    values = [(f or (lambda a: a))(state[k]) for k, f in zip(keys, convert)]
    for v, var, k in zip(values, layer.weights, keys):
        if tuple(v.shape) != tuple(var.shape):
            raise WeightsError(
                f"{k} has shape {state[k].shape}, which does not fit {var.path} "
                f"{tuple(var.shape)}; the checkpoint was saved with other widths or classes."
            )
    return values, keys


def convert_state_dict(model, state: dict[str, np.ndarray]) -> list[str]:
    """Set every weighted layer of ``model`` from ``state``; returns the checkpoint keys not used.

    Keys of modules the model does not have at all (torchvision's auxiliary heads when
    ``aux_logits=False``) may be left over; a leftover key of a module it has is an error.
    """
    used = set()
    roots = {layer.name.split("_")[0] for layer in model.layers if layer.weights}
    for layer in model.layers:
        if layer.weights:
            values, keys = _keras_values(layer, layer.name.replace("_", "."), state)
            layer.set_weights(values)
            used.update(keys)
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    stray = [k for k in left if k.split(".")[0] in roots]
    if stray:
        raise WeightsError(
            f"the checkpoint has tensors the model has no layer for: {', '.join(stray[:5])}; it "
            "was saved from another architecture or variant."
        )
    return left


def structure_digest(model) -> str:
    """Eight hex digits naming the model's weighted layers and shapes (the converted cache key)."""
    text = ";".join(f"{v.path}:{tuple(v.shape)}" for v in model.weights)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def converted_path(card, model) -> Path:
    """Where the converted weights of ``card`` for ``model``'s structure live: in the zoo cache."""
    from zoo.hub.fetch import cache_path

    stem = card.file_name.removesuffix(".pth").removesuffix(".pt")
    return cache_path(card).with_name(f"{stem}.{structure_digest(model)}.weights.h5")


def _record_path(cached: Path) -> Path:
    return cached.with_name(cached.name + ".json")


def _source_id(card) -> str:
    """The checkpoint a converted file came from: the card's hash (fetch verified the file)."""
    return ":".join(card.hash)


def converted_problem(cached: Path, card) -> str | None:
    """Why the converted file ``cached`` must not be loaded, or None when it matches its record."""
    from zoo.hub.fetch import file_hash

    try:
        record = json.loads(_record_path(cached).read_text())
        sha256, size, source = record["sha256"], int(record["size"]), record["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return "has no readable digest record (written by an older zoo, or altered)"
    if source != _source_id(card):
        return f"was converted from another checkpoint ({source}, not {_source_id(card)})"
    actual = cached.stat().st_size
    if actual != size:
        return (
            f"is {actual:,} bytes, not the {size:,} recorded at conversion (truncated or altered)"
        )
    if file_hash(cached, "sha256") != sha256:
        return "does not match the sha256 recorded at conversion (altered or corrupt)"
    return None


def converted_caches(card):
    """(path, problem or None) for every converted file of ``card`` in the cache."""
    from zoo.hub.fetch import cache_path

    if card.format != "torch-state-dict":
        return []
    source = cache_path(card)
    stem = card.file_name.removesuffix(".pth").removesuffix(".pt")
    if not source.parent.is_dir():
        return []
    return [
        (p, converted_problem(p, card)) for p in sorted(source.parent.glob(f"{stem}.*.weights.h5"))
    ]


def load_torch_checkpoint(model, path, card) -> Path:
    """Fill ``model`` from the torch checkpoint at ``path``; convert once, then reuse the cached
    .weights.h5.

    The cached file is loaded only when it matches the sha256 recorded when it was written;
    otherwise it is converted again (and replaced when the cache is writable).
    """
    from zoo.hub.fetch import _discard, _replace, cache_error, file_hash, inside_home

    path = Path(path)
    cached = inside_home(converted_path(card, model))
    problem = converted_problem(cached, card) if cached.is_file() else None
    if cached.is_file() and problem is None:
        try:
            model.load_weights(str(cached))
            return cached
        except Exception as e:  # h5py / Keras errors of a file that changed after the check
            problem = f"does not load ({type(e).__name__})"
    if problem:
        warnings.warn(
            f"the converted cache {cached} {problem}; converting {path} again.", stacklevel=3
        )
    try:
        state = read_state_dict(path)
    except ZooError as e:
        if problem:
            raise type(e)(
                f"the converted cache {cached} {problem}, and converting again failed: {e}"
            ) from None
        raise
    convert_state_dict(model, state)
    part = cached.with_name(f".{os.getpid()}.{cached.name}")  # Keras needs the .weights.h5 suffix
    record = _record_path(cached)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(inside_home(part)))
        text = json.dumps({"sha256": file_hash(part, "sha256"), "size": part.stat().st_size,
                           "source": _source_id(card)})
        record_part = record.with_name(f".{os.getpid()}.{record.name}")
        # a record without its file is harmless; a file without its record is not loaded
        _discard(record)
        _replace(part, cached)
        inside_home(record_part).write_text(text)
        _replace(record_part, record)
    except OSError as e:  # a read-only or full cache only costs a conversion next time
        _discard(part)
        warnings.warn(f"{cache_error(e, cached.parent, doing='cache the converted weights in')} "
                      "The weights were converted in memory.", stacklevel=3)
    return cached
