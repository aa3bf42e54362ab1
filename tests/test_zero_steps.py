"""Skipping the write-back of masked connections (maskmagic.training.zero_steps).

Under an allow-listed optimizer a real mask on ``impl="dense"`` costs no write-back: the masked
entries get a +0.0 gradient and +0.0 slots, and the update leaves them bit for bit alone.

Bugs caught: an optimizer on the allow-list that does move such entries (SGD momentum turns a
-0.0 weight into +0.0; weight decay shrinks every weight); skipping while the slots at newly
masked entries still hold momentum from before the mask change; a skip path whose result
differs in any bit from the full write-back.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp, zero_steps
from maskmagic.training import writeback as wb

SKIPPING = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adam_amsgrad_clipvalue": lambda: keras.optimizers.Adam(0.01, amsgrad=True, clipvalue=0.5),
    "adamax": lambda: keras.optimizers.Adamax(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01),
    "rmsprop_centered_momentum": lambda: keras.optimizers.RMSprop(
        0.01, momentum=0.9, centered=True
    ),
    "lion": lambda: keras.optimizers.Lion(0.001),
}
WRITING_BACK = {
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "weight_decay": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
    "zero_weight_decay": lambda: keras.optimizers.Adam(0.01, weight_decay=0.0),
    "global_clipnorm": lambda: keras.optimizers.Adam(0.01, global_clipnorm=1.0),
    "ema": lambda: keras.optimizers.Adam(0.01, use_ema=True),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
}
# Masked entries hold values a careless update would change: -0.0 (x + 0.0 is +0.0), a NaN
# (the layer never reads it), the smallest normal and large values.
SPECIAL = np.array([-0.0, np.nan, np.finfo(np.float32).tiny, 3.0e38, -2.5], np.float32)
SUBNORMAL = np.float32(1e-42)  # TensorFlow's CPU arithmetic flushes it to zero: x - 0.0 == 0


def _model(mask, subnormal=False):
    keras.utils.set_random_seed(0)
    x = keras.Input((8,))
    layer = MaskedDense(6, mask=mask, impl="dense", name="out")
    model = keras.Model(x, layer(x))
    kernel = layer.kernel.numpy()
    masked = np.argwhere(~mask)
    for i, (r, c) in enumerate(masked):
        kernel[r, c] = SPECIAL[i % len(SPECIAL)]
    if subnormal:
        kernel[masked[0][0], masked[0][1]] = SUBNORMAL
    layer.kernel.assign(kernel)
    return model, layer


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(16, 8)).astype("float32"), rng.normal(size=(16, 6)).astype("float32")


def _mask():
    mask = np.random.default_rng(4).random((8, 6)) < 0.5
    mask[0, 0], mask[1, 1] = False, True
    return mask


def _bits(array):
    return np.asarray(array, np.float32).view(np.uint32)


def _train(make_optimizer, mask, steps=4, subnormal=False):
    model, layer = _model(mask, subnormal)
    op = TrainOp(model, optimizer=make_optimizer())
    mode = int(op._write_backs[layer.kernel.path].mode.numpy())
    x, y = _data()
    for _ in range(steps):
        op(x, y)
    slots = [s.numpy() for s in op._guarded()[0][2]]
    return mode, layer.kernel.numpy(), slots


@pytest.mark.parametrize("name", SKIPPING)
def test_allow_listed_optimizers_skip_and_match_the_write_back_bit_for_bit(name, monkeypatch):
    mask = _mask()
    before = _model(mask)[1].kernel.numpy()
    mode, kernel, slots = _train(SKIPPING[name], mask)
    assert mode == wb.NONE  # no write-back at all
    np.testing.assert_array_equal(_bits(kernel[~mask]), _bits(before[~mask]))
    assert (kernel[mask] != before[mask]).any()
    for slot in slots:
        assert not _bits(slot[~mask]).any(), "slots at masked entries must stay +0.0"
    # The same steps with the write-back forced: every bit of the kernel and slots is equal.
    monkeypatch.setattr(zero_steps, "keeps_zero_gradient_entries", lambda optimizer: False)
    forced_mode, forced_kernel, forced_slots = _train(SKIPPING[name], mask)
    assert forced_mode == wb.WHERE
    np.testing.assert_array_equal(_bits(kernel), _bits(forced_kernel))
    for slot, forced in zip(slots, forced_slots):
        np.testing.assert_array_equal(_bits(slot), _bits(forced))


@pytest.mark.parametrize("name", WRITING_BACK)
def test_other_optimizers_keep_the_write_back(name):
    mask = _mask()
    before = _model(mask)[1].kernel.numpy()
    mode, kernel, _ = _train(WRITING_BACK[name], mask)
    assert mode != wb.NONE
    np.testing.assert_array_equal(_bits(kernel[~mask]), _bits(before[~mask]))  # -0.0 kept


def test_a_subnormal_masked_weight_keeps_the_write_back():
    mask = _mask()
    before = _model(mask, subnormal=True)[1].kernel.numpy()
    mode, kernel, _ = _train(SKIPPING["adam"], mask, subnormal=True)
    assert mode == wb.VALUES  # the slots need nothing, the values are written back
    np.testing.assert_array_equal(_bits(kernel[~mask]), _bits(before[~mask]))
    assert SUBNORMAL in kernel[~mask]


def test_entries_masked_after_training_keep_their_momentum_written_back():
    """Closing trained connections: their Adam moments are not zero, so no skip."""
    full = np.ones((8, 6), bool)
    model, layer = _model(full)
    op = TrainOp(model, optimizer=keras.optimizers.Adam(0.01))
    back = op._write_backs[layer.kernel.path]
    x, y = _data()
    for _ in range(2):
        op(x, y)
    mask = _mask()
    layer.set_mask(mask)
    kept = layer.kernel.numpy()[~mask].copy()
    slots = [s.numpy()[~mask].copy() for s in op._guarded()[0][2]]
    assert all(s.any() for s in slots)  # momentum built up before the mask closed them
    for _ in range(3):
        op(x, y)
    assert int(back.mode.numpy()) == wb.WHERE
    np.testing.assert_array_equal(_bits(layer.kernel.numpy()[~mask]), _bits(kept))
    for slot, old in zip(op._guarded()[0][2], slots):
        np.testing.assert_array_equal(_bits(slot.numpy()[~mask]), _bits(old))
    assert op.trace_count == 1


def test_mask_on_fresh_entries_switches_to_the_skip_without_retracing():
    """A mask change that closes never-trained entries (zero slots) drops the write-back."""
    model, layer = _model(_mask())
    op = TrainOp(model, optimizer=keras.optimizers.Adam(0.01))
    back = op._write_backs[layer.kernel.path]
    x, y = _data()
    op(x, y)
    assert int(back.mode.numpy()) == wb.NONE
    narrower = _mask() & (np.arange(6) < 4)  # closes two more columns: trained, so WHERE
    layer.set_mask(narrower)
    op(x, y)
    assert int(back.mode.numpy()) == wb.WHERE
    assert op.trace_count == 1


def test_slots_are_zero_rejects_negative_zero():
    variable = keras.Variable(np.ones((2, 2), np.float32))
    optimizer = keras.optimizers.Adam()
    optimizer.build([variable])
    entries = np.array([[True, False], [False, False]])
    assert zero_steps.slots_are_zero(optimizer, variable, entries)
    optimizer.variables[2].assign(np.array([[-0.0, 0], [0, 0]], np.float32))  # m of variable
    assert not zero_steps.slots_are_zero(optimizer, variable, entries)
    assert zero_steps.slots_are_zero(optimizer, variable, ~entries)


PER_ENTRY = {
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0),
    "lion_clipvalue": lambda: keras.optimizers.Lion(0.001, clipvalue=0.1),
}
MIXING = {
    "clipnorm": lambda: keras.optimizers.Adam(0.01, clipnorm=1e-3),
    "global_clipnorm": lambda: keras.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=1e-3),
    "muon": lambda: keras.optimizers.Muon(0.01),
}


def _selected_run(make_optimizer, select, freeze):
    model, layer = _model(_mask())
    op = TrainOp(model, optimizer=make_optimizer(), select=select, freeze=freeze)
    skip = bool(op._write_backs[layer.kernel.path].skip_zeroing.numpy())
    x, y = _data()
    for _ in range(3):
        op(x, y)
    return skip, [v.numpy() for v in model.variables + op.optimizer.variables]


@pytest.mark.parametrize(("select", "freeze"), [(None, "out[0]"), ("out[1]", None)])
@pytest.mark.parametrize("name", [*PER_ENTRY, *MIXING])
def test_excluded_gradients_go_unzeroed_only_where_no_other_entry_sees_them(
    name, select, freeze, monkeypatch
):
    """Zeroing skipped (per-entry optimizers) or not (clipping by a norm, Muon): same bits."""
    make = {**PER_ENTRY, **MIXING}[name]
    if name == "muon" and not hasattr(keras.optimizers, "Muon"):
        pytest.skip("this Keras has no Muon")
    skip, values = _selected_run(make, select, freeze)
    assert skip == (name in PER_ENTRY)
    monkeypatch.setattr(zero_steps, "updates_entry_by_entry", lambda optimizer: False)
    forced_skip, forced = _selected_run(make, select, freeze)
    assert not forced_skip
    for value, reference in zip(values, forced):
        np.testing.assert_array_equal(_bits(value), _bits(reference))
