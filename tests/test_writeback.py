"""TrainOp's write-back modes (maskmagic.training.writeback): same exact result, less work.

Bugs caught: a mode that restores the wrong entries or forgets a slot (excluded entries move
under Adam/momentum/weight decay); a mask change that does not switch the mode or re-traces;
skipping the gradient zeroing where the gradient is not already zero (a kernel regularizer),
which changes what clipnorm optimizers do to the included entries; a VALUES mode that lets the
slots of excluded entries move (unzeroed gradient, another op's steps on a shared optimizer) or
does not restore the values.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp, zero_steps
from maskmagic.training import writeback as wb

OPTIMIZERS = [
    lambda: keras.optimizers.Adam(0.01),
    lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
]


def _model(mask=None, regularizer=None, n=6, units=5):
    keras.utils.set_random_seed(0)
    x = keras.Input((n,))
    layer = MaskedDense(units, mask=mask, impl="dense", kernel_regularizer=regularizer, name="out")
    return keras.Model(x, layer(x)), layer


def _data(n=6, units=5):
    rng = np.random.default_rng(1)
    return rng.normal(size=(8, n)).astype("float32"), rng.normal(size=(8, units)).astype("float32")


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
@pytest.mark.parametrize(
    ("select", "freeze", "mode"),
    [(None, None, wb.NONE), (None, "out[0]", wb.WHERE), ("out.kernel[0, 1]", None, wb.WHERE)],
)
def test_each_mode_keeps_excluded_entries_and_slots_bit_identical(
    make_optimizer, select, freeze, mode, monkeypatch
):
    monkeypatch.setattr(wb, "GATHER_FRACTION", 0.5)  # freeze=out[0]: 1 of 5 columns -> GATHER
    model, layer = _model()
    op = TrainOp(model, optimizer=make_optimizer(), select=select, freeze=freeze)
    expected = wb.GATHER if freeze else mode
    if expected == wb.WHERE and zero_steps.keeps_zero_gradient_entries(op.optimizer):
        expected = wb.VALUES  # Adam's fresh slots: only the values are written back
    assert int(op._write_backs[layer.kernel.path].mode.numpy()) == expected
    allowed = op.update_mask(layer.kernel)
    x, y = _data()
    op(x, y)  # non-zero optimizer state everywhere it may change
    before = layer.kernel.numpy().copy()
    slots = [s.numpy().copy() for s in op._guarded()[0][2]] if op._guarded() else []
    for _ in range(3):
        op(x, y)
    after = layer.kernel.numpy()
    np.testing.assert_array_equal(after[~allowed], before[~allowed])
    assert (after[allowed] != before[allowed]).all()
    for slot, old in zip(op._guarded()[0][2] if op._guarded() else [], slots):
        np.testing.assert_array_equal(slot.numpy()[~allowed], old[~allowed])


def test_mask_change_switches_mode_without_retracing(monkeypatch):
    monkeypatch.setattr(wb, "GATHER_FRACTION", 0.1)  # 1 of 30 excluded -> GATHER
    model, layer = _model()
    op = TrainOp(model, optimizer="adam")
    back = op._write_backs[layer.kernel.path]
    x, y = _data()
    op(x, y)
    assert int(back.mode.numpy()) == wb.NONE
    mask = np.ones((6, 5), bool)
    mask[0, 0] = False  # 1 of 30 excluded: GATHER
    layer.set_mask(mask)
    before = layer.kernel.numpy()[0, 0]
    op(x, y)
    assert int(back.mode.numpy()) == wb.GATHER
    mask[:, :3] = False  # most excluded: WHERE
    layer.set_mask(mask)
    kept = layer.kernel.numpy()[:, :3].copy()
    op(x, y)
    assert int(back.mode.numpy()) == wb.WHERE
    np.testing.assert_array_equal(layer.kernel.numpy()[:, :3], kept)
    assert layer.kernel.numpy()[0, 0] == before
    assert op.trace_count == 1


@pytest.mark.parametrize("regularizer", [None, "l2"])
def test_skipped_gradient_zeroing_changes_nothing(regularizer, monkeypatch):
    """With global_clipnorm the update of every entry depends on the excluded gradients."""
    mask = np.random.default_rng(2).random((6, 5)) < 0.5
    x, y = _data()
    kernels, flags = [], []
    for force_where in (False, True):
        model, layer = _model(mask, regularizer)
        if force_where:
            monkeypatch.setattr(TrainOp, "_grad_is_zero_outside", lambda self, p, a: False)
        op = TrainOp(model, optimizer=keras.optimizers.SGD(0.1, global_clipnorm=1e-3))
        flags.append(bool(op._write_backs[layer.kernel.path].skip_zeroing.numpy()))
        for _ in range(2):
            op(x, y)
        kernels.append(layer.kernel.numpy())
    assert flags == [regularizer is None, False]  # a regularizer's gradient is not masked
    np.testing.assert_array_equal(kernels[0], kernels[1])


SLOTTED = {
    "adam": lambda: keras.optimizers.Adam(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01),
    "rmsprop_centered_momentum": lambda: keras.optimizers.RMSprop(
        0.01, momentum=0.9, centered=True
    ),
    "lion": lambda: keras.optimizers.Lion(0.001),
}
SUBNORMAL = np.float32(1e-42)  # TensorFlow's CPU arithmetic flushes it: x - 0.0 == 0.0


def _unit_run(make_optimizer, steps=4):
    """out[1] of a fresh model trained ``steps`` times: (mode, allowed, kernel, slots, before)."""
    model, layer = _model()
    op = TrainOp(model, optimizer=make_optimizer(), select="out[1]")
    mode = int(op._write_backs[layer.kernel.path].mode.numpy())
    kernel = layer.kernel.numpy()
    kernel[2, 3] = SUBNORMAL  # excluded (unit 3), assigned after the op checked the weights
    kernel[0, 0] = -0.0
    layer.kernel.assign(kernel)
    x, y = _data()
    for _ in range(steps):
        op(x, y)
    slots = [s.numpy() for s in op._guarded()[0][2]]
    return mode, op.update_mask(layer.kernel), layer.kernel.numpy(), slots, kernel


@pytest.mark.parametrize("name", SLOTTED)
def test_values_mode_matches_the_full_write_back_bit_for_bit(name, monkeypatch):
    """Catches VALUES leaving an excluded gradient unzeroed (the slots there move), or not
    restoring the values (a subnormal excluded weight is flushed to 0 by ``x - 0.0``)."""
    mode, allowed, kernel, slots, before = _unit_run(SLOTTED[name])
    assert mode == wb.VALUES
    bits = np.uint32
    np.testing.assert_array_equal(kernel[~allowed].view(bits), before[~allowed].view(bits))
    assert kernel[2, 3] == SUBNORMAL and (kernel[allowed] != before[allowed]).all()
    for slot in slots:
        assert not slot[~allowed].view(bits).any(), "slots at excluded entries stay +0.0"
    monkeypatch.setattr(zero_steps, "keeps_zero_gradient_entries", lambda optimizer: False)
    forced_mode, _, forced_kernel, forced_slots, _ = _unit_run(SLOTTED[name])
    assert forced_mode == wb.WHERE
    np.testing.assert_array_equal(kernel.view(bits), forced_kernel.view(bits))
    for slot, forced in zip(slots, forced_slots):
        np.testing.assert_array_equal(slot.view(bits), forced.view(bits))


def test_values_mode_falls_back_once_another_op_steps_the_optimizer():
    """Catches VALUES trusting +0.0 slots after another op (sharing the optimizer) gave the
    excluded entries momentum: Adam would then decay that momentum on the excluded entries."""
    model, layer = _model()
    optimizer = keras.optimizers.Adam(0.01)
    unit = TrainOp(model, optimizer=optimizer, select="out[1]")
    everything = TrainOp(model, optimizer=optimizer)
    assert int(unit._write_backs[layer.kernel.path].mode.numpy()) == wb.VALUES
    x, y = _data()
    unit(x, y)
    everything(x, y)
    everything(x, y)
    allowed = unit.update_mask(layer.kernel)
    kernel = layer.kernel.numpy()[~allowed].copy()
    slots = [s.numpy()[~allowed].copy() for s in unit._guarded()[0][2]]
    assert all(s.any() for s in slots)
    for _ in range(3):
        unit(x, y)
    np.testing.assert_array_equal(layer.kernel.numpy()[~allowed], kernel)
    for slot, old in zip(unit._guarded()[0][2], slots):
        np.testing.assert_array_equal(slot.numpy()[~allowed], old)
    assert unit.trace_count == 1


def test_plain_sgd_and_trained_slots_keep_the_where_mode():
    """VALUES only where it saves work (slots to skip) and holds (slots +0.0 when checked)."""
    model, layer = _model()
    sgd = TrainOp(model, optimizer=keras.optimizers.SGD(0.1), select="out[1]")
    assert int(sgd._write_backs[layer.kernel.path].mode.numpy()) == wb.WHERE
    optimizer = keras.optimizers.Adam(0.01)
    TrainOp(model, optimizer=optimizer)(*_data())
    late = TrainOp(model, optimizer=optimizer, select="out[1]")
    assert int(late._write_backs[layer.kernel.path].mode.numpy()) == wb.WHERE
