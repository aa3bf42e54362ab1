"""MaskedDense: the contract's layer (DESIGN.md questions 2 and 3, config, saving, errors)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from maskmagic import masks
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp

A = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)  # 5 x 3
B = np.array([1, 0, 1], dtype=bool)


def _layer_on(x, **kwargs) -> MaskedDense:
    layer = MaskedDense(**kwargs)
    layer(x)
    return layer


def test_question3_connection_matrix_and_bias_mask_compute_exactly():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    layer = _layer_on(x, units=3, mask=A, bias_mask=B, activation="tanh", bias_initializer="ones")
    w = layer.kernel.numpy()
    b = layer.bias.numpy()
    expected = np.tanh(x @ (w * A) + b * B)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.effective_kernel(), w * A)
    np.testing.assert_array_equal(layer.effective_bias(), b * B)
    # A masked weight has no influence on the output however large it is.
    layer.kernel.assign(np.where(A, w, 1e6).astype("float32"))
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_question2_masked_connections_get_exactly_zero_gradient():
    x = tf.constant(np.random.default_rng(1).normal(size=(16, 5)), tf.float32)
    layer = _layer_on(x, units=3, mask=A, bias_mask=B, activation="relu", bias_initializer="ones")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    g_kernel, g_bias = tape.gradient(loss, [layer.kernel.value, layer.bias.value])
    assert np.all(g_kernel.numpy()[~A] == 0)
    assert np.all(g_kernel.numpy()[A] != 0)
    assert g_bias.numpy()[1] == 0 and np.all(g_bias.numpy()[[0, 2]] != 0)


def test_masks_are_untracked_variables_default_to_ones_and_weights_are_dense_s():
    # Catches: masks showing up in layer.weights / get_weights (a Dense's [kernel, bias] would
    # not load), or masks that are not variables (set_mask would then re-trace).
    layer = _layer_on(np.zeros((2, 4), "float32"), units=2)
    assert layer.get_mask().all() and layer.get_mask().shape == (4, 2)
    assert layer.get_bias_mask().all()
    assert [v.path for v in layer.weights] == [layer.kernel.path, layer.bias.path]
    assert layer.non_trainable_variables == []
    assert [w.shape for w in layer.get_weights()] == [(4, 2), (2,)]
    assert isinstance(layer.kernel_mask, keras.Variable) and not layer.kernel_mask.trainable
    assert layer.kernel_mask.path == f"{layer.name}/mask"


def test_mask_forms_lists_sparse_named_and_callables():
    x = np.zeros((1, 5), "float32")
    from_lists = _layer_on(x, units=3, mask=A.astype(int).tolist())
    from_sparse = _layer_on(x, units=3, mask=sp.csr_matrix(A.astype(float)))
    from_callable = _layer_on(x, units=3, mask=masks.eye())
    for layer in (from_lists, from_sparse):
        np.testing.assert_array_equal(layer.get_mask(), A)
    np.testing.assert_array_equal(from_callable.get_mask(), np.eye(5, 3, dtype=bool))
    named = masks.NamedMask(A, rows=tuple("abcde"), cols=("u", "v", "w"))
    layer = _layer_on(x, units=3, mask=named)
    assert layer.input_names == tuple("abcde") and layer.unit_names == ("u", "v", "w")


def test_set_and_get_masks_round_trip_and_change_output():
    x = np.ones((1, 5), "float32")
    layer = _layer_on(x, units=3, use_bias=False, kernel_initializer="ones")
    assert layer(x).numpy().tolist() == [[5.0, 5.0, 5.0]]
    layer.set_mask(A)
    np.testing.assert_array_equal(layer.get_mask(), A)
    assert layer(x).numpy().tolist() == [A.sum(axis=0).astype(float).tolist()]
    assert layer.mask_version == 1


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.ones((3, 5)), ["(3, 5)", "(5, 3)"]),
        (np.full((5, 3), 0.5), ["0 or 1", "0.5"]),
        (np.where(A, 1.0, np.nan), ["nan"]),
        (np.where(A, 1.0, np.inf), ["inf"]),
        ([[1, 0, 1], [0, 1]], ["ragged"]),
    ],
)
def test_set_mask_refuses_bad_masks_and_keeps_the_old_one(bad, words):
    layer = _layer_on(np.zeros((1, 5), "float32"), units=3, mask=A)
    with pytest.raises(MaskError) as info:
        layer.set_mask(bad)
    for word in words:
        assert word.lower() in str(info.value).lower()
    np.testing.assert_array_equal(layer.get_mask(), A)


def test_bias_mask_errors():
    layer = _layer_on(np.zeros((1, 5), "float32"), units=3)
    with pytest.raises(MaskError, match=r"\(units,\)|\(3,\)"):
        layer.set_bias_mask([1, 0])
    with pytest.raises(MaskMagicError, match="use_bias=False"):
        MaskedDense(3, bias_mask=B, use_bias=False)


def test_constructor_errors_name_expected_and_received():
    with pytest.raises(MaskError, match=r"\(5, 3\).*\(inputs, 4\)"):
        MaskedDense(4, mask=A)
    with pytest.raises(MaskMagicError, match="positive integer"):
        MaskedDense(0)
    with pytest.raises(MaskMagicError, match="impl must be one of"):
        MaskedDense(3, impl="fast")
    unbuilt = MaskedDense(3)
    with pytest.raises(MaskMagicError, match="not built"):
        unbuilt.get_mask()
    with pytest.raises(MaskError, match=r"\(4, 3\)"):
        MaskedDense(3, mask=np.ones((4, 3)))(np.zeros((1, 5), "float32"))


def test_config_round_trip_keeps_masks_and_options():
    layer = _layer_on(
        np.zeros((1, 5), "float32"), units=3, mask=A, bias_mask=B, activation="relu", name="h"
    )
    config = layer.get_config()
    clone = MaskedDense.from_config(config)
    clone(np.zeros((1, 5), "float32"))
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone.get_mask(), A)
    np.testing.assert_array_equal(clone.get_bias_mask(), B)


def _model(mask=A, bias_mask=B):
    x = keras.Input((5,))
    h = MaskedDense(3, mask=mask, bias_mask=bias_mask, activation="relu", name="h")(x)
    out = keras.layers.Dense(2, name="out")(h)
    return keras.Model(x, out)


def test_clone_model_keeps_masks():
    model = _model()
    clone = keras.models.clone_model(model)
    np.testing.assert_array_equal(clone.get_layer("h").get_mask(), A)


def test_keras_file_round_trip_is_identical(tmp_path):
    model = _model()
    model.get_layer("h").set_mask(np.eye(5, 3, dtype=bool) | A)
    x = np.random.default_rng(2).normal(size=(10, 5)).astype("float32")
    path = tmp_path / "net.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True is the default
    h, h2 = model.get_layer("h"), loaded.get_layer("h")
    np.testing.assert_array_equal(h2.get_mask(), h.get_mask())
    np.testing.assert_array_equal(h2.get_bias_mask(), B)
    np.testing.assert_array_equal(h2.kernel.numpy(), h.kernel.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_large_mask_is_kept_by_weights_not_config(tmp_path):
    big = MaskedDense(2048, mask=masks.random(0.3, seed=1), use_bias=False, name="big")
    x = keras.Input((2049,))
    model = keras.Model(x, big(x))
    assert "mask" not in big.get_config()
    model.save(tmp_path / "big.keras")
    loaded = keras.models.load_model(tmp_path / "big.keras")
    np.testing.assert_array_equal(loaded.get_layer("big").get_mask(), big.get_mask())


def test_works_with_model_fit_and_masked_entries_stay_zero_in_effect(data342):
    x = np.random.default_rng(3).normal(size=(64, 5)).astype("float32")
    y = x[:, :2].copy()
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    before = model.get_layer("h").kernel.numpy()
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = model.get_layer("h").kernel.numpy()
    # Adam never sees a non-zero gradient for masked entries, so they do not move.
    np.testing.assert_array_equal(after[~A], before[~A])
    assert np.any(after[A] != before[A])


def test_mixed_precision_policy():
    keras.config.set_dtype_policy("mixed_float16")
    model = _model()
    layer = model.get_layer("h")
    assert layer.compute_dtype == "float16" and layer.kernel.dtype == "float32"
    x = np.random.default_rng(4).normal(size=(32, 5)).astype("float32")
    assert model(x).dtype == "float16"
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, x[:, :2], epochs=1, verbose=0)
    np.testing.assert_array_equal(layer.get_mask(), A)


def test_set_mask_inside_compiled_op_does_not_retrace():
    model = _model(mask=None, bias_mask=None)
    x = np.random.default_rng(5).normal(size=(16, 5)).astype("float32")
    y = np.zeros((16, 2), "float32")
    op = TrainOp(model, loss="mse", optimizer="sgd")
    op(x, y)
    layer = model.get_layer("h")
    before = layer.kernel.numpy()
    layer.set_mask(A)
    op(x, y)
    op(x, y)
    assert op.trace_count == 1
    after = layer.kernel.numpy()
    # The next step used the new mask: masked entries no longer move.
    np.testing.assert_array_equal(after[~A], before[~A])
    assert np.any(after[A] != before[A])


def test_set_mask_reaches_a_compiled_forward_pass():
    """Bug caught: a compiled function that keeps the mask it was traced with (the trace count
    alone cannot see it)."""
    model = _model(mask=None, bias_mask=None)
    x = np.random.default_rng(6).normal(size=(16, 5)).astype("float32")
    forward = tf.function(lambda t: model(t))
    old = forward(x).numpy()
    model.get_layer("h").set_mask(A)
    eager = model(x).numpy()
    compiled = forward(x).numpy()
    # Compiled and eager are two computations of one value (graph rewrites may fuse or reorder
    # the float32 sums): a few ulps apart. A stale mask is off by far more (checked below).
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)
    assert np.abs(old - eager).max() > 1e-2


def test_set_mask_reaches_the_next_train_step_loss():
    """The loss the compiled step reports after set_mask is the new model's loss."""
    model = _model(mask=None, bias_mask=None)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    op = TrainOp(model, loss="mse", optimizer="sgd")
    op(x, y)
    old = float(keras.losses.MeanSquaredError()(y, model(x)))
    model.get_layer("h").set_mask(A)
    eager = float(keras.losses.MeanSquaredError()(y, model(x)))
    # Same tolerance and reason as the compiled forward pass above.
    assert op(x, y) == pytest.approx(eager, rel=1e-6) and op.trace_count == 1
    assert abs(old - eager) > 1e-3
