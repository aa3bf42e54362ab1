"""Mask constructors, validation and file I/O (numpy and scipy only).

A mask has shape (inputs, units): entry (i, j) is 1 when input i connects to unit j. A bias
mask has shape (units,). Constructors called with a shape return a numpy bool array; called
without one they return a function of the shape, which a layer calls with (inputs, units):
``random(0.1, seed=0)((784, 64))``. Every problem with a mask raises :class:`MaskError`.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskmagic.errors import MaskError
from maskmagic.masks.check import Matrix, NamedMask, Shape, density, names_of, validate
from maskmagic.masks.files import from_csv, from_edges, load, save

__all__ = ["Matrix", "NamedMask", "banded", "blocks", "density", "eye", "from_csv", "from_edges",
           "load", "names_of", "ones", "random", "save", "validate", "zeros"]  # fmt: skip


@dataclass(frozen=True)
class _Deferred:
    """A constructor waiting for its shape; ``f(shape)`` builds the mask."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: tuple = ()  # (name, value) pairs

    def __call__(self, shape: Shape) -> np.ndarray:
        return np.asarray(self.fn(*self.args, shape=shape, **dict(self.kwargs)))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.fn.__name__}({', '.join(parts)})"


# ----------------------------------------------------------------------------- constructors


def ones(shape: Shape | None = None) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """All connections. ``shape``: n for (n, n), (inputs, units), (units,) or None (deferred)."""
    if shape is None:
        return _Deferred(ones)
    return np.ones(_shape_arg(shape, "ones"), dtype=bool)


def zeros(shape: Shape | None = None) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """No connections at all. ``shape`` as for :func:`ones`."""
    if shape is None:
        return _Deferred(zeros)
    return np.zeros(_shape_arg(shape, "zeros"), dtype=bool)


def eye(shape: Shape | None = None) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """Input i connects to unit i only (1 where i == j, also for rectangular shapes)."""
    if shape is None:
        return _Deferred(eye)
    r, c = _shape_arg(shape, "eye", two_d=True)
    return np.eye(r, c, dtype=bool)


def random(
    density: float, shape: Shape | None = None, *, seed: Any = None
) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """Each connection present with probability ``density`` in [0, 1].

    Args:
        density: probability of a 1.
        shape: as for :func:`ones`.
        seed: same seed and shape, same mask (``numpy.random.default_rng``); None: fresh each call.
    """
    ok = isinstance(density, numbers.Real) and not isinstance(density, bool)
    if not ok or not 0 <= density <= 1:
        raise MaskError(f"random: density must be a number between 0 and 1; got {density!r}")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise MaskError(f"random: seed must be an integer or None; got {seed!r}") from None
    if shape is None:
        return _Deferred(random, (density,), (("seed", seed),) if seed is not None else ())
    return rng.random(_shape_arg(shape, "random")) < density


def banded(width: int, shape: Shape | None = None) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """A band around the diagonal: |i - j| <= width for square shapes.

    Rectangular shapes stretch the diagonal: rows and columns each cover equal shares of the
    longer side; width 0 keeps the pairs whose shares overlap (no row or column is empty) and
    each unit of width adds one step of the longer side. Transposing swaps r and c.
    """
    w = _int_arg(width, "banded: width", 0)
    if shape is None:
        return _Deferred(banded, (w,))
    r, c = _shape_arg(shape, "banded", two_d=True)
    # Row i spans [i*c, (i+1)*c) and column j spans [j*r, (j+1)*r) of [0, r*c); keep (i, j)
    # when the gap between the spans is < w long-side steps (w * min(r, c) in these units).
    if r == 0 or c == 0:
        return np.zeros((r, c), dtype=bool)
    slack = w * min(r, c)
    start = np.arange(r, dtype=np.int64) * c
    lo = np.maximum((start - slack) // r, 0)
    hi = np.minimum(-(-(start + c + slack) // r), c)
    j = np.arange(c)
    return (j >= lo[:, None]) & (j < hi[:, None])


def blocks(n: int, shape: Shape | None = None) -> np.ndarray | Callable[[Shape], np.ndarray]:
    """Block-diagonal with ``n`` blocks (1 <= n <= min(shape)), split as evenly as possible."""
    k = _int_arg(n, "blocks: n", 1)
    if shape is None:
        return _Deferred(blocks, (k,))
    r, c = _shape_arg(shape, "blocks", two_d=True)
    if k > min(r, c):
        msg = f"cannot split a {r} x {c} mask into {k} blocks; n must be between 1 and {min(r, c)}"
        raise MaskError(f"blocks: {msg}")
    return (np.arange(r) * k // r)[:, None] == (np.arange(c) * k // c)[None, :]


# ----------------------------------------------------------------------------- validation


def _shape_arg(shape: Any, fn: str, *, two_d: bool = False) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape, shape)
    try:
        out = tuple(operator.index(s) for s in shape)
        bools = any(isinstance(s, bool) for s in shape)
    except TypeError:
        out, bools = (), True
    if bools or len(out) not in ((2,) if two_d else (1, 2)) or any(s < 0 for s in out):
        want = "an int n (n x n) or a tuple (inputs, units)" + ("" if two_d else " or (units,)")
        raise MaskError(f"{fn}: shape must be {want}; got {shape!r}")
    return out


def _int_arg(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise MaskError(f"{what} must be an integer >= {minimum}; got {value!r}")
    return int(value)
