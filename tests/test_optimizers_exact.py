"""``freeze=`` under every optimizer Keras ships: frozen outputs and their optimizer state exact.

Each optimizer is warmed by a train-everything op (so its slots hold nonzero momentum,
moments, accumulators), then shared with a ``freeze=out[0]`` op that runs 10 steps. Exact by
construction (the op writes back the frozen entries and their slots), so compared bit for bit:
output 0 on 256 fresh inputs, and every optimizer slot entry of the frozen parameters. Bug
caught: a slot kind that is not restored (the warmed momentum would move the frozen entries, or
their slots would change), weight decay applied to frozen entries, EMA overwriting them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic import _compat
from maskmagic.errors import MaskMagicError
from maskmagic.training import TrainOp
from tests.conftest import make_342

# Hidden units 0, 1 feed output 0; hidden units 2, 3 feed output 1 (so output 1 can train).
HIDDEN = np.ones((3, 4))
OUT = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])


def _optimizers() -> dict:
    opt = keras.optimizers
    found = {
        "sgd": lambda: opt.SGD(0.05),
        "momentum": lambda: opt.SGD(0.05, momentum=0.9),
        "nesterov": lambda: opt.SGD(0.05, momentum=0.9, nesterov=True),
        "sgd_weight_decay": lambda: opt.SGD(0.05, momentum=0.5, weight_decay=0.1),
        "adam": lambda: opt.Adam(0.01),
        "amsgrad": lambda: opt.Adam(0.01, amsgrad=True),
        "adamw": lambda: opt.AdamW(0.01, weight_decay=0.1),
        "adamax": lambda: opt.Adamax(0.01),
        "nadam": lambda: opt.Nadam(0.01),
        "rmsprop": lambda: opt.RMSprop(0.01, momentum=0.5, centered=True),
        "adagrad": lambda: opt.Adagrad(0.05),
        "adadelta": lambda: opt.Adadelta(1.0),
        "ftrl": lambda: opt.Ftrl(0.05, l1_regularization_strength=0.01),
        "lion": lambda: opt.Lion(0.01),
        "ema": lambda: opt.Adam(0.01, use_ema=True, ema_overwrite_frequency=3),
        "loss_scale": lambda: opt.LossScaleOptimizer(opt.Adam(0.01)),
    }
    optional = {"lamb": "Lamb", "muon": "Muon", "schedule_free_adamw": "ScheduleFreeAdamW"}
    for name, cls in optional.items():  # newer Keras versions only
        if hasattr(opt, cls):
            found[name] = lambda cls=cls: getattr(opt, cls)(0.01)
    return found


OPTIMIZERS = _optimizers()


def test_every_keras_optimizer_is_covered():
    """A new optimizer in Keras shows up here instead of going untested."""
    shipped = {
        name
        for name in dir(keras.optimizers)
        if isinstance(getattr(keras.optimizers, name), type)
        and issubclass(getattr(keras.optimizers, name), keras.optimizers.Optimizer)
    }
    covered = {
        "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Ftrl",
        "Lion", "Lamb", "Muon", "ScheduleFreeAdamW", "LossScaleOptimizer",
        "Adafactor",  # refused: tested below
        "Optimizer", "MultiOptimizer",  # base class; MultiOptimizer wraps the others
    }  # fmt: skip
    assert shipped <= covered, f"not covered: {sorted(shipped - covered)}"


def _data(seed: int, n: int = 32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, rng.normal(size=(n, 2)).astype("float32")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_frozen_outputs_and_their_slots_stay_bit_identical(name):
    model = make_342(hidden_mask=HIDDEN, out_mask=OUT)
    optimizer = OPTIMIZERS[name]()
    everything = TrainOp(model, optimizer=optimizer)
    for seed in range(5):  # warm: every slot of every entry nonzero
        everything(*_data(seed))
    keep = TrainOp(model, optimizer=optimizer, freeze="out[0]")
    fresh = np.random.default_rng(99).normal(size=(256, 3)).astype("float32")
    before = np.asarray(model(fresh))
    frozen_state = {}
    for variable in model.trainable_variables:
        fixed = ~keep.update_mask(variable)
        for slot in _compat.optimizer_slots(optimizer, variable):
            frozen_state[slot.path] = (fixed, np.asarray(slot)[fixed].copy())
    assert frozen_state or name == "sgd", "the optimizer has per-entry state to check"
    for seed in range(10):
        keep(*_data(100 + seed))
    after = np.asarray(model(fresh))
    np.testing.assert_array_equal(after[:, 0], before[:, 0])  # exact by construction
    assert not np.array_equal(after[:, 1], before[:, 1]), "output 1 trained"
    for variable in model.trainable_variables:
        for slot in _compat.optimizer_slots(optimizer, variable):
            fixed, old = frozen_state[slot.path]
            np.testing.assert_array_equal(np.asarray(slot)[fixed], old, err_msg=slot.path)


def _plain_net() -> keras.Model:
    x = keras.Input((3,))
    h = keras.layers.Dense(4, name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(2, name="out")(h))


def test_adafactor_factored_moments_are_refused_with_freeze():
    """Adafactor keeps one moment per row and per column: not restorable entry by entry."""
    model = _plain_net()
    with pytest.raises(MaskMagicError, match=r"optimizer Adafactor .*cannot be restored"):
        TrainOp(model, optimizer=keras.optimizers.Adafactor(), freeze="out[0]")


def test_adafactor_is_fine_when_the_op_changes_whole_variables():
    model = _plain_net()
    op = TrainOp(model, optimizer="adafactor")
    assert np.isfinite(op(*_data(0)))
