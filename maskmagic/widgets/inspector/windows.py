"""Kernel windows of a conv layer: the taps behind one cell (input channel i, filter j).

A conv layer's heatmap shows, per pair, the sum of |gradient| over its kernel window; clicking a
cell asks for the window itself. The front end sends ``{"type": "window", "layer": index,
"i": i, "j": j}`` (:func:`parse_request` checks it against an allow-list); the kernel answers
with one ``{"type": "window", ...}`` custom message (:func:`window_message`) in the tiles' wire
format (:func:`maskmagic.widgets.inspector.tiles.tile`): buffers ``g`` (gradient: masked taps
exactly 0), ``wb`` (would-be gradient), ``upd`` (the gradient restricted to the op's update
set), ``prj`` (for an op with ``hold=``: that gradient projected by the hold), ``w`` (the kernel's values) and ``flags`` (1 masked tap, 4 frozen tap), each of
``rows x cols`` float32 (a Conv1D window is one row). At most ``MAX_TAPS x MAX_TAPS`` taps
travel (the first ones; the header's ``kh``/``kw`` give the whole window), so a message is at
most about 70 kB whatever the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from maskmagic.widgets.inspector import tiles
from maskmagic.widgets.inspector.probes import apply_mask_numpy

__all__ = [
    "MAX_TAPS",
    "VIEW_KEYS",
    "WindowRequestError",
    "parse_request",
    "window_arrays",
    "window_message",
]

#: Most taps per axis of a window sent to the front end.
MAX_TAPS = 64
#: The buffer each view of the inspector shows.
VIEW_KEYS = {"gradient": "g", "would_be": "wb", "update": "upd", "projected": "prj"}
_REQUEST_KEYS = {"type", "layer", "i", "j"}


class WindowRequestError(Exception):
    """A window request from the front end is malformed; the inspector warns, changes nothing."""


def _index(content: dict, key: str, size: int, what: str) -> int:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WindowRequestError(f"{key!r} must be an integer ({what}); received {value!r}")
    if not 0 <= value < size:
        raise WindowRequestError(f"{key!r} must be in 0..{size - 1} ({what}); received {value}")
    return value


def parse_request(content: Any, probes: list) -> tuple[int, int, int]:
    """(layer index, i, j) of a window request, checked against the inspector's probes.

    Raises:
        WindowRequestError: unknown keys, a value that is not an int in range, or a layer that
            is not a convolution.
    """
    if not isinstance(content, dict):
        raise WindowRequestError(f"expected a dict; received {type(content).__name__}")
    extra = sorted(set(content) - _REQUEST_KEYS, key=str)
    if extra:
        raise WindowRequestError(f"unexpected keys {extra}; expected only {sorted(_REQUEST_KEYS)}")
    layer = _index(content, "layer", len(probes), "the layer's index")
    probe = probes[layer]
    if not probe.keeps_kernel_gradient:
        raise WindowRequestError(
            f"layer {probe.name!r} is {probe.kind}, not a convolution: it has no kernel windows"
        )
    i = _index(content, "i", probe.shape[0], "an input channel")
    j = _index(content, "j", probe.shape[1], "a filter")
    return layer, i, j


def window_arrays(data: Any, i: int, j: int) -> dict[str, np.ndarray]:
    """The kernel window of pair (i, j) of a conv layer, per view, in the kernel's window shape.

    Args:
        data: the layer's :class:`~maskmagic.widgets.inspector.view.LayerData` (its result
            must hold ``kernel_wb``).
        i, j: input channel and filter.

    Returns:
        ``{"g", "wb", "upd", "w", "flags"}`` (and ``"prj"`` when ``data.projected`` is set):
        float32 arrays (uint8 flags) shaped like ``kernel_size``. ``g`` is ``where(mask, wb, 0)``, the product TensorFlow's gradient of
        the layer's ``where(mask, kernel, 0)`` evaluates.
    """
    probe, result = data.probe, data.result
    wb = np.asarray(result.kernel_wb[..., i, j], dtype=np.float32)
    mask = data.shown.kernel_mask[data.index][..., i, j]  # the mask the result was computed with
    g = apply_mask_numpy(wb, mask, select=True)
    update = data.shown.kernel_update[data.index]
    allowed = None if update is None else np.asarray(update[..., i, j], dtype=bool)
    upd = g if allowed is None else np.where(allowed, g, np.float32(0))
    frozen = np.zeros_like(mask) if allowed is None else mask & ~allowed
    flags = np.where(mask, 0, tiles.MASKED) | np.where(frozen, tiles.FROZEN, 0)
    kernel = tf.convert_to_tensor(probe.layer.kernel)[..., i, j].numpy().astype(np.float32)
    arrays = {"g": g, "wb": wb, "upd": upd, "w": kernel, "flags": flags.astype(np.uint8)}
    if data.projected is not None:
        arrays["prj"] = np.asarray(data.projected.kernel[..., i, j], np.float32)
    return arrays


def window_message(data: Any, i: int, j: int, revision: int) -> tuple[dict, list[bytes]]:
    """The custom message (header, buffers) carrying pair (i, j)'s window (at most
    ``MAX_TAPS`` taps per axis)."""
    arrays = window_arrays(data, i, j)
    shape = arrays["g"].shape
    kh, kw = (1, shape[0]) if len(shape) == 1 else shape[-2:]
    if len(shape) > 2:  # Conv3D windows are not produced by maskmagic layers: flatten rows
        kh = int(np.prod(shape[:-1]))
    rows, cols = min(kh, MAX_TAPS), min(kw, MAX_TAPS)
    shown = {name: a.reshape(kh, kw)[:rows, :cols] for name, a in arrays.items()}
    header = {
        "type": "window",
        "layer": data.index,
        "name": data.probe.name,
        "i": i,
        "j": j,
        "revision": revision,
        "kh": kh,
        "kw": kw,
        "rows": rows,
        "cols": cols,
    }
    return tiles.tile(header, shown)
