"""Reachability: which parameters have a path, through the masks, to which units.

The walk goes backwards through a functional (or Sequential) Keras model, from the named units
to the inputs. It is conservative by construction: a layer is walked unit by unit only if its
exact type is on an allow-list of per-unit layers (:data:`PER_UNIT_LAYERS`: masked and plain
Dense, dropout and noise layers, element-wise activation layers, BatchNormalization over the last
axis, concatenation on the last axis, element-wise merges, Flatten/Reshape with an exact index
map) and its activation, if it has one, is a function object on the allow-list of element-wise
Keras activations (:data:`PER_UNIT_ACTIVATIONS`). Everything else (softmax, log_softmax,
sparsemax, glu, any user callable or lambda, LayerNormalization, attention, Lambda, custom or
subclassed layers, nested models, raw ``keras.ops`` calls) mixes all of its units: if one of its
outputs can move a named unit, all of its inputs and parameters can.

Convolutions (:class:`~maskmagic.layers.MaskedConv2D`, ``MaskedConv1D`` and plain Keras ``Conv1D``
/ ``Conv2D`` / ``Conv3D`` without groups) are walked channel by channel: a filter's output channel
depends on the input channels its channel table connects (spatial mixing stays inside a
channel, and every position of a channel counts as one unit). Pooling layers act per channel,
and ``Flatten`` maps each flattened unit back to its channel (channels-last layout), so a walk
through conv -> pool -> flatten -> dense loses nothing at the channel level.

Sparse layers (``MaskedDense(impl="sparse")``) are walked on their connection lists (and any
``scipy.sparse`` mask stays sparse), so the walk never creates an (inputs, units) array.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import scipy.sparse as sp

from maskmagic import _compat
from maskmagic.errors import SelectorError
from maskmagic.layers import MaskedConv1D, MaskedConv2D, MaskedDense
from maskmagic.masks.check import dense_bool
from maskmagic.training.selectors import kernel_units

__all__ = [
    "PER_UNIT_ACTIVATIONS",
    "PER_UNIT_LAYERS",
    "is_per_unit_activation",
    "Units",
    "channel_table",
    "connected_entries",
    "influencers",
    "layer_mask",
    "model_graph",
    "reaching_inputs",
]

# {layer name: bool vector over the layer's output units}
Units = dict[str, np.ndarray]


def _activations(*names: str) -> frozenset:
    """The Keras activation functions of these names that the installed Keras has."""
    return frozenset(getattr(keras.activations, n) for n in names if hasattr(keras.activations, n))


# Element-wise activations: output unit j depends on input unit j only. Identified by the
# function object (a user function that happens to be called "relu" is not on the list).
# Not here, so mixing: softmax, log_softmax, sparsemax, glu and anything unknown.
PER_UNIT_ACTIVATIONS = _activations(
    "celu",
    "elu",
    "exponential",
    "gelu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
)

# Layers (exact types, subclasses excluded: they may override ``call``) whose output unit j
# depends on input unit j only, with parameters that are per unit or shared by every unit.
_ELEMENTWISE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
)
_DENSE = (keras.layers.Dense, MaskedDense)
_RESHAPES = (keras.layers.Flatten, keras.layers.Reshape)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_CONVOLUTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    MaskedConv1D,
    MaskedConv2D,
)
_PER_CHANNEL_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)
PER_UNIT_LAYERS = (
    keras.layers.InputLayer,
    *_CONVOLUTIONS,
    *_PER_CHANNEL_POOLING,
    *_DENSE,
    *_ELEMENTWISE,
    keras.layers.Activation,
    keras.layers.BatchNormalization,
    keras.layers.Concatenate,
    *_MERGES,
    *_RESHAPES,
)


def model_graph(model: keras.Model):
    """Returns the functional graph of ``model`` (Sequential models are unwrapped).

    Raises:
        SelectorError: the model is subclassed, so its connections cannot be traced.
    """
    graph = _compat.functional_graph(model)
    if graph is None:
        raise SelectorError(
            f"freeze needs a functional or Sequential Keras model to trace connections; "
            f"received a subclassed model of type {type(model).__name__}"
        )
    return graph


def layer_mask(layer: keras.layers.Layer) -> np.ndarray | sp.csr_array | None:
    """The (inputs, units) connectivity of a Dense-like layer, or None if it has none.

    Returns:
        A numpy bool array, or a ``scipy.sparse.csr_array`` for a sparse layer.
    """
    if hasattr(layer, "get_mask") and getattr(layer, "built", False):
        mask = layer.get_mask()
        return sp.csr_array(mask) if sp.issparse(mask) else dense_bool(mask)
    kernel = getattr(layer, "kernel", None)
    if isinstance(layer, keras.layers.Dense) and kernel is not None:
        return np.ones(tuple(kernel.shape), dtype=bool)
    return None


def connected_entries(layer: keras.layers.Layer, kind: str) -> np.ndarray:
    """Bool array shaped like ``layer.kernel`` or ``layer.bias``: True where connected.

    On a sparse layer every entry of the (nnz,) kernel is a connection.
    """
    if kind == "bias":
        return np.asarray(layer.get_bias_mask(), dtype=bool)
    if getattr(layer, "is_sparse", False):
        return np.ones(tuple(layer.kernel.shape), dtype=bool)
    return dense_bool(layer.get_mask())


def reaching_inputs(mask: np.ndarray | sp.spmatrix, units: np.ndarray) -> np.ndarray:
    """Bool vector over the inputs: those with a connection to one of ``units``."""
    units = np.asarray(units, dtype=bool)
    if not sp.issparse(mask):
        return (np.asarray(mask, dtype=bool) & units[None, :]).any(axis=1)
    csr = sp.csr_array(mask)
    hits = np.concatenate([[0], np.cumsum(units[csr.indices], dtype=np.int64)])
    return hits[csr.indptr[1:]] > hits[csr.indptr[:-1]]


def is_per_unit_activation(activation: Any) -> bool:
    """True if ``activation`` (a function object) is on the element-wise allow-list."""
    try:
        return activation is None or activation in PER_UNIT_ACTIVATIONS
    except TypeError:  # unhashable callable: not a Keras activation
        return False


def _kind(layer: Any, inputs: list) -> str | None:
    """How the walk treats ``layer``: ``"dense"``, ``"elementwise"``, ... or None (mixing)."""
    kind = type(layer)
    if kind not in PER_UNIT_LAYERS:
        return None
    if kind is keras.layers.InputLayer:
        return "input"
    if kind in _DENSE:
        if len(inputs) != 1:
            return None
        own = {id(layer.kernel)} | ({id(layer.bias)} if layer.bias is not None else set())
        if any(id(v) not in own for v in layer.trainable_variables):  # LoRA, quantized, ...
            return None
        return "dense" if is_per_unit_activation(layer.activation) else None
    if kind in _CONVOLUTIONS:  # channel by channel: a filter reads the channels its table connects
        if len(inputs) != 1 or channel_table(layer) is None:
            return None
        own = {id(layer.kernel)} | ({id(layer.bias)} if layer.bias is not None else set())
        if any(id(v) not in own for v in layer.trainable_variables):
            return None
        return "conv" if is_per_unit_activation(layer.activation) else None
    if len(inputs) != 1 and kind not in (keras.layers.Concatenate, *_MERGES):
        return None
    if kind in _PER_CHANNEL_POOLING:  # output channel c reads input channel c only
        return "elementwise" if _channels_last(layer) else None
    if kind in _ELEMENTWISE:
        return "elementwise"
    if kind is keras.layers.Activation:
        return "elementwise" if is_per_unit_activation(layer.activation) else None
    if kind is keras.layers.BatchNormalization:
        return "elementwise" if layer.axis in (-1, len(inputs[0].shape) - 1) else None
    if kind is keras.layers.Concatenate:
        return "concat" if layer.axis in (-1, len(inputs[0].shape) - 1) else None
    if kind in _MERGES:
        return "merge"
    if kind in _RESHAPES:
        fixed = all(d is not None for d in inputs[0].shape[1:])
        row_major = getattr(layer, "data_format", "channels_last") == "channels_last"
        return "reshape" if fixed and row_major else None
    return None


def _width(tensor) -> int:
    dim = tensor.shape[-1] if len(tensor.shape) else 1
    return int(dim) if dim is not None else 1


def influencers(model: keras.Model, units: Units) -> dict[str, np.ndarray]:
    """Finds every parameter entry that can change any of the given units.

    Args:
        model: a functional or Sequential Keras model.
        units: {layer name: bool vector over that layer's output units}.

    Returns:
        {variable path: bool array shaped like the variable}, True where the entry has a path
        to one of the units. Variables with no such entry are absent.
    """
    graph = model_graph(model)
    affected: dict[int, np.ndarray] = {}  # id(KerasTensor) -> bool vector over its last axis
    for name, vector in units.items():
        layer = graph.get_layer(name)
        for node in _compat.inbound_nodes(layer):
            for tensor in node.outputs:
                _mark(affected, tensor, np.asarray(vector, dtype=bool))
    frozen: dict[str, np.ndarray] = {}
    by_depth = _compat.nodes_by_depth(graph)
    for depth in sorted(by_depth):
        for node in by_depth[depth]:
            found = [affected.get(id(t)) for t in node.outputs]
            outs = [o for o in found if o is not None and o.any()]
            if not outs:
                continue
            out_units = np.logical_or.reduce([np.resize(o, outs[0].shape) for o in outs])
            _propagate(node, out_units, affected, frozen)
    return frozen


def _mark(affected: dict, tensor, vector: np.ndarray) -> None:
    key = id(tensor)
    if key in affected and affected[key].shape == vector.shape:
        affected[key] = affected[key] | vector
    elif key in affected:
        affected[key] = np.ones_like(affected[key]) if vector.any() else affected[key]
    else:
        affected[key] = vector


def _freeze(frozen: dict, variable, entries: np.ndarray | bool) -> None:
    entries = np.broadcast_to(entries, tuple(variable.shape))
    path = variable.path
    frozen[path] = frozen[path] | entries if path in frozen else entries.copy()


def _propagate(node, out_units: np.ndarray, affected: dict, frozen: dict) -> None:
    layer = node.operation
    inputs: list = list(node.arguments.keras_tensors)
    kind = _kind(layer, inputs)
    if kind == "input":
        return
    if kind in ("dense", "conv"):
        _freeze(frozen, layer.kernel, kernel_units(layer, out_units))
        if layer.bias is not None:
            _freeze(frozen, layer.bias, out_units)
        table = layer_mask(layer) if kind == "dense" else channel_table(layer)
        _mark(affected, inputs[0], reaching_inputs(table, out_units))
        return
    if kind == "elementwise":
        for variable in layer.trainable_variables:  # PReLU's alpha, BatchNorm's gamma/beta
            per_unit = len(variable.shape) and variable.shape[-1] == out_units.size
            _freeze(frozen, variable, out_units if per_unit else True)
        _mark(affected, inputs[0], out_units)
        return
    if kind == "concat":
        start = 0
        for tensor in inputs:
            width = _width(tensor)
            _mark(affected, tensor, out_units[start : start + width])
            start += width
        return
    if kind == "merge":
        for tensor in inputs:
            same = _width(tensor) == out_units.size
            _mark(affected, tensor, out_units if same else np.ones(_width(tensor), dtype=bool))
        return
    if kind == "reshape":
        _mark(affected, inputs[0], _reshaped_units(out_units, inputs[0], node.outputs[0]))
        return
    # Not known to act unit by unit: every input and every parameter may move the units.
    for variable in getattr(layer, "trainable_variables", []):
        _freeze(frozen, variable, True)
    for tensor in inputs:
        _mark(affected, tensor, np.ones(_width(tensor), dtype=bool))


def _reshaped_units(out_units: np.ndarray, source, result) -> np.ndarray:
    """The last-axis units of ``source`` that feed the ``out_units`` of a row-major reshape.

    Units are tracked over the last axis only (every position of a unit at once), so the map
    goes through the flat index: flat ``f`` is unit ``f % width`` on either side.
    """
    size = int(np.prod(source.shape[1:]))
    flat = np.arange(size)
    hit = flat[out_units[flat % out_units.size]]
    units = np.zeros(_width(source), dtype=bool)
    units[hit % units.size] = True
    return units


# ----------------------------------------------------------------- convolutions


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def channel_table(layer) -> np.ndarray | None:
    """The (in_channels, filters) channel table of a convolution, or None for other layers.

    A masked convolution reports its own table; a plain Keras ``ConvND`` (channels last, no
    groups) connects every input channel to every filter.
    """
    if not getattr(layer, "built", False):
        return None
    if hasattr(layer, "get_channel_table"):
        return np.asarray(layer.get_channel_table(), dtype=bool)
    if (
        isinstance(layer, _CONVOLUTIONS)
        and getattr(layer, "groups", 1) == 1
        and _channels_last(layer)
    ):
        return np.ones(tuple(layer.kernel.shape)[-2:], dtype=bool)
    return None
