"""MaskedDense(impl="sparse"): same network as dense, only the connected weights stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from maskmagic import masks
from maskmagic.errors import MaskMagicError, SelectorError
from maskmagic.layers import MaskedDense
from maskmagic.layers import csr as sparse
from maskmagic.training import TrainOp
from maskmagic.training.reach import influencers

A = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)  # 5 x 3
B = np.array([1, 0, 1], dtype=bool)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pair(mask, x, **kwargs):
    """A dense and a sparse layer with the same mask and the same effective weights."""
    dense = MaskedDense(mask=mask, impl="dense", **kwargs)
    dense(x)
    twin = MaskedDense(mask=mask, impl="sparse", **kwargs)
    twin(x)
    rows, cols = twin.connections()
    twin.kernel.assign(dense.kernel.numpy()[rows, cols])
    if dense.use_bias:
        twin.bias.assign(dense.bias.numpy())
    return dense, twin


def _random_mask(shape, density, seed=0):
    return sp.csr_array(sp.random(*shape, density=density, random_state=seed) != 0)


def test_sparse_layer_stores_only_connections():
    x = np.zeros((2, 5), "float32")
    layer = MaskedDense(3, mask=A, bias_mask=B, impl="sparse")
    layer(x)
    assert layer.is_sparse and layer.kernel_format == "sparse"
    nnz = int(A.sum())
    assert tuple(layer.kernel.shape) == (nnz,)
    assert [v.path for v in layer.trainable_variables] == [layer.kernel.path, layer.bias.path]
    for variable in layer.variables:
        assert variable.shape in ((nnz,), (3,)), variable.path
    for variable in (layer.kernel_rows, layer.kernel_cols, layer.kernel_order):
        assert variable.dtype == "int32" and not variable.trainable
    assert isinstance(layer.get_mask(), sp.csr_array)
    np.testing.assert_array_equal(layer.get_mask().toarray(), A)
    np.testing.assert_array_equal(layer.get_bias_mask(), B)
    assert layer.kernel_mask is None


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_sparse_and_dense_give_same_outputs_and_gradients(activation):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 5)), tf.float32)
    dense, twin = _pair(A, x, units=3, bias_mask=B, activation=activation)
    np.testing.assert_allclose(twin(x).numpy(), dense(x).numpy(), rtol=1e-6, atol=1e-6)
    probe = tf.constant(rng.normal(size=(16, 3)), tf.float32)
    grads = []
    for layer in (dense, twin):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * probe)
        grads.append(tape.gradient(loss, [x, layer.kernel.value, layer.bias.value]))
    (dx, dk, db), (sx, sk, sb) = grads
    rows, cols = twin.connections()
    np.testing.assert_allclose(sx.numpy(), dx.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sk.numpy(), dk.numpy()[rows, cols], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sb.numpy(), db.numpy(), rtol=1e-6)
    assert np.all(dk.numpy()[~A] == 0)  # the dense layer agrees: masked-out means no gradient


def test_larger_random_layer_matches_dense_and_is_deterministic():
    rng = np.random.default_rng(1)
    mask = _random_mask((300, 200), 0.05)
    x = tf.constant(rng.normal(size=(32, 300)), tf.float32)
    dense, twin = _pair(mask, x, units=200)
    np.testing.assert_allclose(twin(x).numpy(), dense(x).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(twin(x).numpy(), twin(x).numpy())
    np.testing.assert_allclose(
        twin.effective_kernel().toarray(), dense.effective_kernel(), rtol=0, atol=0
    )


def test_three_dimensional_inputs_and_mixed_precision():
    x = np.random.default_rng(2).normal(size=(2, 4, 5)).astype("float32")
    dense, twin = _pair(A, x, units=3)
    assert twin(x).shape == (2, 4, 3)
    np.testing.assert_allclose(twin(x).numpy(), dense(x).numpy(), rtol=1e-6, atol=1e-6)
    keras.config.set_dtype_policy("mixed_float16")
    half = MaskedDense(3, mask=A, impl="sparse")
    assert half(x).dtype == "float16" and half.kernel.dtype == "float32"


def test_sampled_dot_chunks_match_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    ia, ib = rng.integers(0, 7, 50), rng.integers(0, 5, 50)
    expected = np.sum(a[ia] * b[ib], axis=1)
    for chunk in (1, 4, 13, 1 << 20):
        got = sparse.sampled_dot(
            tf.constant(a),
            tf.constant(ia, tf.int32),
            tf.constant(b),
            tf.constant(ib, tf.int32),
            chunk,
        )
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_mask_forms_and_empty_mask():
    x = np.ones((1, 5), "float32")
    named = masks.NamedMask(sp.csr_array(A), rows=tuple("abcde"), cols=("u", "v", "w"))
    for mask in (A, A.astype(int).tolist(), sp.coo_matrix(A.astype(float)), named):
        layer = MaskedDense(3, mask=mask, impl="sparse")
        layer(x)
        np.testing.assert_array_equal(layer.get_mask().toarray(), A)
    empty = MaskedDense(3, mask=np.zeros((5, 3)), impl="sparse", bias_initializer="ones")
    np.testing.assert_array_equal(empty(x).numpy(), [[1.0, 1.0, 1.0]])
    assert empty.kernel.shape == (0,)


def test_initial_values_follow_the_dense_distribution():
    layer = MaskedDense(400, mask=_random_mask((600, 400), 0.2), impl="sparse")
    layer(np.zeros((1, 600), "float32"))
    values = layer.kernel.numpy()
    limit = np.sqrt(6 / (600 + 400))  # glorot_uniform on the full (inputs, units) kernel
    assert np.abs(values).max() <= limit
    assert abs(values.std() - limit / np.sqrt(3)) < 0.05 * limit
    with pytest.raises(MaskMagicError, match="orthogonal|Orthogonal"):
        MaskedDense(3, mask=A, impl="sparse", kernel_initializer="orthogonal")(np.ones((1, 5)))


def test_auto_picks_sparse_only_for_large_low_density_layers(monkeypatch):
    """On the stock kernels (STOCK_AUTO_THRESHOLDS); the native limits are checked below."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "stock")

    def pick(shape, density):
        layer = MaskedDense(shape[1], mask=_random_mask(shape, density))
        layer(np.zeros((1, shape[0]), "float32"))
        return layer.kernel_format

    assert pick((5, 3), 0.3) == "dense"  # small layers stay dense whatever the density
    assert pick((128, 128), 0.001) == "dense"
    assert pick((256, 256), 0.01) == "sparse"
    assert pick((256, 256), 0.04) == "dense"
    assert pick((2049, 2048), 0.04) == "sparse"
    assert pick((2049, 2048), 0.08) == "dense"
    assert pick((1024, 1024), 0.04) == "sparse"  # issue 16: 5% from 1024 x 1024
    assert pick((1023, 1024), 0.04) == "dense"
    assert sparse.choose_impl(4096, 4096, 4096 * 122) == "sparse"  # 2.98%
    assert sparse.choose_impl(4096, 4096, 4096 * 410) == "dense"  # 10%: sparse measured 2.3x
    assert sparse.choose_impl(200_000, 20_000, 2_000_000) == "sparse"
    assert sparse.choose_impl(4096, 4096, 4096 * 4096) == "dense"
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "auto")
    full = MaskedDense(4)  # no mask: fully connected, dense
    full(np.zeros((1, 3), "float32"))
    assert full.kernel_format == "dense"


def test_auto_limits_follow_the_sparse_kernel(monkeypatch):
    """Catches native-kernel limits applied on the stock kernels (sparse where it is 2x slower)
    or stock limits kept with the native kernel (dense where sparse takes 0.4x-0.7x)."""
    cells_4096, cells_1024 = 4096 * 4096, 1024 * 1024
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    assert sparse.choose_impl(4096, 4096, int(0.05 * cells_4096)) == "sparse"
    assert sparse.choose_impl(4096, 4096, int(0.0999 * cells_4096)) == "sparse"
    assert sparse.choose_impl(4096, 4096, int(0.2 * cells_4096)) == "dense"
    assert sparse.choose_impl(1024, 1024, int(0.08 * cells_1024)) == "sparse"
    assert sparse.choose_impl(1023, 1024, int(0.03 * 1023 * 1024)) == "dense"  # the 2% tier
    assert sparse.choose_impl(128, 128, 1) == "dense"
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "stock")
    assert sparse.choose_impl(4096, 4096, int(0.05 * cells_4096)) == "dense"
    assert sparse.choose_impl(1024, 1024, int(0.08 * cells_1024)) == "dense"
    assert sparse.choose_impl(4096, 4096, int(0.02 * cells_4096)) == "sparse"


def _model(impl="sparse", mask=A, bias_mask=B, units=3, inputs=5):
    x = keras.Input((inputs,))
    h = MaskedDense(units, mask=mask, bias_mask=bias_mask, activation="relu", impl=impl, name="h")
    out = keras.layers.Dense(2, name="out")(h(x))
    return keras.Model(x, out)


def test_config_round_trip_and_clone_keep_sparse_masks():
    model = _model()
    config = model.get_layer("h").get_config()
    assert config["kernel_format"] == "sparse" and config["nnz"] == int(A.sum())
    clone = MaskedDense.from_config(config)
    clone(np.zeros((1, 5), "float32"))
    assert clone.get_config() == config and clone.is_sparse
    cloned = keras.models.clone_model(model)
    np.testing.assert_array_equal(cloned.get_layer("h").get_mask().toarray(), A)


@pytest.mark.parametrize("big", [False, True])
def test_keras_file_round_trip_is_identical(tmp_path, big):
    if big:  # more connections than a config holds: the mask travels in the weights only
        mask = _random_mask((500, 400), 0.5, seed=4)
        model = _model(mask=mask, bias_mask=None, units=400, inputs=500)
        config = model.get_layer("h").get_config()
        assert "mask" not in config and config["nnz"] == mask.nnz
    else:
        model = _model()
    layer = model.get_layer("h")
    inputs = layer.input_dim
    x = np.random.default_rng(5).normal(size=(10, inputs)).astype("float32")
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, np.ones((10, 2), "float32"), epochs=2, verbose=0)
    model.save(tmp_path / "net.keras")
    loaded = keras.models.load_model(tmp_path / "net.keras")  # safe_mode=True
    twin = loaded.get_layer("h")
    assert twin.is_sparse
    assert (twin.get_mask() != layer.get_mask()).nnz == 0
    np.testing.assert_array_equal(twin.get_bias_mask(), layer.get_bias_mask())
    np.testing.assert_array_equal(twin.kernel.numpy(), layer.kernel.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_set_mask_changes_topology_keeps_shared_weights_new_start_at_zero():
    model = _model(bias_mask=None)
    layer = model.get_layer("h")
    old = layer.effective_kernel().toarray()
    new_mask = A.copy()
    new_mask[0, 0] = False  # removed
    new_mask[:, 1] = True  # added (1,1) stays, others new
    version = layer.mask_version
    layer.set_mask(sp.csr_array(new_mask))
    assert layer.mask_version == version + 1
    assert layer.kernel.shape == (int(new_mask.sum()),)
    now = layer.effective_kernel().toarray()
    np.testing.assert_array_equal(layer.get_mask().toarray(), new_mask)
    kept = A & new_mask
    np.testing.assert_array_equal(now[kept], old[kept])
    np.testing.assert_array_equal(now[new_mask & ~A], 0)
    x = np.random.default_rng(6).normal(size=(4, 5)).astype("float32")
    dense_twin = _model(impl="dense", mask=new_mask, bias_mask=None)
    dense_twin.get_layer("h").kernel.assign(now)
    dense_twin.get_layer("h").bias.assign(layer.bias.numpy())
    dense_twin.get_layer("out").set_weights(model.get_layer("out").get_weights())
    np.testing.assert_allclose(model(x).numpy(), dense_twin(x).numpy(), rtol=1e-5, atol=1e-6)


def test_topology_change_under_trainop_remaps_adam_state_without_retrace():
    model = _model(bias_mask=None)
    layer = model.get_layer("h")
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    optimizer = keras.optimizers.Adam(0.01)
    op = TrainOp(model, optimizer=optimizer, select="h")
    for _ in range(3):
        op(x, y)
    index = optimizer._get_variable_index(layer.kernel)
    moments = optimizer._momentums[index].numpy().copy()
    rows, cols = layer.connections()
    old = {(int(r), int(c)): m for r, c, m in zip(rows, cols, moments)}
    new_mask = A.copy()
    new_mask[4, 0] = False
    new_mask[4, 2] = True
    layer.set_mask(new_mask)
    op.update_mask(layer.kernel)  # syncs the op with the new topology
    rows, cols = layer.connections()
    remapped = optimizer._momentums[index].numpy()
    for r, c, m in zip(rows, cols, remapped):
        assert m == old.get((int(r), int(c)), 0.0)
    before = layer.effective_kernel().toarray()
    op(x, y)
    op(x, y)
    assert op.trace_count == 1
    after = layer.effective_kernel().toarray()
    assert after[4, 2] != 0 and np.all(after[new_mask] != before[new_mask])
    assert op.update_mask(layer.kernel).shape == (int(new_mask.sum()),)


SELECTS = [
    ("h[1]", lambda rows, cols: cols == 1),
    ("h.kernel[:, 1]", lambda rows, cols: cols == 1),
    ("h.kernel[2, 1]", lambda rows, cols: (rows == 2) & (cols == 1)),
    ("h.kernel[2]", lambda rows, cols: rows == 2),
    ("h.kernel", lambda rows, cols: np.ones(rows.size, bool)),
]


@pytest.mark.parametrize(("select", "expected"), SELECTS)
def test_selectors_on_sparse_kernels_update_exactly_those_connections(select, expected):
    model = _model(bias_mask=None)
    layer = model.get_layer("h")
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    op = TrainOp(model, optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.1), select=select)
    want = expected(*layer.connections())
    np.testing.assert_array_equal(op.update_mask(layer.kernel), want)
    before = layer.kernel.numpy().copy()
    for _ in range(3):
        op(x, y)
    moved = layer.kernel.numpy() != before
    np.testing.assert_array_equal(moved, want)


def test_selecting_a_masked_out_connection_says_so():
    model = _model()
    with pytest.raises(SelectorError, match=r"connection \(0, 1\).*masked out"):
        TrainOp(model, select="h.kernel[0, 1]")
    with pytest.raises(SelectorError, match="out of range"):
        TrainOp(model, select="h.kernel[5, 0]")
    with pytest.raises(SelectorError, match="selects nothing"):
        TrainOp(model, select="h.kernel[3, 0:2]")


@pytest.mark.parametrize("name", ["sgd_momentum", "adam", "adamw", "rmsprop"])
def test_question1_freeze_is_bit_identical_with_a_sparse_hidden_layer(name, data342):
    optimizer = {
        "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        "adam": lambda: keras.optimizers.Adam(0.05),
        "adamw": lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1),
        "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
    }[name]()
    x, y = data342
    hidden = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    out = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], dtype=bool)
    inp = keras.Input((3,))
    h = MaskedDense(4, mask=hidden, activation="sigmoid", impl="sparse", name="hidden")(inp)
    model = keras.Model(inp, MaskedDense(2, mask=out, impl="sparse", name="out")(h))
    op = TrainOp(model, loss="mse", optimizer=optimizer, freeze="out[0]")
    # hidden 0 and 1 feed out[0]: their weights are frozen; hidden 2 and 3 stay trainable
    np.testing.assert_array_equal(
        op.update_mask("hidden/kernel"), model.get_layer("hidden").connections()[1] >= 2
    )
    probe = np.random.default_rng(9).normal(size=(200, 3)).astype("float32") * 3
    before = model.predict(probe, verbose=0)
    err_before = float(np.mean((model.predict(x, verbose=0)[:, 1] - y[:, 1]) ** 2))
    for _ in range(30):
        op(x, y)
    after = model.predict(probe, verbose=0)
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    assert float(np.mean((model.predict(x, verbose=0)[:, 1] - y[:, 1]) ** 2)) < err_before


def test_reachability_walks_sparse_layers_without_densifying(monkeypatch):
    # 200,000 x 20,000 cells: a dense bool mask would take 4 GB.
    n_in, units = 200_000, 20_000
    rows = np.arange(0, 1000, dtype=np.int64)
    mask = sp.csr_array((np.ones(1000, bool), (rows, rows % 10)), shape=(n_in, units))
    inp = keras.Input((n_in,))
    h = MaskedDense(units, mask=mask, impl="sparse", name="big")(inp)
    out_mask = np.zeros((units, 2), bool)
    out_mask[:5, 0] = out_mask[5:10, 1] = True
    model = keras.Model(inp, MaskedDense(2, mask=sp.csr_array(out_mask), name="out")(h))

    def refuse(*args, **kwargs):
        raise AssertionError("densified a sparse mask")

    monkeypatch.setattr(sp.csr_array, "toarray", refuse)
    frozen = influencers(model, {"out": np.array([True, False])})
    big = model.get_layer("big")
    np.testing.assert_array_equal(frozen[big.kernel.path], big.connections()[1] < 5)
    assert frozen[big.bias.path][:5].all() and not frozen[big.bias.path][5:].any()
    op = TrainOp(model, freeze="out[0]")
    np.testing.assert_array_equal(op.update_mask(big.kernel), big.connections()[1] >= 5)


def test_model_fit_trains_sparse_layers():
    model = _model()
    x = np.random.default_rng(10).normal(size=(64, 5)).astype("float32")
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, x[:, :2], epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(model.get_layer("h").get_mask().toarray(), A)


@pytest.mark.slow
def test_scale_200k_by_20k_with_2m_connections_never_densifies(tmp_path):
    """Build, one Adam step on a batch of 64, save and load, in a fresh process."""
    script = os.path.join(ROOT, "bench", "scale.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, script, "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["identical"] and result["moved"] == 2_000_000
    # A dense (inputs x units) kernel alone would take 16 GB: 4 GiB catches any densification.
    # The peak itself (about 1.2 GiB on an idle machine, more when TensorFlow's thread pools run
    # many ops at once on a loaded one) is a benchmark figure: bench/scale.py --save.
    assert result["peak_rss_mib"] < 4096, result
