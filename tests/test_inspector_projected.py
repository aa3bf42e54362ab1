"""The gradient inspector's "projected update" view for an op with ``hold=``: the gradient the
op's optimizer sees, projected onto the null space of the held units' Jacobian."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedConv2D, MaskedDense
from maskmagic.training import TrainOp
from maskmagic.widgets.inspector import GradientInspector, tiles
from maskmagic.widgets.inspector.probes import Grid
from tests.conftest import make_342

HIDDEN_MASK = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1]], bool)
OUT_MASK = np.array([[1, 1], [1, 0], [1, 1], [0, 1]], bool)


class _Sent:
    """Records the custom messages (tiles, windows) an inspector sends, decoded."""

    def __init__(self, inspector: GradientInspector) -> None:
        self.messages: list[tuple[dict, dict]] = []
        inspector.send = lambda content, buffers=None: self.messages.append(
            (content, self._decode(content, buffers or []))
        )

    @staticmethod
    def _decode(header: dict, buffers: list) -> dict:
        return {
            name: np.frombuffer(bytes(b), "<u1" if name.endswith("flags") else "<f4")
            for name, b in zip(header.get("buffers", []), buffers)
        }

    def of(self, kind: str) -> list[tuple[dict, dict]]:
        return [(h, a) for h, a in self.messages if h["type"] == kind]


@pytest.fixture
def held(data342):
    """The 3-4-2 net with masked connections in both layers and an op holding out[0] on the
    first 4 inputs (plain SGD: an update is -learning_rate * what the optimizer sees)."""
    x, y = data342
    model = make_342(HIDDEN_MASK, OUT_MASK, activation="tanh")
    reference = x[:4]
    op = TrainOp(
        model, "mse", keras.optimizers.SGD(1e-3), hold="out[0]", hold_on=reference, name="held"
    )
    return model, op, x, y, reference


def _jacobian_times(model, reference, vectors: dict) -> np.ndarray:
    """J v of the held values (out[0] on the reference inputs), by an independent tape:
    ``vectors`` maps each kernel/bias variable to a direction shaped like it."""
    variables = [v for layer in model.layers for v in layer.trainable_weights]
    with tf.GradientTape() as tape:
        held = model(reference, training=False)[:, 0]
    jacobians = tape.jacobian(held, variables)
    total = np.zeros(len(reference), np.float64)
    for variable, jac in zip(variables, jacobians):
        direction = vectors[variable.path].astype(np.float64)
        total += np.tensordot(jac.numpy().astype(np.float64), direction, axes=direction.ndim)
    return total


def _directions(model, inspector, projected: bool) -> dict:
    kernels = inspector.projected_gradients if projected else _update_view(model, inspector)
    biases = inspector.projected_bias_gradients if projected else inspector.bias_gradients
    found = {}
    for layer in ("hidden", "out"):
        found[model.get_layer(layer).kernel.path] = np.asarray(kernels[layer])
        found[model.get_layer(layer).bias.path] = np.asarray(biases[layer])
    return found


def _update_view(model, inspector) -> dict:
    return {name: np.asarray(g) for name, g in inspector.gradients.items()}


def test_projected_view_needs_an_op_with_hold(data342):
    """Catches: the projected view offered (or silently showing the raw gradient) for an
    inspector whose op has no hold=."""
    x, y = data342
    model = make_342(HIDDEN_MASK)
    for op in (None, TrainOp(model, "mse", "sgd", name="plain")):
        inspector = GradientInspector(model, x, y, op=op)
        assert inspector.has_hold is False
        with pytest.raises(MaskMagicError, match='view="projected" needs an op with hold='):
            inspector.view = "projected"
        assert inspector.view == "gradient"
        with pytest.raises(MaskMagicError, match="needs an op with hold="):
            inspector.projected_gradients  # noqa: B018
        with pytest.raises(MaskMagicError, match="needs an op with hold="):
            GradientInspector(model, x, y, op=op, view="projected")
        inspector.close()


def test_projected_gradient_is_zero_where_masked_and_moves_no_held_value(held):
    """Catches: a projection that leaks into masked connections or entries outside the op, one
    that leaves a component moving the held units (J g != 0), or a view equal to the raw one."""
    model, op, x, y, reference = held
    inspector = GradientInspector(model, x, y, op=op)
    assert inspector.has_hold is True
    projected = inspector.projected_gradients
    assert projected["hidden"].shape == (3, 4) and projected["out"].shape == (4, 2)
    assert np.all(projected["hidden"][~HIDDEN_MASK] == 0.0)  # exactly, not approximately
    assert np.all(projected["out"][~OUT_MASK] == 0.0)

    raw_move = _jacobian_times(model, reference, _directions(model, inspector, projected=False))
    held_move = _jacobian_times(model, reference, _directions(model, inspector, projected=True))
    assert np.abs(raw_move).max() > 1e-3  # the raw gradient would move the held unit ...
    assert np.abs(held_move).max() <= 1e-6 * np.abs(raw_move).max()  # ... the projected one not
    difference = np.abs(projected["hidden"] - inspector.gradients["hidden"]).max()
    assert difference > 1e-3 * np.abs(inspector.gradients["hidden"]).max()

    # An op that may change only the hidden layer: the out layer's projected gradient is 0.
    hidden_only = TrainOp(
        model, "mse", "sgd", select="hidden", hold="out[0]", hold_on=reference, name="h"
    )
    other = GradientInspector(model, x, y, op=hidden_only)
    assert np.all(other.projected_gradients["out"] == 0.0)
    assert np.all(other.projected_bias_gradients["out"] == 0.0)
    assert np.abs(other.projected_gradients["hidden"]).max() > 0
    inspector.close()
    other.close()


def test_projected_gradient_is_what_the_ops_optimizer_applies(held):
    """Catches: a view that differs from the gradient the op's step hands its optimizer (plain
    SGD moves each parameter by -learning_rate * that gradient, up to the hold's second-order
    corrections)."""
    model, op, x, y, _ = held
    inspector = GradientInspector(model, x, y, op=op)
    projected = inspector.projected_gradients
    bias = inspector.projected_bias_gradients
    update = inspector.gradients
    before = {layer: model.get_layer(layer).get_weights() for layer in ("hidden", "out")}
    inspector.step()
    for layer in ("hidden", "out"):
        kernel, b = model.get_layer(layer).get_weights()
        moved = (before[layer][0] - kernel) / 1e-3
        scale = np.abs(projected[layer]).max()
        np.testing.assert_allclose(moved, projected[layer], atol=1e-3 * scale)
        np.testing.assert_allclose((before[layer][1] - b) / 1e-3, bias[layer], atol=1e-3 * scale)
    moved = (before["hidden"][0] - model.get_layer("hidden").kernel.numpy()) / 1e-3
    assert np.abs(moved - update["hidden"]).max() > 1e-2 * np.abs(update["hidden"]).max()
    # After the step the inspector shows the projected gradient at the new weights.
    assert inspector.projected_gradients["hidden"] is not projected["hidden"]
    inspector.close()


def test_projected_gradient_follows_a_mask_change(held):
    """Catches: a compiled projection that keeps the update sets or masks it was traced with
    (a connection switched off afterwards would show a non-zero projected gradient)."""
    model, op, x, y, reference = held
    inspector = GradientInspector(model, x, y, op=op)
    assert inspector.projected_gradients["hidden"][0, 0] != 0.0
    mask = HIDDEN_MASK.copy()
    mask[0, 0] = False
    model.get_layer("hidden").set_mask(mask)
    inspector.refresh()
    projected = inspector.projected_gradients["hidden"]
    assert np.all(projected[~mask] == 0.0)
    raw = _directions(model, inspector, projected=False)
    moved = _jacobian_times(model, reference, _directions(model, inspector, projected=True))
    assert np.abs(moved).max() <= 1e-6 * np.abs(_jacobian_times(model, reference, raw)).max()
    inspector.close()


def test_projected_tiles_png_and_unit_target(held):
    """Catches: tiles without the projected values (the front end would draw nothing), values
    that differ from projected_gradients, a PNG that ignores the view, and a unit target whose
    projected gradient is the loss's."""
    model, op, x, y, _ = held
    inspector = GradientInspector(model, x, y, op=op)
    sent = _Sent(inspector)
    inspector._on_message(inspector, {"type": "hello"}, [])
    tiles_sent = {h["name"]: (h, a) for h, a in sent.of("tile")}
    for layer in ("hidden", "out"):
        header, arrays = tiles_sent[layer]
        shape = (header["rows"], header["cols"])
        np.testing.assert_array_equal(
            arrays["prj"].reshape(shape), inspector.projected_gradients[layer]
        )
        np.testing.assert_array_equal(arrays["bias_prj"], inspector.projected_bias_gradients[layer])
    gradient_png = inspector.png()
    inspector.view = "projected"
    assert inspector.png() != gradient_png

    loss_view = inspector.projected_gradients["hidden"]
    inspector.target = ("out", 1)
    unit_view = inspector.projected_gradients["hidden"]
    assert not np.allclose(unit_view, loss_view)
    header, arrays = {h["name"]: (h, a) for h, a in sent.of("tile")}["hidden"]
    assert header["revision"] == inspector.revision
    np.testing.assert_array_equal(arrays["prj"].reshape(3, 4), unit_view)
    inspector.close()


def test_pooled_layer_overview_and_zoom_show_the_projected_gradient(data342):
    """Catches: a pooled overview of the projected gradient that is not the signed max-|value|
    of each block, or a zoomed window sliced from the wrong place."""
    rng = np.random.default_rng(3)
    mask = rng.random((600, 300)) < 0.3
    x_in = keras.Input((600,))
    wide = MaskedDense(300, mask=mask, activation="tanh", name="wide")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(wide))
    x = rng.normal(size=(8, 600)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    op = TrainOp(model, "mse", "sgd", hold="out[0]", hold_on=x[:3], name="held")
    inspector = GradientInspector(model, x, y, op=op)
    sent = _Sent(inspector)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector.zoom("wide", 300, 200)
    (overview, arrays), _, (zoomed, window) = sent.of("tile")
    assert (overview["rows"], overview["cols"], overview["bh"], overview["bw"]) == (200, 150, 3, 2)
    projected = inspector.projected_gradients["wide"]
    assert np.all(projected[~mask] == 0.0)
    blocks = projected.reshape(200, 3, 150, 2).transpose(0, 2, 1, 3).reshape(200, 150, 6)
    expected = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(arrays["prj"].reshape(200, 150), expected)
    r0, c0 = zoomed["r0"], zoomed["c0"]
    shape = (zoomed["rows"], zoomed["cols"])
    np.testing.assert_array_equal(
        window["prj"].reshape(shape), projected[r0 : r0 + shape[0], c0 : c0 + shape[1]]
    )
    inspector.close()


def test_pool_entries_picks_the_largest_magnitude_per_block():
    """Catches: a sparse overview that keeps the last entry of a block instead of the largest
    one, or loses its sign."""
    grid = Grid(4, 4, 2, 2)
    rows, cols = np.array([0, 1, 1, 3, 2]), np.array([0, 1, 0, 3, 2])
    values = np.array([0.5, -2.0, 1.0, 3.0, -0.25], np.float32)
    pooled = tiles.pool_entries(values, rows, cols, grid)
    np.testing.assert_array_equal(pooled, [[-2.0, 0.0], [0.0, 3.0]])


def _conv_model():
    table = np.ones((3, 4), bool)
    table[1, 3] = False
    x_in = keras.Input((6, 6, 3))
    conv = MaskedConv2D(4, 3, mask=table, activation="tanh", name="c")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(conv)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    return model, x, y


def test_conv_kernel_window_in_the_projected_view_of_an_op_on_the_head():
    """Catches: a conv layer the op does not train showing a non-zero projected gradient, or a
    kernel window without the projected view."""
    model, x, y = _conv_model()
    op = TrainOp(model, "mse", "sgd", select="out", hold="out[0]", hold_on=x[:2], name="held")
    inspector = GradientInspector(model, x, y, op=op, view="projected")
    kernel = inspector.projected_gradients["c"]
    assert kernel.shape == (3, 3, 3, 4) and np.all(kernel == 0.0)
    np.testing.assert_array_equal(inspector.kernel_window("c", 2, 2), np.zeros((3, 3)))
    assert np.abs(inspector.kernel_window("c", 2, 2, "gradient")).max() > 0
    assert np.abs(inspector.projected_gradients["out"]).max() > 0
    inspector.close()


def test_conv_kernel_window_in_the_projected_view():
    """Catches: a conv kernel window whose projected taps are not the op's projected gradient,
    or a masked tap with a non-zero projected value."""
    model, x, y = _conv_model()
    op = TrainOp(model, "mse", "sgd", hold="out[0]", hold_on=x[:2], name="held")
    inspector = GradientInspector(model, x, y, op=op, view="projected")
    kernel = inspector.projected_gradients["c"]
    assert kernel.shape == (3, 3, 3, 4)
    assert np.all(kernel[..., 1, 3] == 0.0)
    np.testing.assert_array_equal(inspector.kernel_window("c", 2, 2), kernel[..., 2, 2])
    assert not np.array_equal(
        inspector.kernel_window("c", 2, 2), inspector.kernel_window("c", 2, 2, "update")
    )
    inspector.close()


def test_sparse_layer_projected_gradient(data342):
    """Catches: a sparse layer's projected gradient placed on the wrong connections."""
    x, y = data342
    mask = np.random.default_rng(2).random((3, 8)) < 0.5
    x_in = keras.Input((3,))
    h = MaskedDense(8, mask=mask, impl="sparse", activation="tanh", name="sp")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(h))
    op = TrainOp(model, "mse", "sgd", hold="head[0]", hold_on=x[:2], name="held")
    inspector = GradientInspector(model, x, y, op=op)
    projected = inspector.projected_gradients["sp"]
    assert sp.issparse(projected) and projected.shape == (3, 8)
    assert np.all(projected.toarray()[~mask] == 0.0)
    assert np.abs(projected.toarray() - inspector.gradients["sp"].toarray()).max() > 0
    inspector.close()
