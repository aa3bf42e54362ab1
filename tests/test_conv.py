"""MaskedConv1D / MaskedConv2D: channel tables, kernel masks, grouped fast path, saving, strip."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic import deploy
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.layers import MaskedConv1D, MaskedConv2D
from maskmagic.layers.conv import channel_blocks, grouped_cost
from maskmagic.training import TrainOp

# LeNet-5's C3 table (LeCun et al. 1998, table I): rows are S2's 6 maps, columns C3's 16 maps.
_C3_COLUMNS = [
    [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 4, 5], [0, 1, 5],
    [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [0, 3, 4, 5], [0, 1, 4, 5], [0, 1, 2, 5],
    [0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5],
]  # fmt: skip
C3_TABLE = np.zeros((6, 16), dtype=bool)
for _j, _rows in enumerate(_C3_COLUMNS):
    C3_TABLE[_rows, _j] = True


def _permuted_blocks(channels: int, filters: int, groups: int, seed: int) -> np.ndarray:
    """A block-diagonal channel table with its rows and columns shuffled."""
    block = np.kron(np.eye(groups, dtype=bool), np.ones((channels // groups, filters // groups)))
    rng = np.random.default_rng(seed)
    return block.astype(bool)[rng.permutation(channels)][:, rng.permutation(filters)]


def _x(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_c3_table_filter_changes_exactly_when_the_table_connects_the_input_map():
    # Catches: a mask applied on the wrong axis (filters vs input channels), or not at all.
    assert C3_TABLE.sum() == 60
    layer = MaskedConv2D(16, 5, mask=C3_TABLE, activation="tanh")
    x = _x((2, 14, 14, 6))
    base = layer(x).numpy()
    assert base.shape == (2, 10, 10, 16)
    for i in range(6):
        bumped = x.copy()
        bumped[..., i] += _x((2, 14, 14), seed=10 + i)
        changed = np.any(layer(bumped).numpy() != base, axis=(0, 1, 2))
        np.testing.assert_array_equal(changed, C3_TABLE[i], err_msg=f"input map {i}")


@pytest.mark.parametrize("impl", ["dense", "grouped"])
def test_masked_kernel_and_bias_entries_get_exactly_zero_gradient(impl):
    # Catches: a mask multiplied after the gradient is taken, or a grouped path that reads
    # kernel entries outside its blocks.
    table = _permuted_blocks(8, 12, 4, seed=1)
    table[0, np.nonzero(table[0])[0][0]] = False  # a hole inside a block
    bias_mask = np.arange(12) % 3 != 0
    layer = MaskedConv2D(12, 3, padding="same", mask=table, bias_mask=bias_mask, impl=impl)
    x = _x((3, 9, 9, 8))
    layer(x)
    assert layer.kernel_format == impl
    layer.kernel.assign(_x(layer.kernel.shape, seed=2) + 1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    g_kernel, g_bias = (g.numpy() for g in tape.gradient(loss, [layer.kernel, layer.bias]))
    full = np.broadcast_to(table, layer.kernel.shape)
    assert np.all(g_kernel[~full] == 0.0) and np.all(g_kernel[full] != 0.0)
    assert np.all(g_bias[~bias_mask] == 0.0) and np.all(g_bias[bias_mask] != 0.0)


def test_kernel_shaped_mask_switches_single_taps():
    # Catches: a kernel-shaped mask reduced to its channel table (taps ignored).
    mask = np.zeros((3, 3, 2, 4), dtype=bool)
    mask[1, 1, 0, 0] = True  # filter 0 sees only the centre tap of channel 0
    mask[:, :, 1, 1:] = True
    layer = MaskedConv2D(4, 3, mask=mask, use_bias=False)
    x = _x((1, 5, 5, 2))
    out = layer(x).numpy()
    centre = x[0, 1:4, 1:4, 0] * layer.kernel.numpy()[1, 1, 0, 0]
    np.testing.assert_allclose(out[0, :, :, 0], centre, rtol=1e-6)
    np.testing.assert_array_equal(layer.get_mask(), mask)
    np.testing.assert_array_equal(layer.get_channel_table(), [[1, 0, 0, 0], [0, 1, 1, 1]])


def test_grouped_equals_dense_and_auto_picks_grouped_for_block_tables():
    # Catches: a wrong gather/scatter of filters in the grouped path (a permuted output).
    table = _permuted_blocks(16, 16, 4, seed=3)
    x = _x((2, 8, 8, 16))
    dense = MaskedConv2D(16, 3, padding="same", mask=table, impl="dense")
    dense(x)
    auto = MaskedConv2D(16, 3, padding="same", mask=table)
    auto(x)
    assert auto.kernel_format == "grouped" and len(auto.blocks) == 4
    auto.set_weights(dense.get_weights())
    # The grouped path sums over fewer (non-zero) channels, so the float sums run in another
    # order: equal up to rounding of ~1e-6 relative on outputs of size ~1.
    np.testing.assert_allclose(auto(x).numpy(), dense(x).numpy(), rtol=1e-5, atol=1e-5)
    c3 = MaskedConv2D(16, 5, mask=C3_TABLE)
    c3(_x((1, 14, 14, 6)))
    assert c3.kernel_format == "dense"  # one connected block: nothing to split


def test_channel_blocks_finds_permuted_blocks_and_idle_filters():
    table = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    blocks = channel_blocks(table)
    assert [(a.tolist(), b.tolist()) for a, b in blocks] == [([0], [0, 2, 3]), ([1], [1])]
    assert grouped_cost(blocks, table.shape) == pytest.approx(4 / 12)
    assert channel_blocks(np.zeros((2, 2), bool)) == []


def test_set_mask_in_compiled_op_does_not_retrace_and_is_used():
    # Catches: a mask captured as a constant at trace time.
    x_in = keras.Input((6, 6, 3))
    conv = MaskedConv2D(4, 3, name="c")
    out = keras.layers.Flatten()(conv(x_in))
    model = keras.Model(x_in, out)
    x, y = _x((8, 6, 6, 3)), np.zeros((8, 64), "float32")
    op = TrainOp(model, loss="mse", optimizer="sgd")
    op(x, y)
    table = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=bool)
    conv.set_mask(table)
    before = conv.kernel.numpy()
    op(x, y)
    assert op.trace_count == 1
    after = conv.kernel.numpy()
    full = np.broadcast_to(table, before.shape)
    np.testing.assert_array_equal(after[~full], before[~full])
    assert np.any(after[full] != before[full])


def test_grouped_set_mask_inside_blocks_works_and_across_blocks_is_refused():
    table = _permuted_blocks(4, 4, 2, seed=4)
    layer = MaskedConv2D(4, 3, mask=table, impl="grouped")
    x = _x((1, 5, 5, 4))
    layer(x)
    inside = table.copy()
    inside[np.nonzero(table)[0][0], np.nonzero(table)[1][0]] = False
    layer.set_mask(inside)
    np.testing.assert_array_equal(layer.get_channel_table(), inside)
    with pytest.raises(MaskMagicError, match="across blocks"):
        layer.set_mask(np.ones((4, 4)))
    np.testing.assert_array_equal(layer.get_channel_table(), inside)  # unchanged


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"mask": np.ones((6, 15))}, "expected a channel table (in_channels, 16)"),
        ({"mask": np.ones((3, 3, 6, 16))}, "kernel-shaped mask (5, 5"),
        ({"mask": [[2] * 16] * 6}, "values must be 0 or 1"),
        ({"padding": "full"}, "padding must be 'valid' or 'same'"),
        ({"impl": "sparse"}, "impl must be one of auto, dense, grouped"),
        ({"bias_mask": np.ones(16), "use_bias": False}, "use_bias=False"),
        ({"data_format": "channels_first"}, "channels_last"),
        ({"strides": (1, 0)}, "strides must be a positive integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, words):
    with pytest.raises(MaskMagicError) as info:
        layer = MaskedConv2D(16, 5, **kwargs)
        layer(_x((1, 14, 14, 6)))
    assert words in str(info.value)


def test_set_mask_refuses_wrong_shapes_and_keeps_the_old_mask():
    layer = MaskedConv2D(16, 5, mask=C3_TABLE)
    layer(_x((1, 14, 14, 6)))
    for bad in (np.ones((5, 16)), np.ones((5, 5, 6, 15)), np.full((6, 16), np.nan)):
        with pytest.raises(MaskError):
            layer.set_mask(bad)
    np.testing.assert_array_equal(layer.get_channel_table(), C3_TABLE)


def _c3_model(impl="auto", table=C3_TABLE) -> keras.Model:
    x = keras.Input((14, 14, table.shape[0]), name="s2")
    c3 = MaskedConv2D(
        table.shape[1], 5, mask=table, bias_mask=np.arange(16) != 3, impl=impl, name="c3"
    )(x)
    pooled = keras.layers.MaxPooling2D(2, name="s4")(c3)
    out = keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="flat")(pooled))
    return keras.Model(x, out)


@pytest.mark.parametrize("table", [C3_TABLE, _permuted_blocks(6, 16, 2, seed=5)])
def test_keras_file_round_trip_is_bit_identical(tmp_path, table):
    # Catches: masks or the grouped block structure lost in saving.
    model = _c3_model(table=table)
    x = _x((2, 14, 14, 6))
    model.get_layer("c3").kernel.assign(_x(model.get_layer("c3").kernel.shape, seed=6))
    path = tmp_path / "c3.keras"
    model.save(path)
    loaded = deploy.load_model(path)
    old, new = model.get_layer("c3"), loaded.get_layer("c3")
    assert new.kernel_format == old.kernel_format
    np.testing.assert_array_equal(new.get_mask(), old.get_mask())
    np.testing.assert_array_equal(new.get_bias_mask(), old.get_bias_mask())
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_config_round_trip_keeps_masks_and_options():
    layer = MaskedConv1D(4, 3, strides=2, padding="same", mask=np.eye(4), activation="relu")
    layer(_x((1, 9, 4)))
    clone = MaskedConv1D.from_config(layer.get_config())
    clone(_x((1, 9, 4)))
    np.testing.assert_array_equal(clone.get_channel_table(), np.eye(4, dtype=bool))
    assert (clone.strides, clone.padding, clone.kernel_size) == ((2,), "same", (3,))


def test_conv1d_table_controls_channels():
    table = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    layer = MaskedConv1D(2, 3, mask=table)
    x = _x((2, 10, 3))
    base = layer(x).numpy()
    assert base.shape == (2, 8, 2)
    for i in range(3):
        bumped = x.copy()
        bumped[..., i] += 1.0
        changed = np.any(layer(bumped).numpy() != base, axis=(0, 1))
        np.testing.assert_array_equal(changed, table[i])


@pytest.mark.parametrize("impl", ["dense", "grouped"])
def test_strip_gives_plain_conv2d_with_the_same_outputs(impl):
    model = _c3_model(impl=impl, table=_permuted_blocks(6, 16, 2, seed=7))
    x = _x((2, 14, 14, 6))
    stripped = deploy.strip(model)
    assert type(stripped.get_layer("c3")) is keras.layers.Conv2D
    if impl == "dense":  # the same convolution of the same effective kernel
        np.testing.assert_array_equal(stripped(x).numpy(), model(x).numpy())
    else:  # other convolution shapes: sums in another order (see the grouped test above)
        np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        stripped.get_layer("c3").kernel.numpy(), model.get_layer("c3").effective_kernel()
    )


def test_export_serves_the_masked_conv_model(tmp_path):
    model = _c3_model()
    x = _x((2, 14, 14, 6))
    path = deploy.export(model, tmp_path / "saved")
    np.testing.assert_allclose(deploy.serve(path)(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
