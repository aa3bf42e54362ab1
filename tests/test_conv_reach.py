"""Selectors and freeze= through convolutions, pooling and flatten (checked against autodiff)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from maskmagic.layers import MaskedConv2D, MaskedDense
from maskmagic.training import TrainOp
from maskmagic.training.reach import influencers
from maskmagic.training.selectors import resolve

T1 = np.array(
    [[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=bool
)  # 4 input channels -> 6 filters
T2 = np.array(
    [[1, 0, 0, 0, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0],
     [0, 0, 0, 1, 1]], dtype=bool,
)  # fmt: skip  # 6 -> 5


def _net(out_channels=(0, 2)) -> keras.Model:
    """conv -> maxpool -> conv -> flatten -> dense; out[0] reads only some c2 channels."""
    x = keras.Input((8, 8, 4), name="img")
    c1 = MaskedConv2D(6, 3, mask=T1, activation="tanh", name="c1")(x)
    p1 = keras.layers.MaxPooling2D(2, name="p1")(c1)
    c2 = MaskedConv2D(5, 3, padding="same", mask=T2, activation="tanh", name="c2")(p1)
    flat = keras.layers.Flatten(name="flat")(c2)
    rows = flat.shape[-1]
    mask = np.ones((rows, 3), dtype=bool)
    mask[:, 0] = np.isin(np.arange(rows) % 5, out_channels)
    out = MaskedDense(3, mask=mask, name="out")(flat)
    return keras.Model(x, out)


def _gradient_support(model: keras.Model, x: np.ndarray, unit: int) -> dict[str, np.ndarray]:
    with tf.GradientTape() as tape:
        target = tf.reduce_sum(model(x)[:, unit])
    grads = tape.gradient(target, model.trainable_variables)
    return {
        v.path: (np.zeros(v.shape, bool) if g is None else g.numpy() != 0)
        for v, g in zip(model.trainable_variables, grads, strict=True)
    }


def test_freeze_walk_matches_autodiff_through_conv_pool_flatten():
    # Catches: a conv walked as if it mixed every channel (too much frozen), or a flatten/pool
    # rule that maps units to the wrong channels (a moving parameter left trainable).
    model = _net()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype("float32")
    support = _gradient_support(model, x, 0)
    frozen = influencers(model, {"out": np.array([True, False, False])})
    for variable in model.trainable_variables:
        layer = next(lay for lay in model.layers if variable.path.startswith(lay.name + "/"))
        connected = (
            np.broadcast_to(layer.get_mask(), variable.shape)
            if variable.path.endswith("kernel")
            else np.ones(variable.shape, bool)
        )
        mine = frozen.get(variable.path, np.zeros(variable.shape, bool))
        assert not np.any(support[variable.path] & ~mine), f"{variable.path}: a moving entry free"
        np.testing.assert_array_equal(
            mine & connected, support[variable.path], err_msg=variable.path
        )
    # c2 filters 1, 3, 4 do not reach out[0]; c1 filters reach it through T2 rows 0, 1, 3 only.
    assert not frozen["c2/bias"][[1, 3, 4]].any() and frozen["c2/bias"][[0, 2]].all()
    np.testing.assert_array_equal(frozen["c1/bias"], [1, 1, 0, 1, 0, 0])


def test_train_op_freeze_through_convolutions_keeps_output_bit_identical():
    model = _net()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 8, 8, 4)).astype("float32"), rng.normal(size=(16, 3))
    probe = rng.normal(size=(8, 8, 8, 4)).astype("float32")
    op = TrainOp(model, loss="mse", optimizer="adam", freeze="out[0]")
    before = model(probe).numpy()
    for _ in range(3):
        op(x, y.astype("float32"))
    after = model(probe).numpy()
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    assert np.any(after[:, 1:] != before[:, 1:])
    kept = {v.path for v in op.var_list}
    assert {"c1/kernel", "c2/kernel", "out/kernel"} <= kept  # trainable where it is safe


def test_filter_and_kernel_entry_selectors_on_a_conv():
    model = _net()
    c2 = model.get_layer("c2")
    chosen = resolve(model, "c2[4]")
    expected = np.zeros(c2.kernel.shape, bool)
    expected[..., 4] = True
    np.testing.assert_array_equal(chosen["c2/kernel"], expected)
    np.testing.assert_array_equal(chosen["c2/bias"], np.arange(5) == 4)
    assert resolve(model, "c2[0:2]")["c2/kernel"][..., :2].all()
    entry = resolve(model, "c2.kernel[:, :, 1, 4]")["c2/kernel"]
    assert entry.sum() == 9 and entry[:, :, 1, 4].all()
    op = TrainOp(model, select="c2.kernel[:, :, 1, 4]")
    np.testing.assert_array_equal(op.update_mask(c2.kernel), entry)


def test_plain_conv2d_is_walked_per_filter():
    # Catches: plain Keras convolutions treated as mixing every filter (nothing left to train).
    x = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(conv)
    model = keras.Model(x, pooled)
    frozen = influencers(model, {"gap": np.array([False, True, False])})
    np.testing.assert_array_equal(frozen["conv/bias"], [False, True, False])
    assert frozen["conv/kernel"][..., 1].all() and not frozen["conv/kernel"][..., [0, 2]].any()
