"""Small encoders shared by the widgets: bit-packed masks and PNG images (numpy + zlib only)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from maskmagic.errors import MaskError

__all__ = ["pack_bits", "png_bytes", "unpack_bits"]


def pack_bits(mask: np.ndarray) -> bytes:
    """A 2-D bool mask as row-major bits, most significant bit first (``np.packbits``)."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def unpack_bits(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`pack_bits`.

    Raises:
        MaskError: ``data`` has the wrong length for ``shape``.
    """
    cells = int(np.prod(shape))
    expected = (cells + 7) // 8
    if len(data) != expected:
        raise MaskError(
            f"packed mask has {len(data)} bytes, expected {expected} for shape {tuple(shape)}"
        )
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), count=cells)
    return bits.reshape(shape).astype(bool)


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
