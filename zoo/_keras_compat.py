"""The one module of the zoo that touches private Keras API.

Keras 3 has no public way to walk a Functional model's call graph (which layer produced a
symbolic tensor, what that call took as inputs, the calls in depth order), to list the layers
of nested models, or to reset the automatic layer-name counters. The zoo needs all of these
(receptive fields, CAM, feature caching, deterministic layer names), so each need is one small
named function here, and nothing else in ``zoo`` reads a private Keras attribute
(tests/test_keras_compat.py checks both: that these functions still work with the installed
Keras, and that no other module uses the private names).

When a Keras release changes what a function relies on, it raises ``KerasCompatError`` naming
the function and the Keras version, instead of an ``AttributeError`` from deep inside a caller.
Keras is imported lazily, so importing this module stays free of TensorFlow.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass

from zoo.errors import KerasCompatError

TESTED_WITH = "3.15"  # the Keras version these functions were last checked against


def _keras_version() -> str:
    try:
        import keras

        return keras.__version__
    except Exception:  # noqa: BLE001 - only for the message
        return "unknown"


@contextlib.contextmanager
def _private(what: str):
    """Turn a missing private attribute into an error that names the function and the version."""
    try:
        yield
    except (AttributeError, ImportError, TypeError) as e:
        raise KerasCompatError(
            f"zoo._keras_compat.{what} relies on private Keras API that Keras "
            f"{_keras_version()} no longer provides ({type(e).__name__}: {e}); it was written "
            f"for Keras {TESTED_WITH}. Install keras~={TESTED_WITH} or update "
            "zoo/_keras_compat.py (tests/test_keras_compat.py shows what it needs)."
        ) from e


def producing_layer(tensor):
    """The layer (or nested model) whose call produced the symbolic Keras tensor ``tensor``."""
    with _private("producing_layer"):
        return tensor._keras_history.operation


def layer_inputs(tensor) -> list:
    """The input tensors of the call that produced ``tensor`` ([] for a model input)."""
    with _private("layer_inputs"):
        op, node_index, _ = tensor._keras_history
        nodes = op._inbound_nodes
        return list(nodes[node_index].input_tensors) if nodes else []


def all_layers(model) -> list:
    """Every layer of ``model``, nested models and their layers included, ``model`` itself not.

    ``model.layers`` lists only the top level; a backbone nested in a U-Net hides its
    BatchNormalization layers there.
    """
    with _private("all_layers"):
        return list(model._flatten_layers(include_self=False))


@dataclass(frozen=True)
class GraphNode:
    """One call of a layer inside a Functional model: the layer, its input and output tensors."""

    operation: object
    inputs: tuple
    outputs: tuple


def nodes_by_depth(model) -> list[GraphNode]:
    """The calls of a Functional model from its outputs (depth 0) back to its inputs."""
    with _private("nodes_by_depth"):
        by_depth = model._nodes_by_depth
        return [
            GraphNode(node.operation, tuple(node.input_tensors), tuple(node.outputs))
            for depth in sorted(by_depth)
            for node in by_depth[depth]
        ]



def has_call_graph(model) -> bool:
    """Whether ``model`` is a Functional model, whose calls :func:`nodes_by_depth` can walk.

    A Sequential model (a chain in ``model.layers`` order) or a subclassed one is not.
    """
    with _private("has_call_graph"):
        from keras.src.models.functional import Functional

        return isinstance(model, Functional)

@contextlib.contextmanager
def deterministic_names():
    """Auto-named layers (InceptionV3's, say) get the names of a fresh session, every build.

    Afterwards the session's counters move past every name used, so layers a user adds
    later never collide with the model's.
    """
    with _private("deterministic_names"):
        from keras.src.backend.common import global_state

        before = global_state.get_global_attribute("object_name_uids") or collections.defaultdict(
            int
        )
        fresh = collections.defaultdict(int)
        global_state.set_global_attribute("object_name_uids", fresh)
    try:
        yield
    finally:
        merged = collections.defaultdict(int, before)
        for key, count in fresh.items():
            merged[key] = max(merged[key], count)
        global_state.set_global_attribute("object_name_uids", merged)


def flat_iterator_next(iterator):
    """A function returning a tf.data iterator's next element as its flat list of tensors, or None.

    Uses TensorFlow's iterator internals (its resource and flat types/shapes); None where they are
    missing or eager execution is asynchronous, so the caller falls back to ``next``.
    """
    try:
        from tensorflow.python.eager import context
        from tensorflow.python.ops import gen_dataset_ops

        resource = iterator._iterator_resource
        types, shapes = iterator._flat_output_types, iterator._flat_output_shapes
        if context.context().is_async():
            return None
    except (ImportError, AttributeError):
        return None
    return lambda: gen_dataset_ops.iterator_get_next(
        resource, output_types=types, output_shapes=shapes)


def can_call_flat(concrete) -> bool:
    """Whether a traced ``ConcreteFunction`` can be called with flat tensors (private API)."""
    return hasattr(concrete, "_call_flat")


def call_concrete_flat(concrete, flat: list):
    """Call a traced ``ConcreteFunction`` with its flat input tensors, skipping argument binding."""
    return concrete._call_flat(flat, concrete.captured_inputs)
