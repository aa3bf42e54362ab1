"""The static PNG fallback of the widgets: a PNG encoder and the mixin that adds the image.

A notebook exported to HTML or viewed without its kernel has no live widget; the mixin puts a
PNG of the widget as it is now next to the widget view in its mimebundle.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["PngFallback", "png_bytes"]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encodes an (height, width, 3) uint8 array as a PNG file."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (height, width, 3) uint8 array, received {rgb.shape}")
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


class PngFallback:
    """Mixin for an anywidget widget: its mimebundle also carries ``image/png``.

    The widget class lists it before ``anywidget.AnyWidget`` and defines :meth:`_fallback_png`.
    """

    def _fallback_png(self) -> bytes:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = {**data, "image/png": base64.b64encode(self._fallback_png()).decode("ascii")}
        return data, metadata
