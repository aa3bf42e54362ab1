"""The arrays a GradientInspector shows: tiles for the front end and panels for the PNG.

A tile is either a layer's overview (pooled in blocks for a large layer, from the small arrays
the compiled pass returns) or a full-resolution window of at most ``ZOOM x ZOOM`` connections
(sliced from the full gradient tensors on request). See :mod:`maskmagic.widgets.inspector.tiles`
for the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.widgets.inspector import tiles
from maskmagic.widgets.inspector.inputs import finite, name_of, names

__all__ = [
    "LayerData",
    "Static",
    "arrays_for",
    "layer_info",
    "panels",
    "static_state",
    "tile_for",
    "top_rows",
    "update_of",
]


@dataclass
class Static:
    """What depends only on the masks and the op (recomputed when a mask changes)."""

    key: tuple
    connected: list  # per layer: dense bool (inputs, units), or csr_array (sparse layers)
    update: list  # per layer: bool array shaped like the kernel variable, or None
    tensors: list  # per layer: bool tf tensor of the update set for the pass, or None
    flags: list  # per layer: uint8 overview flags
    bias_connected: list
    bias_update: list
    frozen: list  # per layer: connected entries outside the op's update set
    on: list  # per layer: number of connected entries
    untouched: list  # per layer: the op changes no entry of the kernel
    bias_flags: list  # per layer: uint8 flags of the overview's bias cells, or None
    kernel_update: list = field(default_factory=list)  # per layer: the update set over the
    # kernel variable itself (kernel-shaped; for conv kernel windows), or None
    kernel_mask: list = field(default_factory=list)  # per layer: the kernel-shaped bool mask
    # of layers whose kernel windows are shown (conv), else None


@dataclass(frozen=True)
class LayerData:
    """What one layer's tile is drawn from: its probe, its result of the last gradient pass, the
    static state (masks, update sets) that result was computed with, its index and, for an op
    with ``hold=``, its projected gradient (a
    :class:`~maskmagic.widgets.inspector.projected.ProjectedLayer`, else None)."""

    probe: Any
    result: Any
    shown: Static
    index: int
    projected: Any = None


def update_of(op: Any, variable: Any, shape: tuple[int, ...] | None) -> np.ndarray | None:
    """The op's update set over a variable (None: no op, or no variable)."""
    if op is None or variable is None:
        return None
    try:
        update = op.update_mask(variable)
    except MaskMagicError:  # not a trainable variable: the op cannot change it
        return np.zeros(shape or (), dtype=bool)
    return update if update.shape == shape else None


def static_state(probes: list, op: Any, key: tuple) -> Static:
    """Masks, update sets and overview flags of every layer (they change with the masks)."""
    state = Static(key, [], [], [], [], [], [], [], [], [], [])
    for probe in probes:
        connected = probe.connected()
        kernel_update = update_of(op, probe.layer.kernel, tuple(probe.layer.kernel.shape))
        update = probe.table_update(kernel_update)
        bias_shape = None if probe.bias is None else (probe.shape[1],)
        if probe.kind == "sparse":
            rows, cols = probe.layer.connections()
            frozen = 0 if update is None else int((~update).sum())
            flags = tiles.sparse_block_flags(rows, cols, update, probe.grid)
        else:
            frozen = 0 if update is None else int((connected & ~update).sum())
            flags = tiles.block_flags(connected, update if frozen else None, probe.grid)
        state.connected.append(connected)
        state.update.append(update)
        state.kernel_update.append(kernel_update)
        state.kernel_mask.append(probe.kernel_mask() if probe.keeps_kernel_gradient else None)
        state.tensors.append(tf.constant(update) if frozen else None)
        state.flags.append(flags)
        state.bias_connected.append(probe.bias_connected())
        state.bias_update.append(update_of(op, probe.bias, bias_shape))
        state.frozen.append(frozen)
        state.on.append(int(connected.nnz if sp.issparse(connected) else connected.sum()))
        state.untouched.append(update is not None and not update.any())
        bias_connected, bias_update = state.bias_connected[-1], state.bias_update[-1]
        state.bias_flags.append(
            None
            if bias_connected is None
            else tiles.bias_flags(bias_connected, bias_update, probe.grid.bw)
        )
    return state


def layer_info(result: Any, static: Static, index: int) -> dict:
    """The per-layer numbers the front end shows (JSON)."""
    probe = result.probe
    inputs, units = probe.shape
    on = static.on[index]
    bias_g = result.bias_g
    bias_off = None if bias_g is None else ~static.bias_connected[index]
    return {
        "name": probe.name,
        "kind": probe.kind,
        "inputs": inputs,
        "units": units,
        "grid": [probe.grid.rows, probe.grid.cols],
        "block": [probe.grid.bh, probe.grid.bw],
        "would_be": probe.has_would_be,
        "norm": finite(result.norm),
        "zero_share": result.zeros / (inputs * units),
        "masked": inputs * units - on,
        "masked_nonzero": result.masked_nonzero,
        "frozen": static.frozen[index],
        "bias": bias_g is not None,
        "bias_norm": None if bias_g is None else finite(np.linalg.norm(bias_g)),
        "bias_masked_nonzero": 0 if bias_g is None else int(np.count_nonzero(bias_g[bias_off])),
    }


def top_rows(result: Any) -> list[dict]:
    """The connections of largest |gradient| over all layers, largest first (JSON)."""
    rows = []
    for layer in result.layers:
        layer_names = names(layer.probe.layer)
        seen = set()
        for i, j, g, w in layer.top:
            if (i, j) in seen:
                continue
            seen.add((i, j))
            rows.append(
                {
                    "layer": layer.probe.name,
                    "i": i,
                    "j": j,
                    "input": name_of(layer_names["inputs"], i),
                    "unit": name_of(layer_names["units"], j),
                    "gradient": finite(g),
                    "weight": finite(w),
                }
            )
    rows.sort(key=lambda r: -abs(r["gradient"] or 0.0))
    return rows


def _overview(data: LayerData) -> tuple[dict, dict]:
    probe, result, shown, index = data.probe, data.result, data.shown, data.index
    grid = probe.grid
    g = result.g_pool
    arrays = {
        "g": g,
        "wb": result.wb_pool if result.wb_pool is not None else g,
        "upd": result.upd_pool if result.upd_pool is not None else _no_update(g, shown, index),
        "w": result.weights,
        "flags": shown.flags[index],
        **_projected(data, None),
        **_bias(result, shown, index, slice(None), grid.bw, data.projected),
    }
    header = {"r0": 0, "c0": 0, "rows": grid.rows, "cols": grid.cols}
    header.update(bh=grid.bh, bw=grid.bw, zoomed=False)
    return header, arrays


def _no_update(g: np.ndarray, shown: Any, index: int) -> np.ndarray:
    """The update view when no connected entry is frozen: the op changes all of g (or, for a
    layer the op does not touch at all, none of it)."""
    return np.zeros_like(g) if shown.untouched[index] else g


def _projected(data: LayerData, window: tuple[slice, slice] | None) -> dict:
    """``{"prj": ...}``: the projected gradient of the overview (``window`` None) or of a
    full-resolution window; {} without a hold."""
    projected = data.projected
    if projected is None:
        return {}
    if window is None:
        return {"prj": projected.overview}
    return {"prj": np.asarray(projected.table[window], np.float32)}


def _bias(
    result: Any, shown: Any, index: int, columns: slice, bw: int, projected: Any = None
) -> dict:
    if result.bias_g is None:
        return {}
    extra = {}
    if projected is not None and projected.bias is not None:
        extra["bias_prj"] = tiles.pool_vector(projected.bias[columns], bw)
    update = shown.bias_update[index]
    update = None if update is None else update[columns]
    g = result.bias_g[columns]
    if columns == slice(None):  # the overview: flags cached with the masks
        flags = shown.bias_flags[index]
    else:
        flags = tiles.bias_flags(shown.bias_connected[index][columns], update, bw)
    return {
        "bias_g": tiles.pool_vector(g, bw),
        "bias_wb": tiles.pool_vector(result.bias_wb[columns], bw),
        "bias_upd": tiles.pool_vector(g if update is None else np.where(update, g, 0), bw),
        **extra,
        "bias_flags": flags,
    }


def _window(data: LayerData, r0: int, c0: int) -> tuple[dict, dict]:
    """A full-resolution window of up to ZOOM x ZOOM connections starting at (r0, c0)."""
    probe, result, shown, index = data.probe, data.result, data.shown, data.index
    inputs, units = probe.shape
    r1, c1 = min(r0 + tiles.ZOOM, inputs), min(c0 + tiles.ZOOM, units)
    update = shown.update[index]
    if probe.kind == "sparse":
        rows, cols = probe.layer.connections()
        inside = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        at = (rows[inside] - r0, cols[inside] - c0)
        g = np.zeros((r1 - r0, c1 - c0), np.float32)
        g[at] = result.g_values.numpy()[inside]
        weights = np.zeros_like(g)
        weights[at] = tf.convert_to_tensor(probe.layer.kernel).numpy()[inside]
        connected = np.zeros(g.shape, bool)
        connected[at] = True
        wb = g
        frozen = np.zeros(g.shape, bool)
        if update is not None:
            frozen[at] = ~update[inside]
        applied = np.where(frozen, 0, g).astype(np.float32)
        projected = {}
        if data.projected is not None:
            projected["prj"] = np.zeros_like(g)
            projected["prj"][at] = data.projected.table[inside]
    else:
        wb = np.asarray(result.wb[r0:r1, c0:c1])
        connected = shown.connected[index][r0:r1, c0:c1]
        g = probe.gradient_numpy(wb, connected)
        weights = probe.weight_matrix()[r0:r1, c0:c1].numpy()
        allowed = None if update is None else update[r0:r1, c0:c1]
        frozen = np.zeros(g.shape, bool) if allowed is None else connected & ~allowed
        applied = g if allowed is None else np.where(allowed, g, 0).astype(np.float32)
        projected = _projected(data, (slice(r0, r1), slice(c0, c1)))
    flags = np.where(connected, 0, tiles.MASKED) | np.where(frozen, tiles.FROZEN, 0)
    arrays = {
        "g": g,
        "wb": wb,
        "upd": applied,
        "w": weights,
        "flags": flags.astype(np.uint8),
        **projected,
        **_bias(result, shown, index, slice(c0, c1), 1, data.projected),
    }
    header = {"r0": r0, "c0": c0, "rows": r1 - r0, "cols": c1 - c0, "bh": 1, "bw": 1}
    header["zoomed"] = probe.grid.pooled
    return header, arrays


def _whole(data: LayerData) -> tuple[dict, dict]:
    if data.probe.kind == "sparse" and not data.probe.grid.pooled:
        return _window(data, 0, 0)  # exact values, not the pooled keys
    return _overview(data)


def arrays_for(data: LayerData, zoom: tuple[int, int] | None) -> tuple[dict, dict]:
    """(header, arrays) of a layer's tile: its overview, or the window at ``zoom`` (r0, c0)."""
    if zoom is not None and data.probe.grid.pooled:
        return _window(data, *zoom)
    return _whole(data)


def tile_for(
    data: LayerData, zoom: tuple[int, int] | None, revision: int
) -> tuple[dict, list[bytes]]:
    """The custom message (header, buffers) carrying a layer's tile."""
    header, arrays = arrays_for(data, zoom)
    header = {
        "type": "tile",
        "layer": data.index,
        "name": data.probe.name,
        "revision": revision,
        **header,
    }
    return tiles.tile(header, arrays)


_VIEW_KEYS = {
    "gradient": ("g", "bias_g"),
    "would_be": ("wb", "bias_wb"),
    "update": ("upd", "bias_upd"),
    "projected": ("prj", "bias_prj"),
}


def panels(layers: list[LayerData], view: str) -> list[dict]:
    """Per layer, the overview values of ``view``, for :func:`tiles.render_png`."""
    key, bias_key = _VIEW_KEYS[view]
    found = []
    for data in layers:
        _, arrays = _whole(data)
        found.append(
            {
                "values": arrays[key],
                "flags": arrays["flags"],
                "bias": arrays.get(bias_key),
                "bias_flags": arrays.get("bias_flags"),
            }
        )
    return found
