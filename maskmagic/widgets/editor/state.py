"""The mask editor's state without Jupyter: edit operations, runs, undo/redo, message checks.

Masks are handled as flat, row-major bool arrays: cell ``(i, j)`` of an ``(inputs, units)`` mask
is flat index ``i * units + j``. An *edit* is one of three operations, applied the same way by the
kernel (here) and by the front end (``static/editor.js``):

* ``set``: the cells of some runs take ``value`` (0 or 1);
* ``flip``: the cells of some runs change value;
* ``replace``: the whole mask becomes a bit-packed bitmap (:func:`maskmagic.masks.check.pack_bits` layout).

A run is a ``(start, length)`` pair of flat indices, sent as two little-endian uint32; the runs
of one edit are sorted and do not overlap. numpy only (no Jupyter, no TensorFlow).
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskmagic.masks.check import pack_bits

__all__ = [
    "MAX_CELLS",
    "OPS",
    "Edit",
    "History",
    "MessageError",
    "apply_edit",
    "cells_of",
    "encode_change",
    "parse_edit",
    "parse_index",
    "runs_of",
]

#: The largest mask (inputs x units) the editor opens: 16 Mi cells, 2 MiB bit-packed.
MAX_CELLS = 1 << 24
#: The edit operations understood by both sides.
OPS = ("set", "flip", "replace")
_MAX_CLIENT_ID = 64


class MessageError(Exception):
    """A message from the front end is malformed; the editor warns and changes nothing."""


def runs_of(flat: np.ndarray) -> np.ndarray:
    """Sorted unique flat indices -> a ``(k, 2)`` uint32 array of ``(start, length)`` runs."""
    flat = np.asarray(flat, dtype=np.int64).ravel()
    if flat.size == 0:
        return np.zeros((0, 2), dtype=np.uint32)
    breaks = np.flatnonzero(np.diff(flat) != 1) + 1
    starts = flat[np.r_[0, breaks]]
    ends = flat[np.r_[breaks - 1, flat.size - 1]] + 1
    return np.stack([starts, ends - starts], axis=1).astype(np.uint32)


def cells_of(runs: np.ndarray) -> np.ndarray:
    """The flat indices (int64) covered by ``(start, length)`` runs, in order."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    lengths = runs[:, 1]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.repeat(runs[:, 0] - (np.cumsum(lengths) - lengths), lengths)
    return first + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class Edit:
    """One checked edit from the front end (or built by the kernel).

    Attributes:
        op: ``"set"``, ``"flip"`` or ``"replace"``.
        value: the value of a ``set`` (None otherwise).
        runs: ``(k, 2)`` int64 runs of ``set``/``flip`` (None for ``replace``).
        bits: the flat bool mask of a ``replace`` (None otherwise).
        client: the front end that sent it ("" for the kernel).
        id: the front end's number of the edit (0 for the kernel).
    """

    op: str
    value: bool | None = None
    runs: np.ndarray | None = None
    bits: np.ndarray | None = None
    client: str = ""
    id: int = 0


def apply_edit(flat: np.ndarray, edit: Edit) -> np.ndarray:
    """The flat bool mask after ``edit`` (a new array; ``flat`` is not changed)."""
    if edit.op == "replace":
        return np.array(edit.bits, dtype=bool, copy=True)
    new = flat.copy()
    if edit.runs is None:  # set/flip edits always carry runs (checked when decoded)
        raise AssertionError(f"a {edit.op!r} edit without runs")
    cells = cells_of(edit.runs)
    if edit.op == "set":
        new[cells] = bool(edit.value)
    else:
        new[cells] = ~new[cells]
    return new


def encode_change(flipped: np.ndarray, new_flat: np.ndarray) -> tuple[str, bytes]:
    """The cheaper of ``("flip", runs)`` and ``("replace", packed bits)`` for a change."""
    runs = runs_of(flipped)
    packed_size = (new_flat.size + 7) // 8
    if runs.nbytes <= packed_size:
        return "flip", runs.astype("<u4").tobytes()
    return "replace", pack_bits(new_flat)


def _as_bytes(buffer: Any) -> bytes:
    if isinstance(buffer, (bytes, bytearray, memoryview)):
        return bytes(buffer)
    raise MessageError(f"buffer has type {type(buffer).__name__}, expected bytes")


def _int(content: dict, key: str, low: int, high: int | None = None) -> int:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MessageError(f"{key!r} is {value!r}, expected an integer")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise MessageError(f"{key!r} is {value}, expected an integer {bound}")
    return int(value)


def parse_index(content: Any, shape: tuple[int, int]) -> tuple[int, int]:
    """``(i, j)`` of a ``{"i": .., "j": ..}`` message, checked against ``shape``."""
    if not isinstance(content, dict):
        raise MessageError(f"message is a {type(content).__name__}, expected a dict")
    return _int(content, "i", 0, shape[0]), _int(content, "j", 0, shape[1])


def parse_edit(content: Any, buffers: Sequence[Any], shape: tuple[int, int]) -> Edit:
    """Checks an ``edit`` message from the front end and returns the :class:`Edit`.

    The message is ``{"type": "edit", "client": str, "id": int, "shape": [rows, cols],
    "op": "set" | "flip" | "replace", "value": 0 | 1}`` (``value`` only for ``set``) with one
    binary buffer: uint32 little-endian ``(start, length)`` runs, or the packed bitmap for
    ``replace``.

    Raises:
        MessageError: anything missing, of the wrong type, shape, length or range.
    """
    if not isinstance(content, dict):
        raise MessageError(f"message is a {type(content).__name__}, expected a dict")
    client = content.get("client")
    if not isinstance(client, str) or not 0 < len(client) <= _MAX_CLIENT_ID:
        raise MessageError(f"'client' is {client!r}, expected a string of 1-64 characters")
    edit_id = _int(content, "id", 1)
    got_shape = content.get("shape")
    if not isinstance(got_shape, (list, tuple)) or [*got_shape] != [*shape]:
        raise MessageError(f"'shape' is {got_shape!r}, expected {list(shape)}")
    op = content.get("op")
    if op not in OPS:
        raise MessageError(f"'op' is {op!r}, expected one of {', '.join(OPS)}")
    if buffers is None or len(buffers) != 1:
        count = 0 if buffers is None else len(buffers)
        raise MessageError(f"an edit carries {count} buffers, expected 1")
    data = _as_bytes(buffers[0])
    cells = shape[0] * shape[1]
    if op == "replace":
        expected = (cells + 7) // 8
        if len(data) != expected:
            raise MessageError(f"replace bitmap has {len(data)} bytes, expected {expected}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=cells).astype(bool)
        return Edit("replace", bits=bits, client=client, id=edit_id)
    value = None
    if op == "set":
        value = content.get("value")
        if value not in (0, 1) or not isinstance(value, (int, bool)):
            raise MessageError(f"'value' is {value!r}, expected 0 or 1")
        value = bool(value)
    return Edit(op, value=value, runs=_decode_runs(data, cells), client=client, id=edit_id)


def _decode_runs(data: bytes, cells: int) -> np.ndarray:
    if len(data) % 8:
        raise MessageError(f"runs buffer has {len(data)} bytes, expected a multiple of 8")
    runs = np.frombuffer(data, dtype="<u4").astype(np.int64).reshape(-1, 2)
    if len(runs) > cells:
        raise MessageError(f"{len(runs)} runs for a mask of {cells} cells")
    if len(runs) == 0:
        return runs
    starts, ends = runs[:, 0], runs[:, 0] + runs[:, 1]
    if (runs[:, 1] == 0).any():
        raise MessageError("a run has length 0")
    if ends.max() > cells:
        k = int(np.argmax(ends > cells))
        raise MessageError(f"run ({starts[k]}, {runs[k, 1]}) goes past the {cells} cells")
    if (starts[1:] < ends[:-1]).any():
        raise MessageError("runs overlap or are not sorted")
    return runs


class History:
    """Undo and redo stacks of changes, each stored as the set of cells it flipped.

    A change is undone and redone by flipping the same cells again. A record is kept as uint32
    flat indices, or as a packed XOR bitmap when that is smaller; the oldest records are dropped
    beyond ``limit`` records or ``max_bytes`` in all.
    """

    def __init__(self, cells: int, limit: int = 100, max_bytes: int = 64 << 20) -> None:
        self.cells = cells
        self.limit = limit
        self.max_bytes = max_bytes
        self._undo: deque[tuple[str, np.ndarray]] = deque()
        self._redo: list[tuple[str, np.ndarray]] = []

    @property
    def undo_depth(self) -> int:
        """How many changes :meth:`undo` can take back."""
        return len(self._undo)

    @property
    def redo_depth(self) -> int:
        """How many undone changes :meth:`redo` can apply again."""
        return len(self._redo)

    def _encode(self, flipped: np.ndarray) -> tuple[str, np.ndarray]:
        if flipped.size * 4 <= (self.cells + 7) // 8:
            return "idx", flipped.astype(np.uint32)
        xor = np.zeros(self.cells, dtype=bool)
        xor[flipped] = True
        return "bits", np.packbits(xor)

    def _decode(self, record: tuple[str, np.ndarray]) -> np.ndarray:
        kind, data = record
        if kind == "idx":
            return data.astype(np.int64)
        return np.flatnonzero(np.unpackbits(data, count=self.cells))

    def record(self, flipped: np.ndarray) -> None:
        """Pushes a change (the flat indices it flipped) and forgets the redo stack."""
        self._undo.append(self._encode(flipped))
        self._redo.clear()
        total = sum(data.nbytes for _, data in self._undo)
        while len(self._undo) > self.limit or (total > self.max_bytes and len(self._undo) > 1):
            total -= self._undo.popleft()[1].nbytes

    def undo(self) -> np.ndarray | None:
        """The cells to flip to take back the last change (None when there is none)."""
        if not self._undo:
            return None
        record = self._undo.pop()
        self._redo.append(record)
        return self._decode(record)

    def redo(self) -> np.ndarray | None:
        """The cells to flip to apply the last undone change again (None when there is none)."""
        if not self._redo:
            return None
        record = self._redo.pop()
        self._undo.append(record)
        return self._decode(record)

    def clear(self) -> None:
        """Forgets both stacks."""
        self._undo.clear()
        self._redo.clear()
