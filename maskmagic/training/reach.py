"""Reachability: which parameters have a path, through the masks, to which units.

The walk goes backwards through a functional (or Sequential) Keras model, from the named units
to the inputs. It is exact for masked and plain Dense layers, dropout and element-wise layers,
concatenation and element-wise merges (Add, Multiply, ...). Any other layer is treated
conservatively: if one of its outputs can move a named unit, all of its inputs and parameters
can. A ``softmax`` activation mixes every unit of its layer, and is treated so.

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

import keras
import numpy as np
import scipy.sparse as sp

from maskmagic import _compat
from maskmagic.errors import SelectorError
from maskmagic.masks.check import dense_bool
from maskmagic.training.selectors import kernel_units

__all__ = [
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

_ELEMENTWISE = (
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
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


def _is_mixing(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in _MIXING_ACTIVATIONS


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
            outs = [affected.get(id(t)) for t in node.outputs]
            outs = [o for o in outs if o is not None and o.any()]
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


def _freeze(frozen: dict, variable, entries: np.ndarray) -> None:
    entries = np.broadcast_to(entries, tuple(variable.shape))
    path = variable.path
    frozen[path] = frozen[path] | entries if path in frozen else entries.copy()


def _propagate(node, out_units: np.ndarray, affected: dict, frozen: dict) -> None:
    layer = node.operation
    inputs: list = list(node.arguments.keras_tensors)
    connectivity = None if channel_table(layer) is not None else layer_mask(layer)
    if isinstance(layer, keras.layers.InputLayer):
        return
    if _is_mixing(layer):
        out_units = np.ones_like(out_units)
    if _propagate_conv(layer, inputs, out_units, affected, frozen):
        return
    if _propagate_pool(layer, inputs, out_units, affected):
        return
    if _propagate_flatten(layer, inputs, out_units, affected):
        return
    if connectivity is not None and len(inputs) == 1:
        _freeze(frozen, layer.kernel, kernel_units(layer, out_units))
        if getattr(layer, "bias", None) is not None:
            _freeze(frozen, layer.bias, out_units)
        _mark(affected, inputs[0], reaching_inputs(connectivity, out_units))
        return
    if isinstance(layer, _ELEMENTWISE) and len(inputs) == 1:
        for variable in layer.trainable_variables:  # PReLU's alpha: one per unit
            _freeze(frozen, variable, out_units if variable.shape[-1] == out_units.size else True)
        _mark(affected, inputs[0], out_units)
        return
    if isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, len(inputs[0].shape) - 1):
        start = 0
        for tensor in inputs:
            width = _width(tensor)
            _mark(affected, tensor, out_units[start : start + width])
            start += width
        return
    if isinstance(layer, _MERGES):
        for tensor in inputs:
            same = _width(tensor) == out_units.size
            _mark(affected, tensor, out_units if same else np.ones(_width(tensor), dtype=bool))
        return
    # Unknown or mixing layer: every input and every parameter may move the units.
    for variable in getattr(layer, "trainable_variables", []):
        _freeze(frozen, variable, True)
    for tensor in inputs:
        _mark(affected, tensor, np.ones(_width(tensor), dtype=bool))


# ----------------------------------------------------------------- convolutions, pooling, flatten


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


def _propagate_conv(layer, inputs: list, out_units: np.ndarray, affected: dict, frozen: dict):
    """A convolution, channel by channel: True when ``layer`` is one and was walked."""
    table = channel_table(layer)
    if table is None or len(inputs) != 1 or out_units.size != table.shape[1]:
        return False
    _freeze(frozen, layer.kernel, kernel_units(layer, out_units))
    if getattr(layer, "bias", None) is not None:
        _freeze(frozen, layer.bias, out_units)
    _mark(affected, inputs[0], reaching_inputs(table, out_units))
    return True


def _propagate_pool(layer, inputs: list, out_units: np.ndarray, affected: dict) -> bool:
    """Pooling acts on each channel alone: output channel c reads input channel c only."""
    if not isinstance(layer, _PER_CHANNEL_POOLING) or not _channels_last(layer):
        return False
    if len(inputs) != 1 or _width(inputs[0]) != out_units.size:
        return False
    _mark(affected, inputs[0], out_units)
    return True


def _propagate_flatten(layer, inputs: list, out_units: np.ndarray, affected: dict) -> bool:
    """Flatten (channels last): flattened unit k comes from channel ``k % channels``."""
    if not isinstance(layer, keras.layers.Flatten) or not _channels_last(layer):
        return False
    if len(inputs) != 1:
        return False
    shape = inputs[0].shape[1:]
    if any(d is None for d in shape) or int(np.prod(shape)) != out_units.size:
        return False
    channels = int(shape[-1]) if shape else 1
    _mark(affected, inputs[0], out_units.reshape(-1, channels).any(axis=0))
    return True
