"""Hold: project a train step so that chosen units keep their values on reference inputs.

``TrainOp(model, hold="out[0]", hold_on=x_ref)`` lets every selected parameter move, but each
step is constrained so that the held units, evaluated on the reference inputs (``hold_on``, or
each step's batch), come back to their values before the step, to a relative tolerance.

A step with a hold, inside the op's compiled step:

1. the loss gradient (already restricted to the op's update masks) is projected onto the null
   space of ``J``, the Jacobian of the held values on the reference inputs with respect to the
   entries the op may change; the optimizer sees only that projected gradient, so momentum and
   Adam's moments accumulate only allowed directions;
2. the optimizer's update is projected again (per-entry scaling such as Adam's leaves the null
   space) by the first Gauss-Newton correction: its residual ``h(old + u) - h(old)`` is
   ``J u`` plus second-order terms, so ``-J^T (J J^T)^+`` of it removes the update's
   component along the rows of ``J`` together with the nonlinear drift (``PROJECT_UPDATE``
   projects ``u`` separately first, as before: one more ``J v``, solve and ``J^T``);
3. Gauss-Newton corrections ``delta = -J^T (J J^T)^+ r`` on the allowed entries bring the held
   values back to their values before the step, until the largest change is within
   ``tol * max|held values|`` (chord iterations: ``J`` from before the step).

``(J J^T)^+`` is applied through a Cholesky factorisation (float64 with a tiny ridge, so
dependent constraints are allowed; large Dense Grams in float32 with a noise-sized ridge, see
:mod:`maskmagic.training.jacobian`); the rank reported counts its pivots above a threshold
(``RCOND`` for float64). With fixed reference inputs (``hold_on=``) and Dense-like layers the
factor is kept across steps (:class:`~maskmagic.training.jacobian.FactorCache`): each solve runs
conjugate gradients against the current ``J J^T`` preconditioned by it, and the Gram is formed
and factored again only when that stops converging; the rank is then the one of the last
factorisation. Exactness never depends on the factor's age: the gradient's solve converges to
``PCG_TOL`` against the current Gram, and the corrections' loop checks the held values
themselves. When that rank reaches the number of parameters the
op may change, no step can move anything without moving the held units: the op raises a
:class:`~maskmagic.errors.MaskMagicError` when it is built (fixed ``hold_on``), or warns with
:class:`HoldWarning` and leaves the parameters as they were (reference = each batch).

Entries outside the op (masked connections, unselected or frozen entries) are written back
with ``tf.where``, so they stay bit-identical.

For Dense-like layers the Jacobian is never materialised (:mod:`maskmagic.training.jacobian`).
The step of an op with at most ``XLA_MAX_ENTRIES`` parameter entries is XLA-compiled as one
program (:class:`~maskmagic.training.ops.TrainOp` falls back to the graph step when tf2xla
refuses an op); the entries the op may change are counted when its masks change
(:meth:`Hold.masks_changed`), not in each step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import _compat
from maskmagic.errors import MaskMagicError, SelectorError
from maskmagic.training import jacobian, selectors

__all__ = ["Hold", "HoldReport", "HoldWarning", "DEFAULT_TOL"]

DEFAULT_TOL = 1e-6
PROJECT_UPDATE = False  # True: project the update before the corrections (see step 2)
MAX_CORRECTIONS = 12  # chord Gauss-Newton: usually one or two; more means it cannot
# Steps of ops with at most this many entries in their variables are XLA-compiled (TrainOp):
# there the step is dispatch-bound (784-256-10: 7.2x -> ~4x a plain step); on a 4096^2 layer
# XLA's CPU products are slower than TensorFlow's (2.35x -> 2.80x), so large steps stay graphs.
XLA_MAX_ENTRIES = 2**21


class HoldWarning(UserWarning):
    """A hold could not be kept this step (no room to move, or tolerance not reached)."""


@dataclass(frozen=True)
class HoldReport:
    """What the last step of a hold achieved.

    Attributes:
        drift: largest absolute change of a held value on the reference inputs over the step.
        relative_drift: ``drift / max|held values before the step|``.
        tol: the relative tolerance asked for.
        rank: independent constraints the step respected: the Cholesky pivots of ``J J^T``
            above ``RCOND`` (an estimate for ill-conditioned constraints), at most
            ``parameters``.
        constraints: held values (reference inputs x held units).
        parameters: entries the op may change.
        corrections: Gauss-Newton iterations run after the optimizer's update.
        steps: steps run so far.
    """

    drift: float
    relative_drift: float
    tol: float
    rank: int
    constraints: int
    parameters: int
    corrections: int
    steps: int

    @property
    def room(self) -> int:
        """Directions left to move in: ``parameters - rank`` (0 means nothing can move)."""
        return max(self.parameters - self.rank, 0)

    @property
    def held(self) -> bool:
        """True when the last step kept the held values within the tolerance."""
        return self.relative_drift <= self.tol


def check_tol(tol: Any) -> float:
    """Validates ``hold_tol``: a number in (0, 1)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise MaskMagicError(f"hold_tol must be a number such as 1e-6; received {tol!r}")
    tol = float(tol)
    if not (math.isfinite(tol) and 0.0 < tol < 1.0):
        raise MaskMagicError(f"hold_tol must be between 0 and 1 (exclusive); received {tol!r}")
    return tol


def resolve_held(model: keras.Model, hold: Any) -> dict[str, np.ndarray]:
    """{layer name: bool unit vector} of the units named by ``hold`` (a selector or list)."""
    items = list(hold) if isinstance(hold, (list, tuple)) else [hold]
    if not items:
        raise SelectorError("hold= expects at least one unit selector such as 'out[0]'")
    units: dict[str, np.ndarray] = {}
    for item in items:
        for layer, vector in selectors.resolve_units(model, item, option="hold").items():
            units[layer] = vector if layer not in units else units[layer] | vector
    return units


def _held_model(model: keras.Model, units: dict[str, np.ndarray]) -> keras.Model:
    graph = _compat.functional_graph(model)
    if graph is None:
        raise MaskMagicError(
            f"hold= needs a functional or Sequential Keras model to evaluate the held units; "
            f"received a subclassed model of type {type(model).__name__}"
        )
    outputs = []
    for name in units:
        layer = graph.get_layer(name)
        if len(_compat.inbound_nodes(layer)) != 1:
            raise MaskMagicError(
                f"hold= names units of layer {name!r}, which is called "
                f"{len(_compat.inbound_nodes(layer))} times in the model; expected a layer "
                "called once"
            )
        outputs.append(layer.output)
    inputs = graph.inputs[0] if len(graph.inputs) == 1 else graph.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_held")


def check_reference(model: keras.Model, hold_on: Any) -> tf.Tensor | None:
    """Validates ``hold_on`` against the model's input shape; returns it as a float tensor."""
    if hold_on is None:
        return None
    try:
        array = np.asarray(hold_on, dtype="float32")
    except (TypeError, ValueError) as exc:
        raise MaskMagicError(
            f"hold_on must be an array of reference inputs; received {type(hold_on).__name__} "
            f"({exc})"
        ) from None
    graph = _compat.functional_graph(model)
    inputs = graph.inputs if graph is not None else []
    if len(inputs) != 1:
        raise MaskMagicError(
            f"hold_on expects a model with one input; model {model.name!r} has {len(inputs)}"
        )
    expected = tuple(inputs[0].shape[1:])
    if array.ndim != len(expected) + 1 or any(
        want is not None and got != want for want, got in zip(expected, array.shape[1:])
    ):
        shown = ", ".join(str(d) for d in expected)
        raise MaskMagicError(
            f"hold_on must have shape (samples, {shown}) like the model's input; received an "
            f"array of shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise MaskMagicError("hold_on has no samples; expected at least one reference input")
    if not np.isfinite(array).all():
        raise MaskMagicError("hold_on contains NaN or infinite values; expected finite inputs")
    return tf.constant(array)


class Hold:
    """The projection and corrections of one train op with ``hold=``.

    Args:
        model: the op's model.
        units: {layer name: bool vector} of held units.
        reference: fixed reference inputs, or None to use each step's batch.
        tol: relative tolerance of the held values.
        variables: the op's step variables (in the order of its gradients).
        masks: {variable path: bool tf.Variable} update masks (absent: every entry allowed).
        name: the op's name, for messages.
    """

    def __init__(
        self,
        model: keras.Model,
        units: dict[str, np.ndarray],
        reference: tf.Tensor | None,
        tol: float,
        variables: list,
        masks: dict[str, Any],
        name: str,
    ) -> None:
        self.units = units
        self.reference = reference
        self.tol = tol
        self.name = name
        self._held_model = _held_model(model, units)
        self._indices = [tf.constant(np.flatnonzero(v), tf.int32) for v in units.values()]
        self._variables = list(variables)
        self._masks = [masks.get(v.path) for v in self._variables]
        self._jacobian = jacobian.make_jacobian(model, self._held_model, self._variables, units)
        # Held layers computed on their held units only (their outputs come selected).
        self._restricted = [name in self._jacobian.restricted for name in units]
        # Fixed reference inputs: the Gram's factor is kept across steps (see FactorCache).
        self._cache = None
        if reference is not None:
            rows = int(reference.shape[0]) * sum(int(v.sum()) for v in units.values())
            self._cache = jacobian.FactorCache(rows)
        self._context: dict[str, Any] = {}
        self._stats = tf.Variable(tf.zeros([6], tf.float64), trainable=False, name="hold_report")
        self._count = tf.Variable(tf.constant(0.0, tf.float64), trainable=False)
        self._last: np.ndarray | None = None  # the last step's report, read with its loss
        self.masks_changed()
        self.steps = 0

    @property
    def compiles(self) -> bool:
        """Whether the op's step should be XLA-compiled (small: see ``XLA_MAX_ENTRIES``)."""
        entries = sum(int(tf.size(v.value)) for v in self._variables)
        return entries <= XLA_MAX_ENTRIES

    # ------------------------------------------------------------------ values
    def _select(self, outputs: Any) -> tf.Tensor:
        """(samples, held units) from the held model's outputs."""
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        parts = [
            out if done else tf.gather(out, idx, axis=-1)
            for out, idx, done in zip(outputs, self._indices, self._restricted)
        ]
        return tf.concat(parts, axis=-1)

    def held(self, x: tf.Tensor) -> tf.Tensor:
        """The held values on ``x`` (inference mode), flattened sample-major."""
        if any(self._restricted):
            return tf.reshape(self._select(self._jacobian.forward(x)), [-1])
        return tf.reshape(self._select(self._held_model(x, training=False)), [-1])

    def solver(self, x: tf.Tensor, allowed: list, count: Any = None) -> jacobian.Solver:
        """The least-squares solver of the held values on ``x`` at the current parameters
        (with the factor cache when ``x`` is the fixed reference)."""
        cache = self._cache if x is self.reference else None
        if cache is not None and count is None:
            count = self.parameter_count(allowed)
        return jacobian.Solver(self._jacobian(self._select, x, allowed), cache, count)

    def _allowed(self) -> list:
        """Bool update masks of the op's variables (None: every entry)."""
        return [
            None if m is None else tf.cast(tf.convert_to_tensor(m), tf.bool) for m in self._masks
        ]

    def parameter_count(self, allowed: list | None = None) -> tf.Tensor:
        """Entries the op may change (float64): counted when the masks change
        (:meth:`masks_changed`), not in each step (a kernel-sized reduction)."""
        return self._count.read_value()

    def masks_changed(self) -> None:
        """Counts the entries the op may change; the op calls it whenever it assigns its
        update masks (the only writes to them)."""
        total = 0
        for v, m in zip(self._variables, self._masks):
            total += int(tf.size(v.value)) if m is None else int(np.count_nonzero(m.numpy()))
        self._count.assign(float(total))

    def _rank(self, solver: jacobian.Solver, count: tf.Tensor) -> tf.Tensor:
        """The solver's rank estimate (Cholesky pivots), never above the parameter count."""
        return tf.minimum(tf.cast(solver.rank, tf.float64), count)

    # ------------------------------------------------------------------ step hooks
    def project_gradient(self, grads: list, x: Any) -> list:
        """Hook before the optimizer: saves the state and returns the projected gradient."""
        reference = self.reference if self.reference is not None else x
        allowed = self._allowed()
        count = self.parameter_count(allowed)
        old = [tf.identity(v.value) for v in self._variables]
        solver = self.solver(reference, allowed, count)
        before = solver.values if solver.values is not None else self.held(reference)
        projected = solver.project(grads)  # (a cached factor may be refreshed here: rank after)
        room = count - self._rank(solver, count)
        self._context = dict(
            reference=reference,
            allowed=allowed,
            old=old,
            before=before,
            solver=solver,
            room=room,
            count=count,
        )
        # No room: nothing may move (the projection is already ~0; make it exactly 0).
        return [tf.cond(room > 0, lambda g=g: g, lambda g=g: tf.zeros_like(g)) for g in projected]

    def restore(self) -> None:
        """Hook after the optimizer's update: projects it, then corrects the held values."""
        ctx, self._context = self._context, {}
        allowed, old, solver = ctx["allowed"], ctx["old"], ctx["solver"]
        if PROJECT_UPDATE:
            update = [v.value - o for v, o in zip(self._variables, old)]
            update = solver.project(update, jacobian.LOOSE_TOL)  # the corrections finish it
            self._write([o + u for o, u in zip(old, update)], old, allowed)
        self._undo_without_room(old, ctx["room"])
        before, reference = ctx["before"], ctx["reference"]
        scale = tf.maximum(tf.reduce_max(tf.abs(before)), tf.constant(1e-30, before.dtype))
        limit = tf.cast(self.tol, before.dtype) * scale

        def residual():
            return self.held(reference) - before

        def keep_going(i, r, previous):
            d = tf.reduce_max(tf.abs(r))
            # Past the tolerance, keep going while it still pays (to limit/4): stopping just
            # under the limit every step lets the drift add up over many steps.
            useful = tf.logical_and(d > limit / 4, d < previous / 2)
            return tf.logical_and(i < MAX_CORRECTIONS, tf.logical_or(d > limit, useful))

        def correct(i, r, previous):
            current = [tf.identity(v.value) for v in self._variables]
            # chord: J from before the step (factored once); the loop checks the drift itself
            step = solver.min_norm(r, jacobian.LOOSE_TOL)
            self._write([c - s for c, s in zip(current, step)], old, allowed)
            return i + 1, residual(), tf.reduce_max(tf.abs(r))

        def corrections():
            start = residual()
            count, last, _ = tf.while_loop(
                keep_going,
                correct,
                (tf.constant(0), start, tf.constant(np.inf, start.dtype)),
                parallel_iterations=1,
            )
            return count, last

        # No room: the parameters are back to their old values; nothing to correct.
        count, last = tf.cond(ctx["room"] > 0, corrections, lambda: (tf.constant(0), residual()))
        final = tf.reduce_max(tf.abs(last))
        self._stats.assign(
            tf.stack(
                [
                    tf.cast(final, tf.float64),
                    tf.cast(final / scale, tf.float64),
                    self._rank(solver, ctx["count"]),
                    tf.cast(tf.size(before), tf.float64),
                    ctx["count"],
                    tf.cast(count, tf.float64),
                ]
            )
        )

    def _undo_without_room(self, old: list, room: tf.Tensor) -> None:
        """No room: every variable gets back its value from before the step."""

        def undo():
            for variable, before in zip(self._variables, old):
                variable.assign(before)
            return tf.constant(0)

        tf.cond(room > 0, lambda: tf.constant(0), undo)

    def _write(self, values: list, old: list, allowed: list) -> None:
        """Assigns ``values`` on allowed entries; every other entry gets back its old value."""
        for variable, value, before, mask in zip(self._variables, values, old, allowed):
            if mask is not None:
                value = tf.where(tf.cast(mask, tf.bool), value, before)
            variable.assign(value)

    # ------------------------------------------------------------------ report
    @property
    def factorizations(self) -> int | None:
        """Gram factorisations so far with a kept factor (fixed ``hold_on``; build included);
        None when the Gram is factored every step."""
        return None if self._cache is None else int(self._cache.factorizations.numpy())

    def with_stats(self, loss: tf.Tensor) -> tf.Tensor:
        """``[loss, report of the step]`` (float64): what the op's step returns with a hold,
        so that one read gives both (see :meth:`after_step`)."""
        loss = tf.reshape(tf.cast(loss, tf.float64), [1])
        return tf.concat([loss, self._stats.read_value()], axis=0)

    def report(self) -> HoldReport | None:
        """The report of the last step, or None before the first step."""
        if not self.steps:
            return None
        stats = self._last if self._last is not None else self._stats.numpy()
        drift, relative, rank, constraints, parameters, corrections = stats
        return HoldReport(
            drift=float(drift),
            relative_drift=float(relative),
            tol=self.tol,
            rank=int(rank),
            constraints=int(constraints),
            parameters=int(parameters),
            corrections=int(corrections),
            steps=self.steps,
        )

    def after_step(self, stats: np.ndarray | None = None) -> None:
        """Python-side checks after a step: warns when the hold had no room or missed tol.

        ``stats``: the step's report as returned with the loss (:meth:`with_stats`); None
        reads it from its variable."""
        self.steps += 1
        self._last = None if stats is None else np.asarray(stats, np.float64)
        report = self.report()
        if report is None:  # steps was just counted: report() has the step
            raise AssertionError("no hold report after a step")
        if report.room == 0:
            warnings.warn(
                f"train op {self.name!r}: hold leaves no room: the {report.constraints} held "
                f"values have rank {report.rank} >= the {report.parameters} parameters the op "
                "may change, so the step changed nothing; hold fewer units, use fewer "
                "reference inputs (hold_on=) or select more parameters",
                HoldWarning,
                stacklevel=3,
            )
        elif not report.held:
            warnings.warn(
                f"train op {self.name!r}: hold reached a relative drift of "
                f"{report.relative_drift:.3g}, above hold_tol={self.tol:g}, after "
                f"{report.corrections} corrections; use a smaller learning rate or a larger "
                "hold_tol",
                HoldWarning,
                stacklevel=3,
            )

    def check_room(self) -> None:
        """Raises when fixed reference inputs leave no room (checked when the op is built)."""
        if self.reference is None:
            return
        allowed = self._allowed()
        count = self.parameter_count(allowed)
        solver = self.solver(self.reference, allowed, count)
        solver.refresh()  # factors now (and fills the cache the steps start from)
        rank, parameters = int(self._rank(solver, count)), int(count)
        if rank >= parameters:
            raise MaskMagicError(
                f"train op {self.name!r}: hold leaves no room to train: the "
                f"{int(tf.size(self.held(self.reference)))} held values on hold_on have rank "
                f"{rank} >= the {parameters} parameters the op may change, so every step would "
                "change nothing; expected fewer held units or reference inputs, or more "
                "selected parameters"
            )


def attach(op: Any, hold: Any, hold_on: Any, tol: Any) -> Hold | None:
    """Builds the :class:`Hold` of a TrainOp (None without ``hold=``); validates its options.

    Raises:
        MaskMagicError: ``hold_on``/``hold_tol`` without ``hold``, a bad selector, reference
            inputs of the wrong shape, a model under ``tf.distribute``, or no room to train.
    """
    if hold is None:
        if hold_on is not None:
            raise MaskMagicError(
                f"train op {op.name!r}: hold_on= is given without hold=; expected hold= with "
                "the units to keep, such as hold='out[0]'"
            )
        return None
    tol = check_tol(tol)
    if op._strategy is not None:
        raise MaskMagicError(
            f"train op {op.name!r}: hold= is not supported for a model built under a "
            "tf.distribute strategy; expected a model built outside strategy.scope()"
        )
    units = resolve_held(op.model, hold)
    reference = check_reference(op.model, hold_on)
    masks = {path: variable for path, variable in op._mask_vars.items()}
    held = Hold(op.model, units, reference, tol, op._step_variables, masks, op.name)
    held.check_room()
    return held
