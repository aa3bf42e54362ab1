"""The native sparse kernel (maskmagic/layers/native.py): exact enough, deterministic, optional.

Needs a C++ compiler (g++): the first test builds the kernel into the user cache, as a user's
first sparse layer does. ``MASKMAGIC_SPARSE_KERNEL=native pytest tests/test_sparse.py`` runs
the layer tests on it too.
"""

from __future__ import annotations

import importlib.resources
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedDense, native
from maskmagic.layers import csr as sparse
from maskmagic.training import TrainOp


def _connections(n_in, units, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_in, units)) < density
    mask[:, 0] = False  # a unit without connections
    mask[1, :] = False  # an input without connections
    rows, cols = sparse.structure_of(mask)
    return rows, cols, sparse.column_order(rows, cols)


def _product(path, monkeypatch, x, values, rows, cols, order, units, dy):
    """y, dx and dvalues of ``sparse_matmul`` on one path (eager, through a tape)."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", path)
    x, values, dy = (tf.constant(a) for a in (x, values, dy))
    with tf.GradientTape() as tape:
        tape.watch([x, values])
        y = sparse.sparse_matmul(
            x, values, tf.constant(rows), tf.constant(cols), tf.constant(order), x.shape[1], units
        )
        loss = tf.reduce_sum(y * dy)
    dx, dvalues = tape.gradient(loss, [x, values])
    return y.numpy(), dx.numpy(), dvalues.numpy()


@pytest.mark.parametrize(
    "dtype, batch, n_in, units, density",
    [
        ("float32", 37, 70, 90, 0.1),  # batch not a multiple of the vector lanes: the tails
        ("float32", 128, 300, 200, 0.02),  # full 32- and 64-lane blocks
        ("float64", 45, 64, 33, 0.3),
        ("float32", 1, 10, 7, 0.5),
        ("float32", 5, 20, 30, 0.0),  # no connections at all
        ("float32", 70, 1100, 40, 0.05),  # tiles of 32 and a tail, three blocks of inputs
        ("float64", 20, 600, 50, 0.1),  # tiles of 16 with a tail, two blocks of inputs
    ],
)
def test_native_matches_stock_path_and_dense_reference(monkeypatch, dtype, batch, n_in, units,
                                                       density):  # fmt: skip
    """Catches wrong indexing, transposes or tail loops in any of the three products."""
    rows, cols, order = _connections(n_in, units, density, seed=batch)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    dy = rng.normal(size=(batch, units)).astype(dtype)
    values = rng.normal(size=rows.size).astype(dtype)
    args = (x, values, rows, cols, order, units, dy)
    native_out = _product("native", monkeypatch, *args)
    stock_out = _product("stock", monkeypatch, *args)
    w = np.zeros((n_in, units), "float64")
    w[rows, cols] = values
    reference = (
        x.astype("float64") @ w,
        dy.astype("float64") @ w.T,
        np.einsum("bk,bk->k", x[:, rows].astype("float64"), dy[:, cols].astype("float64")),
    )
    tol = 1e-5 if dtype == "float32" else 1e-12
    for got, stock, ref in zip(native_out, stock_out, reference):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(got, stock, rtol=tol, atol=tol * 10)


def test_native_results_are_bit_identical_from_run_to_run(monkeypatch):
    """Catches a nondeterministic summation order (atomics, thread-dependent partial sums)."""
    rows, cols, order = _connections(512, 384, 0.05, seed=3)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(96, 512)).astype("float32")
    dy = rng.normal(size=(96, 384)).astype("float32")
    values = rng.normal(size=rows.size).astype("float32")
    args = (x, values, rows, cols, order, 384, dy)
    first = _product("native", monkeypatch, *args)
    for _ in range(3):
        for a, b in zip(first, _product("native", monkeypatch, *args)):
            assert np.array_equal(a, b)


def _op_types(layer, x):
    graph = tf.function(lambda: layer(x)).get_concrete_function().graph
    return {op.type for op in graph.get_operations()}


def test_the_environment_variable_picks_the_path(monkeypatch):
    """Catches a dispatch that silently runs the stock kernels when native is asked for."""
    x = tf.ones((4, 300))
    layer = MaskedDense(200, mask=np.random.default_rng(0).random((300, 200)) < 0.05,
                        impl="sparse")  # fmt: skip
    layer(x)
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    assert "MaskmagicSparseMatmul" in _op_types(layer, x)
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "stock")
    types = _op_types(layer, x)
    assert "MaskmagicSparseMatmul" not in types and "SparseMatrixMatMul" in types
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "fast")
    with pytest.raises(MaskMagicError, match="one of auto, native, stock; received 'fast'"):
        layer(x)


def test_native_kernel_rejects_out_of_range_connections(monkeypatch):
    """Catches a kernel that reads or writes outside its tensors on bad indices."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    ops = native.kernel_ops()
    x, values = tf.ones((2, 4)), tf.ones(2)
    rows, cols = tf.constant([0, 9]), tf.constant([0, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        ops.maskmagic_sparse_matmul(x, values, rows, cols, units=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        ops.maskmagic_sparse_matmul(x, values, tf.constant([0, 1]), tf.constant([0, 3]), units=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not sorted"):
        ops.maskmagic_sparse_matmul(x, values, tf.constant([1, 0]), cols, units=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not sorted"):
        ops.maskmagic_sparse_matmul_grad_input(tf.ones((3, 2)), values, tf.constant([1, 0]), cols,
                                               n_in=4)  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        ops.maskmagic_sparse_matmul_grad_values(x, tf.ones((2, 3)), rows, cols)


def test_failed_build_warns_once_and_the_stock_path_still_trains(monkeypatch, tmp_path):
    """Catches a missing compiler breaking sparse layers, or a warning on every layer."""
    monkeypatch.setattr(native, "_loaded", {})  # a process that has not loaded the kernel yet
    monkeypatch.setenv("MASKMAGIC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MASKMAGIC_CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "auto")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64)).astype("float32")
    y = rng.normal(size=(32, 16)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = keras.Input((64,))
        hidden = MaskedDense(48, mask=rng.random((64, 48)) < 0.1, impl="sparse")(inputs)
        model = keras.Model(inputs, MaskedDense(16, mask=rng.random((48, 16)) < 0.2,
                                                impl="sparse")(hidden))  # fmt: skip
        op = TrainOp(model, optimizer=keras.optimizers.SGD(0.05), loss="mse")
        losses = [float(op(x, y)) for _ in range(20)]
    ours = [w for w in caught if issubclass(w.category, native.NativeKernelWarning)]
    assert len(ours) == 1 and "no-such-compiler" in str(ours[0].message)
    assert losses[-1] < losses[0]
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    with pytest.raises(MaskMagicError, match="could not be built"):
        native.kernel_ops()


def test_cache_key_follows_source_compiler_and_directory(monkeypatch, tmp_path):
    """Catches a stale binary being reused after the source or the compiler changed."""
    source = b"".join(path.read_bytes() for path in native.SOURCES)
    assert native.cache_key() == native.cache_key(source)
    assert native.cache_key(source + b"\n// changed") != native.cache_key(source)
    before = native.cache_key()
    monkeypatch.setenv("MASKMAGIC_CXX", "clang++")
    assert native.cache_key() != before
    monkeypatch.setenv("MASKMAGIC_CACHE_DIR", str(tmp_path))
    assert native.kernel_dir().parent == tmp_path / "kernels"


@pytest.mark.parametrize(
    "name, op",
    [("sparse_ops.cc", b"MaskmagicSparseMatmul"), ("mask_ops.cc", b"MaskmagicMaskSelect")],
)
def test_source_ships_inside_the_package(name, op):
    """Catches a C++ source missing from the installed package (no build on a fresh machine)."""
    shipped = importlib.resources.files("maskmagic.layers") / "native_src" / name
    assert shipped.is_file() and op in shipped.read_bytes()


def test_exported_savedmodel_needs_no_native_op(monkeypatch, tmp_path):
    """Catches a SavedModel that only loads where maskmagic's op library is loaded."""
    from maskmagic import deploy

    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    mask = np.random.default_rng(0).random((300, 200)) < 0.05
    inputs = keras.Input((300,))
    model = keras.Model(inputs, MaskedDense(200, mask=mask, impl="sparse")(inputs))
    x = np.random.default_rng(1).normal(size=(3, 300)).astype("float32")
    expected = model(x).numpy()
    deploy.export(model, tmp_path / "saved")
    graph = (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert b"MaskmagicSparseMatmul" not in graph and b"SparseMatrixMatMul" in graph
    np.testing.assert_allclose(deploy.serve(tmp_path / "saved")(x), expected, rtol=1e-5, atol=1e-5)
