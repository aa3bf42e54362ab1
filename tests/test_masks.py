"""maskmagic.masks: constructors, validation, CSV/edge-list readers and save/load."""

from __future__ import annotations

import ast
import dataclasses
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maskmagic import masks
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.masks import NamedMask
from maskmagic.masks import files as mask_files

A = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)  # 5 x 3


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _raises(words, fn, *args, **kwargs) -> MaskError:
    """Call fn, expect a MaskError whose message contains every word; return it."""
    with pytest.raises(MaskError) as info:
        fn(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


# ----------------------------------------------------------------------------- module rules


@pytest.mark.parametrize("module", ["__init__.py", "check.py", "files.py"])
def test_masks_imports_only_numpy_scipy_stdlib_and_errors(module):
    tree = ast.parse((Path(masks.__file__).parent / module).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(
                node.module if node.module.startswith("maskmagic") else node.module.split(".")[0]
            )
    third_party = {r for r in roots if r not in sys.stdlib_module_names}
    allowed = {
        "numpy",
        "scipy",
        "maskmagic.errors",
        "maskmagic.masks.check",
        "maskmagic.masks.files",
    }
    assert third_party <= allowed and "maskmagic.errors" in third_party | {"maskmagic.masks.check"}


def test_all_is_sorted_and_complete():
    assert masks.__all__ == sorted(masks.__all__)
    for name in masks.__all__:
        assert hasattr(masks, name)


def test_mask_error_is_a_value_error():
    assert issubclass(MaskError, MaskMagicError) and issubclass(MaskError, ValueError)


# ----------------------------------------------------------------------------- constructors


@pytest.mark.parametrize(("fn", "fill"), [(masks.ones, True), (masks.zeros, False)])
def test_ones_and_zeros_with_and_without_shape(fn, fill):
    square = fn(3)
    assert square.dtype == bool and square.shape == (3, 3) and (square == fill).all()
    rect = fn((2, 5))
    assert rect.shape == (2, 5) and (rect == fill).all()
    bias = fn((4,))
    assert bias.shape == (4,) and (bias == fill).all()
    deferred = fn()
    assert callable(deferred) and repr(deferred) == f"{fn.__name__}()"
    np.testing.assert_array_equal(deferred((6, 2)), np.full((6, 2), fill))
    assert deferred((6, 2)).dtype == bool


def test_eye_square_rectangular_and_deferred():
    np.testing.assert_array_equal(masks.eye(10), np.eye(10, dtype=bool))
    np.testing.assert_array_equal(masks.eye((3, 5)), np.eye(3, 5, dtype=bool))
    np.testing.assert_array_equal(masks.eye()((5, 3)), np.eye(5, 3, dtype=bool))
    assert masks.eye(4).dtype == bool
    _raises(["eye", "(4,)"], masks.eye, (4,))


@pytest.mark.parametrize("bad", [-1, (2, -3), (2, 3, 4), (), "ab", 2.5, True, (2, True)])
def test_bad_shapes_are_refused(bad):
    _raises(["ones", "shape"], masks.ones, bad)


def test_random_is_reproducible_with_a_seed_and_seeds_differ():
    a = masks.random(0.3, (50, 40), seed=1)
    assert a.dtype == bool and a.shape == (50, 40)
    np.testing.assert_array_equal(a, masks.random(0.3, (50, 40), seed=1))
    assert not np.array_equal(a, masks.random(0.3, (50, 40), seed=2))
    deferred = masks.random(0.3, seed=1)
    assert repr(deferred) == "random(0.3, seed=1)"
    np.testing.assert_array_equal(deferred((50, 40)), a)
    np.testing.assert_array_equal(deferred((50, 40)), deferred((50, 40)))
    assert deferred == masks.random(0.3, seed=1)
    assert masks.random(0.5, (7,), seed=0).shape == (7,)
    # Without a seed, two draws of a large mask differ.
    assert not np.array_equal(masks.random(0.5, (64, 64)), masks.random(0.5, (64, 64)))


def test_random_density_is_close_to_target_and_extremes_are_exact():
    big = masks.random(0.1, (1000, 1000), seed=0)
    assert abs(big.mean() - 0.1) < 0.003
    assert abs(masks.random(0.73, 800, seed=5).mean() - 0.73) < 0.005
    assert not masks.random(0.0, (30, 30), seed=3).any()
    assert masks.random(1, (30, 30), seed=3).all()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_random_refuses_bad_density(bad):
    _raises(["density", "between 0 and 1"], masks.random, bad, (3, 3))


def test_random_refuses_bad_seed():
    _raises(["seed"], masks.random, 0.5, (3, 3), seed="abc")
    _raises(["seed"], masks.random, 0.5, seed=-1)


def test_banded_square_is_the_band_around_the_diagonal():
    i, j = np.indices((7, 7))
    for w in range(4):
        np.testing.assert_array_equal(masks.banded(w, 7), abs(i - j) <= w)
    np.testing.assert_array_equal(masks.banded(0, 5), np.eye(5, dtype=bool))
    np.testing.assert_array_equal(masks.banded(2)((6, 6)), masks.banded(2, 6))
    assert repr(masks.banded(2)) == "banded(2)"


def _band_brute_force(w: int, r: int, c: int) -> np.ndarray:
    i, j = np.indices((r, c))
    gap = np.maximum(i * c, j * r) - np.minimum((i + 1) * c, (j + 1) * r)
    return gap < w * min(r, c)


def test_banded_rectangular_stretches_the_diagonal():
    np.testing.assert_array_equal(masks.banded(0, (2, 4)), [[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(masks.banded(1, (2, 4)), [[1, 1, 1, 0], [0, 1, 1, 1]])
    for r in range(1, 9):
        for c in range(1, 9):
            for w in range(3):
                band = masks.banded(w, (r, c))
                np.testing.assert_array_equal(band, _band_brute_force(w, r, c))
                assert band.any(axis=1).all() and band.any(axis=0).all()
                np.testing.assert_array_equal(band.T, masks.banded(w, (c, r)))
                assert (band <= masks.banded(w + 1, (r, c))).all()


def test_banded_refuses_bad_width_and_1d_shapes():
    _raises(["width", ">= 0", "-1"], masks.banded, -1, 4)
    _raises(["width"], masks.banded, 1.5)
    _raises(["banded", "shape"], masks.banded, 1, (4,))


def test_blocks_structure():
    expected = np.array(
        [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    )
    np.testing.assert_array_equal(masks.blocks(2, (4, 6)), expected)
    np.testing.assert_array_equal(masks.blocks(1, (3, 4)), np.ones((3, 4), bool))
    np.testing.assert_array_equal(masks.blocks(5, 5), np.eye(5, dtype=bool))
    np.testing.assert_array_equal(masks.blocks(3)((7, 5)), masks.blocks(3, (7, 5)))
    for r, c, n in [(7, 5, 3), (10, 3, 3), (9, 9, 4), (100, 7, 6)]:
        m = masks.blocks(n, (r, c))
        row_block = m.argmax(axis=1)  # first column of the row's block
        col_sizes = np.bincount(m.argmax(axis=0), minlength=r)
        # n distinct row groups, sizes as even as possible, rows of a group identical.
        groups = [m[row_block == b] for b in np.unique(row_block)]
        assert len(groups) == n
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
        assert all((g == g[0]).all() for g in groups)
        sizes = [int(g[0].sum()) for g in groups]
        assert sum(sizes) == c and max(sizes) - min(sizes) <= 1
        assert (m.sum(axis=0) >= 1).all() and col_sizes.sum() == c
        # Block-diagonal: the blocks move right as we go down.
        assert (np.diff(row_block) >= 0).all()


def test_blocks_refuses_bad_n():
    _raises(["n", ">= 1"], masks.blocks, 0)
    _raises(["4 blocks", "between 1 and 3", "3 x 10"], masks.blocks, 4, (3, 10))
    _raises(["blocks", "shape"], masks.blocks, 2, (4,))


# ----------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    "given_mask",
    [
        A,
        A.astype(int),
        A.astype(np.uint8),
        A.astype(float),
        A.astype(np.float32),
        A.tolist(),
        A.astype(int).tolist(),
        tuple(map(tuple, A.astype(int).tolist())),
        np.array(A.astype(int).tolist(), dtype=object),
    ],  # fmt: skip
)
def test_validate_accepts_dense_forms(given_mask):
    out = masks.validate(given_mask, (5, 3))
    assert isinstance(out, np.ndarray) and out.dtype == bool
    np.testing.assert_array_equal(out, A)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself warns
def test_validate_drops_array_subclasses_and_reads_sparse_bias_masks():
    out = masks.validate(np.matrix(A.astype(int)), (5, 3))
    assert type(out) is np.ndarray and (out == A).all()
    bias = masks.validate(sp.coo_array(np.array([1.0, 0.0, 1.0])), (3,), name="bias_mask")
    assert type(bias) is np.ndarray and bias.tolist() == [True, False, True]


def test_validate_returns_a_copy():
    src = A.copy()
    out = masks.validate(src, (5, 3))
    out[0, 1] = True
    assert not src[0, 1]


def test_validate_bias_mask_1d():
    out = masks.validate([1, 0, 1], (3,), name="bias_mask")
    np.testing.assert_array_equal(out, [True, False, True])
    err = _raises(
        ["bias_mask", "(2,)", "(3,)", "(units,)"], masks.validate, [1, 0], (3,), name="bias_mask"
    )
    assert str(err) == "bias_mask has shape (2,), expected (3,) (units,)"
    _raises(["2", "index 1"], masks.validate, [1, 2, 0], (3,))


@pytest.mark.parametrize(
    "make",
    [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_array, sp.lil_matrix, sp.dok_array],
)
def test_validate_accepts_sparse_and_returns_canonical_csr_bool(make):
    out = masks.validate(make(A.astype(float)), (5, 3))
    assert isinstance(out, sp.csr_array) and out.dtype == bool
    assert out.has_canonical_format and out.nnz == A.sum()
    np.testing.assert_array_equal(out.toarray(), A)


def test_validate_sparse_drops_explicit_zeros_and_sorts_indices():
    m = sp.csr_array(
        (np.array([1.0, 0.0, 1.0]), np.array([2, 1, 0]), np.array([0, 3])), shape=(1, 3)
    )
    out = masks.validate(m, (1, 3))
    assert out.nnz == 2 and out.has_canonical_format
    np.testing.assert_array_equal(out.indices, [0, 2])
    np.testing.assert_array_equal(m.data, [1.0, 0.0, 1.0])  # the input is untouched


def test_validate_sparse_refusals_name_shape_and_value():
    _raises(
        ["(3, 5)", "(5, 3)", "inputs x units"],
        masks.validate,
        sp.csr_array(np.ones((3, 5))),
        (5, 3),
    )
    bad = sp.csr_array(np.array([[0, 0, 1], [0.5, 0, 0]]))
    err = _raises([], masks.validate, bad, (2, 3))
    assert str(err) == "mask values must be 0 or 1; found 0.5 at (1, 0)"
    # Duplicates are summed (scipy's meaning), so two 1s at one place make a 2.
    dup = sp.coo_array((np.ones(2), (np.array([1, 1]), np.array([2, 2]))), shape=(2, 3))
    _raises(["found 2", "(1, 2)"], masks.validate, dup, (2, 3))
    _raises(["nan"], masks.validate, sp.csr_array(np.array([[np.nan, 1.0]])), (1, 2))
    _raises(["dtype"], masks.validate, sp.csr_array(np.array([[1j, 0]])), (1, 2))


def test_validate_named_mask_returns_its_matrix():
    named = NamedMask(A, tuple("abcde"), ("u", "v", "w"))
    out = masks.validate(named, (5, 3))
    assert isinstance(out, np.ndarray) and not isinstance(out, NamedMask)
    np.testing.assert_array_equal(out, A)
    _raises(["(5, 3)", "(3, 5)"], masks.validate, named, (3, 5))


def test_validate_calls_a_function_of_the_shape():
    np.testing.assert_array_equal(masks.validate(masks.eye(), (5, 3)), np.eye(5, 3, dtype=bool))
    np.testing.assert_array_equal(masks.validate(masks.ones(), (4,)), np.ones(4, bool))
    seen = []

    def f(shape):
        seen.append(shape)
        return sp.csr_array(np.ones(shape))

    assert isinstance(masks.validate(f, (2, 3)), sp.csr_array) and seen == [(2, 3)]
    _raises(["(3, 3)", "(2, 3)"], masks.validate, lambda shape: np.ones((3, 3)), (2, 3))
    _raises(["another function"], masks.validate, lambda shape: masks.ones, (2, 3))
    _raises(["eye", "(3,)"], masks.validate, masks.eye(), (3,))


@pytest.mark.parametrize(
    ("bad", "shape", "words"),
    [
        (np.ones((3, 2)), (3, 4), ["mask has shape (3, 2), expected (3, 4) (inputs x units)"]),
        (np.ones((2, 3, 4)), (3, 4), ["(2, 3, 4)", "(3, 4)"]),
        (np.ones(4), (3, 4), ["(4,)", "(3, 4)"]),
        (1, (3, 4), ["shape ()", "(3, 4)"]),
        ([[1, 0, 1], [0, 1]], (2, 3), ["ragged", "row 1 has 2 values", "row 0 has 3 values"]),
        ([1, [0, 1]], (2,), ["ragged", "a single value"]),
        ([["a", "b"]], (1, 2), ["0/1 numbers or booleans"]),
        ([[1, None]], (1, 2), ["0/1 numbers or booleans"]),
        (None, (1, 2), ["0/1 numbers or booleans"]),
        ({"a": 1}, (1, 2), ["0/1 numbers or booleans"]),
        (np.array([[1 + 0j, 0]]), (1, 2), ["complex"]),
        (np.array([[1.0, np.nan]]), (1, 2), ["found nan at (0, 1)"]),
        (np.array([[1.0, 0.0], [np.inf, 0.0]]), (2, 2), ["found inf at (1, 0)"]),
        (np.array([[1.0, 0.0], [0.0, -np.inf]]), (2, 2), ["found -inf at (1, 1)"]),
        (
            np.array([[0, 0, 0], [0, 0, 0.5]]),
            (2, 3),
            ["mask values must be 0 or 1; found 0.5 at (1, 2)"],
        ),
        (np.array([[0, -1], [2, 0]]), (2, 2), ["found -1 at (0, 1)"]),
        (np.array([[0, 1], [2, 0]]), (2, 2), ["found 2 at (1, 0)"]),
    ],
)
def test_validate_refusals_say_what_was_expected_and_found(bad, shape, words):
    _raises(words, masks.validate, bad, shape)


def test_validate_uses_the_given_name_and_refuses_bad_expected_shapes():
    _raises(["kernel_mask has shape"], masks.validate, np.ones((1, 1)), (2, 2), name="kernel_mask")
    _raises(["expected shape"], masks.validate, A, 4)
    _raises(["expected shape"], masks.validate, A, (1, 2, 3))


# ----------------------------------------------------------------------------- NamedMask etc.


def test_named_mask_checks_its_names_and_converts_its_matrix():
    named = NamedMask(A.astype(float), tuple("abcde"), ["u", "v", "w"])
    assert named.matrix.dtype == bool and named.cols == ("u", "v", "w") and named.shape == (5, 3)
    _raises(["4 names in rows", "5 rows"], NamedMask, A, tuple("abcd"), ("u", "v", "w"))
    _raises(["2 names in cols", "3 columns"], NamedMask, A, tuple("abcde"), ("u", "v"))
    _raises(["unique", "'a'"], NamedMask, A, tuple("abcda"), ("u", "v", "w"))
    _raises(["string"], NamedMask, A, "abcde", ("u", "v", "w"))
    _raises(["2-D"], NamedMask, np.ones(3, bool), ("a", "b", "c"), ())
    _raises(["0 or 1", "0.5"], NamedMask, np.full((1, 1), 0.5), ("a",), ("b",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        named.rows = ("x",)  # type: ignore[misc]


def test_named_mask_array_protocol_equality_and_repr():
    named = NamedMask(A, tuple("abcde"), ("u", "v", "w"))
    arr = np.asarray(named)
    assert arr.dtype == bool
    np.testing.assert_array_equal(arr, A)
    np.testing.assert_array_equal(np.asarray(named, dtype=float), A.astype(float))
    dense = named.to_dense()
    dense[0, 1] = True
    assert not named.matrix[0, 1]
    as_sparse = NamedMask(sp.coo_array(A.astype(int)), tuple("abcde"), ("u", "v", "w"))
    assert isinstance(as_sparse.matrix, sp.csr_array) and as_sparse.matrix.dtype == bool
    np.testing.assert_array_equal(np.array(as_sparse), A)
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(as_sparse, copy=False)
    assert as_sparse == named and named == NamedMask(A.copy(), tuple("abcde"), ("u", "v", "w"))
    assert named != NamedMask(~A, tuple("abcde"), ("u", "v", "w"))
    assert named != NamedMask(A, tuple("abcdz"), ("u", "v", "w"))
    text = repr(named)
    assert "shape=(5, 3)" in text and "'a', 'b', 'c', ..." in text and "'w'" in text
    with pytest.raises(TypeError):
        hash(named)


def test_names_of_and_density():
    named = NamedMask(A, tuple("abcde"), ("u", "v", "w"))
    assert masks.names_of(named) == (tuple("abcde"), ("u", "v", "w"))
    assert masks.names_of(A) is None
    assert masks.density(A) == pytest.approx(A.mean())
    assert masks.density(named) == pytest.approx(A.mean())
    assert masks.density([[1, 0, 0, 0]]) == 0.25
    explicit_zero = sp.csr_array(
        (np.array([1.0, 0.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 4)
    )
    assert masks.density(explicit_zero) == 0.25
    assert masks.density(np.zeros((0, 3))) == 0.0
    _raises(["function of the shape"], masks.density, masks.ones())
    _raises(["0 or 1"], masks.density, [[0.5]])


# ----------------------------------------------------------------------------- from_csv


def test_from_csv_plain_matrix(tmp_path):
    path = _write(tmp_path / "a.csv", "1,0,1\n0, 1 ,0\n\n1,1,0\n0,0,1\n1,0,0\n")
    out = masks.from_csv(path)
    assert isinstance(out, np.ndarray) and out.dtype == bool
    np.testing.assert_array_equal(out, A)
    # "1.0" and "0.0" are 0/1 too; str paths work.
    _write(tmp_path / "b.csv", "1.0,0.0\n0,1\n")
    np.testing.assert_array_equal(masks.from_csv(str(tmp_path / "b.csv")), np.eye(2, dtype=bool))


def test_from_csv_excel_style_bom_and_crlf(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbfu,v\r\n1,0\r\n0,1\r\n")
    assert masks.from_csv(path) == NamedMask(np.eye(2, dtype=bool), ("0", "1"), ("u", "v"))


def test_from_csv_header_only(tmp_path):
    out = masks.from_csv(_write(tmp_path / "a.csv", "u,v,w\n1,0,1\n0,1,0\n"))
    assert isinstance(out, NamedMask)
    assert out.cols == ("u", "v", "w") and out.rows == ("0", "1")
    np.testing.assert_array_equal(out.to_dense(), A[:2])


def test_from_csv_row_names_only(tmp_path):
    out = masks.from_csv(_write(tmp_path / "a.tsv", "a\t1\t0\t1\nb\t0\t1\t0\n"))
    assert isinstance(out, NamedMask)
    assert out.rows == ("a", "b") and out.cols == ("0", "1", "2")
    np.testing.assert_array_equal(out.to_dense(), A[:2])


@pytest.mark.parametrize(
    "text",
    [
        ",u,v,w\na,1,0,1\nb,0,1,0\n",  # empty corner
        "gene,u,v,w\na,1,0,1\nb,0,1,0\n",  # named corner
        "u,v,w\na,1,0,1\nb,0,1,0\n",  # R-style: header one shorter
        '"",u,v,w\n"a",1,0,1\n"b",0,1,0\n',  # quoted
    ],
)
def test_from_csv_both_names(tmp_path, text):
    out = masks.from_csv(_write(tmp_path / "a.csv", text))
    assert out == NamedMask(A[:2], ("a", "b"), ("u", "v", "w"))


def test_from_csv_numeric_names_under_an_empty_corner(tmp_path):
    out = masks.from_csv(_write(tmp_path / "a.csv", ",10,20\n7,1,0\n8,0,1\n"))
    assert out == NamedMask(np.eye(2, dtype=bool), ("7", "8"), ("10", "20"))


def test_from_csv_errors(tmp_path):
    _raises(["mask file 'nope.csv' not found"], masks.from_csv, "nope.csv")
    _raises(["is empty"], masks.from_csv, _write(tmp_path / "e.csv", ""))
    _raises(["is empty"], masks.from_csv, _write(tmp_path / "blank.csv", "\n  \n"))
    _raises(["header row but no data"], masks.from_csv, _write(tmp_path / "h.csv", "u,v\n"))
    ragged = _write(tmp_path / "r.csv", "1,0,1,0,1\n0,1,0,1,0\n1,1,0,0\n")
    _raises(["row 3 has 4 values, expected 5 like row 1"], masks.from_csv, ragged)
    half = _write(tmp_path / "v.csv", "u,v,w\n1,0,1\n0,1,0.5\n")
    err = _raises([], masks.from_csv, half)
    assert str(err).endswith("expected 0 or 1, found '0.5' at row 3, column 3")
    assert "v.csv" in str(err)
    _raises(
        ["found 'nan' at row 2, column 2"],
        masks.from_csv,
        _write(tmp_path / "n.csv", "1,0\n0,nan\n"),
    )
    _raises(
        ["found '' at row 1, column 2"], masks.from_csv, _write(tmp_path / "x.csv", "1,,0\n0,1,0\n")
    )
    _raises(
        ["found '2' at row 1, column 1"], masks.from_csv, _write(tmp_path / "t.csv", "2,0\n0,1\n")
    )
    # A typo in the first column is an error, not silently a column of row names.
    _raises(
        ["found 'x'", "row 2, column 1"], masks.from_csv, _write(tmp_path / "y.csv", "1,0\nx,1\n")
    )
    dup = _write(tmp_path / "d.csv", "u,v\na,1,0\na,0,1\n")
    _raises(["d.csv", "unique", "'a'"], masks.from_csv, dup)
    _raises(
        ["header row 1 has 4 names", "3 values"],
        masks.from_csv,
        _write(tmp_path / "w.csv", "p,q,r,s\n1,0,1\n"),
    )
    _raises(["names but no 0/1 values"], masks.from_csv, _write(tmp_path / "o.csv", "a\nb\n"))
    _raises(["directory"], masks.from_csv, tmp_path)


# ----------------------------------------------------------------------------- from_edges

EDGES = "variant,gene,weight\nrs1,TP53,0.5\nrs2,BRCA1,1\nrs1,BRCA1,2\nrs3,TP53,1\nrs1,TP53,3\n"
EDGE_MATRIX = np.array([[1, 1], [0, 1], [1, 0]], dtype=bool)  # rs1, rs2, rs3 x TP53, BRCA1


def test_from_edges_order_of_first_appearance_and_duplicates(tmp_path):
    out = masks.from_edges(_write(tmp_path / "e.csv", EDGES), "variant", "gene")
    assert isinstance(out, NamedMask) and isinstance(out.matrix, np.ndarray)
    assert out.rows == ("rs1", "rs2", "rs3") and out.cols == ("TP53", "BRCA1")
    np.testing.assert_array_equal(out.to_dense(), EDGE_MATRIX)
    # src/dst may be swapped to wire genes -> variants.
    swapped = masks.from_edges(tmp_path / "e.csv", "gene", "variant")
    np.testing.assert_array_equal(swapped.to_dense(), EDGE_MATRIX.T)


def test_from_edges_fixed_rows_and_cols(tmp_path):
    path = _write(tmp_path / "e.csv", EDGES)
    out = masks.from_edges(
        path, "variant", "gene", rows=["rs3", "rs2", "rs1", "rs9"], cols=("BRCA1", "TP53", "EGFR")
    )
    assert out.rows == ("rs3", "rs2", "rs1", "rs9") and out.cols == ("BRCA1", "TP53", "EGFR")
    expected = np.array([[0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(out.to_dense(), expected)
    _raises(
        ["'rs3'", "'variant'", "rows="],
        masks.from_edges,
        path,
        "variant",
        "gene",
        rows=["rs1", "rs2"],
    )
    _raises(
        ["'BRCA1'", "'gene'", "cols="], masks.from_edges, path, "variant", "gene", cols=["TP53"]
    )
    _raises(["unique", "'rs1'"], masks.from_edges, path, "variant", "gene", rows=["rs1", "rs1"])


def test_from_edges_sparse_forced_auto_and_dense(tmp_path, monkeypatch):
    path = _write(tmp_path / "e.csv", EDGES)
    out = masks.from_edges(path, "variant", "gene", sparse=True)
    assert isinstance(out.matrix, sp.csr_array) and out.matrix.has_canonical_format
    assert out.matrix.nnz == 4
    np.testing.assert_array_equal(out.to_dense(), EDGE_MATRIX)
    monkeypatch.setattr(mask_files, "_SPARSE_CELLS", 5)  # 3 x 2 = 6 cells > 5: auto goes sparse
    assert isinstance(masks.from_edges(path, "variant", "gene").matrix, sp.csr_array)
    assert isinstance(masks.from_edges(path, "variant", "gene", sparse=False).matrix, np.ndarray)
    monkeypatch.setattr(mask_files, "_SPARSE_CELLS", 6)
    assert isinstance(masks.from_edges(path, "variant", "gene").matrix, np.ndarray)


def test_from_edges_large_auto_sparse_never_densifies(tmp_path):
    n = 4000  # 4000 x 4000 = 16 million cells > 10 million
    lines = ["a,b"] + [f"in{i},out{(i * 7) % n}" for i in range(n)]
    out = masks.from_edges(_write(tmp_path / "big.csv", "\n".join(lines)), "a", "b")
    assert isinstance(out.matrix, sp.csr_array) and out.shape == (n, n) and out.matrix.nnz == n


def test_from_edges_tsv_by_extension_and_by_sniffing_and_quotes(tmp_path):
    tsv = EDGES.replace(",", "\t")
    for name in ("e.tsv", "e.txt", "e.csv"):
        out = masks.from_edges(_write(tmp_path / name, tsv), "variant", "gene")
        np.testing.assert_array_equal(out.to_dense(), EDGE_MATRIX)
    quoted = _write(tmp_path / "q.csv", 'src,dst\n"a,1",x\nb,"y ""z"""\n')
    out = masks.from_edges(quoted, "src", "dst")
    assert out.rows == ("a,1", "b") and out.cols == ("x", 'y "z"')


def test_from_edges_errors(tmp_path):
    _raises(["edge file 'gone.csv' not found"], masks.from_edges, "gone.csv", "a", "b")
    path = _write(tmp_path / "e.csv", EDGES)
    _raises(
        ["no column 'snp'", "columns found: 'variant', 'gene', 'weight'"],
        masks.from_edges,
        path,
        "snp",
        "gene",
    )
    _raises(["no column 'target'"], masks.from_edges, path, "variant", "target")
    _raises(["is empty"], masks.from_edges, _write(tmp_path / "z.csv", ""), "a", "b")
    _raises(["no edges"], masks.from_edges, _write(tmp_path / "h.csv", "a,b\n"), "a", "b")
    _raises(
        ["row 3 has 1 values", "expected 2"],
        masks.from_edges,
        _write(tmp_path / "s.csv", "a,b\nx,y\nz\n"),
        "a",
        "b",
    )
    _raises(
        ["row 2 has an empty 'b'"],
        masks.from_edges,
        _write(tmp_path / "m.csv", "a,b\nx,\n"),
        "a",
        "b",
    )


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv"])
def test_save_load_dense_round_trip(tmp_path, ext):
    path = tmp_path / f"m{ext}"
    masks.save(path, A.astype(int).tolist())
    out = masks.load(path)
    assert isinstance(out, np.ndarray) and out.dtype == bool
    np.testing.assert_array_equal(out, A)


def test_saved_files_are_plain_formats(tmp_path):
    masks.save(tmp_path / "m.npy", A)
    plain = np.load(tmp_path / "m.npy", allow_pickle=False)
    assert plain.dtype == bool and (plain == A).all()
    masks.save(tmp_path / "m.npz", A)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert z.files == ["mask"] and (z["mask"] == A).all()
    masks.save(tmp_path / "m.csv", A)
    assert (tmp_path / "m.csv").read_text().splitlines()[:2] == ["1,0,1", "0,1,0"]
    masks.save(tmp_path / "n.csv", NamedMask(A[:2], ("a", "b"), ("u", "v", "w")))
    assert (tmp_path / "n.csv").read_text() == ",u,v,w\na,1,0,1\nb,0,1,0\n"


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_save_load_bias_mask_1d(tmp_path, ext):
    masks.save(tmp_path / f"b{ext}", [1, 0, 1])
    np.testing.assert_array_equal(masks.load(tmp_path / f"b{ext}"), [True, False, True])


def test_save_load_sparse_npz_stays_sparse_and_scipy_reads_it(tmp_path):
    m = sp.random_array((40, 30), density=0.1, rng=0, format="csr")
    m.data[:] = 1
    masks.save(tmp_path / "s.npz", m)
    out = masks.load(tmp_path / "s.npz")
    assert isinstance(out, sp.csr_array) and out.dtype == bool and out.has_canonical_format
    np.testing.assert_array_equal(out.toarray(), m.toarray() != 0)
    np.testing.assert_array_equal(sp.load_npz(tmp_path / "s.npz").toarray(), m.toarray() != 0)
    # A scipy-written csc file loads too.
    sp.save_npz(tmp_path / "c.npz", sp.csc_array(A))
    np.testing.assert_array_equal(masks.load(tmp_path / "c.npz").toarray(), A)


@pytest.mark.parametrize("ext", [".npz", ".csv"])
@pytest.mark.parametrize("sparse", [False, True])
def test_save_load_named_mask(tmp_path, ext, sparse):
    matrix = sp.csr_array(A) if sparse else A
    named = NamedMask(matrix, ("in 1", "in,2", 'in"3', "4", "nan"), ("u", "v", "w"))
    masks.save(tmp_path / f"n{ext}", named)
    out = masks.load(tmp_path / f"n{ext}")
    assert isinstance(out, NamedMask) and out == named
    assert sp.issparse(out.matrix) == (sparse and ext == ".npz")


def test_save_refusals(tmp_path):
    named = NamedMask(A, tuple("abcde"), ("u", "v", "w"))
    _raises([".npy", "names", ".npz"], masks.save, tmp_path / "n.npy", named)
    _raises(["1-D", ".npy or .npz"], masks.save, tmp_path / "b.csv", [1, 0])
    _raises(["non-empty"], masks.save, tmp_path / "e.csv", np.zeros((0, 3)))
    _raises(["m.txt", ".npy, .npz, .csv"], masks.save, tmp_path / "m.txt", A)
    _raises(["0 or 1"], masks.save, tmp_path / "m.npy", [[0.5]])
    _raises(["cannot write", "m.npy"], masks.save, tmp_path / "no" / "such" / "m.npy", A)
    assert not (tmp_path / "m.npy").exists()


def test_load_refusals(tmp_path):
    _raises(["m.txt", ".npy, .npz, .csv"], masks.load, tmp_path / "m.txt")
    _raises(
        ["mask file", "gone.npz", "not found", ".npy, .npz, .csv"],
        masks.load,
        tmp_path / "gone.npz",
    )
    _raises(["mask file", "gone.csv' not found"], masks.load, tmp_path / "gone.csv")
    masks.save(tmp_path / "ok.npz", masks.random(0.5, (30, 30), seed=0))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:200])
    _raises(["cannot read", "cut.npz"], masks.load, tmp_path / "cut.npz")
    masks.save(tmp_path / "ok.npy", masks.ones(30))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:150])
    _raises(["cannot read", "cut.npy"], masks.load, tmp_path / "cut.npy")
    np.save(tmp_path / "f.npy", np.array([[0.5, 1.0]]))
    _raises(["0 or 1", "0.5", "f.npy"], masks.load, tmp_path / "f.npy")
    np.savez(tmp_path / "k.npz", weights=A)
    _raises(["'mask'", "weights"], masks.load, tmp_path / "k.npz")
    _write(tmp_path / "junk.npz", "not a zip")
    _raises(["junk.npz"], masks.load, tmp_path / "junk.npz")
    (tmp_path / "dir.npz").mkdir()
    _raises(["cannot read", "dir.npz"], masks.load, tmp_path / "dir.npz")


class _Boom:
    """Unpickling this would run code; load must never get that far."""

    def __reduce__(self):
        return (Path.touch, (Path(tempfile.gettempdir()) / "maskmagic-pwned",))


def test_load_never_unpickles(tmp_path):
    marker = Path(tempfile.gettempdir()) / "maskmagic-pwned"
    marker.unlink(missing_ok=True)
    np.save(tmp_path / "o.npy", np.array([_Boom(), 1], dtype=object), allow_pickle=True)
    _raises(["pickle", "object array", "o.npy"], masks.load, tmp_path / "o.npy")
    np.savez(tmp_path / "o.npz", mask=np.array([_Boom(), 1], dtype=object))
    _raises(["pickle", "o.npz"], masks.load, tmp_path / "o.npz")
    (tmp_path / "p.npy").write_bytes(pickle.dumps(_Boom()))
    _raises(["pickle"], masks.load, tmp_path / "p.npy")
    assert not marker.exists()


# ----------------------------------------------------------------------------- properties

_2d = hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8))
_names = st.text(alphabet='ab1 ,"-._', min_size=1, max_size=6).filter(lambda s: s == s.strip())
_quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_quick
@given(arr=_2d, ext=st.sampled_from([".npy", ".npz", ".csv"]))
def test_property_dense_round_trip(arr, ext):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"m{ext}"
        masks.save(path, arr.astype(np.uint8))
        out = masks.load(path)
    assert isinstance(out, np.ndarray) and out.dtype == bool
    np.testing.assert_array_equal(out, arr)


@_quick
@given(
    arr=hnp.arrays(bool, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6)),
    ext=st.sampled_from([".npy", ".npz"]),
    sparse=st.booleans(),
)
def test_property_npy_npz_round_trip_any_shape(arr, ext, sparse):
    mask = sp.csr_array(arr) if sparse and arr.ndim == 2 else arr
    with tempfile.TemporaryDirectory() as d:
        masks.save(Path(d) / f"m{ext}", mask)
        out = masks.load(Path(d) / f"m{ext}")
    assert sp.issparse(out) == (sp.issparse(mask) and ext == ".npz")
    np.testing.assert_array_equal(out.toarray() if sp.issparse(out) else out, arr)


@_quick
@given(data=st.data(), arr=_2d, ext=st.sampled_from([".npz", ".csv"]), sparse=st.booleans())
def test_property_named_round_trip(data, arr, ext, sparse):
    rows = data.draw(st.lists(_names, min_size=arr.shape[0], max_size=arr.shape[0], unique=True))
    cols = data.draw(st.lists(_names, min_size=arr.shape[1], max_size=arr.shape[1], unique=True))
    named = NamedMask(sp.csr_array(arr) if sparse else arr, tuple(rows), tuple(cols))
    with tempfile.TemporaryDirectory() as d:
        masks.save(Path(d) / f"m{ext}", named)
        out = masks.load(Path(d) / f"m{ext}")
    assert out == named


_dtypes = st.sampled_from(
    [np.float64, np.float32, np.int8, np.int64, np.uint8, bool, np.complex64, "U2"]
)
_garbage = st.one_of(
    hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    st.recursive(
        st.one_of(st.none(), st.integers(-3, 3), st.floats(), st.text(max_size=2), st.booleans()),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=16,
    ),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(garbage=_garbage, shape=st.sampled_from([(2, 3), (3,), (0, 2), (1, 1)]))
def test_property_validate_only_ever_raises_mask_error(garbage, shape):
    try:
        out = masks.validate(garbage, shape)
    except MaskError:
        if (
            isinstance(garbage, np.ndarray)
            and garbage.dtype.kind in "biuf"
            and garbage.shape == shape
        ):
            assert not np.isin(garbage, [0, 1]).all()  # refused only for a real reason
        return
    assert isinstance(out, np.ndarray) and out.dtype == bool and out.shape == shape
    np.testing.assert_array_equal(out, np.asarray(garbage, dtype=float) == 1)
