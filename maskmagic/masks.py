"""Mask constructors, validation and file I/O (numpy and scipy only).

A mask has shape (inputs, units): entry (i, j) is 1 when input i connects to unit j. A bias
mask has shape (units,). Constructors called with a shape return a numpy bool array; called
without one they return a function of the shape, which a layer calls with (inputs, units):
``random(0.1, seed=0)((784, 64))``. Every problem with a mask raises :class:`MaskError`.
"""

from __future__ import annotations

import csv
import numbers
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from maskmagic.errors import MaskError

__all__ = ["NamedMask", "banded", "blocks", "density", "eye", "from_csv", "from_edges", "load",
           "names_of", "ones", "random", "save", "validate", "zeros"]  # fmt: skip

Shape = int | tuple[int, ...]
Matrix = np.ndarray | sp.csr_array
PathLike = str | os.PathLike

_SPARSE_CELLS = 10_000_000  # from_edges(sparse=None) goes sparse above this many cells
_EXTENSIONS = (".npy", ".npz", ".csv")


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


@dataclass(frozen=True)
class _Deferred:
    """A constructor waiting for its shape; ``f(shape)`` builds the mask."""

    fn: Callable[..., np.ndarray]
    args: tuple = ()
    kwargs: tuple = ()  # (name, value) pairs

    def __call__(self, shape: Shape) -> np.ndarray:
        return self.fn(*self.args, shape=shape, **dict(self.kwargs))

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
            raise MaskError(_value_message(name, arr[index], index))
    return arr.astype(bool)


def _check_sparse(m: Any, want: tuple[int, ...] | None, name: str) -> Matrix:
    _check_shape(m.shape, want, name)
    if m.ndim == 1:
        return _check_dense(m.toarray(), None, name)
    if m.dtype.kind not in "biuf":
        raise MaskError(f"{name} must hold 0/1 numbers or booleans; got dtype {m.dtype}")
    m = sp.csr_array(m, copy=True)
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


def _names(names: Any, what: str) -> tuple[str, ...]:
    if isinstance(names, (str, bytes)):
        raise MaskError(f"{what} must be a sequence of names, not the string {names!r}")
    try:
        out = tuple(str(n) for n in names)
    except TypeError:
        raise MaskError(f"{what} must be a sequence of names; got {names!r}") from None
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(n for n in out if n in seen or seen.add(n))
        raise MaskError(f"names in {what} must be unique; {dup!r} appears more than once")
    return out


# ----------------------------------------------------------------------------- text files


def _read_rows(path: PathLike, kind: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped fields) per non-blank row of a CSV or TSV file."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise MaskError(f"{kind} '{path}' not found{where}; expected an existing file") from None
    except IsADirectoryError:
        raise MaskError(f"{kind} '{path}' is a directory, not a file") from None
    except OSError as e:
        raise MaskError(f"cannot open {kind} '{path}': {e.strerror or e}") from None
    with f:
        try:
            head = f.read(65536)
            f.seek(0)
            first = next((line for line in head.splitlines() if line.strip()), "")
            tsv = str(path).lower().endswith((".tsv", ".tab"))
            delimiter = "\t" if tsv or ("\t" in first and "," not in first) else ","
            reader = csv.reader(f, delimiter=delimiter)
            for fields in reader:
                fields = [x.strip() for x in fields]
                if fields not in ([], [""]):
                    yield reader.line_num, fields
        except UnicodeDecodeError:
            raise MaskError(
                f"{kind} '{path}' is not UTF-8 text; expected a UTF-8 CSV file"
            ) from None
        except csv.Error as e:
            raise MaskError(f"{kind} '{path}' cannot be read as CSV: {e}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_csv(path: PathLike) -> np.ndarray | NamedMask:
    """Read a 0/1 matrix from a CSV (or TSV) file.

    A first row that is all non-numeric after its first field, or starts with an empty field,
    is a header of column names; a first column that is all non-numeric (or under an empty
    header corner) holds row names. Spaces around fields are ignored.

    Returns:
        A bool array, or a NamedMask when the file has names (the other side gets "0", "1", ...).

    Raises:
        MaskError: missing or empty file, ragged rows, values other than 0/1 (NaN included).
    """
    where = f"mask file '{path}'"
    records = list(_read_rows(path, "mask file"))
    if not records:
        raise MaskError(f"{where} is empty; expected rows of comma-separated 0/1 values")
    header_line, first = records[0]
    header = None
    if first[0] == "" or not any(_is_number(x) for x in (first[1:] or first)):
        header, records = first, records[1:]
        if not records:
            raise MaskError(
                f"{where} has a header row but no data rows; expected 0/1 rows under it"
            )
    width = len(records[0][1])
    for line, fields in records:
        if len(fields) != width:
            expected = f"expected {width} like row {records[0][0]}"
            raise MaskError(f"{where}: row {line} has {len(fields)} values, {expected}")
    named = (header is not None and (header[0] == "" or len(header) == width - 1)) or not any(
        _is_number(fields[0]) for _, fields in records
    )
    skip = int(named)
    ncols = width - skip
    if ncols == 0:
        raise MaskError(f"{where} holds names but no 0/1 values")
    cols = None
    if header is not None:
        cols = header[1:] if named and len(header) == width else header
        if len(cols) != ncols:
            raise MaskError(
                f"{where}: header row {header_line} has {len(header)} names, "
                f"but the data rows have {width} values"
            )
    body = np.array([fields[skip:] for _, fields in records], dtype=str)
    matrix = body == "1"
    for k in np.flatnonzero(~(matrix | (body == "0"))):  # other spellings, e.g. "1.0"
        i, j = divmod(int(k), ncols)
        text = str(body[i, j])
        value = float(text) if _is_number(text) else None
        if value not in (0.0, 1.0):
            raise MaskError(
                f"{where}: expected 0 or 1, found {text!r} at row {records[i][0]}, "
                f"column {j + skip + 1}"
            )
        matrix[i, j] = value == 1.0
    if header is None and not named:
        return matrix
    rows = [f[0] for _, f in records] if named else [str(i) for i in range(len(records))]
    try:
        return NamedMask(matrix, tuple(rows), tuple(cols or (str(j) for j in range(ncols))))
    except MaskError as e:
        raise MaskError(f"{where}: {e}") from None


def from_edges(
    path: PathLike,
    src: str,
    dst: str,
    *,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    sparse: bool | None = None,
) -> NamedMask:
    """Build a NamedMask with a 1 per edge of an edge list (CSV/TSV with a header row).

    Args:
        path: the file; ``.tsv``/``.tab`` or a tab-only first line means tab-separated.
        src: column naming the rows (inputs); rows in order of first appearance.
        dst: column naming the columns (units), likewise.
        rows: fixed row order; an edge naming another value is an error.
        cols: fixed column order, likewise.
        sparse: True: ``csr_array``; False: dense; None: sparse above 10 million cells.

    Raises:
        MaskError: missing file or column, unknown names, empty values, no edges.
    """
    where = f"edge file '{path}'"
    records = _read_rows(path, "edge file")
    head = next(records, None)
    if head is None:
        raise MaskError(f"{where} is empty; expected a header row naming {src!r} and {dst!r}")
    header_line, header = head
    for column in (src, dst):
        if column not in header:
            found = ", ".join(map(repr, header))
            raise MaskError(f"{where} has no column {column!r}; columns found: {found}")
    spec = [(header.index(src), src, "rows", rows), (header.index(dst), dst, "cols", cols)]
    index = [
        {n: i for i, n in enumerate(_names(names, f"{arg}="))} if names is not None else {}
        for _, _, arg, names in spec
    ]
    found_at: tuple[list[int], list[int]] = ([], [])
    for line, fields in records:
        for axis, (k, column, arg, fixed) in enumerate(spec):
            if k >= len(fields):
                expected = f"expected {len(header)} like the header (row {header_line})"
                raise MaskError(f"{where}: row {line} has {len(fields)} values, {expected}")
            name = fields[k]
            if not name:
                raise MaskError(f"{where}: row {line} has an empty {column!r}")
            pos = index[axis].get(name)
            if pos is None:
                if fixed is not None:
                    unknown = f"names {name!r} in column {column!r}, which is not in {arg}="
                    raise MaskError(f"{where}: row {line} {unknown}")
                pos = index[axis][name] = len(index[axis])
            found_at[axis].append(pos)
    if not found_at[0]:
        raise MaskError(f"{where} has no edges (only a header row)")
    r, c = len(index[0]), len(index[1])
    ri, ci = (np.asarray(a, dtype=np.int64) for a in found_at)
    if sparse is None:
        sparse = r * c > _SPARSE_CELLS
    if sparse:
        flat = np.unique(ri * c + ci)
        matrix = sp.csr_array((np.ones(flat.size, bool), (flat // c, flat % c)), shape=(r, c))
    else:
        matrix = np.zeros((r, c), dtype=bool)
        matrix[ri, ci] = True
    return NamedMask(matrix, tuple(index[0]), tuple(index[1]))


# ----------------------------------------------------------------------------- save / load


def _extension(path: PathLike) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _EXTENSIONS:
        accepted = ", ".join(_EXTENSIONS)
        raise MaskError(f"cannot tell the format of '{path}': accepted extensions are {accepted}")
    return ext


def save(path: PathLike, mask: Any) -> None:
    """Write a mask as ``.npy`` (dense bool), ``.npz`` (dense or CSR) or ``.csv`` (0/1 text).

    Names of a NamedMask go to ``.npz`` ("rows"/"cols") and ``.csv`` (header row and first
    column); ``.npy`` refuses them. ``.csv`` takes non-empty 2-D masks only. Sparse ``.npz``
    files use scipy's keys, so ``scipy.sparse.load_npz`` reads them too.

    Raises:
        MaskError: unknown extension, invalid mask, a format that cannot hold it, write error.
    """
    ext = _extension(path)
    names = names_of(mask)
    m = _as_matrix(mask, "mask")
    try:
        if ext == ".npy":
            if names:
                raise MaskError("a .npy file cannot hold row/column names; use .npz or .csv")
            with open(path, "wb") as f:
                np.save(f, m.toarray() if sp.issparse(m) else m, allow_pickle=False)
        elif ext == ".npz":
            if sp.issparse(m):
                arrays = {"data": m.data, "indices": m.indices, "indptr": m.indptr,
                          "shape": np.array(m.shape), "format": np.array(b"csr"),
                          "_is_array": np.array(True)}  # fmt: skip
            else:
                arrays = {"mask": m}
            if names:
                arrays["rows"], arrays["cols"] = (np.array(n, dtype=str) for n in names)
            with open(path, "wb") as f:
                np.savez_compressed(f, **arrays)
        else:
            dense = m.toarray() if sp.issparse(m) else m
            if dense.ndim != 2 or dense.size == 0:
                got = f"got shape {dense.shape}: save 1-D (bias) or empty masks as .npy or .npz"
                raise MaskError(f"a .csv mask file holds a non-empty 2-D matrix; {got}")
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, lineterminator="\n")
                if names:
                    writer.writerow(["", *names[1]])
                for i, row in enumerate(dense.astype(np.uint8).tolist()):
                    writer.writerow([names[0][i], *row] if names else row)
    except OSError as e:
        raise MaskError(f"cannot write mask file '{path}': {e.strerror or e}") from None


def load(path: PathLike) -> Matrix | NamedMask:
    """Read what :func:`save` wrote (bool array, ``csr_array`` or NamedMask); never unpickles.

    Raises:
        MaskError: unknown extension, missing or unreadable file, pickle or object array,
            values other than 0/1.
    """
    ext = _extension(path)
    if not os.path.exists(path):
        raise MaskError(f"mask file '{path}' not found (load reads {', '.join(_EXTENSIONS)})")
    if ext == ".csv":
        return from_csv(path)
    name = f"mask in '{path}'"
    try:
        with open(path, "rb") as f:  # our handle: np.load leaks its own on a corrupt .npz
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return _check_dense(loaded, None, name)
            with loaded:
                return _from_npz(loaded, name)
    except MaskError:
        raise
    except Exception as e:  # numpy, zipfile and zlib raise many kinds for a corrupt file
        if isinstance(e, ValueError) and "pickle" in str(e):
            refused = "maskmagic refuses those (it never unpickles): save a 0/1 numeric array"
            raise MaskError(f"'{path}' holds a pickle or an object array; {refused}") from None
        expected = f"expected a {ext} file as numpy.save(z) or maskmagic.masks.save writes it"
        raise MaskError(f"cannot read mask file '{path}': {e}; {expected}") from None


def _from_npz(z: Any, name: str) -> Matrix | NamedMask:
    keys = set(z.files)
    if "mask" in keys:
        m = _check_dense(z["mask"], None, name)
    elif {"data", "indices", "indptr", "shape"} <= keys:
        fmt = z["format"].item() if "format" in keys else "csr"
        fmt = fmt.decode("ascii") if isinstance(fmt, bytes) else str(fmt)
        if fmt not in ("csr", "csc"):
            raise MaskError(f"{name} is a sparse {fmt!r} matrix; expected csr or csc")
        cls = sp.csr_array if fmt == "csr" else sp.csc_array
        try:
            shape = tuple(int(s) for s in z["shape"])
            m = cls((z["data"], z["indices"], z["indptr"]), shape=shape)
            m.check_format(full_check=True)
        except (TypeError, ValueError, IndexError) as e:
            raise MaskError(f"{name} is not a valid sparse matrix: {e}") from None
        m = _check_sparse(m, None, name)
    else:
        wanted = "a 'mask' array or sparse 'data'/'indices'/'indptr'/'shape' arrays"
        raise MaskError(f"{name}: expected {wanted}; found {sorted(keys)}")
    if "rows" not in keys and "cols" not in keys:
        return m
    if m.ndim != 2:
        raise MaskError(f"{name} has row/column names but shape {m.shape}; expected 2-D")
    rows, cols = (
        tuple(map(str, z[k])) if k in keys else tuple(str(i) for i in range(m.shape[axis]))
        for axis, k in enumerate(("rows", "cols"))
    )
    return NamedMask(m, rows, cols)
