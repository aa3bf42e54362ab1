"""What a MaskEditor edits, and how it is named: opening a layer or a matrix, checking cell
arguments and the static PNG of a mask."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from maskmagic import _compat, masks
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.widgets import palette
from maskmagic.widgets.editor import state
from maskmagic.widgets.png import png_bytes

__all__ = ["Source", "check_cells", "check_index", "fit_names", "is_net", "layer_matrix",
           "mask_image", "masked_layers", "open_source", "set_layer_matrix"]  # fmt: skip

_ON, _OFF = (np.array(palette.EDITOR[key], np.uint8) for key in ("on", "off"))


def mask_image(mask: np.ndarray) -> bytes:
    """A PNG of a 2-D bool mask (blue = connected): about 256 px or more, 1 px a cell at most.

    Masks longer than 1024 cells on a side get one pixel per block of cells, blue when any cell
    of the block is connected. Cells of 6 px or more get grid lines.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    longest = max(rows, cols, 1)
    if longest > 1024:
        step = -(-longest // 1024)
        padded = np.zeros((-(-rows // step) * step, -(-cols // step) * step), dtype=bool)
        padded[:rows, :cols] = mask
        mask = np.asarray(padded.reshape(padded.shape[0] // step, step, -1, step).any(axis=(1, 3)))
        longest = max(mask.shape)
    scale = min(max(256 // longest, 1), 24)
    rgb = np.where(mask[..., None], _ON, _OFF)
    rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    if scale >= 6:
        grid, alpha = np.array(palette.EDITOR["grid"], float), palette.GRID_ALPHA
        line = np.zeros(rgb.shape[:2], dtype=bool)
        line[::scale, :] = line[:, ::scale] = True
        rgb[line] = np.round(rgb[line] * (1 - alpha) + grid * alpha).astype(np.uint8)
    return png_bytes(rgb)


def check_size(shape: tuple[Any, ...], what: str) -> tuple[int, int]:
    """``(rows, cols)`` of a 2-D mask the editor can open (at most ``MAX_CELLS`` cells).

    Raises:
        MaskError: not 2-D, empty, or too large.
    """
    if len(shape) != 2:
        raise MaskError(
            f"MaskEditor needs a 2-D (inputs, units) mask or a MaskedDense layer; "
            f"received {what} with shape {tuple(shape)}"
        )
    rows, cols = (int(s) for s in shape)
    if rows < 1 or cols < 1:
        raise MaskError(
            f"MaskEditor needs at least one row and one column; received {what} with shape "
            f"{(rows, cols)}"
        )
    if rows * cols > state.MAX_CELLS:
        raise MaskError(
            f"{what} has {rows} x {cols} = {rows * cols:,} cells; the mask editor opens at most "
            f"{state.MAX_CELLS:,} (its front end holds the whole mask); edit larger masks "
            "with layer.set_mask() and the maskmagic.masks constructors"
        )
    return rows, cols


def fit_names(names: Any, count: int, what: str) -> list[str]:
    """``names`` as a list of ``count`` strings ([] for none).

    Raises:
        MaskError: a different number of names.
    """
    if names is None or len(names) == 0:
        return []
    names = [str(n) for n in names]
    if len(names) != count:
        raise MaskError(f"{what} has {len(names)} names, expected {count}")
    return names


def _source_name(layer: Any) -> str:
    """The name of the single layer feeding ``layer`` ("" when unknown or several)."""
    with contextlib.suppress(Exception):
        tensors = _compat.inbound_nodes(layer)[0].input_tensors
        if len(tensors) == 1:
            source = _compat.producing_layer(tensors[0])
            return "" if source is None else str(source.name)
    return ""


@dataclass(frozen=True)
class Source:
    """What an editor opens: the layer (or None), its mask as dense bool, names and labels."""

    layer: Any
    matrix: np.ndarray
    names: tuple[Any, Any]
    title: str
    input_label: str
    unit_label: str
    sparse: bool = False  # the layer's get_mask() returns scipy.sparse


def layer_matrix(layer: Any) -> Any:
    """The 2-D mask an editor shows for a layer: a conv's channel table, else ``get_mask()``."""
    if hasattr(layer, "get_channel_table"):
        return layer.get_channel_table()
    return layer.get_mask()


def set_layer_matrix(layer: Any, matrix: Any) -> None:
    """Writes an edited 2-D mask back: a conv's channel table, else ``set_mask``."""
    if hasattr(layer, "set_channel_table"):
        layer.set_channel_table(matrix)
    else:
        layer.set_mask(matrix)


def open_source(obj: Any) -> Source:
    """Opens a MaskedDense layer (duck-typed: ``get_mask``/``set_mask``) or a 0/1 matrix.

    Raises:
        MaskMagicError: another kind of layer, a model, an unbuilt layer, a bad or huge matrix.
    """
    if hasattr(obj, "get_channel_table") and hasattr(obj, "set_channel_table"):
        table = obj.get_channel_table()  # an unbuilt layer raises a MaskMagicError here
        check_size(table.shape, f"layer '{obj.name}'")
        label = _source_name(obj) or "input"
        return Source(obj, table, ((), ()), obj.name, f"{label} channel", f"{obj.name} filter")
    if hasattr(obj, "get_mask") and hasattr(obj, "set_mask"):
        current = obj.get_mask()  # an unbuilt layer raises a MaskMagicError here
        check_size(current.shape, f"layer '{obj.name}'")  # before densifying a sparse mask
        dense = current.toarray() if sp.issparse(current) else current
        names = (obj.input_names or (), obj.unit_names or ())
        label = _source_name(obj) or "input"
        matrix = np.asarray(dense, dtype=bool)
        return Source(obj, matrix, names, obj.name, label, obj.name, sp.issparse(current))
    if is_net(obj):
        masked = list(masked_layers(obj))
        raise MaskMagicError(
            f"MaskEditor edits one layer, and model '{obj.name}' has several; pass one of its "
            f"masked layers ({', '.join(masked) or 'none'}), e.g. "
            f"model.get_layer({(masked or ['name'])[0]!r})"
        )
    if hasattr(obj, "trainable_weights") and hasattr(obj, "name"):  # another Keras layer
        raise MaskMagicError(
            f"layer '{obj.name}' is a {type(obj).__name__}, which has no mask; expected a "
            "MaskedDense layer (or a 0/1 matrix)"
        )
    try:
        shape = tuple(obj.shape) if hasattr(obj, "shape") else np.shape(obj)
    except ValueError:  # ragged nested lists
        shape = ("ragged",)
    rows, cols = check_size(shape, f"a {type(obj).__name__}")
    checked = masks.validate(obj, (rows, cols))
    dense = checked.toarray() if sp.issparse(checked) else checked
    names = masks.names_of(obj) or ((), ())
    return Source(None, np.asarray(dense, dtype=bool), names, "", "input", "unit")


def check_index(i: Any, j: Any, shape: tuple[int, int]) -> tuple[int, int]:
    """``(i, j)`` as ints inside ``shape``.

    Raises:
        MaskError: not integers, or outside the mask.
    """
    for name, value, size in (("i", i, shape[0]), ("j", j, shape[1])):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise MaskError(f"{name} must be an integer; received {value!r}")
        if not 0 <= value < size:
            raise MaskError(f"{name}={value} is outside the mask; expected 0 <= {name} < {size}")
    return int(i), int(j)


def check_cells(
    cells: Iterable[tuple[int, int]] | np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """``(i, j)`` pairs as an ``(n, 2)`` int array inside ``shape``.

    Raises:
        MaskError: not integer pairs, or a pair outside the mask.
    """
    index = np.asarray(cells if isinstance(cells, np.ndarray) else list(cells))
    if index.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if index.ndim != 2 or index.shape[1] != 2 or index.dtype.kind not in "iu":
        raise MaskError(
            f"paint: cells must be (i, j) integer pairs; received an array of shape "
            f"{index.shape} and dtype {index.dtype}"
        )
    rows, cols = shape
    bad = (index[:, 0] < 0) | (index[:, 0] >= rows) | (index[:, 1] < 0) | (index[:, 1] >= cols)
    if bad.any():
        cell = tuple(int(v) for v in index[np.argmax(bad)])
        raise MaskError(f"paint: cell {cell} is outside the {rows} x {cols} mask")
    return index


def is_net(obj: Any) -> bool:
    """Whether ``obj`` looks like a Keras model (has ``get_layer`` and ``layers``)."""
    return hasattr(obj, "get_layer") and hasattr(obj, "layers") and not isinstance(obj, type)


def masked_layers(model: Any) -> dict[str, Any]:
    """The layers of ``model`` that have a mask (nested models flattened), by name."""
    from maskmagic.training.selectors import all_layers  # a model: Keras is loaded already

    return {layer.name: layer for layer in all_layers(model) if hasattr(layer, "get_mask")}
