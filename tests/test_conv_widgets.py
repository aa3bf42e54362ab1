"""The mask editor on convolutions: it edits the (in_channels, filters) channel table."""

from __future__ import annotations

import numpy as np
import pytest

from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedConv2D
from maskmagic.widgets.editor import MaskEditor

from .test_conv import C3_TABLE, _permuted_blocks


def _built(layer, channels, size=14):
    layer(np.zeros((1, size, size, channels), "float32"))
    return layer


def test_editor_shows_and_edits_the_channel_table():
    # Catches: the editor opening the 4-D kernel mask, or writing a table that loses taps.
    layer = _built(MaskedConv2D(16, 5, mask=C3_TABLE, name="c3"), 6)
    editor = MaskEditor(layer)
    assert tuple(editor.shape) == (6, 16)
    np.testing.assert_array_equal(editor.mask, C3_TABLE)
    assert "channel" in editor.input_label and "filter" in editor.unit_label
    editor.toggle(3, 0)  # connect input map 3 to filter 0 (off in the C3 table)
    expected = C3_TABLE.copy()
    expected[3, 0] = True
    np.testing.assert_array_equal(layer.get_channel_table(), expected)
    assert layer.get_mask()[:, :, 3, 0].all()  # a new pair gets its whole window
    assert editor.undo()
    np.testing.assert_array_equal(layer.get_channel_table(), C3_TABLE)


def test_table_edits_keep_single_taps_of_untouched_pairs():
    mask = np.zeros((3, 3, 2, 2), dtype=bool)
    mask[1, 1, 0, 0] = True  # pair (0, 0): centre tap only
    layer = _built(MaskedConv2D(2, 3, mask=mask), 2, size=5)
    editor = MaskEditor(layer)
    editor.toggle(1, 1)
    np.testing.assert_array_equal(layer.get_mask()[:, :, 0, 0], mask[:, :, 0, 0])
    assert layer.get_mask()[:, :, 1, 1].all()


def test_edits_across_grouped_blocks_are_refused_and_change_nothing():
    table = _permuted_blocks(4, 4, 2, seed=0)
    layer = _built(MaskedConv2D(4, 3, mask=table, impl="grouped"), 4, size=5)
    editor = MaskEditor(layer)
    i, j = (int(v) for v in np.argwhere(~table)[0])
    with pytest.raises(MaskMagicError, match="across blocks"):
        editor.toggle(i, j)
    np.testing.assert_array_equal(editor.mask, table)
    np.testing.assert_array_equal(layer.get_channel_table(), table)


def test_inspector_shows_sum_of_abs_gradient_over_each_kernel_window():
    # Catches: a conv layer left out of the inspector, windows summed on the wrong axes, or
    # a masked pair shown with a non-zero gradient.
    import keras
    import tensorflow as tf

    from maskmagic.training import TrainOp
    from maskmagic.widgets.inspector import GradientInspector

    x_in = keras.Input((10, 10, 6), name="s2")
    c3 = MaskedConv2D(16, 5, mask=C3_TABLE, activation="tanh", name="c3")(x_in)
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(c3))
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 10, 10, 6)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    layer = model.get_layer("c3")
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    grad = tape.gradient(loss, layer.kernel).numpy()
    expected = np.abs(grad).sum(axis=(0, 1))
    op = TrainOp(model, loss="mse", optimizer="sgd", select="c3[5]")
    inspector = GradientInspector(model, x, y, op=op, loss="mse")
    shown = inspector.gradients["c3"]
    assert shown.shape == (6, 16)
    assert np.all(shown[~C3_TABLE] == 0.0)
    # One graph computes both, in another order of sums: equal to float32 rounding.
    np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-7)
    assert np.all(shown[C3_TABLE] > 0)
    inspector.close()
