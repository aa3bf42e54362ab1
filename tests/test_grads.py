"""The inspector's compiled gradient pass against plain tf.GradientTape references."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from maskmagic.layers import MaskedDense
from maskmagic.widgets.inspector import probes as grads
from maskmagic.widgets.inspector.grad_pass import GradientPass, output_layers
from maskmagic.widgets.inspector.probes import grid_for, probe_for
from tests.conftest import make_342
from tests.numerics import assert_same_value

MSE = keras.losses.MeanSquaredError()
HIDDEN_MASK = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1]], bool)


def _pass(model, loss=MSE):
    probes = [probe_for(layer) for layer in model.layers]
    return GradientPass(model, loss, [p for p in probes if p is not None])


def _tensors(data):
    x, y = data
    return tf.constant(x), tf.constant(y)


# The compiled gradient pass and this eager tape are two computations of one gradient (graph
# rewrites and oneDNN may fuse and reorder the sums): compared with assert_same_value, a few
# ulps (tests/numerics.py). What holds by construction (a masked entry's gradient is exactly
# 0, an update is the gradient where allowed) stays assert_array_equal.
def _tape(model, x, y, variables, objective=None):
    with tf.GradientTape() as tape:
        prediction = model(x, training=False)
        value = MSE(y, prediction) if objective is None else objective(prediction)
    return [g.numpy() for g in tape.gradient(value, variables)]


def _dense_model(out_mask=None):
    x = keras.Input((3,), name="x")
    h = keras.layers.Dense(5, activation="tanh", name="plain")(x)
    h2 = MaskedDense(4, name="mid")(h)
    out = MaskedDense(2, mask=out_mask, bias_mask=[1, 0], name="out")(h2)
    return keras.Model(x, out)


def test_loss_gradients_equal_tape_for_masked_and_plain_layers(data342):
    model = _dense_model(out_mask=[[1, 0], [0, 1], [1, 1], [0, 0]])
    x, y = _tensors(data342)
    result = _pass(model).run(x, y, "loss", 0, [None, None, None])
    layers = [model.get_layer(n) for n in ("plain", "mid", "out")]
    kernels = _tape(model, x, y, [layer.kernel for layer in layers])
    biases = _tape(model, x, y, [layer.bias for layer in layers])
    assert result.loss == pytest.approx(float(MSE(y, model(x))), rel=1e-6)
    for layer_result, kernel, bias in zip(result.layers, kernels, biases):
        assert layer_result.g_pool.shape == kernel.shape  # small layers are not pooled
        assert_same_value(layer_result.g_pool, kernel)
        assert_same_value(layer_result.bias_g, bias)
        assert layer_result.norm == pytest.approx(np.linalg.norm(kernel), rel=1e-5)
        assert layer_result.zeros == int(np.sum(kernel == 0))
        assert layer_result.masked_nonzero == 0
    out = result.layers[2]
    assert np.all(out.g_pool[[0, 1, 3, 3], [1, 0, 0, 1]] == 0)  # masked: exactly 0
    assert out.bias_g[1] == 0 and out.bias_wb[1] != 0  # masked bias: 0, would-be not


def test_would_be_gradient_is_the_tape_gradient_of_the_effective_kernel(data342):
    model = make_342(hidden_mask=HIDDEN_MASK)
    x, y = _tensors(data342)
    hidden = model.get_layer("hidden")
    result = _pass(model).run(x, y, "loss", 0, [None, None])
    # Reference: the same network written with the effective kernel as a watched tensor.
    effective = tf.constant(hidden.effective_kernel())
    out = model.get_layer("out")
    with tf.GradientTape() as tape:
        tape.watch(effective)
        h = tf.sigmoid(x @ effective + hidden.effective_bias())
        prediction = h @ out.effective_kernel() + out.effective_bias()
        loss = MSE(y, prediction)
    reference = tape.gradient(loss, effective).numpy()
    np.testing.assert_allclose(result.layers[0].wb_pool, reference, rtol=1e-5, atol=1e-7)
    assert np.all(result.layers[0].wb_pool[~HIDDEN_MASK] != 0)  # masked: would-be non-zero
    np.testing.assert_array_equal(result.layers[0].g_pool, result.layers[0].wb_pool * HIDDEN_MASK)


@pytest.mark.parametrize("unit", [0, 1])
def test_single_unit_target_equals_tape_of_that_output_summed(net342, data342, unit):
    x, y = _tensors(data342)
    result = _pass(net342).run(x, y, "out", unit, [None, None])
    variables = [net342.get_layer("hidden").kernel, net342.get_layer("out").kernel]
    reference = _tape(net342, x, y, variables, lambda p: tf.reduce_sum(p[:, unit]))
    for layer_result, kernel in zip(result.layers, reference):
        assert_same_value(layer_result.g_pool, kernel)
    other = 1 - unit
    assert np.all(result.layers[1].g_pool[:, other] == 0)  # the other unit's column
    assert result.objective == pytest.approx(float(tf.reduce_sum(net342(x)[:, unit])), rel=1e-6)


def test_hidden_layer_target_uses_an_auxiliary_model(net342, data342):
    x, y = _tensors(data342)
    gp = _pass(net342)
    assert gp.target_units("hidden") == 4
    result = gp.run(x, y, "hidden", 2, [None, None])
    hidden = net342.get_layer("hidden")
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(tf.sigmoid(x @ hidden.kernel + hidden.bias)[:, 2])
    reference = tape.gradient(value, hidden.kernel).numpy()
    np.testing.assert_allclose(result.layers[0].g_pool, reference, rtol=1e-6)
    assert not result.layers[1].g_pool.any()  # the output layer cannot move a hidden unit


def test_unit_change_does_not_retrace(net342, data342):
    x, y = _tensors(data342)
    gp = _pass(net342)
    gp.run(x, y, "out", 0, [None, None])
    traces = gp.trace_count
    gp.run(x, y, "out", 1, [None, None])
    assert gp.trace_count == traces


def test_update_set_restricts_the_update_view(net342, data342):
    x, y = _tensors(data342)
    update = np.zeros((4, 2), bool)
    update[:, 1] = True
    result = _pass(net342).run(x, y, "loss", 0, [None, tf.constant(update)])
    out = result.layers[1]
    np.testing.assert_array_equal(out.upd_pool, np.where(update, out.g_pool, 0))
    assert result.layers[0].upd_pool is None  # no update set given: the view is the gradient


def test_signed_key_pools_the_entry_of_largest_magnitude():
    values = tf.constant([[0.5, -2.0, 1.0, 0.0], [3.0, -0.25, -7.5, 1e-30]])
    keys = tf.reduce_max(tf.reshape(grads.signed_key(values), (2, 2, 2)), axis=-1)
    pooled = grads.decode_pool(keys).numpy()
    np.testing.assert_allclose(pooled, [[-2.0, 1.0], [3.0, -7.5]], rtol=1e-6)


def test_pooled_summary_of_a_large_layer_is_exact_where_it_counts():
    rng = np.random.default_rng(0)
    shape = (1000, 700)
    wb = rng.normal(size=shape).astype("float32")
    mask = (rng.random(shape) < 0.3).astype("float32")
    update = rng.random(shape) < 0.5
    kernel = rng.normal(size=shape).astype("float32")
    grid = grid_for(shape)
    assert (grid.rows, grid.cols, grid.bh, grid.bw) == (250, 234, 4, 3)
    out = grads.dense_summary(wb, mask, tf.constant(update), kernel, grid, 10)
    g = wb * mask
    assert out["sumsq"].numpy() == pytest.approx(np.sum(g.astype(float) ** 2), rel=1e-5)
    assert int(out["zeros"]) == int(np.sum(g == 0))
    assert int(out["masked_nonzero"]) == 0
    padded = np.zeros((1000, 702), "float32")
    padded[:, :700] = g
    blocks = padded.reshape(250, 4, 234, 3).transpose(0, 2, 1, 3).reshape(250, 234, 12)
    expected = blocks[np.arange(250)[:, None], np.arange(234), np.abs(blocks).argmax(-1)]
    np.testing.assert_allclose(out["g_pool"].numpy(), expected, rtol=1e-6)
    top = np.argsort(-np.abs(g).ravel(), kind="stable")[:10]
    assert sorted(out["top_index"].numpy().tolist()) == sorted(top.tolist())
    np.testing.assert_array_equal(out["top_w"].numpy(), kernel.ravel()[out["top_index"].numpy()])


def test_masked_nonzero_counts_masked_entries_with_a_non_finite_would_be():
    wb = np.ones((300, 300), "float32")
    wb[0, 0] = np.inf  # masked below: 0 * inf = nan, a "non-zero" gradient
    wb[5, 5] = np.nan
    mask = np.ones((300, 300), "float32")
    mask[0, 0] = mask[5, 5] = mask[7, 7] = 0
    out = grads.dense_summary(wb, mask, None, wb, grid_for(wb.shape), 3)
    assert int(out["masked_nonzero"]) == 2


def test_sparse_layer_gradient_of_each_connection(data342):
    rng = np.random.default_rng(3)
    mask = rng.random((3, 6)) < 0.5
    mask[0, 0] = True
    x_in = keras.Input((3,))
    hidden = MaskedDense(6, mask=mask, impl="sparse", activation="tanh", name="sp")(x_in)
    out = keras.layers.Dense(2, name="head")(hidden)
    model = keras.Model(x_in, out)
    layer = model.get_layer("sp")
    assert layer.is_sparse
    x, y = _tensors(data342)
    probes = [probe_for(layer), probe_for(model.get_layer("head"))]
    assert probes[0].kind == "sparse" and not probes[0].has_would_be
    result = GradientPass(model, MSE, probes).run(x, y, "loss", 0, [None, None])
    values, bias = _tape(model, x, y, [layer.kernel, layer.bias])
    np.testing.assert_allclose(result.layers[0].g_values.numpy(), values, rtol=1e-6)
    assert_same_value(result.layers[0].bias_g, bias)
    dense = np.zeros((3, 6), "float32")
    rows, cols = layer.connections()
    dense[rows, cols] = values
    np.testing.assert_allclose(result.layers[0].g_pool, dense, rtol=1e-5)
    assert result.layers[0].zeros == int(np.sum(dense == 0))


def test_output_layers_and_unknown_probe():
    model = make_342()
    assert output_layers(model) == [("out", 2)]
    assert probe_for(keras.layers.Dropout(0.5)) is None


def test_register_probe_takes_precedence(net342, data342):
    class Tagged(grads.MaskedProbe):
        kind = "tagged"

    grads.register_probe(lambda layer: layer.name == "out", Tagged)
    try:
        assert probe_for(net342.get_layer("out")).kind == "tagged"
        assert probe_for(net342.get_layer("hidden")).kind == "masked"
    finally:
        grads._PROBES.pop(0)


def test_sparse_layer_over_2_to_the_31_cells_counts_and_indexes_in_int64():
    # 100_000 x 30_000 = 3e9 declared cells (int32 wraps), five stored connections.
    n_in, n_out = 100_000, 30_000
    rows = np.array([0, 5, 71_582, 99_999, 99_999])
    cols = np.array([0, 7, 12_345, 3, 29_999])
    mask = sp.csr_array((np.ones(5, bool), (rows, cols)), shape=(n_in, n_out))
    x_in = keras.Input((n_in,))
    layer = MaskedDense(n_out, mask=mask, impl="sparse", name="big")
    model = keras.Model(x_in, layer(x_in))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, n_in)).astype("float32"))
    y = tf.constant(rng.normal(size=(2, n_out)).astype("float32"))
    probe = probe_for(layer)
    assert probe.kind == "sparse" and probe.shape[0] * probe.shape[1] > 2**31
    result = GradientPass(model, MSE, [probe]).run(x, y, "loss", 0, [None]).layers[0]
    (values,) = _tape(model, x, y, [layer.kernel])
    assert result.zeros == n_in * n_out - 5 + int(np.sum(values == 0))
    stored = dict(zip(zip(*layer.connections()), values))
    assert {(r, c) for r, c, _, _ in result.top} == set(zip(rows.tolist(), cols.tolist()))
    for r, c, g, _ in result.top:
        assert g == pytest.approx(float(stored[(r, c)]), rel=1e-6)
