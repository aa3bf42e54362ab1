"""Mask validation and the NamedMask type (numpy and scipy only).

:func:`validate` turns what a user gives (numpy, nested lists, scipy.sparse, a NamedMask or a
function of the shape) into a checked numpy bool array or canonical ``scipy.sparse.csr_array``.
Every problem raises :class:`~maskmagic.errors.MaskError`. :mod:`maskmagic.masks` is the public
face of this module, the constructors and :mod:`maskmagic.masks.files`.
"""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from maskmagic.errors import MaskError

__all__ = [
    "Matrix",
    "NamedMask",
    "PathLike",
    "Shape",
    "check_values",
    "dense_bool",
    "density",
    "names_of",
    "pack_bits",
    "unpack_bits",
    "validate",
]

Shape = int | tuple[int, ...]
Matrix: TypeAlias = Any  # np.ndarray | sp.csr_array (scipy has no type information)
PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False, repr=False)
class NamedMask:
    """A 2-D mask (numpy bool or canonical bool ``csr_array``) with unique row/column names.

    Raises:
        MaskError: if the matrix is not a 2-D 0/1 matrix or the names do not fit it.
    """

    matrix: Matrix
    rows: tuple[str, ...]
    cols: tuple[str, ...]

    def __post_init__(self) -> None:
        m = _as_matrix(self.matrix, "NamedMask matrix")
        if m.ndim != 2:
            raise MaskError(f"NamedMask needs a 2-D matrix; got shape {tuple(m.shape)}")
        object.__setattr__(self, "matrix", m)
        for axis, attr in enumerate(("rows", "cols")):
            names = _names(getattr(self, attr), attr)
            if len(names) != m.shape[axis]:
                what = f"{m.shape[axis]} {('rows', 'columns')[axis]}"
                raise MaskError(f"NamedMask has {len(names)} names in {attr} for {what}")
            object.__setattr__(self, attr, names)

    @property
    def shape(self) -> tuple[int, int]:
        """The matrix shape (len(rows), len(cols))."""
        return (len(self.rows), len(self.cols))

    def to_dense(self) -> np.ndarray:
        """Return the mask as a new dense numpy bool array."""
        return self.matrix.toarray() if sp.issparse(self.matrix) else self.matrix.copy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        needs_copy = sp.issparse(self.matrix) or (dtype is not None and np.dtype(dtype) != bool)
        if copy is False and needs_copy:
            raise ValueError("this NamedMask cannot become a dense array without a copy")
        arr = self.to_dense() if sp.issparse(self.matrix) else self.matrix
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy and not sp.issparse(self.matrix) else arr

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NamedMask):
            return NotImplemented
        if (self.rows, self.cols) != (other.rows, other.cols):
            return False
        if sp.issparse(self.matrix) and sp.issparse(other.matrix):
            return (self.matrix != other.matrix).nnz == 0
        return bool(np.array_equal(self.to_dense(), other.to_dense()))

    __hash__ = None  # type: ignore[assignment]  # holds a mutable array

    def __repr__(self) -> str:
        rows, cols = (", ".join(map(repr, n[:3])) + (", ..." if len(n) > 3 else "") for n in
                      (self.rows, self.cols))  # fmt: skip
        kind = "sparse" if sp.issparse(self.matrix) else "dense"
        return f"NamedMask(shape={self.shape}, {kind}, rows=({rows}), cols=({cols}))"


def validate(mask: Any, shape: tuple[int, ...], *, name: str = "mask") -> Matrix:
    """Check a mask against the expected shape and return it in canonical form.

    Args:
        mask: array, nested lists, NamedMask, scipy sparse, or a callable of the shape.
        shape: (inputs, units) for a kernel mask, (units,) for a bias mask.
        name: what to call the mask in messages (``"bias_mask"``).

    Returns:
        A new numpy bool array, or a canonical ``csr_array`` of bool for sparse input.

    Raises:
        MaskError: wrong shape, ragged or non-numeric input, NaN/inf or values other than 0/1.
    """
    try:
        want = tuple(operator.index(s) for s in shape)
    except TypeError:
        want = ()
    if len(want) not in (1, 2) or min(want) < 0:
        raise MaskError(f"expected shape must be (inputs, units) or (units,); got {shape!r}")
    if callable(mask):
        try:
            mask = mask(want)
        except MaskError:
            raise
        except Exception as e:  # the user's function: a mask problem, named as such
            raise MaskError(
                f"{name}: calling it with the shape {want} raised {type(e).__name__}: {e}; "
                "expected a function of the shape that returns a 0/1 mask"
            ) from e
        if callable(mask):
            raise MaskError(f"{name}: calling it with the shape {want} gave another function")
    if isinstance(mask, NamedMask):
        mask = mask.matrix
    if sp.issparse(mask):
        return _check_sparse(mask, want, name)
    return _check_dense(mask, want, name)


def names_of(mask: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Return ``(rows, cols)`` of a NamedMask, else None."""
    return (mask.rows, mask.cols) if isinstance(mask, NamedMask) else None


def density(mask: Any) -> float:
    """Fraction of entries that are 1 (dense, sparse or NamedMask); 0.0 for an empty mask."""
    m = _as_matrix(mask, "mask")
    cells = int(np.prod(m.shape, dtype=np.int64))
    if cells == 0:
        return 0.0
    return (m.nnz if sp.issparse(m) else int(np.count_nonzero(m))) / cells


def _as_matrix(mask: Any, name: str) -> Matrix:
    """Validate a mask of any 1-D or 2-D shape (no expected shape)."""
    if isinstance(mask, NamedMask):
        return mask.matrix
    if sp.issparse(mask):
        return _check_sparse(mask, None, name)
    if callable(mask):
        raise MaskError(f"{name} is a function of the shape; call it with a shape first")
    return _check_dense(mask, None, name)


def _check_shape(got: tuple[int, ...], want: tuple[int, ...] | None, name: str) -> None:
    got = tuple(int(s) for s in got)
    if want is None:
        if len(got) not in (1, 2):
            raise MaskError(f"{name} must be 1-D (units,) or 2-D (inputs x units); got {got}")
    elif got != want:
        kind = "(units,)" if len(want) == 1 else "(inputs x units)"
        raise MaskError(f"{name} has shape {got}, expected {want} {kind}")


def _value_message(name: str, value: Any, index: Sequence[int]) -> str:
    idx = [int(i) for i in index]
    where = f"index {idx[0]}" if len(idx) == 1 else str(tuple(idx))
    return f"{name} values must be 0 or 1; found {value} at {where}"


def _row_len(row: Any) -> str:
    try:
        return "a single value" if isinstance(row, (str, bytes)) else f"{len(row)} values"
    except TypeError:
        return "a single value"


def dense_bool(mask: Any) -> np.ndarray:
    """A dense numpy bool array from a numpy, nested-list or scipy.sparse mask."""
    return np.asarray(mask.toarray() if hasattr(mask, "toarray") else mask, dtype=bool)


def check_values(mask: Any, name: str = "mask") -> np.ndarray:
    """Checks a dense mask's values (ragged rows, non-numbers, NaN, values other than 0/1)
    before its expected shape is known; returns it as a numpy bool array."""
    return _check_dense(mask, None, name)


def _check_dense(obj: Any, want: tuple[int, ...] | None, name: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        arr = np.asarray(obj)  # drops subclasses such as np.matrix
    else:
        if isinstance(obj, (list, tuple)) and obj:
            lens = [_row_len(row) for row in obj]
            i = next((i for i, n in enumerate(lens) if n != lens[0]), None)
            if i is not None:
                raise MaskError(f"{name} is ragged: row {i} has {lens[i]}, row 0 has {lens[0]}")
        try:
            arr = np.asarray(obj)
        except (TypeError, ValueError, OverflowError) as e:
            raise MaskError(f"{name} cannot be read as an array (ragged or mixed?): {e}") from None
    if arr.dtype.kind == "O":  # numbers only; compared one by one below
        for x in arr.flat:
            if not isinstance(x, (numbers.Real, np.bool_)):
                raise MaskError(f"{name} must hold 0/1 numbers or booleans; found {x!r}")
    elif arr.dtype.kind not in "biuf":
        raise MaskError(f"{name} must hold 0/1 numbers or booleans; got dtype {arr.dtype}")
    _check_shape(arr.shape, want, name)
    if arr.dtype != bool:
        bad = (arr != 0) & (arr != 1)  # NaN compares unequal to both
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), arr.shape)
            raise MaskError(_value_message(name, arr[index], [int(i) for i in index]))
    return arr.astype(bool)


def _check_sparse(m: Any, want: tuple[int, ...] | None, name: str) -> Matrix:
    _check_shape(m.shape, want, name)
    if m.ndim == 1:
        return _check_dense(m.toarray(), None, name)
    if m.dtype.kind not in "biuf":
        raise MaskError(f"{name} must hold 0/1 numbers or booleans; got dtype {m.dtype}")
    try:  # scipy trusts a matrix's index arrays; an index past the shape would wire a wrong unit
        m = sp.csr_array(m, copy=True)
        m.check_format(full_check=True)
    except ValueError as exc:
        raise MaskError(
            f"{name} is a scipy.sparse matrix whose structure is invalid ({exc}); expected "
            f"row and column indices within its shape {tuple(m.shape)}"
        ) from None
    m.sum_duplicates()  # also sorts the indices
    if m.dtype != bool:
        bad = (m.data != 0) & (m.data != 1)
        if bad.any():
            k = int(np.argmax(bad))
            row = int(np.searchsorted(m.indptr, k, side="right")) - 1
            raise MaskError(_value_message(name, m.data[k], (row, m.indices[k])))
    out = sp.csr_array((m.data.astype(bool), m.indices, m.indptr), shape=m.shape)
    out.eliminate_zeros()
    return out


def _names(names: Any, what: str) -> tuple[str, ...]:
    if isinstance(names, (str, bytes)):
        raise MaskError(f"{what} must be a sequence of names, not the string {names!r}")
    try:
        out = tuple(str(n) for n in names)
    except TypeError:
        raise MaskError(f"{what} must be a sequence of names; got {names!r}") from None
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(n for n in out if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise MaskError(f"names in {what} must be unique; {dup!r} appears more than once")
    return out


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
