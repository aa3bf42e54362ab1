"""Selectors: turn ``"out[1]"``, ``"out.kernel[:, 1]"`` or a variable into per-entry masks.

A selector addresses any layer of a model that has a ``kernel`` and/or ``bias`` (a
:class:`~maskmagic.layers.MaskedDense` or a plain ``keras.layers.Dense`` alike):

============================  ===============================================================
``out``                       every trainable variable of layer ``out``
``out.kernel``/``out.bias``   one variable
``out[1]``, ``out[0:2]``      those units: their incoming kernel columns and bias entries
``out.kernel[2, 1]``          exactly those kernel entries (numpy indexing)
============================  ===============================================================

On a sparse :class:`~maskmagic.layers.MaskedDense` (``impl="sparse"``) the kernel variable is
the (nnz,) vector of connection weights, and a selection is a bool vector over it: ``out[1]``
and ``out.kernel[:, 1]`` pick the connections into unit 1, ``out.kernel[2, 1]`` picks the weight
of connection (2, 1), or raises :class:`SelectorError` if that connection is masked out.
Nothing of shape (inputs, units) is created.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from maskmagic.errors import SelectorError
from maskmagic.lang import SelectorSpec, parse_selector
from maskmagic.lang import selectors as rules

__all__ = [
    "Selection",
    "addressable",
    "all_layers",
    "kernel_units",
    "merge",
    "parameter_layers",
    "resolve",
    "resolve_units",
    "unit_count",
]

# {variable path: bool array shaped like the variable}
Selection = dict[str, np.ndarray]


def parameter_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The layers of ``model`` that a selector can address (those with a kernel or bias)."""
    found = {}
    for layer in all_layers(model):
        if getattr(layer, "kernel", None) is not None or getattr(layer, "bias", None) is not None:
            found[layer.name] = layer
    return found


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """The layers of ``model``, nested models flattened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def unit_count(layer: keras.layers.Layer) -> int:
    """Number of output units of a Dense-like layer (the kernel's last axis)."""
    if _is_sparse(layer):
        return int(layer.units)
    kernel = getattr(layer, "kernel", None)
    source = kernel if kernel is not None else layer.bias
    return int(source.shape[-1])


def addressable(layer: keras.layers.Layer) -> rules.Addressable:
    """What a selector can name in ``layer`` (a sparse kernel by its (inputs, units) shape)."""
    kernel = getattr(layer, "kernel", None)
    shape = None if kernel is None else tuple(kernel.shape)
    if _is_sparse(layer):
        shape = (int(layer.input_dim), int(layer.units))
    bias = getattr(layer, "bias", None) is not None
    return rules.Addressable(layer.name, shape, bias, unit_count(layer))


def _layer(model: keras.Model, spec: SelectorSpec) -> keras.layers.Layer:
    layers = parameter_layers(model)
    others = {layer.name: type(layer).__name__ for layer in all_layers(model)}
    table = {name: addressable(layer) for name, layer in layers.items()}
    rules.find(spec, table, "layers with parameters", others)
    return layers[spec.layer]


def _parse(selector: Any) -> SelectorSpec:
    if isinstance(selector, SelectorSpec):
        return selector
    return parse_selector(selector)  # a SelectorError for anything but a selector string


def _is_sparse(layer: keras.layers.Layer) -> bool:
    return bool(getattr(layer, "is_sparse", False))


def kernel_units(layer: keras.layers.Layer, units: np.ndarray) -> np.ndarray:
    """Bool array shaped like ``layer.kernel``: the entries whose unit is set in ``units``."""
    if _is_sparse(layer):
        return np.asarray(units, dtype=bool)[layer.connections()[1]]
    return np.broadcast_to(units, tuple(layer.kernel.shape)).copy()


def _sparse_entries(layer: keras.layers.Layer, spec: SelectorSpec, strict: bool) -> np.ndarray:
    """The connections of a sparse kernel that ``kernel[index]`` names (checked in range)."""
    rows, cols = layer.connections()
    shape = (layer.input_dim, layer.units)
    picked = np.ones(rows.size, dtype=bool)
    for axis, entry in enumerate(spec.index or ()):
        chosen = np.zeros(shape[axis], dtype=bool)
        chosen[entry] = True
        picked &= chosen[rows if axis == 0 else cols]
    if strict and not picked.any():
        index, text = spec.index or (), spec.text
        if len(index) == 2 and all(isinstance(e, (int, np.integer)) for e in index):
            i, j = (int(e) % n for e, n in zip(index, shape))
            raise SelectorError(
                f"selector {text!r}: connection ({i}, {j}) of layer {layer.name!r} is masked "
                f"out (not one of its {rows.size} connections), so it has no weight to train; "
                "expected a connection whose mask is 1"
            )
        raise SelectorError(
            f"selector {text!r} selects nothing: every entry it names is masked out "
            f"({layer.name}.kernel has shape {shape} (inputs, units), stored sparse as its "
            f"{rows.size} connections)"
        )
    return picked


def _index_into(shape: tuple, index: tuple) -> np.ndarray:
    """Bool array of ``shape``, True at ``index`` (checked by the rules: in range, not empty)."""
    chosen = np.zeros(shape, dtype=bool)
    chosen[index] = True
    return chosen


def resolve(model: keras.Model, selector: Any, strict: bool = True) -> Selection:
    """Resolves one selector (string, parsed selector or Keras variable) to entry masks.

    Its meaning is checked by :mod:`maskmagic.lang.selectors`, the rules the parser applies to a
    cell's selectors.

    Args:
        model: the model whose layers the selector names.
        selector: a selector string, a parsed selector, or a Keras variable.
        strict: when False, a sparse-kernel selector that names only masked-out connections
            gives an empty selection instead of an error (used after a mask change).

    Raises:
        SelectorError: unknown layer or variable, index out of range, or an empty selection.
    """
    if hasattr(selector, "assign") and not isinstance(selector, keras.Variable):
        raise SelectorError(
            f"expected a Keras variable of the model (such as model.get_layer('out').kernel) or "
            f"a selector string; received a {type(selector).__name__}"
        )
    if isinstance(selector, keras.Variable):
        paths = {v.path for v in model.trainable_variables}
        if selector.path not in paths:
            raise SelectorError(
                f"variable {selector.path!r} is not a trainable variable of model {model.name!r}"
            )
        return {selector.path: np.ones(tuple(selector.shape), dtype=bool)}
    spec = _parse(selector)
    layer = _layer(model, spec)
    shapes = addressable(layer)
    rules.check_variable(spec, shapes)
    rules.check_index(spec, shapes)
    if spec.variable is not None:
        variable = getattr(layer, spec.variable)
        if spec.index is None:
            return {variable.path: np.ones(tuple(variable.shape), dtype=bool)}
        if spec.variable == "kernel" and _is_sparse(layer):
            return {variable.path: _sparse_entries(layer, spec, strict)}
        return {variable.path: _index_into(tuple(variable.shape), spec.index)}
    if spec.index is None:
        return {v.path: np.ones(tuple(v.shape), dtype=bool) for v in layer.trainable_variables}
    units = _index_into((shapes.units,), spec.index)
    chosen = {}
    for name in rules.VARIABLES:
        variable = getattr(layer, name, None)
        if variable is not None and variable.trainable:
            if name == "kernel":
                chosen[variable.path] = kernel_units(layer, units)
            else:
                chosen[variable.path] = np.broadcast_to(units, tuple(variable.shape)).copy()
    return chosen


def resolve_units(
    model: keras.Model, selector: Any, option: str = "freeze"
) -> dict[str, np.ndarray]:
    """Resolves a unit selector (``out[0]``, ``out[0:2]`` or ``out``) to a unit vector.

    ``option`` (``"freeze"`` or ``"hold"``) names the argument in error messages.

    Returns:
        {layer name: bool vector over the layer's units}.
    """
    spec = _parse(selector)
    rules.check_units(spec, option)
    layer = _layer(model, spec)
    shapes = addressable(layer)
    rules.check_index(spec, shapes)
    if spec.index is None:
        return {layer.name: np.ones(shapes.units, dtype=bool)}
    return {layer.name: _index_into((shapes.units,), spec.index)}


def merge(selections: list[Selection]) -> Selection:
    """Union of several selections."""
    merged: Selection = {}
    for selection in selections:
        for path, chosen in selection.items():
            merged[path] = merged[path] | chosen if path in merged else chosen.copy()
    return merged
