"""TrainOp: var_list semantics, exact freezing under every optimizer, selectors and errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.errors import MaskMagicError, SelectorError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp, make_loss, make_optimizer

from .conftest import make_342

OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.05),
    "adamw": lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
    "adagrad": lambda: keras.optimizers.Adagrad(0.2),
    "lion": lambda: keras.optimizers.Lion(0.01, weight_decay=0.1),
    "adam_ema": lambda: keras.optimizers.Adam(0.05, use_ema=True, ema_overwrite_frequency=2),
}


def _weights(model):
    return {v.path: v.numpy().copy() for v in model.trainable_variables}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_question1_freeze_keeps_output0_bit_identical_while_output1_improves(name, data342):
    x, y = data342
    model = make_342()
    op = TrainOp(model, loss="mse", optimizer=OPTIMIZERS[name](), freeze="out[0]", name="keep0")
    probe = np.random.default_rng(7).normal(size=(200, 3)).astype("float32") * 3
    before = model.predict(probe, verbose=0)
    err1_before = float(np.mean((model.predict(x, verbose=0)[:, 1] - y[:, 1]) ** 2))
    for _ in range(30):
        op(x, y)
    after = model.predict(probe, verbose=0)
    np.testing.assert_array_equal(after[:, 0], before[:, 0])  # bit-identical
    err1_after = float(np.mean((model.predict(x, verbose=0)[:, 1] - y[:, 1]) ** 2))
    assert err1_after < err1_before


def test_zero_gradients_alone_do_not_keep_entries_fixed(data342):
    """The premise of TrainOp: momentum and weight decay move entries with zero gradient."""
    x, y = data342
    model = make_342()
    out = model.get_layer("out")
    opt = keras.optimizers.AdamW(0.05, weight_decay=0.1)
    opt.build(model.trainable_variables)
    before = out.kernel.numpy().copy()
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    opt.apply(zeros, model.trainable_variables)
    assert np.any(out.kernel.numpy() != before)  # weight decay moved them anyway


def test_shared_optimizer_with_momentum_built_by_another_op(data342):
    x, y = data342
    model = make_342()
    shared = keras.optimizers.SGD(0.1, momentum=0.9)
    everything = TrainOp(model, optimizer=shared, name="all")
    only_unit1 = TrainOp(model, optimizer=shared, select="out[1]", name="u1")
    for _ in range(5):
        everything(x, y)  # builds momentum for every entry
    out = model.get_layer("out")
    before = _weights(model)
    momentum_before = [s.numpy().copy() for s in shared.variables if s.shape == out.kernel.shape]
    for _ in range(5):
        only_unit1(x, y)
    after = _weights(model)
    for path in before:
        if path == out.kernel.path:
            np.testing.assert_array_equal(after[path][:, 0], before[path][:, 0])
            assert np.any(after[path][:, 1] != before[path][:, 1])
        elif path == out.bias.path:
            assert after[path][0] == before[path][0] and after[path][1] != before[path][1]
        else:
            np.testing.assert_array_equal(after[path], before[path])
    # The momentum of entries outside the op is kept, as if the op never touched them.
    momentum_after = [s.numpy() for s in shared.variables if s.shape == out.kernel.shape]
    for old, new in zip(momentum_before, momentum_after):
        np.testing.assert_array_equal(new[:, 0], old[:, 0])


@pytest.mark.parametrize(
    ("select", "changed"),
    [
        ("out", {"out/kernel": np.ones((4, 2)), "out/bias": np.ones(2)}),
        ("out.kernel", {"out/kernel": np.ones((4, 2))}),
        ("out.bias", {"out/bias": np.ones(2)}),
        ("out[1]", {"out/kernel": [[0, 1]] * 4, "out/bias": [0, 1]}),
        ("out[0:2]", {"out/kernel": np.ones((4, 2)), "out/bias": np.ones(2)}),
        ("out.kernel[2, 1]", {"out/kernel": [[0, 0], [0, 0], [0, 1], [0, 0]]}),
        ("out.kernel[:, 1]", {"out/kernel": [[0, 1]] * 4}),
        ("hidden[-1]", {"hidden/kernel": [[0, 0, 0, 1]] * 3, "hidden/bias": [0, 0, 0, 1]}),
        (
            ["out[0]", "hidden.bias"],
            {"out/kernel": [[1, 0]] * 4, "out/bias": [1, 0], "hidden/bias": np.ones(4)},
        ),
    ],
)
def test_selectors_update_exactly_the_selected_entries(select, changed, data342):
    x, y = data342
    model = make_342()
    op = TrainOp(model, optimizer=keras.optimizers.SGD(0.5, momentum=0.9), select=select)
    before = _weights(model)
    for _ in range(3):
        op(x, y)
    after = _weights(model)
    for path, old in before.items():
        expected = np.asarray(changed.get(path, np.zeros(old.shape)), dtype=bool)
        np.testing.assert_array_equal(op.update_mask(path), expected)
        moved = after[path] != old
        assert not np.any(moved & ~expected), path  # nothing outside the op moved
        assert np.all(moved[expected]), path  # everything inside it did


def test_var_list_and_parameter_count():
    model = make_342()
    op = TrainOp(model, select="out[1]")
    assert [v.path for v in op.var_list] == ["out/kernel", "out/bias"]
    assert op.parameter_count() == 5
    assert "out[1]" in repr(op) and "5 parameters" in repr(op)
    keep0 = TrainOp(model, freeze="out[0]")
    # Every hidden unit reaches out[0] in a dense net: only the weights into out[1] remain.
    assert keep0.parameter_count() == 5


def test_masked_connections_are_excluded_from_the_update(data342):
    x, y = data342
    hidden = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]], dtype=bool)
    model = make_342(hidden_mask=hidden)
    op = TrainOp(model, optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.5))
    before = model.get_layer("hidden").kernel.numpy()
    for _ in range(3):
        op(x, y)
    after = model.get_layer("hidden").kernel.numpy()
    np.testing.assert_array_equal(after[~hidden], before[~hidden])
    np.testing.assert_array_equal(op.update_mask("hidden/kernel"), hidden)


def test_traced_once_across_steps_and_mask_changes(data342):
    x, y = data342
    model = make_342()
    op = TrainOp(model, freeze="out[0]")
    for _ in range(4):
        op(x, y)
    model.get_layer("out").set_mask(np.array([[1, 0], [1, 0], [0, 1], [0, 1]]))
    op(x, y)
    assert op.trace_count == 1
    # The new mask cut hidden units 2 and 3 off output 0: they became trainable.
    assert op.update_mask("hidden/kernel")[:, 2:].all()
    assert not op.update_mask("hidden/kernel")[:, :2].any()


def test_fit_shows_progress_and_returns_history(data342, capsys):
    x, y = data342
    model = make_342()
    op = TrainOp(model, optimizer=keras.optimizers.Adam(0.05), name="fitter")
    history = op.fit(x, y, epochs=5, batch_size=16)
    assert len(history) == 5 and history[-1] < history[0]
    assert "fitter epoch 5/5" in capsys.readouterr().err


def test_plain_dense_and_multi_input_models():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    ha = keras.layers.Dense(2, name="ha")(a)
    hb = MaskedDense(2, mask=[[1, 0], [0, 1], [1, 1]], name="hb")(b)
    out = keras.layers.Dense(2, name="out")(keras.layers.Concatenate()([ha, hb]))
    model = keras.Model([a, b], out)
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(8, 2)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    op = TrainOp(model, select=["ha", "out.kernel[:, 0]"], optimizer=keras.optimizers.Adam(0.1))
    before = _weights(model)
    op([xa, xb], y)
    after = _weights(model)
    assert np.all(after["ha/kernel"] != before["ha/kernel"])
    np.testing.assert_array_equal(after["hb/kernel"], before["hb/kernel"])
    np.testing.assert_array_equal(after["out/kernel"][:, 1], before["out/kernel"][:, 1])
    assert op.fit([xa, xb], y, epochs=1, batch_size=4, verbose=False)


def test_select_by_variable_object(data342):
    x, y = data342
    model = make_342()
    op = TrainOp(model, select=model.get_layer("hidden").bias)
    assert [v.path for v in op.var_list] == ["hidden/bias"]
    other = keras.Variable(np.zeros(3), name="stranger")
    with pytest.raises(SelectorError, match="not a trainable variable"):
        TrainOp(model, select=other)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"select": "nope"}, ["'nope'", "hidden", "out"]),
        ({"select": "out[2]"}, ["out of range", "2 units"]),
        ({"select": "out.kernel[4, 0]"}, ["out of range", "(4, 2)"]),
        ({"select": "out.weights"}, ["expected .kernel or .bias", ".weights"]),
        ({"select": "out[1:1]"}, ["selects nothing"]),
        ({"select": "out", "freeze": "out"}, ["leaves nothing trainable", "freeze=out"]),
        ({"freeze": ["out[0]", "out[1]"]}, ["leaves nothing trainable"]),
        ({"freeze": "out.kernel"}, ["expects units", "out.kernel"]),
        ({"freeze": "out[5]"}, ["out of range", "2 units"]),
    ],
)
def test_selector_errors_name_what_was_expected_and_received(kwargs, words):
    model = make_342()
    with pytest.raises(SelectorError) as info:
        TrainOp(model, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_loss_and_optimizer_errors_and_options():
    with pytest.raises(MaskMagicError, match="unknown loss 'msee'"):
        make_loss("msee")
    with pytest.raises(MaskMagicError, match="unknown optimizer 'adamm'"):
        make_optimizer("adamm")
    assert make_optimizer("adam", learning_rate=0.5).learning_rate.numpy() == 0.5
    assert make_loss("binary_crossentropy", from_logits=True).get_config()["from_logits"]
    assert make_loss("mse", reduction="sum").reduction == "sum"
    unbuilt = keras.Sequential([MaskedDense(2)])
    with pytest.raises(MaskMagicError, match="not built"):
        TrainOp(unbuilt)


def test_optimizer_built_for_other_variables_is_refused():
    model, other = make_342(), make_342()
    opt = keras.optimizers.Adam()
    opt.build(other.trainable_variables)
    with pytest.raises(MaskMagicError, match="built for other variables"):
        TrainOp(model, optimizer=opt)


def test_freeze_holds_batchnorm_statistics_so_frozen_output_stays_identical(data342):
    x, y = data342
    inputs = keras.Input((3,))
    h = MaskedDense(4, activation="relu", name="hidden")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = MaskedDense(2, name="out")(h)
    model = keras.Model(inputs, out)
    op = TrainOp(model, optimizer=keras.optimizers.Adam(0.05), freeze="out[0]")
    probe = np.random.default_rng(3).normal(size=(50, 3)).astype("float32")
    before = model.predict(probe, verbose=0)
    stats = model.get_layer("bn").moving_mean.numpy().copy()
    for _ in range(3):
        op(x, y)
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), stats)
    np.testing.assert_array_equal(model.predict(probe, verbose=0)[:, 0], before[:, 0])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch_size": 0}, ["batch_size", ">= 1", "0"]),
        ({"epochs": -1}, ["epochs", ">= 1", "-1"]),
        ({"batch_size": 2.5}, ["batch_size", "2.5"]),
    ],
)
def test_fit_refuses_bad_arguments(kwargs, words, data342):
    x, y = data342
    op = TrainOp(make_342())
    with pytest.raises(MaskMagicError) as info:
        op.fit(x, y, verbose=False, **kwargs)
    assert all(word in str(info.value) for word in words)
    with pytest.raises(MaskMagicError, match="no samples"):
        op.fit(x[:0], y[:0], verbose=False)


def test_plain_tf_variable_selector_is_refused_clearly():
    import tensorflow as tf

    with pytest.raises(SelectorError, match="expected a Keras variable"):
        TrainOp(make_342(), select=tf.Variable([1.0]))
