"""Mask files: CSV matrices, edge lists, and .npy/.npz/.csv save and load (numpy/scipy only).

Loading never unpickles. Every problem (missing file, ragged or non-0/1 rows, a pickled array,
an unknown extension) raises :class:`~maskmagic.errors.MaskError` naming the file, what was
expected and what was found.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from maskmagic.errors import MaskError
from maskmagic.masks.check import (
    Matrix,
    NamedMask,
    PathLike,
    _as_matrix,
    _check_dense,
    _check_sparse,
    _names,
    names_of,
)

__all__ = ["from_csv", "from_edges", "load", "save"]

_SPARSE_CELLS = 10_000_000  # from_edges(sparse=None) goes sparse above this many cells
_EXTENSIONS = (".npy", ".npz", ".csv")


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
