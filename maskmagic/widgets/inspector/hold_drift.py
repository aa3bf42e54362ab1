"""The inspector's readout for an op with ``hold=``: drift of the held units on the reference
inputs (what the op guarantees, to its tolerance) and on fresh inputs (how well it generalises).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HeldDrift"]

FRESH = 256  # fresh inputs drawn once, with the batch's per-feature mean and spread


class HeldDrift:
    """Measures the held values of ``op`` before and after a step.

    Args:
        op: a TrainOp with ``hold=`` (``op.hold`` not None).
        x: the inspector's batch; the reference inputs when the op holds on each batch.
    """

    def __init__(self, op: Any, x: Any) -> None:
        self._hold = op.hold
        batch = np.asarray(x, dtype="float32")
        reference = self._hold.reference
        self._reference = batch if reference is None else np.asarray(reference)
        rng = np.random.default_rng(0)
        spread = batch.std(axis=0) if len(batch) > 1 else np.ones(batch.shape[1:], "float32")
        fresh = batch.mean(axis=0) + rng.normal(size=(FRESH, *batch.shape[1:])) * spread
        self._fresh = fresh.astype("float32")
        self._before: tuple[np.ndarray, np.ndarray] | None = None

    def _values(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self._hold.held(self._reference).numpy(),
            self._hold.held(self._fresh).numpy(),
        )

    def before_step(self) -> None:
        """Records the held values before the op's step."""
        self._before = self._values()

    def after_step(self) -> dict:
        """``{"reference", "fresh"}``: largest |change| of a held value since :meth:`before_step`,
        with the op's report (``rank``, ``relative_drift``, ``tol``)."""
        if self._before is None:
            raise RuntimeError("HeldDrift.after_step() called before before_step()")  # a bug
        after = self._values()
        reference, fresh = (float(np.abs(a - b).max()) for a, b in zip(after, self._before))
        report = self._hold.report()
        return {
            "reference": reference,
            "fresh": fresh,
            "references": int(len(self._reference)),
            "rank": None if report is None else report.rank,
            "relative_drift": None if report is None else report.relative_drift,
            "tol": self._hold.tol,
        }
