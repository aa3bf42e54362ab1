"""GradientInspector on the kernel side: gradients vs tf.GradientTape, step and drift, message
sizes, bad input, the line magic and the static image of exported notebooks."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import comm
import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from maskmagic import build
from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp
from maskmagic.widgets.inspector import GradientInspector, tiles
from tests.conftest import make_342
from tests.magics import line_magic
from tests.numerics import assert_same_value

REPO = Path(__file__).resolve().parents[1]
MSE = keras.losses.MeanSquaredError()
QUESTION1 = """
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,1],[0,1,1,1],[1,1,0,1]]
dense out 2
loss mse
optimizer sgd learning_rate=0.1
train train_op_all
train train_op2 out[1]
train keep_first freeze=out[0]
"""


class Recorder(comm.DummyComm):
    """A comm that keeps every message the widget sends (open, state updates, custom)."""

    def __init__(self, **kwargs):
        self.messages = []
        super().__init__(**kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        self.messages.append((msg_type, data, list(buffers or [])))

    def sizes(self):
        return [tiles.message_bytes(data, buffers) for _, data, buffers in self.messages]

    def tiles(self):
        return [
            (data["content"], buffers)
            for kind, data, buffers in self.messages
            if kind == "comm_msg" and data.get("method") == "custom"
        ]


@pytest.fixture
def recorded(monkeypatch):
    made = []

    def create(**kwargs):
        made.append(Recorder(**kwargs))
        return made[-1]

    monkeypatch.setattr(comm, "create_comm", create)
    return made


@pytest.fixture
def question1(data342):
    model, ops = build(QUESTION1, seed=0)
    return model, ops, data342


# The compiled gradient pass and this eager tape are two computations of one gradient (graph
# rewrites and oneDNN may fuse and reorder the sums): compared with assert_same_value, a few
# ulps (tests/numerics.py). What holds by construction (a masked entry's gradient is exactly
# 0, an update is the gradient where allowed) stays assert_array_equal.
def _tape(model, x, y, variables, objective=None):
    with tf.GradientTape() as tape:
        prediction = model(x, training=False)
        value = MSE(y, prediction) if objective is None else objective(prediction)
    return [g.numpy() for g in tape.gradient(value, variables)]


def _decode(header, buffers):
    out = {}
    for name, buffer in zip(header["buffers"], buffers):
        dtype = np.uint8 if name.endswith("flags") else np.float32
        out[name] = np.frombuffer(bytes(buffer), dtype=dtype)
    return out


# ----------------------------------------------------------------------------- gradients


def test_gradients_equal_tape_for_a_plain_dense_model(data342):
    x_in = keras.Input((3,))
    h = keras.layers.Dense(4, activation="relu", name="d1")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="d2")(h))
    x, y = data342
    inspector = GradientInspector(model, x, y)
    layers = [model.get_layer("d1"), model.get_layer("d2")]
    kernels = _tape(model, x, y, [layer.kernel for layer in layers])
    biases = _tape(model, x, y, [layer.bias for layer in layers])
    for layer, kernel, bias in zip(layers, kernels, biases):
        assert_same_value(inspector.gradients[layer.name], kernel)
        assert_same_value(inspector.bias_gradients[layer.name], bias)
        assert_same_value(inspector.would_be_gradients[layer.name], kernel)
    assert [info["kind"] for info in inspector.layers] == ["plain", "plain"]
    assert inspector.loss == pytest.approx(float(MSE(y, model(x))), rel=1e-6)


def test_masked_dense_gradients_equal_tape_and_masked_entries_are_exactly_zero(question1):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    kernels = _tape(model, x, y, [hidden.kernel, out.kernel])
    biases = _tape(model, x, y, [hidden.bias, out.bias])
    assert_same_value(inspector.gradients["hidden"], kernels[0])
    assert_same_value(inspector.gradients["out"], kernels[1])
    assert_same_value(inspector.bias_gradients["hidden"], biases[0])
    masked = ~hidden.get_mask()
    assert masked.sum() == 3
    assert np.all(inspector.gradients["hidden"][masked] == 0)
    info = inspector.layers[0]
    assert info["masked"] == 3 and info["masked_nonzero"] == 0
    assert info["zero_share"] == pytest.approx(np.mean(kernels[0] == 0))
    assert info["norm"] == pytest.approx(np.linalg.norm(kernels[0]), rel=1e-5)


def test_would_be_gradient_equals_tape_of_the_effective_kernel(question1):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    effective = tf.Variable(hidden.effective_kernel())
    with tf.GradientTape() as tape:
        h = tf.sigmoid(x @ effective + hidden.effective_bias())
        loss = MSE(y, h @ out.effective_kernel() + out.effective_bias())
    reference = tape.gradient(loss, effective).numpy()
    would_be = inspector.would_be_gradients["hidden"]
    np.testing.assert_allclose(would_be, reference, rtol=1e-5, atol=1e-8)
    assert np.all(would_be[~hidden.get_mask()] != 0)


@pytest.mark.parametrize("target", [("out", 1), "out[1]", ["out", 1]])
def test_single_unit_target_equals_tape(question1, target):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    revision = inspector.revision
    inspector.target = target
    assert inspector.target == ("out", 1) and inspector.revision == revision + 1
    variables = [model.get_layer("hidden").kernel, model.get_layer("out").kernel]
    reference = _tape(model, x, y, variables, lambda p: tf.reduce_sum(p[:, 1]))
    assert_same_value(inspector.gradients["hidden"], reference[0])
    assert_same_value(inspector.gradients["out"], reference[1])
    assert not inspector.gradients["out"][:, 0].any()
    inspector.target = "loss"
    assert_same_value(inspector.gradients["out"], _tape(model, x, y, variables)[1])


def test_mask_change_is_seen_by_the_next_refresh(question1):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    out = model.get_layer("out")
    out.set_mask([[1, 0], [1, 1], [1, 1], [1, 1]])
    inspector.refresh()
    assert inspector.gradients["out"][0, 1] == 0
    assert inspector.would_be_gradients["out"][0, 1] != 0
    assert inspector.layers[1]["masked"] == 1
    assert_same_value(inspector.gradients["out"], _tape(model, x, y, [out.kernel])[0])


def test_input_and_unit_names_reach_the_table(data342):
    x_in = keras.Input((3,))
    layer = MaskedDense(2, input_names=["a", "b", "c"], unit_names=["up", "down"], name="named")
    model = keras.Model(x_in, layer(x_in))
    x, y = data342
    inspector = GradientInspector(model, x, y)
    assert inspector.names == {"named": {"inputs": ["a", "b", "c"], "units": ["up", "down"]}}
    row = inspector.top[0]
    assert (row["input"], row["unit"]) == (["a", "b", "c"][row["i"]], ["up", "down"][row["j"]])
    g = inspector.gradients["named"]
    assert abs(row["gradient"]) == pytest.approx(np.abs(g).max())


# ----------------------------------------------------------------------------- step and drift


def test_drift_after_a_frozen_step_is_exactly_zero_for_the_frozen_unit(question1):
    model, ops, (x, y) = question1
    before = model(x, training=False).numpy()
    inspector = GradientInspector(model, x, y, op=ops["keep_first"])
    assert inspector.drift is None
    result = inspector.step()
    after = model(x, training=False).numpy()
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    drift = inspector.drift["out"]
    assert drift.shape == (2,)
    assert drift[0] == 0.0
    assert drift[1] > 0
    assert drift[1] == pytest.approx(np.abs(after[:, 1] - before[:, 1]).max())
    assert result["loss_before"] == pytest.approx(float(MSE(y, before)), rel=1e-6)
    assert result["loss_after"] == pytest.approx(float(MSE(y, after)), rel=1e-6)
    assert inspector.step_info["steps"] == 1
    assert inspector.step_info["drift"]["out"][0] == 0.0
    assert inspector.loss == pytest.approx(result["loss_after"], rel=1e-6)
    inspector.step()
    assert inspector.step_info["steps"] == 2 and inspector.drift["out"][0] == 0.0


def test_frozen_connections_are_flagged(recorded, question1):
    model, ops, (x, y) = question1
    inspector = GradientInspector(model, x, y, op=ops["train_op2"])
    assert inspector.op_name == "train_op2"
    assert [info["frozen"] for info in inspector.layers] == [9, 4]
    inspector._on_message(inspector, {"type": "hello"}, [])
    header, buffers = inspector.comm.tiles()[1]
    arrays = _decode(header, buffers)
    flags = arrays["flags"].reshape(4, 2)
    assert np.all(flags[:, 0] & tiles.FROZEN) and not np.any(flags[:, 1] & tiles.FROZEN)
    np.testing.assert_array_equal(arrays["upd"].reshape(4, 2)[:, 0], 0)
    g = inspector.gradients["out"]
    np.testing.assert_array_equal(arrays["upd"].reshape(4, 2)[:, 1], g[:, 1])
    hidden = _decode(*inspector.comm.tiles()[0])
    masked = (hidden["flags"] & tiles.MASKED) != 0
    np.testing.assert_array_equal(masked.reshape(3, 4), ~model.get_layer("hidden").get_mask())


def test_step_without_op_is_an_error(question1):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    with pytest.raises(MaskMagicError, match="no op"):
        inspector.step()
    inspector._on_message(inspector, {"type": "step"}, [])
    assert "no op" in inspector.error


def test_step_message_from_the_front_end(question1):
    model, ops, (x, y) = question1
    inspector = GradientInspector(model, x, y, op=ops["keep_first"])
    inspector._on_message(inspector, {"type": "step"}, [])
    assert inspector.error == "" and inspector.step_info["steps"] == 1
    assert inspector.drift["out"][0] == 0.0


# ----------------------------------------------------------------------------- large layers


def test_large_layer_is_pooled_zooms_and_no_message_exceeds_8_mb(recorded):
    n = 4096
    x_in = keras.Input((n,))
    out = MaskedDense(n, mask=np.random.default_rng(0).random((n, n)) < 0.5, impl="dense")(x_in)
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, n)).astype("float32")
    y = rng.normal(size=(16, n)).astype("float32")
    inspector = GradientInspector(model, x, y)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector._on_message(inspector, {"type": "zoom", "layer": 0, "row": 3000, "col": 10}, [])
    inspector.zoom(0)
    sent = inspector.comm
    sizes = sent.sizes()
    assert max(sizes) <= tiles.MAX_MESSAGE_BYTES
    assert inspector.largest_message <= tiles.MAX_MESSAGE_BYTES
    overview, zoomed, back = sent.tiles()
    header = overview[0]
    assert (header["rows"], header["cols"], header["bh"], header["bw"]) == (256, 256, 16, 16)
    assert header["zoomed"] is False
    pooled = _decode(*overview)["g"].reshape(256, 256)
    gradient = inspector.gradients[model.layers[-1].name]
    block = gradient[16:32, 32:48]
    assert pooled[1, 2] == pytest.approx(block.ravel()[np.abs(block).argmax()], rel=1e-6)
    header = zoomed[0]
    assert (header["r0"], header["c0"], header["rows"], header["cols"]) == (2872, 0, 256, 256)
    assert header["zoomed"] is True
    window = _decode(*zoomed)
    np.testing.assert_array_equal(window["g"].reshape(256, 256), gradient[2872:3128, :256])
    assert back[0]["zoomed"] is False
    print(
        f"largest message {max(sizes)} bytes; tile sizes {[tiles.message_bytes(*t) for t in sent.tiles()]}"
    )


# ----------------------------------------------------------------------------- sparse layers


def test_sparse_layer_gradients_and_tiles(recorded, data342):
    mask = np.random.default_rng(2).random((3, 8)) < 0.5
    x_in = keras.Input((3,))
    h = MaskedDense(8, mask=mask, impl="sparse", activation="tanh", name="sp")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(h))
    x, y = data342
    inspector = GradientInspector(model, x, y)
    layer = model.get_layer("sp")
    gradient = inspector.gradients["sp"]
    assert sp.issparse(gradient) and gradient.shape == (3, 8)
    values = _tape(model, x, y, [layer.kernel])[0]
    rows, cols = layer.connections()
    np.testing.assert_allclose(gradient.toarray()[rows, cols], values, rtol=1e-6)
    assert inspector.would_be_gradients["sp"] is None
    assert inspector.layers[0]["would_be"] is False
    inspector._on_message(inspector, {"type": "hello"}, [])
    arrays = _decode(*inspector.comm.tiles()[0])
    np.testing.assert_allclose(arrays["g"].reshape(3, 8), gradient.toarray(), rtol=1e-6)
    np.testing.assert_array_equal((arrays["flags"] & tiles.MASKED).reshape(3, 8) != 0, ~mask)


def test_pooled_sparse_layer_overview_and_zoom(recorded):
    rng = np.random.default_rng(4)
    mask = sp.random_array((600, 512), density=0.02, rng=rng, format="csr") != 0
    x_in = keras.Input((600,))
    model = keras.Model(x_in, MaskedDense(512, mask=mask, impl="sparse", name="big")(x_in))
    x = rng.normal(size=(8, 600)).astype("float32")
    y = rng.normal(size=(8, 512)).astype("float32")
    inspector = GradientInspector(model, x, y)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector.zoom("big", 300, 300)
    (header, buffers), (zoom_header, zoom_buffers) = inspector.comm.tiles()
    assert (header["rows"], header["cols"], header["bh"], header["bw"]) == (200, 256, 3, 2)
    dense = inspector.gradients["big"].toarray()
    blocks = dense.reshape(200, 3, 256, 2).transpose(0, 2, 1, 3).reshape(200, 256, 6)
    expected = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    arrays = _decode(header, buffers)
    np.testing.assert_allclose(arrays["g"].reshape(200, 256), expected, rtol=1e-6)
    on = mask.toarray().reshape(200, 3, 256, 2).transpose(0, 2, 1, 3).reshape(200, 256, 6)
    all_masked = (arrays["flags"].reshape(200, 256) & tiles.MASKED) != 0
    np.testing.assert_array_equal(all_masked, ~on.any(-1))
    assert (zoom_header["r0"], zoom_header["c0"], zoom_header["rows"]) == (172, 172, 256)
    window = _decode(zoom_header, zoom_buffers)["g"].reshape(256, 256)
    np.testing.assert_array_equal(window, dense[172:428, 172:428])


def _pooled(dense, rows, cols):
    """Signed max-|value| of each (bh, bw) block of ``dense``, padded to (rows, cols) blocks."""
    bh, bw = -(-dense.shape[0] // rows), -(-dense.shape[1] // cols)
    padded = np.zeros((rows * bh, cols * bw), dense.dtype)
    padded[: dense.shape[0], : dense.shape[1]] = dense
    blocks = padded.reshape(rows, bh, cols, bw).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    return np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]


def test_large_sparse_layer_summary_is_fused_and_matches_its_gradient(recorded):
    """Catches the XLA summary of a sparse layer (above XLA_MIN_CELLS connections) disagreeing
    with the gradient it summarises: pooled tiles, norm, zero share and top connections, also
    after set_mask changes the number of connections."""
    from maskmagic.widgets.inspector import probes

    rng = np.random.default_rng(5)
    mask = sp.random_array((1200, 1024), density=0.06, rng=rng, format="csr") != 0
    assert mask.nnz > probes.XLA_MIN_CELLS
    x_in = keras.Input((1200,))
    layer = MaskedDense(1024, mask=mask, impl="sparse", name="big")
    model = keras.Model(x_in, layer(x_in))
    x = rng.normal(size=(16, 1200)).astype("float32")
    y = rng.normal(size=(16, 1024)).astype("float32")
    inspector = GradientInspector(model, x, y)
    assert inspector._probes[0]._xla_worthwhile()
    inspector._on_message(inspector, {"type": "hello"}, [])
    for step in range(2):
        header, buffers = inspector.comm.tiles()[-1]
        dense = inspector.gradients["big"].toarray()
        pooled = _pooled(dense, header["rows"], header["cols"])
        np.testing.assert_allclose(
            _decode(header, buffers)["g"].reshape(pooled.shape), pooled, rtol=1e-6
        )
        info = inspector.layers[0]
        np.testing.assert_allclose(info["norm"], np.linalg.norm(dense), rtol=1e-5)
        assert info["zero_share"] == np.count_nonzero(dense == 0) / dense.size
        top = {(r["i"], r["j"]) for r in inspector.top}
        largest = np.argsort(-np.abs(dense), axis=None)[: len(top)]
        assert top == {tuple(int(v) for v in np.unravel_index(f, dense.shape)) for f in largest}
        for row in inspector.top:
            np.testing.assert_allclose(row["gradient"], dense[row["i"], row["j"]], rtol=1e-6)
        if step == 0:  # a new topology with more connections: the summary compiles again
            layer.set_mask(sp.random_array((1200, 1024), density=0.08, rng=rng, format="csr") != 0)
            inspector.refresh()


def test_hidden_unit_target(question1):
    model, _, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    assert inspector.targets == [["out", 2], ["hidden", 4]]
    inspector.target = ("hidden", 2)
    reference = _tape_hidden(model, x, 2)
    np.testing.assert_allclose(inspector.gradients["hidden"], reference, rtol=1e-6, atol=1e-9)
    assert not inspector.gradients["out"].any()


def _tape_hidden(model, x, unit):
    hidden = model.get_layer("hidden")
    with tf.GradientTape() as tape:
        kernel = tf.where(hidden.kernel_mask, hidden.kernel, 0.0)
        value = tf.reduce_sum(tf.sigmoid(x @ kernel + hidden.bias)[:, unit])
    return tape.gradient(value, hidden.kernel).numpy()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda m, o, x, y: GradientInspector("net", x, y), ["Keras model", "str"]),
        (lambda m, o, x, y: GradientInspector(m, x[:, :2], y), ["(64, 2)", "(batch, 3)"]),
        (lambda m, o, x, y: GradientInspector(m, x, y[:10]), ["same batch size", "64", "10"]),
        (lambda m, o, x, y: GradientInspector(m, x[:0], y[:0]), ["empty"]),
        (lambda m, o, x, y: GradientInspector(m, x, y, op="keep_first"), ["TrainOp", "str"]),
        (lambda m, o, x, y: GradientInspector(m, x, y, target=("out", 2)), ["target", "0..1"]),
        (lambda m, o, x, y: GradientInspector(m, x, y, target="nope[0]"), ["target", "'out'"]),
        (lambda m, o, x, y: GradientInspector(m, x, y[:, :1]), ["(64, 1)", "(batch, 2)"]),
        (lambda m, o, x, y: GradientInspector(m, x, y, loss="nll"), ["unknown loss"]),
    ],
)
def test_bad_input_names_what_was_expected(question1, make, words):
    model, ops, (x, y) = question1
    with pytest.raises(MaskMagicError) as info:
        make(model, ops, x, y)
    for word in words:
        assert word in str(info.value)


def test_other_bad_input(question1, data342):
    model, ops, (x, y) = question1
    other = make_342()
    with pytest.raises(MaskMagicError, match="not 'net'"):
        GradientInspector(model, x, y, op=TrainOp(other))
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(MaskMagicError, match="not built"):
        GradientInspector(unbuilt, x, y)
    x_in = keras.Input((3,))
    no_kernel = keras.Model(x_in, keras.layers.Activation("relu")(x_in))
    with pytest.raises(MaskMagicError, match="no layer with a 2-D kernel"):
        GradientInspector(no_kernel, x, x)
    inspector = GradientInspector(model, x, y)
    with pytest.raises(MaskMagicError, match="hidden, out"):
        inspector.zoom("nope", 1, 1)
    with pytest.raises(MaskMagicError, match="target"):
        inspector.target = ("out", -1)
    assert inspector.target == "loss"


def _open_widgets():
    from ipywidgets.widgets.widget import _instances

    return set(_instances)


@pytest.mark.parametrize("failure", ["target", "refresh"])
def test_a_failing_constructor_closes_its_comm(recorded, question1, monkeypatch, failure):
    model, ops, (x, y) = question1
    kwargs = {}
    if failure == "target":
        kwargs["target"] = ("out", 2)
    else:

        def broken(self):
            raise ValueError("boom")

        monkeypatch.setattr(GradientInspector, "refresh", broken)
    before = _open_widgets()
    with pytest.raises(MaskMagicError, match="target" if failure == "target" else "boom"):
        GradientInspector(model, x, y, **kwargs)
    assert _open_widgets() == before
    assert recorded and all(c._closed for c in recorded)
    assert recorded[-1].messages[-1][0] == "comm_close"


def test_an_oversized_message_is_a_maskmagic_error_and_nothing_is_sent(
    recorded, question1, monkeypatch
):
    model, ops, (x, y) = question1
    inspector = GradientInspector(model, x, y)
    sent = len(inspector.comm.messages)
    monkeypatch.setattr(tiles, "MAX_MESSAGE_BYTES", 100)
    with pytest.raises(MaskMagicError, match="over its limit of 100 bytes"):
        inspector._send_tiles()
    assert len(inspector.comm.messages) == sent
    inspector._on_message(inspector, {"type": "hello"}, [])
    assert inspector.error.startswith("MaskMagicError: ") and "100 bytes" in inspector.error


# ----------------------------------------------------------------------------- the line magic


def test_from_magic_builds_an_inspector(question1):
    model, ops, (x, y) = question1
    namespace = {"net": model, "x": x, "y": y, "keep": ops["keep_first"]}
    inspector = line_magic("grad_inspector", "net x y --op keep --target out[1]", namespace)
    assert inspector.op_name == "keep_first" and inspector.target == ("out", 1)
    inspector = line_magic("grad_inspector", "net x[:8] y[:8]", namespace)
    assert inspector.target == "loss" and inspector._x.shape[0] == 8
    # Nested scopes (comprehensions, lambdas) see the notebook's names too.
    inspector = line_magic(
        "grad_inspector", "net '[x[i] for i in range(8)]' (lambda:y[:8])()", namespace
    )
    assert inspector._x.shape == (8, 3)
    np.testing.assert_array_equal(inspector._x.numpy(), x[:8])


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("net x", ["required: Y", "NET X Y"]),
        ("net x y z", ["unrecognized arguments: z", "NET X Y"]),
        ("net x nope", ["'nope' is not defined", "targets"]),
        ("x x y", ["NET 'x'", "ndarray", "Keras model"]),
        ("net x y --op x", ["--op 'x'", "ndarray", "TrainOp"]),
        ("net x y --op", ["argument --op: expected one argument"]),
        ("net x y --fast", ["unrecognized arguments: --fast"]),
        ("net x[:: y", ["cannot evaluate", "SyntaxError"]),
        ("net 'x y", ["No closing quotation"]),
        ("net x y --target out[7]", ["target", "0..1"]),
    ],
)
def test_from_magic_errors(question1, line, words):
    model, ops, (x, y) = question1
    namespace = {"net": model, "x": x, "y": y, "keep": ops["keep_first"]}
    with pytest.raises(MaskMagicError) as info:
        line_magic("grad_inspector", line, namespace)
    for word in words:
        assert word in str(info.value)


def test_line_magic_in_ipython(question1):
    from IPython.core.interactiveshell import InteractiveShell

    model, ops, (x, y) = question1
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "maskmagic")
        shell.user_ns.update(net=model, x=x, y=y, keep=ops["keep_first"])
        inspector = shell.run_line_magic("grad_inspector", "net x y --op keep")
        assert isinstance(inspector, GradientInspector)
        result = shell.run_cell("%grad_inspector net x", store_history=False)
        assert isinstance(result.error_in_exec, MaskMagicError)
    finally:
        InteractiveShell.clear_instance()


# ----------------------------------------------------------------------------- static image


def test_mimebundle_has_the_widget_view_and_a_png(question1):
    model, ops, (x, y) = question1
    inspector = GradientInspector(model, x, y, op=ops["keep_first"])
    data, _ = inspector._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    png = base64.b64decode(data["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == inspector.png()
    inspector.view = "would_be"
    inspector.scale = "symlog"
    assert inspector.png() != png
    assert "GradientInspector of net" in data["text/plain"]


def test_widget_files_are_packaged_and_offline():
    static = REPO / "maskmagic" / "widgets" / "static"
    source = (static / "inspector.js").read_text()
    assert "export default" in source and "http" not in source.replace("http-equiv", "")
    assert "import " not in source
    assert (static / "inspector.css").read_text().strip()
    assert str(GradientInspector._esm).startswith("// maskmagic GradientInspector")
    for name in ("target", "view", "scale", "layers", "top", "step_info"):
        assert GradientInspector.class_traits()[name].help


@pytest.mark.slow
def test_exported_notebook_without_widget_state_shows_the_image(tmp_path, monkeypatch):
    import nbclient
    import nbconvert
    import nbformat

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    cells = [
        "import numpy as np\nfrom maskmagic import build\n"
        "from maskmagic.widgets.inspector import GradientInspector",
        f"net, ops = build({QUESTION1!r}, seed=0)\n"
        "x = np.random.default_rng(0).normal(size=(16, 3)).astype('float32')\n"
        "y = np.random.default_rng(1).normal(size=(16, 2)).astype('float32')",
        "GradientInspector(net, x, y, op=ops['keep_first'])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3").execute(cwd=str(tmp_path))
    output = nb.cells[2].outputs[0]
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    assert "image/png" in output["data"]
    nb.metadata.pop("widgets", None)  # exported without widget state
    (tmp_path / "exported.ipynb").write_text(json.dumps(nb))
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    image = output["data"]["image/png"].replace("\n", "")
    assert f"data:image/png;base64,{image}" in html
    assert base64.b64decode(image).startswith(b"\x89PNG")


def test_step_with_a_hold_reports_held_drift_on_references_and_fresh_inputs(data342):
    """Catches: the held readout measured on the wrong inputs or missing for a hold= op."""
    from maskmagic.training import TrainOp

    x, y = data342
    model, _ = build(QUESTION1, seed=0)
    reference = x[:8]
    op = TrainOp(model, "mse", "adam", hold="out[0]", hold_on=reference, name="held")
    inspector = GradientInspector(model, x, y, op=op)
    before = model(reference).numpy()[:, 0]
    inspector.step()
    hold = inspector.step_info["hold"]
    measured = np.abs(model(reference).numpy()[:, 0] - before).max()
    # the same float32 forward pass on the same inputs: equal up to evaluation order
    assert hold["reference"] == pytest.approx(measured, abs=1e-7)
    assert hold["references"] == 8 and hold["rank"] == 8 and hold["tol"] == 1e-6
    assert hold["reference"] <= 1e-5 < hold["fresh"]  # held on 8 inputs, not on fresh ones
    plain = GradientInspector(model, x, y, op=TrainOp(model, "mse", "sgd"))
    plain.step()
    assert "hold" not in plain.step_info
