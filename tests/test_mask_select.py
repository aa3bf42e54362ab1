"""The native mask select (maskmagic/layers/mask_select.py): the bits of tf.where, or nothing.

Needs a C++ compiler (g++), like tests/test_sparse_native.py: ``MASKMAGIC_SPARSE_KERNEL=native``
makes a failed build an error instead of a silent fall-back to ``tf.where``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic.layers import MaskedDense, mask_select, native
from maskmagic.training import TrainOp

SPECIALS = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.25]
BITS = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}


@pytest.fixture
def native_select(monkeypatch):
    """The native op for every kernel size (the layer's threshold out of the way)."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    return native.kernel_ops()


def _bits(tensor) -> np.ndarray:
    dtype = tensor.dtype.name
    if dtype == "bfloat16":
        tensor = tf.bitcast(tensor, tf.uint16)
        return tensor.numpy()
    return tensor.numpy().view(BITS[dtype])


def _values_and_mask(shape, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape)
    flat = values.reshape(-1)
    flat[: len(SPECIALS) * 2] = SPECIALS * 2  # each special value once masked, once kept
    mask = rng.random(shape) < 0.5
    mask.reshape(-1)[: len(SPECIALS) * 2] = [True] * len(SPECIALS) + [False] * len(SPECIALS)
    return values, mask


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 1001), (64, 48), (1, 17)])
def test_native_select_has_the_bits_of_tf_where(native_select, dtype, shape):
    """Catches a select that keeps a masked NaN or -0.0, drops a kept one, or misses a tail."""
    values, mask = _values_and_mask(shape, seed=sum(shape))
    x = tf.constant(values, dtype=dtype)
    expected = tf.where(mask, x, tf.zeros((), dtype))
    got = native_select.maskmagic_mask_select(x, mask)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    assert (_bits(got)[~mask] == 0).all()  # +0.0, not -0.0


def test_native_select_of_full_and_empty_masks(native_select):
    """Catches the all-ones shortcut firing on a mask with one zero, or not clearing at all."""
    values, _ = _values_and_mask((50, 40), seed=3)
    x = tf.constant(values, tf.float32)
    full = np.ones((50, 40), bool)
    np.testing.assert_array_equal(_bits(native_select.maskmagic_mask_select(x, full)), _bits(x))
    one_zero = full.copy()
    one_zero[49, 39] = False  # the very last entry: the check must read the whole mask
    got = _bits(native_select.maskmagic_mask_select(x, one_zero))
    assert got[49, 39] == 0 and (got[:49] == _bits(x)[:49]).all()
    empty = np.zeros((50, 40), bool)
    assert (_bits(native_select.maskmagic_mask_select(x, empty)) == 0).all()


def test_native_select_leaves_a_shared_input_alone(native_select):
    """Catches an in-place select that overwrites a tensor another op still reads."""
    mask = np.random.default_rng(0).random((200, 300)) < 0.3

    @tf.function
    def both(a):
        x = a * 2.0  # one buffer, read by the select and by the sum after it
        selected = native_select.maskmagic_mask_select(x, mask)
        return selected, x + 0.0

    a = tf.constant(np.random.default_rng(1).normal(size=(200, 300)), tf.float32)
    selected, x = both(a)
    np.testing.assert_array_equal(x.numpy(), (a * 2.0).numpy())
    np.testing.assert_array_equal(selected.numpy(), np.where(mask, x.numpy(), 0))


def test_native_select_refuses_a_mask_of_another_shape(native_select):
    """Catches a select that reads past a smaller mask."""
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="shape|Dimension"):
        native_select.maskmagic_mask_select(tf.ones((4, 5)), np.ones((5, 4), bool))


def _traced_ops(fn, *args) -> set:
    """The op types ``fn`` traces into, the branches of its conds included."""
    graph_def = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    found = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        found |= {node.op for node in function.node_def}
    return found


def _layer_run(monkeypatch, path, mask, x, steps=3):
    """Outputs, kernel gradient and trained kernel of a MaskedDense on ``path``."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", path)
    keras.utils.set_random_seed(7)
    inputs = keras.Input((mask.shape[0],))
    layer = MaskedDense(mask.shape[1], mask=mask, impl="dense", activation="tanh")
    model = keras.Model(inputs, layer(inputs))
    kernel = layer.kernel.numpy()
    kernel[0, 0] = np.nan  # a masked NaN must not reach the output or the gradient
    layer.kernel.assign(kernel)
    with tf.GradientTape() as tape:
        y = model(x)
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, layer.kernel)
    traced = _traced_ops(lambda x: model(x), x)
    op = TrainOp(model, loss="mse", optimizer=keras.optimizers.Adam(0.01))
    for _ in range(steps):
        op(x, y)
    return y.numpy(), grad.numpy(), layer.kernel.numpy(), traced


def test_masked_dense_on_the_native_select_matches_tf_where_bit_for_bit(monkeypatch):
    """Catches the native path changing a forward value, a gradient or a training step."""
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    rng = np.random.default_rng(0)
    mask = rng.random((40, 30)) < 0.4
    mask[0, 0] = False
    x = tf.constant(rng.normal(size=(16, 40)), tf.float32)
    y_n, g_n, k_n, ops_n = _layer_run(monkeypatch, "native", mask, x)
    y_s, g_s, k_s, ops_s = _layer_run(monkeypatch, "stock", mask, x)
    assert "MaskmagicMaskSelect" in ops_n and "MaskmagicMaskSelect" not in ops_s
    np.testing.assert_array_equal(y_n, y_s)
    assert np.isfinite(y_n).all()
    np.testing.assert_array_equal(g_n.view(np.uint32), g_s.view(np.uint32))
    assert (g_n.view(np.uint32)[~mask] == 0).all()  # exactly +0.0 at every masked connection
    np.testing.assert_array_equal(k_n.view(np.uint32), k_s.view(np.uint32))


def test_small_kernels_xla_and_stock_mode_keep_tf_where(monkeypatch):
    """Catches the native op in a small layer (a needless build), under XLA, or when refused."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    rng = np.random.default_rng(1)
    small = MaskedDense(8, mask=rng.random((10, 8)) < 0.5, impl="dense")
    small.build((None, 10))
    x = tf.constant(rng.normal(size=(2, 10)), tf.float32)
    assert "MaskmagicMaskSelect" not in _traced_ops(small, x)
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 80)  # now the layer is large
    assert "MaskmagicMaskSelect" in _traced_ops(small, x)
    compiled = tf.function(small, jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), small(x).numpy(), rtol=1e-6, atol=1e-6)
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "stock")
    assert "MaskmagicMaskSelect" not in _traced_ops(small, x)


def test_exported_dense_model_needs_no_native_op(monkeypatch, tmp_path):
    """Catches a SavedModel of a large dense masked layer that needs maskmagic's library."""
    from maskmagic import deploy

    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    rng = np.random.default_rng(2)
    inputs = keras.Input((30,))
    model = keras.Model(
        inputs, MaskedDense(20, mask=rng.random((30, 20)) < 0.3, impl="dense")(inputs)
    )
    x = rng.normal(size=(3, 30)).astype("float32")
    assert "MaskmagicMaskSelect" in _traced_ops(model, x)
    expected = model(x).numpy()
    deploy.export(model, tmp_path / "saved")
    graph = (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert b"MaskmagicMaskSelect" not in graph
    np.testing.assert_array_equal(deploy.serve(tmp_path / "saved")(x), expected)


def test_inspector_on_the_native_select_matches_tf_where(monkeypatch):
    """Catches the inspector's pass (the layer's select with the mask swapped for ones, and the
    probe's effective kernel) computing another gradient on the native path."""
    from maskmagic.widgets.inspector import GradientInspector

    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    rng = np.random.default_rng(5)
    mask = rng.random((40, 30)) < 0.4
    x = rng.normal(size=(16, 40)).astype("float32")
    y = rng.normal(size=(16, 30)).astype("float32")
    seen = []
    for path in ("native", "stock"):
        monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", path)
        keras.utils.set_random_seed(3)
        inputs = keras.Input((40,))
        model = keras.Model(inputs, MaskedDense(30, mask=mask, impl="dense", name="out")(inputs))
        inspector = GradientInspector(model, x, y)
        seen.append((inspector.gradients["out"], inspector.would_be_gradients["out"]))
    (g_n, wb_n), (g_s, wb_s) = seen
    np.testing.assert_array_equal(np.asarray(g_n).view(np.uint32), np.asarray(g_s).view(np.uint32))
    np.testing.assert_array_equal(wb_n.view(np.uint32), wb_s.view(np.uint32))
    assert (np.asarray(g_n)[~mask] == 0).all() and (wb_n[~mask] != 0).any()
