"""Kernel windows of the gradient inspector: a click on a conv pair (i, j) shows its taps."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedConv1D, MaskedConv2D
from maskmagic.training import TrainOp
from maskmagic.widgets.inspector import GradientInspector, windows

from .test_conv import C3_TABLE

MSE = keras.losses.MeanSquaredError()


def _c3_model(mask):
    x_in = keras.Input((9, 9, 6), name="s2")
    c3 = MaskedConv2D(16, (3, 4), mask=mask, activation="tanh", name="c3")(x_in)
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(c3))
    return keras.Model(x_in, out)


def _kernel_mask():
    """C3's table, and in pair (0, 0) (connected) two single taps switched off."""
    mask = np.broadcast_to(C3_TABLE, (3, 4, 6, 16)).copy()
    mask[0, 1, 0, 0] = mask[2, 3, 0, 0] = False
    return mask


@pytest.fixture
def c3():
    model = _c3_model(_kernel_mask())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 9, 9, 6)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    return model, x, y


def _plain_twin(model):
    """The same network with a plain Conv2D holding the effective kernel: its kernel gradient is
    the would-be gradient (computed without any maskmagic code)."""
    layer = model.get_layer("c3")
    x_in = keras.Input((9, 9, 6))
    conv = keras.layers.Conv2D(16, (3, 4), activation="tanh")
    out = keras.layers.Dense(2)
    twin = keras.Model(x_in, out(keras.layers.Flatten()(conv(x_in))))
    conv.set_weights([layer.effective_kernel(), layer.effective_bias()])
    out.set_weights(model.get_layer("out").get_weights())
    return twin, conv


def _tape(model, x, y, variable, target=None):
    with tf.GradientTape() as tape:
        prediction = model(x)
        objective = MSE(y, prediction) if target is None else tf.reduce_sum(prediction[:, target])
    return tape.gradient(objective, variable).numpy()


# Inspector and tape compute one value twice (a compiled graph under a StatelessScope vs an eager
# pass; the conv backprop may sum the batch and positions in another order, and oneDNN may pick
# another algorithm): equal to float32 rounding of sums over 8 x 7 x 6 positions, so rtol 1e-5 and
# an atol of 1e-6 of the window's largest value for entries that cancel to near zero.
def _close(actual, expected):
    atol = 1e-6 * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=atol)


def test_window_equals_the_tape_gradient_slice_and_masked_taps_are_exactly_zero(c3):
    # Catches: a window sliced on the wrong axes (i/j swapped, taps transposed), the would-be
    # gradient shown in the gradient view (masked taps non-zero), a masked pair showing the
    # gradient (zeros) in the would-be view, and an update view ignoring the op's update set.
    model, x, y = c3
    layer = model.get_layer("c3")
    grad = _tape(model, x, y, layer.kernel)
    twin, conv = _plain_twin(model)
    would_be = _tape(twin, x, y, conv.kernel)
    op = TrainOp(model, loss="mse", optimizer="sgd", select="c3[5]")
    inspector = GradientInspector(model, x, y, op=op, loss="mse")
    mask = _kernel_mask()
    assert not C3_TABLE[3, 0] and C3_TABLE[0, 5]  # pair (3, 0) masked, (0, 5) in the update set
    for i, j in [(0, 0), (0, 5), (3, 0), (5, 15)]:
        window = inspector.kernel_window("c3", i, j)
        assert window.shape == (3, 4) and window.dtype == np.float32
        _close(window, grad[:, :, i, j])
        assert np.all(window[~mask[:, :, i, j]] == 0.0)  # exactly zero, not merely small
        _close(inspector.kernel_window("c3", i, j, view="would_be"), would_be[:, :, i, j])
        update = inspector.kernel_window("c3", i, j, view="update")
        np.testing.assert_array_equal(update, window if j == 5 else np.zeros_like(window))
    assert np.all(inspector.kernel_window("c3", 3, 0) == 0.0)
    assert np.all(inspector.kernel_window("c3", 3, 0, view="would_be") != 0.0)
    tapped = inspector.kernel_window("c3", 0, 0)
    assert tapped[0, 1] == 0.0 and tapped[2, 3] == 0.0 and np.count_nonzero(tapped) == 10
    # The view trait is the default view.
    inspector.view = "would_be"
    np.testing.assert_array_equal(
        inspector.kernel_window("c3", 3, 0), inspector.kernel_window("c3", 3, 0, "would_be")
    )
    inspector.close()


def test_window_follows_the_target(c3):
    # Catches: a window kept from the previous target (the kernel gradient not refreshed).
    model, x, y = c3
    layer = model.get_layer("c3")
    inspector = GradientInspector(model, x, y, loss="mse")
    inspector.target = ("out", 1)
    _close(inspector.kernel_window("c3", 1, 2), _tape(model, x, y, layer.kernel, 1)[:, :, 1, 2])
    inspector.close()


def test_conv1d_window_is_one_row_of_taps():
    x_in = keras.Input((12, 3))
    conv = MaskedConv1D(4, 5, mask=np.eye(3, 4, dtype=bool), name="c")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(1)(keras.layers.Flatten()(conv)))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 12, 3)).astype("float32"), rng.normal(size=(4, 1))
    inspector = GradientInspector(model, x, y)
    grad = _tape(model, x, y.astype("float32"), model.get_layer("c").kernel)
    _close(inspector.kernel_window("c", 1, 1), grad[:, 1, 1])
    assert np.all(inspector.kernel_window("c", 1, 2) == 0.0)
    inspector.close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("out", 0, 0), "conv layers only"),
        (("c3", 6, 0), "0..5"),
        (("c3", 0, 16), "0..15"),
        (("c3", True, 0), "must be an int"),
        (("c3", 0, 1.0), "must be an int"),
        (("nope", 0, 0), "layer must be one of"),
    ],
)
def test_bad_window_arguments_name_what_was_expected(c3, args, words):
    model, x, y = c3
    inspector = GradientInspector(model, x, y, loss="mse")
    with pytest.raises(MaskMagicError, match=words):
        inspector.kernel_window(*args)
    with pytest.raises(MaskMagicError, match="view must be one of"):
        inspector.kernel_window("c3", 0, 0, view="grad")
    inspector.close()


class _Sent:
    """Records the custom messages an inspector sends."""

    def __init__(self, inspector: GradientInspector) -> None:
        self.messages: list[tuple[dict, list[bytes]]] = []
        inspector.send = lambda content, buffers=None: self.messages.append(
            (content, [bytes(b) for b in buffers or []])
        )

    def windows(self) -> list[tuple[dict, dict]]:
        found = []
        for header, buffers in self.messages:
            if header["type"] == "window":
                shape = (header["rows"], header["cols"])
                arrays = {
                    name: np.frombuffer(b, "<u1" if name == "flags" else "<f4").reshape(shape)
                    for name, b in zip(header["buffers"], buffers)
                }
                found.append((header, arrays))
        return found


def test_window_message_answers_with_every_view_and_again_after_a_refresh(c3):
    # Catches: a request that is not answered, an answer holding another pair or the whole
    # kernel, or a shown window left stale after the gradients are computed again.
    model, x, y = c3
    op = TrainOp(model, loss="mse", optimizer="sgd", select="c3[5]")
    inspector = GradientInspector(model, x, y, op=op, loss="mse")
    sent = _Sent(inspector)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector._on_message(inspector, {"type": "window", "layer": 0, "i": 0, "j": 0}, [])
    assert inspector.window_shown == ("c3", 0, 0)
    ((header, arrays),) = sent.windows()
    assert (header["name"], header["i"], header["j"], header["rows"], header["cols"]) == (
        "c3",
        0,
        0,
        3,
        4,
    )
    assert "prj" not in arrays  # an op without hold=: no projected view
    for view, key in windows.VIEW_KEYS.items():
        if view != "projected":
            np.testing.assert_array_equal(arrays[key], inspector.kernel_window("c3", 0, 0, view))
    assert arrays["flags"][0, 1] == 1 and arrays["flags"][2, 3] == 1  # masked taps
    assert np.all(arrays["flags"][~(arrays["flags"] == 1)] == 4)  # outside c3[5]: frozen
    np.testing.assert_array_equal(arrays["w"], model.get_layer("c3").kernel.numpy()[:, :, 0, 0])
    inspector.step()
    header, arrays = sent.windows()[-1]
    assert header["revision"] == inspector.revision and header["i"] == 0
    np.testing.assert_array_equal(arrays["g"], inspector.kernel_window("c3", 0, 0, "gradient"))
    inspector.close()


MALFORMED = [
    ("not a known key", {"type": "window", "layer": 0, "i": 1, "j": 1, "all": True}, "keys"),
    ("bool i", {"type": "window", "layer": 0, "i": True, "j": 1}, "'i'"),
    ("float j", {"type": "window", "layer": 0, "i": 1, "j": 1.0}, "'j'"),
    ("string layer", {"type": "window", "layer": "c3", "i": 1, "j": 1}, "'layer'"),
    ("j out of range", {"type": "window", "layer": 0, "i": 1, "j": 16}, "0..15"),
    ("negative i", {"type": "window", "layer": 0, "i": -1, "j": 1}, "0..5"),
    ("dense layer", {"type": "window", "layer": 1, "i": 0, "j": 0}, "not a convolution"),
    ("missing j", {"type": "window", "layer": 0, "i": 1}, "'j'"),
]


@pytest.mark.parametrize(("label", "content", "word"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_window_request_warns_and_changes_nothing(c3, label, content, word):
    # Catches: a malformed request that shows another window, sends anything, clears the
    # widget's error line, or fails inside the kernel's comm handler.
    model, x, y = c3
    inspector = GradientInspector(model, x, y, loss="mse")
    sent = _Sent(inspector)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector.show_window("c3", 2, 3)
    inspector.error = "an earlier error"
    before = len(sent.messages)
    with pytest.warns(UserWarning, match="refused a message from the front end") as record:
        inspector._on_message(inspector, content, [])
    assert word in str(record[0].message)
    assert inspector.window_shown == ("c3", 2, 3)
    assert len(sent.messages) == before
    assert inspector.error == "an earlier error"
    inspector.close()


def test_large_window_sends_at_most_max_taps_per_axis():
    # Catches: a message growing with the kernel (a long 1-D kernel sent whole).
    x_in = keras.Input((140, 2))
    conv = MaskedConv1D(3, 100, name="long")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(1)(keras.layers.Flatten()(conv)))
    rng = np.random.default_rng(2)
    inspector = GradientInspector(model, rng.normal(size=(2, 140, 2)), rng.normal(size=(2, 1)))
    sent = _Sent(inspector)
    inspector._on_message(inspector, {"type": "hello"}, [])
    inspector._on_message(inspector, {"type": "window", "layer": 0, "i": 1, "j": 2}, [])
    ((header, arrays),) = sent.windows()
    assert (header["kh"], header["kw"], header["rows"], header["cols"]) == (1, 100, 1, 64)
    window = inspector.kernel_window("long", 1, 2)
    assert window.shape == (100,)
    np.testing.assert_array_equal(arrays["g"][0], window[: windows.MAX_TAPS])
    inspector.close()
