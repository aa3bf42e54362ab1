"""Values as Python source for :mod:`maskmagic.codegen`: masks, Keras objects and literals.

:func:`encode_mask` writes a 0/1 mask as numpy source (a literal when small, else base64 that
the generated runtime helpers ``_unpack``/``_ones_at`` decode); :func:`keras_expr` writes a
Keras initializer, regularizer, constraint, loss or optimizer as its constructor call with the
arguments that differ from the defaults.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import keras
import numpy as np

from maskmagic.errors import MaskMagicError

__all__ = ["LITERAL_LIMIT", "count_ones", "encode_mask", "keras_expr", "py_literal", "quote"]

LITERAL_LIMIT = 256
"""Masks with at most this many entries are written as numpy literals."""
_LINE = 88  # the longest base64 chunk per line


def _float(value: float, key: str = "") -> str:
    """``0.1`` for a learning rate stored as float32 0.10000000149011612; else ``repr``."""
    if key == "learning_rate" and float(np.float32(value)) == value:
        return str(np.float32(value))
    return repr(float(value))


def quote(text: str) -> str:
    """A double-quoted Python string literal."""
    return json.dumps(str(text), ensure_ascii=False)


def py_literal(value: Any, key: str = "") -> str:
    """A Python literal for a config value (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _float(value, key)
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(py_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{quote(k)}: {py_literal(v, str(k))}" for k, v in value.items()) + "}"
        )
    if isinstance(value, str):
        return quote(value)
    return repr(value)


def _changed(obj: Any, config: dict) -> dict:
    """The entries of ``config`` that differ from a default-constructed ``type(obj)``."""
    try:
        default = type(obj)().get_config()
    except Exception:  # classes with required arguments: keep every set value
        default = {}
    return {
        k: v
        for k, v in config.items()
        if (k in default and default[k] != v) or (k not in default and v is not None)
    }


def keras_expr(obj: Any, kind: str, short: str | None = None) -> str:
    """Source that rebuilds ``obj`` from ``keras.<kind>`` (initializers, losses, optimizers...).

    A default-configured object with a known ``short`` name is written as that name.
    """
    module = getattr(keras, kind)
    try:
        config = module.serialize(obj)
    except Exception:
        config = None
    if not isinstance(config, dict) or "class_name" not in config:
        if short is None and isinstance(config, str):
            short = config
        if short is None:
            raise MaskMagicError(f"cannot write {kind} {obj!r} as plain Keras source")
        return quote(short)
    name = config["class_name"]
    if not str(config.get("module", "")).startswith("keras") or not hasattr(module, name):
        if short is None:
            raise MaskMagicError(
                f"cannot write {kind} {obj!r} (class {name}) as plain Keras source"
            )
        return f"keras.{kind}.get({quote(short)})"
    kwargs = _changed(obj, config.get("config") or {})
    if kind == "optimizers":
        kwargs.pop("name", None)  # only names the optimizer's variables
    if any(isinstance(v, dict) for v in kwargs.values()):  # schedules and nested objects
        return f"keras.{kind}.deserialize({py_literal(config)})"
    if not kwargs and short is not None:
        return quote(short)
    arguments = ", ".join(f"{k}={py_literal(v, k)}" for k, v in kwargs.items())
    return f"keras.{kind}.{name}({arguments})"


def _b64_lines(data: bytes) -> list[str]:
    text = base64.b64encode(data).decode("ascii")
    return [f'"{text[i : i + _LINE]}"' for i in range(0, len(text), _LINE)] or ['""']


def _flat_ones(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Sorted flat (row-major) indices of the ones of a dense or scipy.sparse mask."""
    if hasattr(mask, "tocoo"):
        coo = mask.tocoo()
        keep = coo.data != 0
        flat = np.asarray(coo.row, dtype=np.int64)[keep] * shape[-1] + np.asarray(coo.col)[keep]
        return np.unique(flat)
    return np.flatnonzero(np.asarray(mask))


def encode_mask(mask: Any) -> str:
    """Numpy source that rebuilds a 0/1 mask (dense or scipy.sparse) as a bool array.

    ``np.ones``/``np.zeros`` when uniform, a literal for at most LITERAL_LIMIT entries, else
    ``_unpack(base64 of np.packbits, shape)`` or ``_ones_at(base64 of the flat indices of the
    ones, shape)``, whichever is shorter (the helpers are part of the generated runtime). A
    scipy.sparse mask is densified only when it is small enough for bit-packing to win.
    """
    shape = tuple(int(d) for d in mask.shape)
    cells = int(np.prod(shape))
    flat = _flat_ones(mask, shape)
    if len(flat) == cells:
        return f"np.ones({shape!r}, dtype=bool)"
    if len(flat) == 0:
        return f"np.zeros({shape!r}, dtype=bool)"
    if cells <= LITERAL_LIMIT:
        dense = np.zeros(cells, dtype=np.int8)
        dense[flat] = 1
        return _literal(dense.reshape(shape))
    if len(flat) * 8 < (cells + 7) // 8:
        data, helper = flat.astype("<u8").tobytes(), "_ones_at"
    else:
        bits = np.zeros(cells, dtype=bool)
        bits[flat] = True
        data, helper = np.packbits(bits).tobytes(), "_unpack"
    body = "\n".join(f"    {line}" for line in _b64_lines(data))
    return f"{helper}(\n{body},\n    {shape!r},\n)"


def _literal(array: np.ndarray) -> str:
    one_line = f"np.array({array.tolist()!r}, dtype=bool)"
    if len(one_line) <= 80 or array.ndim == 1:
        return one_line
    lines, line = [], ""
    for row in (repr(r) + "," for r in array.tolist()):  # as many rows a line as fit
        if line and len(line) + len(row) > 80:
            lines.append(line)
            line = ""
        line = f"{line} {row}" if line else row
    rows = "\n".join(f"        {line}" for line in [*lines, line])
    return f"np.array(\n    [\n{rows}\n    ],\n    dtype=bool,\n)"


def count_ones(mask: Any) -> tuple[int, int]:
    """(ones, entries) of a dense or scipy.sparse mask, without densifying."""
    ones = (
        int(mask.count_nonzero()) if hasattr(mask, "count_nonzero") else int(np.count_nonzero(mask))
    )
    return ones, int(np.prod(mask.shape))
