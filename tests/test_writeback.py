"""TrainOp's write-back modes (maskmagic.training.writeback): same exact result, less work.

Bugs caught: a mode that restores the wrong entries or forgets a slot (excluded entries move
under Adam/momentum/weight decay); a mask change that does not switch the mode or re-traces;
skipping the gradient zeroing where the gradient is not already zero (a kernel regularizer),
which changes what clipnorm optimizers do to the included entries.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp
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
