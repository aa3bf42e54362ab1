"""Guarantees at their edges: optimizer options, odd models, weights written around set_mask.

Each test names the bug it catches (found by a review of this release).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp

import maskmagic as mm
from maskmagic import _compat, lang
from maskmagic import masks as masklib
from maskmagic.builder import build, build_spec
from maskmagic.codegen.source import to_source
from maskmagic.errors import CellError, MaskError, MaskMagicError
from maskmagic.layers import MaskedConv2D, MaskedDense

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 4)).astype("float32")
Y = RNG.normal(size=(16, 3)).astype("float32")
MASK = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1]], bool)  # a 4 -> 3 layer
OUT_MASK = np.vstack([MASK, [[1, 1, 0], [0, 1, 1]]]).astype(bool)  # the 6 -> 3 output layer of _net


def _net(hidden: keras.layers.Layer | None = None, **out_options) -> keras.Model:
    inputs = keras.Input((4,))
    h = (hidden or keras.layers.Dense(6, activation="tanh", name="h"))(inputs)
    out = MaskedDense(3, name="out", **out_options)(h)
    return keras.Model(inputs, out)


def _values(variables) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


# ----------------------------------------------------------------------------- optimizers


def test_ema_averages_of_unselected_weights_stay_exact():
    """Bug: Keras moves the EMA average of every variable it tracks; the op restored only the
    averages of the variables it selected, so ``h``'s average drifted under select="out"."""
    model = _net()
    optimizer = keras.optimizers.Adam(0.05, use_ema=True)
    train_all = mm.TrainOp(model, "mse", optimizer)
    for _ in range(3):  # moves h away from its average (the first step sets the average)
        train_all(X, Y)
    op = mm.TrainOp(model, "mse", optimizer, select="out")
    h = model.get_layer("h").kernel
    average = _compat.ema_average(optimizer, h)
    assert average is not None
    assert not np.array_equal(*_values([h, average]))  # else nothing could move it
    before = _values([h, average])
    out_before = _values([model.get_layer("out").kernel])
    for _ in range(3):
        op(X, Y)
    for old, new in zip(before, _values([h, average])):
        np.testing.assert_array_equal(new, old)
    assert not np.array_equal(_values([model.get_layer("out").kernel])[0], out_before[0])


def test_gradient_accumulation_steps_train_only_the_selection():
    """Bug: with gradient_accumulation_steps, Keras' ``iterations`` is a derived tensor and the
    op's step failed with AttributeError on it."""
    model = _net(mask=OUT_MASK)
    optimizer = keras.optimizers.Adam(0.05, gradient_accumulation_steps=2)
    op = mm.TrainOp(model, "mse", optimizer, select="out[1]")
    kernel = model.get_layer("out").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    h_before = _values(model.get_layer("h").weights)
    for _ in range(4):
        op(X, Y)
    after = keras.ops.convert_to_numpy(kernel)
    np.testing.assert_array_equal(after[:, [0, 2]], before[:, [0, 2]])
    np.testing.assert_array_equal(after[~OUT_MASK], before[~OUT_MASK])
    assert not np.array_equal(after[OUT_MASK[:, 1], 1], before[OUT_MASK[:, 1], 1])
    for old, new in zip(h_before, _values(model.get_layer("h").weights)):
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize(
    "constraint",
    [keras.constraints.MaxNorm(0.5), keras.constraints.NonNeg()],
    ids=["max_norm", "non_neg"],
)
def test_kernel_constraint_never_moves_masked_weights(constraint):
    """Bug: under Adam the op skipped the write-back of masked connections (their gradient is
    0), but Keras applies a kernel constraint to the whole kernel after the update."""
    model = _net(
        mask=OUT_MASK,
        impl="dense",
        kernel_constraint=constraint,
        kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=3),
    )
    kernel = model.get_layer("out").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    mm.TrainOp(model, "mse", keras.optimizers.Adam(0.01))(X, Y)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel)[~OUT_MASK], before[~OUT_MASK])


def test_train_op_runs_on_a_masked_lora_layer_and_keeps_frozen_units():
    """Bug: the op looked up ``layer.kernel.path``; with LoRA ``kernel`` is the merged tensor
    (AttributeError on construction)."""
    model = _net(hidden=MaskedDense(6, activation="tanh", name="h", lora_rank=2))
    out_0 = model.predict(X, verbose=0)[:, 0]
    kernel = model.get_layer("out").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    op = mm.TrainOp(model, "mse", "adam", freeze="out[0]")
    for _ in range(3):
        op(X, Y)
    np.testing.assert_array_equal(model.predict(X, verbose=0)[:, 0], out_0)
    assert not np.array_equal(keras.ops.convert_to_numpy(kernel)[:, 1], before[:, 1])
    lora = [v for v in model.trainable_variables if "lora" in v.path]
    lora_before = _values(lora)
    mm.TrainOp(model, "mse", "adam", select="h")(X, Y)  # the LoRA factors are h's weights
    assert any(not np.array_equal(a, b) for a, b in zip(lora_before, _values(lora)))


def test_a_new_sparse_connection_starts_from_the_optimizers_initial_state():
    """Bug: a connection added by set_mask got 0 in every optimizer slot; Ftrl's accumulator
    starts at initial_accumulator_value, and a zero one made the weight NaN on a step with a
    zero gradient."""
    mask = np.zeros((6, 3), bool)
    mask[0, 0] = mask[1, 1] = True
    model = _net(mask=mask, impl="sparse")
    optimizer = keras.optimizers.Ftrl(0.1, initial_accumulator_value=0.1)
    op = mm.TrainOp(model, "mse", optimizer)
    op(X, Y)
    layer = model.get_layer("out")
    mask[3, 2] = True  # fed by h[3]; the batch below makes that input 0
    layer.set_mask(mask)
    x = X.copy()
    model.get_layer("h").kernel.assign(np.where(np.arange(6) == 3, 0.0, 1.0) * np.ones((4, 6)))
    model.get_layer("h").bias.assign(np.zeros(6))
    op(x, Y)
    values = keras.ops.convert_to_numpy(layer.kernel)
    assert np.isfinite(values).all()
    slots = _compat.optimizer_slots(optimizer, layer.kernel, any_length=True)
    starts = _compat.fresh_slot_values(optimizer, layer.kernel)
    assert any(start == pytest.approx(0.1) for start in starts)
    new = int(np.flatnonzero((layer.connections()[0] == 3) & (layer.connections()[1] == 2))[0])
    kept = [keras.ops.convert_to_numpy(s)[new] for s in slots]
    assert kept == pytest.approx(starts)


# ----------------------------------------------------------------------------- layers


def test_a_sparse_layer_in_a_subclassed_model_has_one_set_of_weights():
    """Bug: Keras builds a subclassed model's layers in a stateless scope first; the sparse
    build failed there after creating its kernel, and the retry left an orphan kernel."""

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.layer = MaskedDense(3, mask=MASK, impl="sparse")

        def call(self, x):
            return self.layer(x)

    model = Sub()
    model(X)
    layer = model.layer
    assert [v.name for v in layer.weights].count("kernel") == 1
    alone = MaskedDense(3, mask=MASK, impl="sparse")
    alone.build((None, 4))
    assert layer.count_params() == alone.count_params()
    layer.set_weights(layer.get_weights())
    model.compile("sgd", "mse")
    model.fit(X, Y, epochs=1, verbose=0)


@pytest.mark.parametrize("bad", ["col_out_of_range", "unsorted", "float_rows"])
def test_sparse_set_weights_checks_connections_before_changing_anything(bad):
    """Bug: set_weights in the sparse layout built the mask from the index arrays unchecked
    (a column past the units was accepted) and checked the order only after set_mask."""
    layer = MaskedDense(3, mask=MASK, impl="sparse")
    layer.build((None, 4))
    values, bias, rows, cols, order = layer.get_weights()
    if bad == "col_out_of_range":
        cols = np.where(cols == 2, 7, cols).astype("int32")
    elif bad == "unsorted":
        values, rows, cols = values[::-1].copy(), rows[::-1].copy(), cols[::-1].copy()
    else:
        rows = rows.astype("float32")
    before = _values(layer.weights)
    with pytest.raises(MaskMagicError, match="nothing was changed"):
        layer.set_weights([values, bias, rows, cols, order])
    for old, new in zip(before, _values(layer.weights)):
        np.testing.assert_array_equal(new, old)


def test_a_scipy_mask_with_indices_past_its_shape_is_refused():
    """Bug: scipy trusts a matrix's index arrays; a column index 7 in a (4, 3) mask switched
    on a connection nobody asked for (dense) or crashed the next call (sparse)."""
    bad = sp.csr_array((np.ones(1), np.array([7]), np.array([0, 1, 1, 1, 1])), shape=(4, 3))
    for impl in ("dense", "sparse"):
        layer = MaskedDense(3, mask=MASK, impl=impl)
        layer.build((None, 4))
        with pytest.raises(MaskError, match="within its shape"):
            layer.set_mask(bad)


def _grouped_conv() -> MaskedConv2D:
    table = np.zeros((4, 4), bool)
    table[:2, :2] = table[2:, 2:] = True
    layer = MaskedConv2D(4, 3, mask=table, impl="grouped")
    layer.build((None, 8, 8, 4))
    return layer


def test_conv_set_weights_checks_its_masks():
    """Bug: a conv layer's masks are tracked weights, and Keras' set_weights wrote them
    unchecked: a mask across blocks (never computed) or a bias mask of 2 and 0.5."""
    layer = _grouped_conv()
    weights = layer.get_weights()
    names = [v.name for v in layer.weights]
    before = _values(layer.weights)
    across = [np.ones_like(w) if n == "mask" else w for n, w in zip(names, weights)]
    with pytest.raises(MaskMagicError, match="across blocks"):
        layer.set_weights(across)
    halves = [np.array([2, 0.5, 1, 1]) if n == "bias_mask" else w for n, w in zip(names, weights)]
    with pytest.raises(MaskError, match="0 or 1"):
        layer.set_weights(halves)
    for old, new in zip(before, _values(layer.weights)):
        np.testing.assert_array_equal(new, old)
    version = layer.mask_version
    layer.set_weights(weights)
    assert layer.mask_version == version + 1  # a train op sees masks written this way


def test_conv_weights_file_checks_its_masks():
    """The same check on load (``load_own_variables``, what load_model and load_weights use)."""
    layer = _grouped_conv()
    store: dict = {}
    layer.save_own_variables(store)
    order = _compat.stored_variables(layer)
    position = next(i for i, v in enumerate(order) if v is layer.kernel_mask)
    store[str(position)] = np.ones_like(store[str(position)])
    with pytest.raises(MaskMagicError, match="across blocks"):
        layer.load_own_variables(store)


def test_a_layer_too_large_for_memory_is_named_as_such(monkeypatch):
    """Bug: the default all-ones mask of a huge layer raised MemoryError inside maskmagic's own
    deferred mask, reported as a failure of the user's mask function."""

    def no_memory(shape=None):
        raise MemoryError

    monkeypatch.setattr(masklib, "ones", no_memory)
    with pytest.raises(MaskMagicError, match="does not fit|more memory than there is"):
        MaskedDense(3).build((None, 4))


# ----------------------------------------------------------------------------- cells


def test_helper_layers_take_names_no_statement_uses():
    """Bug: the builder named a dense layer's Concatenate ``NAME_concat`` even when a statement
    had that name (Keras: the name is used 2 times)."""
    cell = (
        "input a 3\ninput b 2\ndense h_concat 2 from=a\ndense h 2 from=a,b\n"
        "dense out 1 from=h\ndense out2 1 from=h_concat\n"
    )
    model, _ = build(cell, name="net")
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert "h_concat_1" in names
    source = to_source(build_spec(lang.parse(cell), {}, name="net"), "net")
    assert "h_concat_1" in source


def test_seed_makes_a_named_bias_initializer_reproducible():
    """Bug: --seed seeded kernel_initializer only; a random bias_initializer differed."""
    cell = "input x 3\ndense h 4 bias_initializer=random_normal\n"
    first, _ = build(cell, seed=7)
    second, _ = build(cell, seed=7)
    other, _ = build(cell, seed=8)
    bias = [keras.ops.convert_to_numpy(m.get_layer("h").bias) for m in (first, second, other)]
    np.testing.assert_array_equal(bias[0], bias[1])
    assert not np.array_equal(bias[0], bias[2])
    kernel = keras.ops.convert_to_numpy(first.get_layer("h").kernel)
    assert not np.array_equal(kernel[0, :], bias[0])  # its own seed, not the kernel's draws


def test_an_option_on_a_continued_line_is_located_where_it_is_written():
    """Bug: build-time errors used the statement's first line with the joined line's column."""
    with pytest.raises(CellError) as caught:
        build("input x 3\ndense h 2 \\\n    activation=foo\n")
    assert (caught.value.line, caught.value.column) == (3, 16)
    assert caught.value.source == "    activation=foo"


def test_a_mask_constructor_hiding_a_variable_is_named_in_the_message():
    """Bug: ``mask=blocks`` with the user's own ``blocks`` array failed with the constructor's
    message about n, with no word that the user's variable was not used."""
    with pytest.raises(CellError, match="'blocks' is maskmagic's mask constructor"):
        build("input x 3\ndense h 2 mask=blocks\n", {"blocks": np.eye(3, 2)})


def test_hold_on_sees_np_like_mask():
    """Bug: the README says hold_on= is evaluated like mask=, but ``np`` was not in scope."""
    cell = "input x 3\ndense h 4\ndense out 2\ntrain t out[1] hold=out[0] hold_on=np.eye(3)\n"
    _, ops = build(cell, {})
    assert ops["t"].hold is not None
