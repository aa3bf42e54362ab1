"""What the gradient inspector sends to its front end, and its static PNG (numpy only).

A *tile* is one layer's heatmap as the front end draws it: a grid of cells, each cell one
connection (full resolution) or a block of ``bh x bw`` connections (the pooled overview of a
large layer). A tile travels as one custom message: a small JSON header and little-endian
binary buffers, listed by name in ``header["buffers"]``:

* ``g`` (float32): the gradient (masked = 0); per block, the entry of largest magnitude;
* ``wb`` (float32): the would-be gradient (the gradient, for layers without one);
* ``upd`` (float32): the gradient restricted to the op's update set;
* ``prj`` (float32, only for an op with ``hold=``): that gradient projected by the op's hold,
  what its optimizer sees (:mod:`maskmagic.widgets.inspector.projected`);
* ``w`` (float32): the kernel values (full-resolution tiles only);
* ``flags`` (uint8): 1 all masked, 2 some masked, 4 all connected frozen, 8 some frozen;
* ``bias_g``, ``bias_wb``, ``bias_upd``, ``bias_prj`` (float32) and ``bias_flags`` (uint8): the same for the
  biases of the tile's columns (per column block when pooled).

The header: ``type`` ("tile"), ``layer`` (index), ``name``, ``revision``, ``r0``/``c0`` (first
connection of the window), ``rows``/``cols`` (cells), ``bh``/``bw`` (connections per cell),
``zoomed`` and ``buffers`` (the names above, in buffer order; ``w`` is absent from pooled
tiles, the bias entries from layers without a bias).

A tile has at most ``GRID x GRID`` (overview) or ``ZOOM x ZOOM`` (zoom) cells: 256 x 256 cells
are 1.1 MB, far below the 8 MB bound on a message (:data:`MAX_MESSAGE_BYTES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from maskmagic.widgets import palette
from maskmagic.widgets.inspector.probes import GRID, Grid
from maskmagic.widgets.png import png_bytes

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ZOOM",
    "block_flags",
    "colours",
    "flags_from_counts",
    "message_bytes",
    "pool_entries",
    "pool_matrix",
    "render_png",
    "sparse_block_flags",
    "tile",
]

#: No message to the front end is larger than this.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Connections per axis of a zoomed (full-resolution) window.
ZOOM = GRID

MASKED, SOME_MASKED, FROZEN, SOME_FROZEN = 1, 2, 4, 8

_ANCHORS = np.array(palette.INSPECTOR["diverging"], float)


def flags_from_counts(on: np.ndarray, frozen: np.ndarray | None, sizes: np.ndarray) -> np.ndarray:
    """uint8 flags from the connected and frozen counts of each cell of ``sizes`` entries."""
    flags = np.where(on == 0, MASKED, 0) | np.where((on > 0) & (on < sizes), SOME_MASKED, 0)
    if frozen is not None:
        flags |= np.where((frozen > 0) & (frozen == on), FROZEN, 0)
        flags |= np.where((frozen > 0) & (frozen < on), SOME_FROZEN, 0)
    return flags.astype(np.uint8)


def _sizes(grid: Grid) -> np.ndarray:
    rows = np.minimum(grid.bh, grid.inputs - np.arange(0, grid.inputs, grid.bh))
    cols = np.minimum(grid.bw, grid.units - np.arange(0, grid.units, grid.bw))
    return rows[:, None] * cols[None, :]


def block_flags(connected: np.ndarray, update: np.ndarray | None, grid: Grid) -> np.ndarray:
    """uint8 flags of each overview cell from dense bool (inputs, units) masks."""
    rows = np.arange(0, grid.inputs, grid.bh)
    cols = np.arange(0, grid.units, grid.bw)

    def counts(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(a.astype(np.int32), rows, axis=0), cols, axis=1)

    frozen = None if update is None else counts(connected & ~update)
    return flags_from_counts(counts(connected), frozen, _sizes(grid))


def sparse_block_flags(
    rows: np.ndarray, cols: np.ndarray, update: np.ndarray | None, grid: Grid
) -> np.ndarray:
    """uint8 flags of each overview cell from the (rows, cols) of the connections."""
    block = (rows // grid.bh).astype(np.int64) * grid.cols + cols // grid.bw
    cells = grid.rows * grid.cols

    def counts(weights: np.ndarray | None) -> np.ndarray:
        found = np.bincount(block, weights=weights, minlength=cells)
        return found.astype(np.int64).reshape(grid.rows, grid.cols)

    frozen = None if update is None else counts((~update).astype(float))
    return flags_from_counts(counts(None), frozen, _sizes(grid))


def bias_flags(connected: np.ndarray, update: np.ndarray | None, bw: int) -> np.ndarray:
    """uint8 flags of the bias cells (column blocks of ``bw``)."""
    grid = Grid(1, connected.size, 1, bw)
    return block_flags(connected[None, :], None if update is None else update[None, :], grid)[0]


def pool_vector(values: np.ndarray | None, bw: int) -> np.ndarray | None:
    """Signed max-|value| of each block of ``bw`` entries."""
    if values is None or bw == 1:
        return values
    cols = -(-values.size // bw)
    padded = np.zeros(cols * bw, values.dtype)
    padded[: values.size] = values
    blocks = padded.reshape(cols, bw)
    pick = np.argmax(np.abs(blocks), axis=1)
    return blocks[np.arange(cols), pick]


def pool_matrix(values: np.ndarray, grid: Grid) -> np.ndarray:
    """Signed max-|value| of each (bh, bw) block of an (inputs, units) array (the overview's
    pooling, in numpy); the array itself as float32 when the grid is not pooled."""
    values = np.asarray(values, np.float32)
    if not grid.pooled:
        return values
    padded = np.zeros((grid.rows * grid.bh, grid.cols * grid.bw), np.float32)
    padded[: grid.inputs, : grid.units] = values
    split = padded.reshape(grid.rows, grid.bh, grid.cols, grid.bw).transpose(0, 2, 1, 3)
    blocks = split.reshape(grid.rows, grid.cols, grid.bh * grid.bw)
    pick = np.argmax(np.abs(blocks), axis=-1)
    return np.take_along_axis(blocks, pick[..., None], axis=-1)[..., 0]


def pool_entries(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: Grid) -> np.ndarray:
    """Signed max-|value| per overview cell of the entries at (rows, cols) (a sparse layer's
    stored connections); cells without an entry read 0."""
    values = np.asarray(values, np.float32)
    block = (np.asarray(rows) // grid.bh).astype(np.int64) * grid.cols + np.asarray(cols) // grid.bw
    out = np.zeros(grid.rows * grid.cols, np.float32)
    order = np.lexsort((np.abs(values), block))  # by block, then |value|: the last one wins
    ordered = block[order]
    last = np.append(ordered[1:] != ordered[:-1], True) if ordered.size else ordered.astype(bool)
    out[ordered[last]] = values[order][last]
    return out.reshape(grid.rows, grid.cols)


def tile(header: dict, arrays: Mapping[str, np.ndarray | None]) -> tuple[dict, list[bytes]]:
    """(JSON header, buffers) of one tile; ``arrays`` maps buffer names to arrays or None."""
    names, buffers = [], []
    for name, array in arrays.items():
        if array is None:
            continue
        dtype = "<u1" if name.endswith("flags") else "<f4"
        names.append(name)
        buffers.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return {**header, "buffers": names}, buffers


def message_bytes(content: Any, buffers: list | None = None) -> int:
    """Size of a widget message: its JSON plus its binary buffers."""
    import json

    size = len(json.dumps(content, default=str).encode())
    return size + sum(len(memoryview(b).cast("B")) for b in buffers or [])


# ----------------------------------------------------------------------------- colours / PNG


def scaled(values: np.ndarray, scale: str, vmax: float | None = None) -> np.ndarray:
    """Values mapped to [-1, 1]: linear, or symmetric log over three decades below ``vmax``."""
    values = np.nan_to_num(np.asarray(values, float), nan=0.0)
    top = float(np.max(np.abs(values))) if vmax is None and values.size else float(vmax or 0)
    if top <= 0:
        return np.zeros_like(values)
    if scale == "symlog":
        c = top * 1e-3
        return np.sign(values) * np.log10(1 + np.abs(values) / c) / np.log10(1 + top / c)
    return np.clip(values / top, -1, 1)


def colours(t: np.ndarray) -> np.ndarray:
    """RGB uint8 of values in [-1, 1] on the diverging map."""
    position = (np.clip(t, -1, 1) + 1) * 2  # 0..4 over the five anchors
    low = np.minimum(np.floor(position).astype(int), 3)
    frac = (position - low)[..., None]
    rgb = _ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def _cell_image(
    values: np.ndarray, flags: np.ndarray, scale: str, size: int, overlay: bool
) -> np.ndarray:
    rgb = colours(scaled(values, scale))
    image = np.repeat(np.repeat(rgb, size, axis=0), size, axis=1)
    big = np.repeat(np.repeat(flags, size, axis=0), size, axis=1)
    yy, xx = np.indices(big.shape)
    hatch = (big & MASKED) != 0
    if overlay:  # would-be view: the value shows through the hatching
        image[hatch & ((xx + yy) % 4 == 0)] = palette.INSPECTOR["hatch_over"]
    else:
        image[hatch] = palette.INSPECTOR["masked"]
        image[hatch & ((xx + yy) % 4 == 0)] = palette.INSPECTOR["hatch"]
    if size >= 4:
        inner_y, inner_x = yy % size, xx % size
        edge = (inner_y == 0) | (inner_x == 0) | (inner_y == size - 1) | (inner_x == size - 1)
        image[((big & FROZEN) != 0) & edge] = palette.INSPECTOR["frozen"]
    return image


def render_png(
    panels: list[dict], scale: str = "linear", height: int = 256, overlay: bool = False
) -> bytes:
    """A PNG of the layers' heatmaps side by side, each with its bias row underneath.

    Args:
        panels: per layer ``{"values": (rows, cols), "flags": (rows, cols) uint8,
            "bias": (cols,) or None, "bias_flags": (cols,) or None}``.
        scale: ``"linear"`` or ``"symlog"``.
        height: the target height in pixels of the largest heatmap.
        overlay: draw masked cells' values under the hatching (the would-be view).
    """
    images = []
    for panel in panels:
        values = panel["values"]
        size = max(1, min(24, height // max(values.shape)))
        image = _cell_image(values, panel["flags"], scale, size, overlay)
        if panel.get("bias") is not None:
            gap = np.full((max(2, size // 3), image.shape[1], 3), 255, np.uint8)
            bias = _cell_image(
                panel["bias"][None, :], panel["bias_flags"][None, :], scale, size, overlay
            )
            image = np.concatenate([image, gap, bias], axis=0)
        images.append(image)
    tall = max(i.shape[0] for i in images) + 16
    width = sum(i.shape[1] for i in images) + 16 * (len(images) + 1)
    canvas = np.full((tall, width, 3), 255, np.uint8)
    x = 16
    for image in images:
        canvas[8 : 8 + image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + 16
    return png_bytes(canvas)
