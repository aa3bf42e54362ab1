"""Reachability: which parameters can move which units, through masks and branches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maskmagic.errors import SelectorError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp
from maskmagic.training.reach import influencers


def _two_branches():
    x = keras.Input((4,), name="x")
    left = MaskedDense(3, activation="relu", name="left")(x)
    right = MaskedDense(3, activation="relu", name="right")(x)
    out_a = MaskedDense(1, name="out_a")(keras.layers.Dropout(0.2, name="drop")(left))
    out_b = MaskedDense(1, name="out_b")(right)
    out = keras.layers.Concatenate(name="out")([out_a, out_b])
    return keras.Model(x, out)


def test_disjoint_branch_stays_trainable_hidden_layers_included():
    model = _two_branches()
    frozen = influencers(model, {"out_a": np.array([True])})
    assert set(frozen) == {"left/kernel", "left/bias", "out_a/kernel", "out_a/bias"}
    assert all(m.all() for m in frozen.values())
    op = TrainOp(model, freeze="out_a[0]")
    assert {v.path for v in op.var_list} == {
        "right/kernel",
        "right/bias",
        "out_b/kernel",
        "out_b/bias",
    }


def test_freeze_through_concatenate_splits_units():
    model = _two_branches()
    # A unit selector on a Concatenate layer is not addressable (no parameters) ...
    with pytest.raises(SelectorError, match="expected one of the layers with parameters"):
        TrainOp(model, freeze="out[1]")
    # ... but reachability itself walks through it and splits the units.
    frozen = influencers(model, {"out": np.array([False, True])})
    assert set(frozen) == {"right/kernel", "right/bias", "out_b/kernel", "out_b/bias"}


def test_masks_cut_paths():
    x = keras.Input((3,))
    hidden_mask = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    out_mask = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])  # hidden 0,1 -> out 0; 2,3 -> out 1
    h = MaskedDense(4, mask=hidden_mask, name="h")(x)
    out = MaskedDense(2, mask=out_mask, name="out")(h)
    model = keras.Model(x, out)
    frozen = influencers(model, {"out": np.array([True, False])})
    np.testing.assert_array_equal(frozen["h/kernel"], np.tile([True, True, False, False], (3, 1)))
    np.testing.assert_array_equal(frozen["out/kernel"], np.tile([True, False], (4, 1)))
    np.testing.assert_array_equal(frozen["out/bias"], [True, False])


def test_softmax_mixes_every_unit_of_its_layer():
    x = keras.Input((3,))
    h = MaskedDense(4, mask=np.eye(3, 4), name="h")(x)
    out = MaskedDense(2, mask=[[1, 0], [0, 1], [0, 1], [0, 1]], activation="softmax", name="out")(h)
    model = keras.Model(x, out)
    frozen = influencers(model, {"out": np.array([True, False])})
    assert frozen["out/kernel"].all() and frozen["h/kernel"].all()


def test_sequential_and_unknown_layers_are_conservative():
    model = keras.Sequential(
        [
            keras.Input((2, 2)),
            keras.layers.Flatten(name="flat"),
            MaskedDense(3, name="a"),
            MaskedDense(2, name="b"),
        ]
    )
    frozen = influencers(model, {"b": np.array([True, False])})
    prefix = f"{model.name}/"
    assert frozen[prefix + "a/kernel"].all()
    np.testing.assert_array_equal(frozen[prefix + "b/kernel"], np.tile([True, False], (3, 1)))


def test_subclassed_model_cannot_be_traced():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = MaskedDense(2, name="d")

        def call(self, x):
            return self.d(x)

    model = Net()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(SelectorError, match="subclassed"):
        TrainOp(model, freeze="d[0]")
