"""hold=: the XLA-compiled step of small ops, its fallback, and the parameter count's upkeep."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from maskmagic.training import TrainOp
from maskmagic.training import hold as holds

from .cells import SEED_X, SEED_Y
from .conftest import make_342

X = np.array(SEED_X, "float32")
Y = np.array(SEED_Y, "float32")
DONE_DRIFT = 1e-5


def _train(steps=20, loss="mse", **options):
    keras.utils.set_random_seed(0)
    model = make_342()
    op = TrainOp(model, loss, keras.optimizers.SGD(0.1, momentum=0.9), hold="out[0]", **options)
    before = model(X).numpy()[:, 0]
    losses = [op(X, Y) for _ in range(steps)]
    return model, op, before, losses


def test_small_hold_step_is_xla_compiled_and_matches_the_graph_step(monkeypatch):
    """Catches: the XLA step doing other math than the graph step (its write-back, projection
    or corrections), or small ops silently left on the slow graph step."""
    model, op, before, losses = _train()
    assert op.xla
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT
    monkeypatch.setattr(holds, "XLA_MAX_ENTRIES", -1)
    graph_model, graph_op, _, graph_losses = _train()
    assert not graph_op.xla
    # The same steps up to rounding (XLA orders sums differently).
    np.testing.assert_allclose(losses, graph_losses, rtol=1e-4, atol=1e-6)
    for a, b in zip(model.get_weights(), graph_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_op_xla_refuses_falls_back_to_the_graph_step_and_holds():
    """Catches: a hold= op that fails (or runs half a step) when tf2xla refuses an op, here
    ``tf.print`` in a custom loss."""
    printed = []

    def loss(y, p):
        tf.print("step")
        printed.append(1)  # traced (graph and the refused XLA attempt)
        return tf.reduce_mean(tf.square(y - p))

    model, op, before, losses = _train(steps=5, loss=loss)
    assert not op.xla and printed
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT
    assert op.hold_report.steps == 5 and op.hold_report.held
    assert losses[-1] < losses[0]


def test_large_ops_stay_on_the_graph_step(monkeypatch):
    """Catches: XLA forced on ops above XLA_MAX_ENTRIES (its CPU products are slower there)."""
    monkeypatch.setattr(holds, "XLA_MAX_ENTRIES", 25)  # the 3-4-2 net has 26 entries
    model, op, before, _ = _train(steps=3)
    assert not op.xla
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT


def test_parameter_count_follows_a_mask_change_between_steps():
    """Catches: a parameter count (room, cache check) computed once and never again, so a
    set_mask between steps reports and checks the old count."""
    model, op, _, _ = _train(steps=3)
    assert op.hold_report.parameters == 26
    hidden = model.get_layer("hidden")
    mask = np.ones((3, 4), bool)
    mask[0, :2] = False
    hidden.set_mask(mask)  # changes the outputs: held from here
    before = model(X).numpy()[:, 0]
    kernel = hidden.kernel.numpy().copy()
    for _ in range(3):
        op(X, Y)
    assert op.hold_report.parameters == 24 and op.hold_report.held
    np.testing.assert_array_equal(hidden.kernel.numpy()[~mask], kernel[~mask])
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT
