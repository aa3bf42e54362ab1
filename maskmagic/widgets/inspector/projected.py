"""The inspector's "projected update" view for an op with ``hold=``.

A step of an op with ``hold=`` does not hand its optimizer the loss gradient: it first restricts
it to the op's update set, then projects it onto the null space of ``J``, the Jacobian of the
held units on the reference inputs (:meth:`maskmagic.training.hold.Hold.project_gradient`). This
module computes that projected gradient for the inspector's target on its batch -- with the
op's own ``project_gradient``, so the view shows what the op's optimizer sees (the math is not
repeated here) -- and arranges it per inspected layer for the tiles, the kernel windows and the
PNG.

The objective is the inspector's (the loss, or one unit's summed output), evaluated in inference
mode like every other view; for a model without dropout or batch statistics that is exactly the
gradient the op's step projects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.widgets.inspector import tiles

__all__ = ["ProjectedLayer", "Projection", "check_projectable"]


def check_projectable(op: Any) -> None:
    """Raises unless ``op`` is a TrainOp with ``hold=`` (the projected view needs one).

    Raises:
        MaskMagicError: no op, or an op without ``hold=``.
    """
    if op is None:
        raise MaskMagicError(
            'view="projected" needs an op with hold=; this inspector has no op (expected '
            'GradientInspector(model, x, y, op=TrainOp(model, ..., hold="out[0]")))'
        )
    if getattr(op, "hold", None) is None:
        raise MaskMagicError(
            f'view="projected" needs an op with hold=; op {op.name!r} has none (expected an '
            "op such as TrainOp(model, ..., hold=\"out[0]\"), or the views 'gradient', "
            "'would_be', 'update')"
        )


@dataclass(frozen=True)
class ProjectedLayer:
    """The projected gradient of one inspected layer.

    Attributes:
        kernel: shaped like the layer's kernel variable ((inputs, units), a conv kernel, or
            (nnz,) for a sparse layer); 0 where the op may not change the entry.
        table: what the heatmap shows, (inputs, units): the kernel itself for dense layers, the
            sum of |projected| over each kernel window for conv layers; the (nnz,) values of
            the stored connections for sparse layers.
        overview: (rows, cols) float32: the table pooled like the layer's overview (signed
            max-|value| per block).
        bias: (units,) projected bias gradient, or None for a layer without a bias.
    """

    kernel: np.ndarray
    table: np.ndarray
    overview: np.ndarray
    bias: np.ndarray | None


class Projection:
    """Computes the projected gradient of an op with ``hold=`` for the inspector's objective.

    Args:
        op: a TrainOp with ``hold=``.
        gradient_pass: the inspector's :class:`~maskmagic.widgets.inspector.grad_pass.GradientPass`
            (its objective: the loss or a unit's summed output).
        probes: the inspector's probes.
    """

    def __init__(self, op: Any, gradient_pass: Any, probes: list) -> None:
        check_projectable(op)
        self._op = op
        self._pass = gradient_pass
        self._probes = probes
        # The variables the hold projects, in its order (the op's step variables: TrainOp has
        # no public name for them; hold.attach builds the Hold from the same list).
        self._variables = list(op._step_variables)
        self._functions: dict[str, Any] = {}

    def _function(self, target: str) -> Any:
        """The compiled gradient + projection for one target (the unit and the update sets
        are inputs, so changing them never re-traces)."""
        function = self._functions.get(target)
        if function is None:

            def run(x: Any, y: Any, unit: Any, updates: tuple) -> tuple[list, list]:
                raw = self._pass.variable_gradients(x, y, target, unit, self._variables)
                restricted = [tf.where(u, g, tf.zeros_like(g)) for g, u in zip(raw, updates)]
                return restricted, self._op.hold.project_gradient(restricted, x)

            function = self._functions[target] = tf.function(run, reduce_retracing=True)
        return function

    def variable_gradients(self, x: Any, y: Any, target: str, unit: int) -> tuple[list, list]:
        """(restricted, projected): per op variable, the objective's gradient restricted to the
        op's update set (what the optimizer would see without a hold) and that gradient
        projected by the op's hold (what it sees), as numpy arrays."""
        updates = tuple(tf.constant(self._op.update_mask(v)) for v in self._variables)
        restricted, projected = self._function(target)(x, y, tf.constant(unit, tf.int32), updates)
        return [g.numpy() for g in restricted], [np.asarray(p.numpy()) for p in projected]

    def compute(self, x: Any, y: Any, target: str, unit: int) -> list[ProjectedLayer]:
        """Per probe, its :class:`ProjectedLayer` (zeros for variables the op does not train)."""
        _, projected = self.variable_gradients(x, y, target, unit)
        by_id = {id(v): p.astype(np.float32) for v, p in zip(self._variables, projected)}
        return [self._layer(probe, by_id) for probe in self._probes]

    @staticmethod
    def _layer(probe: Any, by_id: dict) -> ProjectedLayer:
        kernel_variable = probe.layer.kernel
        kernel = by_id.get(id(kernel_variable))
        if kernel is None:  # the op does not train this kernel: its update is 0
            kernel = np.zeros(tuple(tf.convert_to_tensor(kernel_variable).shape), np.float32)
        bias = None
        if probe.bias is not None:
            bias = by_id.get(id(probe.bias))
            if bias is None:
                bias = np.zeros(probe.shape[1], np.float32)
        if probe.kind == "sparse":
            rows, cols = probe.layer.connections()
            overview = tiles.pool_entries(kernel, rows, cols, probe.grid)
            return ProjectedLayer(kernel, kernel, overview, bias)
        if probe.keeps_kernel_gradient:  # conv: per pair, the sum of |projected| over its window
            table = np.asarray(probe.overview(tf.constant(kernel)), np.float32)
        else:
            table = kernel
        return ProjectedLayer(kernel, table, tiles.pool_matrix(table, probe.grid), bias)
