"""hold=: every selected parameter trains while held units keep their values on reference inputs."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic import _compat
from maskmagic.errors import MaskMagicError, SelectorError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp
from maskmagic.training.hold import HoldWarning

from .cells import SEED_X, SEED_Y
from .conftest import make_342

X = np.array(SEED_X, "float32")
Y = np.array(SEED_Y, "float32")
OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
}
DONE_DRIFT = 1e-5  # the criterion over 50 steps (each step is held to 1e-6 relative)


def _error1(model):
    return float(np.mean((model(X).numpy()[:, 1] - Y[:, 1]) ** 2))


def _run(optimizer, steps=50, **options):
    keras.utils.set_random_seed(0)
    model = make_342()
    op = TrainOp(model, "mse", optimizer, **options)
    before = model(X).numpy()
    kernel = model.get_layer("hidden").kernel.numpy().copy()
    error_before = _error1(model)
    for _ in range(steps):
        op(X, Y)
    return model, op, before, kernel, error_before


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_done_means_hold_keeps_output0_while_every_weight_trains(name):
    """Catches: a hold that drifts (no corrections), or one that freezes the hidden layer."""
    model, op, before, kernel, error_before = _run(OPTIMIZERS[name](), hold="out[0]")
    after = model(X).numpy()
    assert np.abs(after[:, 0] - before[:, 0]).max() <= DONE_DRIFT
    assert np.abs(model.get_layer("hidden").kernel.numpy() - kernel).max() > 0.05
    assert _error1(model) < 0.5 * error_before
    report = op.hold_report
    assert report.held and report.rank == 8 and report.constraints == 8
    assert report.parameters == 26 and report.steps == 50


def test_hold_with_sgd_ends_at_or_below_freeze():
    """Catches: a projection that throws away more than freeze= does (e.g. a wrong null space)."""
    held, *_ = _run(keras.optimizers.SGD(0.1, momentum=0.9), hold="out[0]")
    frozen, *_ = _run(keras.optimizers.SGD(0.1, momentum=0.9), freeze="out[0]")
    assert _error1(held) <= _error1(frozen)


def _held_jacobian(model, x):
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        values = model(x)[:, 0]
    jac = tape.jacobian(values, variables)
    return np.concatenate([j.numpy().reshape(len(x), -1) for j in jac], axis=1)


def test_momentum_accumulates_only_projected_gradients():
    """Catches: the optimizer seeing the raw gradient (only its update projected), which drifted
    by 0.17 in the issue's prototype: after one step the momentum lies in J's null space."""
    keras.utils.set_random_seed(0)
    model = make_342()
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    op = TrainOp(model, "mse", optimizer, hold="out[0]")
    jac = _held_jacobian(model, X)  # at the point where the gradient is projected
    op(X, Y)
    momentum = np.concatenate(
        [
            _compat.optimizer_slots(optimizer, v)[0].numpy().ravel()
            for v in model.trainable_variables
        ]
    )
    raw = np.linalg.norm(jac, axis=1) * np.linalg.norm(momentum)
    # float32 products of ~26 terms: 1e-5 of the Cauchy-Schwarz bound is far above rounding
    # (~1e-7) and far below an unprojected gradient (same order as the bound).
    assert np.all(np.abs(jac @ momentum) <= 1e-5 * raw)
    assert np.linalg.norm(momentum) > 0


def test_reference_inputs_differ_from_the_batch():
    """Catches: hold_on ignored (the batch used as reference instead)."""
    keras.utils.set_random_seed(0)
    model = make_342()
    reference = X[:4] + 0.25
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), hold="out[0]", hold_on=reference)
    before = model(reference).numpy()[:, 0]
    for _ in range(20):
        op(X, Y)
    assert np.abs(model(reference).numpy()[:, 0] - before).max() <= DONE_DRIFT
    assert op.hold_report.constraints == 4


def test_no_room_with_fixed_reference_is_an_error():
    """Catches: a hold that silently freezes everything (5 parameters, rank 5)."""
    model = make_342()
    with pytest.raises(MaskMagicError, match="no room.*rank 5 >= the 5 parameters"):
        TrainOp(model, "mse", "sgd", select="out[0]", hold="out[0]", hold_on=X)


def test_no_room_with_batch_reference_warns_and_changes_nothing():
    model = make_342()
    op = TrainOp(
        model, "mse", keras.optimizers.SGD(0.1, momentum=0.9), select="out[0]", hold="out[0]"
    )
    weights = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.warns(HoldWarning, match="no room"):
        op(X, Y)
    for before, variable in zip(weights, model.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), before)  # bit-identical
    assert op.hold_report.room == 0


def test_room_left_with_few_references_trains():
    model = make_342()
    op = TrainOp(model, "mse", "sgd", select="out[0]", hold="out[0]", hold_on=X[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op(X, Y)
    assert op.hold_report.room == 3


def test_masked_and_unselected_entries_stay_bit_identical():
    """Catches: corrections J^T alpha written onto masked connections or entries outside the op."""
    hidden_mask = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], bool)
    model = make_342(hidden_mask=hidden_mask)
    hidden = model.get_layer("hidden")
    hidden.kernel.assign(np.random.default_rng(3).normal(size=(3, 4)).astype("float32"))
    op = TrainOp(
        model, "mse", keras.optimizers.Adam(0.01), select=["hidden.kernel", "out"], hold="out[0]"
    )
    kernel, bias = hidden.kernel.numpy().copy(), hidden.bias.numpy().copy()
    before = model(X).numpy()[:, 0]
    for _ in range(10):
        op(X, Y)
    np.testing.assert_array_equal(hidden.kernel.numpy()[~hidden_mask], kernel[~hidden_mask])
    np.testing.assert_array_equal(hidden.bias.numpy(), bias)  # not selected
    assert np.abs(hidden.kernel.numpy() - kernel)[hidden_mask].max() > 0
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT
    assert op.hold_report.parameters == 8 + 10


def test_freeze_and_hold_combine():
    """freeze=out[2] stays exact on every input; hold=out[0] holds on the references."""
    x = keras.Input((3,), name="x")
    h = keras.layers.Dense(4, activation="sigmoid", name="hidden")(x)
    out_mask = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    from maskmagic.layers import MaskedDense

    model = keras.Model(x, MaskedDense(3, mask=out_mask, name="out")(h))
    y = np.concatenate([Y, Y[:, :1]], axis=1)
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), freeze="out[2]", hold="out[0]")
    probe = np.random.default_rng(0).normal(size=(100, 3)).astype("float32")
    before, probe_before = model(X).numpy(), model(probe).numpy()
    kernel = model.get_layer("hidden").kernel.numpy().copy()
    for _ in range(20):
        op(X, y)
    np.testing.assert_array_equal(model(probe).numpy()[:, 2], probe_before[:, 2])
    assert np.abs(model(X).numpy()[:, 0] - before[:, 0]).max() <= DONE_DRIFT
    moved = np.abs(model.get_layer("hidden").kernel.numpy() - kernel)
    assert moved[:, :3].max() > 0 and moved[:, 3].max() == 0


@pytest.mark.parametrize(
    "options, match",
    [
        ({"hold": "out[5]"}, "out of range"),
        ({"hold": "out.kernel"}, "hold expects units"),
        ({"hold": "nope[0]"}, "nope"),
        ({"hold": "out[0]", "hold_on": np.zeros((8, 4))}, r"shape \(samples, 3\).*\(8, 4\)"),
        ({"hold": "out[0]", "hold_on": np.zeros((0, 3))}, "no samples"),
        ({"hold": "out[0]", "hold_on": [[1, "a", 2]]}, "hold_on must be an array"),
        ({"hold": "out[0]", "hold_on": np.full((2, 3), np.nan)}, "NaN"),
        ({"hold_on": X}, "hold_on= is given without hold="),
        ({"hold": "out[0]", "hold_tol": 0}, "between 0 and 1"),
        ({"hold": "out[0]", "hold_tol": "small"}, "hold_tol must be a number"),
        ({"hold": []}, "at least one unit"),
    ],
)
def test_bad_hold_arguments_are_clear_errors(options, match):
    with pytest.raises(MaskMagicError, match=match):
        TrainOp(make_342(), "mse", "sgd", **options)


def test_bad_selector_error_is_a_selector_error():
    with pytest.raises(SelectorError):
        TrainOp(make_342(), "mse", "sgd", hold="out[0, 1]")


def test_report_is_none_before_the_first_step_and_without_hold():
    op = TrainOp(make_342(), "mse", "sgd", hold="out[0]")
    assert op.hold_report is None
    assert TrainOp(make_342(), "mse", "sgd").hold_report is None
    assert "hold=out[0]" in repr(op)


def test_hold_on_hidden_units_and_two_layers():
    """hold=out[0],hidden[3]: both the output and a hidden unit stay on the references."""
    model = make_342()
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), hold=["out[0]", "hidden[3]"])
    hidden = keras.Model(model.input, model.get_layer("hidden").output)
    before, hidden_before = model(X).numpy()[:, 0], hidden(X).numpy()[:, 3]
    for _ in range(10):
        op(X, Y)
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT
    assert np.abs(hidden(X).numpy()[:, 3] - hidden_before).max() <= DONE_DRIFT
    assert op.hold_report.constraints == 16


def _jacobians(model, hold, allowed_fn):
    """The structured and the explicit Jacobian of one hold, on the same point and masks."""
    from maskmagic.training import jacobian

    op = TrainOp(model, "mse", "sgd", hold=hold)
    held = op.hold
    allowed = allowed_fn(op)
    x = tf.constant(X)
    structured = held._jacobian(held._select, x, allowed)
    explicit = jacobian.ExplicitJacobian(held.held, x, held._variables, allowed)
    return structured, explicit, held._variables


@pytest.mark.parametrize("partial", [False, True])
def test_structured_jacobian_equals_the_explicit_one(partial, monkeypatch):
    """Catches: a wrong factor (A, D), a missed mask or update mask, a wrong masked Gram, a
    float32 Gram (the path of large Grams, forced here) off by more than its declared noise."""
    from maskmagic.training import jacobian

    monkeypatch.setattr(jacobian, "FLOAT32_MIN_WORK", 0)
    hidden_mask = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], bool) if partial else None
    model = make_342(hidden_mask=hidden_mask)
    model.get_layer("hidden").set_bias_mask(np.array([1, 0, 1, 1], bool))
    rng = np.random.default_rng(5)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))

    def allowed(op):
        masks = [None] * len(op.hold._variables)
        if partial:  # an update mask on the output kernel too
            masks[2] = tf.constant(np.array([[1, 0], [1, 1], [0, 1], [1, 1]], bool))
        return masks

    structured, explicit, variables = _jacobians(model, ["out[0]", "hidden[2]"], allowed)
    assert isinstance(structured, jacobian.DenseJacobian)
    # out is computed on its held unit only (nothing reads it); hidden feeds out: all units
    assert [p[0].layer.name for p in structured._parts if p[0].cols is not None] == ["out"]
    gram, exact = structured.gram().numpy(), explicit.gram().numpy()
    # J J^T v without the Gram (the solves' product): float64 from the same float32 factors
    # (full layers) or float32 kernel products (partial W, like apply): 1e-5 of |G||v|.
    v = rng.normal(size=16)
    np.testing.assert_allclose(
        structured.gram_matvec(tf.constant(v)).numpy(),
        exact @ v,
        rtol=0,
        atol=1e-5 * np.abs(exact).max() * np.abs(v).sum(),
    )
    if partial:
        # Both Grams are float64 sums of the same float32 products, in different orders: 1e-9.
        np.testing.assert_allclose(gram, exact, rtol=1e-9, atol=1e-9)
    else:
        # Every entry allowed: the structured Gram's products run in float32; its declared noise
        # (4 times the typical float32 rounding, ~5e-7 of max(diag) here) bounds the error, and
        # stays far below any wrong entry (order 1). Its ridge and rank threshold rely on it.
        assert 0 < structured.noise < 1e-5
        bound = structured.noise * np.abs(np.diag(exact)).max()
        np.testing.assert_allclose(gram, exact, rtol=0, atol=bound)
    vectors = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables]
    # The structured J v runs its kernel product in float32 (rounding ~1e-7 per term, terms
    # of order 1): 1e-5 is far above that and far below any wrong entry (order 1).
    np.testing.assert_allclose(
        structured.apply(vectors), explicit.apply(vectors), rtol=1e-5, atol=1e-5
    )
    alpha = tf.constant(rng.normal(size=16), tf.float64)
    for a, b in zip(structured.transpose(alpha), explicit.transpose(alpha)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # cast back to float32


def test_float32_gram_path_keeps_the_hold(monkeypatch):
    """Catches: a float32-factored Gram (large nets) whose hold drifts or whose projection
    leaks (forced on the small net; same criteria as the float64 path)."""
    from maskmagic.training import jacobian

    monkeypatch.setattr(jacobian, "FLOAT32_MIN_WORK", 0)
    model, op, before, kernel, error_before = _run(keras.optimizers.Adam(0.01), hold="out[0]")
    assert np.abs(model(X).numpy()[:, 0] - before[:, 0]).max() <= DONE_DRIFT
    assert np.abs(model.get_layer("hidden").kernel.numpy() - kernel).max() > 0.05
    assert _error1(model) < 0.5 * error_before
    assert op.hold_report.held


def test_dependent_constraints_count_once():
    """The same reference input twice: 16 constraints of rank 8, and the hold still holds."""
    model = make_342()
    reference = np.concatenate([X, X])
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), hold="out[0]", hold_on=reference)
    before = model(X).numpy()[:, 0]
    for _ in range(5):
        op(X, Y)
    assert op.hold_report.constraints == 16 and op.hold_report.rank == 8
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT


def test_plain_dense_and_other_layers_use_the_explicit_jacobian_and_hold():
    """A net with a layer that is not Dense-like (LayerNormalization) falls back and holds."""
    from maskmagic.training import jacobian

    x = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="hidden")(x)
    h = keras.layers.LayerNormalization(name="norm")(h)
    model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), hold="out[0]")
    assert isinstance(
        op.hold._jacobian(op.hold._select, tf.constant(X), [None] * 6), jacobian.ExplicitJacobian
    )
    before = model(X).numpy()[:, 0]
    for _ in range(10):
        op(X, Y)
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT


def _momentum_leak(model, optimizer, reference):
    """max |J m| / (|J rows| |m|) after a step: 0 when the momentum is projected."""
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        values = model(reference)[:, 0]
    jac = tape.jacobian(values, variables)
    jac = np.concatenate([j.numpy().reshape(len(reference), -1) for j in jac], axis=1)
    momentum = np.concatenate(
        [_compat.optimizer_slots(optimizer, v)[0].numpy().ravel() for v in variables]
    )
    return np.max(np.abs(jac @ momentum) / (np.linalg.norm(jac, axis=1) * np.linalg.norm(momentum)))


def test_fixed_reference_reuses_the_factor_and_a_stale_one_never_weakens_the_hold():
    """Catches: a factor formed every step (the cost the cache removes), and a hold whose
    exactness depends on the cached factor (solves must run against the current J J^T)."""
    keras.utils.set_random_seed(0)
    model = make_342()
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    reference = X[:6] + 0.25
    op = TrainOp(model, "mse", optimizer, hold="out[0]", hold_on=reference)
    cache = op.hold._cache
    before = model(reference).numpy()[:, 0]
    for _ in range(10):
        op(X, Y)
    assert cache.factorizations.numpy() < 10 and cache.iterations.numpy() > 0
    assert np.abs(model(reference).numpy()[:, 0] - before).max() <= DONE_DRIFT
    # A wrong preconditioner (a scaled identity) on a fresh op: each solve still converges
    # against the exact Gram, or the Gram is factored again; the hold and the projection of the
    # first step's gradient (the momentum after one step) stay exact.
    keras.utils.set_random_seed(0)
    fresh, optimizer = make_342(), keras.optimizers.SGD(0.1, momentum=0.9)
    stale = TrainOp(fresh, "mse", optimizer, hold="out[0]", hold_on=reference)
    stale.hold._cache.inverse.assign(tf.eye(6) * 1e3)
    start = fresh.get_weights()
    stale(X, Y)
    assert np.abs(fresh(reference).numpy()[:, 0] - before).max() <= DONE_DRIFT
    fresh.set_weights(start)  # the gradient was projected at the point before the step
    # 1e-5 of the Cauchy-Schwarz bound: far above float32 rounding, far below a leak (~1).
    assert _momentum_leak(fresh, optimizer, reference) <= 1e-5


def test_held_layer_with_softmax_is_not_restricted_and_holds():
    """Catches: a held layer computed on its held units only although its activation mixes
    units (softmax: every unit moves every output)."""
    x = keras.Input((3,))
    h = MaskedDense(4, activation="tanh", name="hidden")(x)
    model = keras.Model(x, MaskedDense(3, activation="softmax", name="out")(h))
    op = TrainOp(model, "mse", keras.optimizers.Adam(0.01), hold="out[0]", hold_on=X)
    assert op.hold._jacobian.restricted == {}
    before = model(X).numpy()[:, 0]
    for _ in range(5):
        op(X, np.full((8, 3), 1 / 3, "float32"))
    assert np.abs(model(X).numpy()[:, 0] - before).max() <= DONE_DRIFT


def test_restricted_held_values_equal_the_model_outputs():
    """Catches: a restricted forward that computes other columns than the held units."""
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    model = keras.Model(x, MaskedDense(6, activation="sigmoid", name="out")(x))
    op = TrainOp(model, "mse", "sgd", hold=["out[1]", "out[4]"], hold_on=X)
    assert list(op.hold._jacobian.restricted["out"]) == [1, 4]
    expected = model(X).numpy()[:, [1, 4]].ravel()
    np.testing.assert_allclose(op.hold.held(tf.constant(X)).numpy(), expected, rtol=1e-6)
