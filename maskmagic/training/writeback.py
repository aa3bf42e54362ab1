"""The write-back of a TrainOp's step: excluded entries get their old values back.

An optimizer moves entries whose gradient is zero (momentum, Adam's moments, weight decay),
so after each update the entries a train op may not change, and their optimizer slots, are
written back bit for bit. :class:`WriteBack` does it for one variable at the cost of what is
excluded, in one of four modes picked when the update mask changes (held in a variable, so
the compiled step never re-traces):

* ``NONE``: nothing excluded (an all-ones mask, every entry selected), or every excluded
  entry is one the update provably leaves alone (``unchanged``: masked connections with a
  zero gradient under an optimizer of :mod:`zero_steps`, slots zero there): no work at all;
* ``GATHER``: few excluded (``freeze=``, a few units left out): their values and slots are
  gathered before the update and scattered back in place after it (their gradient entries
  are zeroed first unless ``skip_zeroing``);
* ``VALUES``: many excluded, under an optimizer of :mod:`zero_steps` whose slots are ``+0.0``
  at every excluded entry (a unit selection trained by its own Adam): the excluded gradient
  entries are set to ``+0.0``, so the slots there provably stay ``+0.0``, and only the
  variable is copied and restored with one ``tf.where`` (its update there is ``x - 0.0``,
  which TensorFlow's CPU arithmetic may flush from a subnormal ``x`` to 0; the restore undoes
  that). The slots' state is trusted only while no other step moved the optimizer: the train
  op passes ``fresh=False`` to :meth:`WriteBack.step_mode` once the optimizer's step count is
  not the one this op left (another op or ``model.fit`` shared the optimizer), and the step
  then runs ``WHERE`` until the masks change and the slots are checked again;
* ``WHERE``: many excluded (a unit selection, a sparse mask on ``impl="dense"``): the variable
  and every slot are copied before the update and restored with one ``tf.where`` each.

The four restore exactly the same entries to exactly the same values; only the cost differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from maskmagic.layers import mask_select

__all__ = ["GATHER_FRACTION", "WriteBack"]

NONE, GATHER, WHERE, VALUES = 0, 1, 2, 3
# GATHER while at most this fraction of a variable's entries is excluded. Measured with
# bench/run.py (4096², Adam): with 10% excluded, gather + scatter made the step 2.4x of Dense
# where the full tf.where made it 1.7x (per entry, a gather_nd + scatter_nd_update costs about
# 20x a select); freeze= of one unit excludes 0.02%.
GATHER_FRACTION = 0.01


def _tf(variable: Any) -> Any:
    """The tf.Variable behind a Keras variable (for the in-place scatter)."""
    return getattr(variable, "value", variable)


class WriteBack:
    """Restores the excluded entries of one variable and of its optimizer slots.

    Args:
        mask: the op's update-mask variable (bool, shaped like the variable; True = may change).
        allowed: its current value as a numpy bool array.
        skip_zeroing: :meth:`zero_excluded` has nothing to do: the gradient is exactly 0 at
            every excluded entry already (masked connections of a layer that computes with
            ``where(mask, kernel, 0)``), or the optimizer updates entry by entry, so what it
            does to the excluded entries is undone by the write-back and reaches no other.
        unchanged: the gradient is 0 at every excluded entry and the optimizer's update leaves
            them and their slots bit for bit as they are, so nothing needs restoring.
        slots_stay: the optimizer keeps ``+0.0`` slots at ``+0.0`` for a ``+0.0`` gradient and
            its slots are ``+0.0`` at every excluded entry now (``VALUES`` mode).
    """

    def __init__(
        self,
        mask: Any,
        allowed: np.ndarray,
        skip_zeroing: bool = False,
        unchanged: bool = False,
        slots_stay: bool = False,
    ) -> None:
        self.mask = mask
        rank = max(allowed.ndim, 1)
        self.scalar = allowed.ndim == 0  # nothing to gather from: WHERE or NONE only
        self.mode = tf.Variable(NONE, dtype=tf.int32, trainable=False, name="write_back_mode")
        self.index = tf.Variable(
            np.zeros((0, rank), np.int64),
            shape=[None, rank],
            trainable=False,
            name="write_back_index",
        )
        self.skip_zeroing = tf.Variable(False, trainable=False, name="write_back_skip_zeroing")
        self.update(allowed, skip_zeroing, unchanged, slots_stay)

    def update(
        self,
        allowed: np.ndarray,
        skip_zeroing: bool = False,
        unchanged: bool = False,
        slots_stay: bool = False,
    ) -> None:
        """Picks the mode and the excluded entries for a new update mask (no re-trace)."""
        self.skip_zeroing.assign(bool(skip_zeroing))
        excluded = ~np.asarray(allowed, bool)
        count = int(excluded.sum())
        if count == 0 or unchanged:
            mode = NONE
        elif count <= GATHER_FRACTION * excluded.size and not self.scalar:
            mode = GATHER
        elif slots_stay:
            mode = VALUES
        else:
            mode = WHERE
        rank = self.index.shape[1]
        index = np.argwhere(excluded) if mode == GATHER else np.zeros((0, rank))
        self.index.assign(index.astype(np.int64))
        self.mode.assign(mode)
        self.active = mode != NONE

    def step_mode(self, fresh: Any) -> Any:
        """This step's mode: ``VALUES`` falls back to ``WHERE`` unless ``fresh`` (a bool tensor:
        no other step has moved the optimizer since this op last checked or stepped it)."""
        mode = self.mode.read_value()
        stale = tf.logical_and(tf.equal(mode, VALUES), tf.logical_not(fresh))
        return tf.where(stale, tf.constant(WHERE, tf.int32), mode)

    @tf.autograph.experimental.do_not_convert
    def zero_excluded(self, grad: Any, mode: Any) -> Any:
        """``grad`` with its excluded entries set to +0.0 where ``mode`` needs it (one select).

        ``VALUES`` always zeroes (the slots must see +0.0); ``GATHER`` and ``WHERE`` unless
        ``skip_zeroing``. (A scatter of zeros at the excluded entries would be cheaper in
        GATHER mode, but grappler mis-infers its shapes inside ``switch_case`` on TF 2.21.)
        """
        mask = self.mask
        needed = tf.logical_or(
            tf.equal(mode, VALUES),
            tf.logical_and(tf.not_equal(mode, NONE), tf.logical_not(self.skip_zeroing)),
        )
        return tf.cond(needed, lambda: mask_select.cleared(grad, mask), lambda: grad)

    @tf.autograph.experimental.do_not_convert
    def save(self, variables: list, mode: Any) -> list:
        """Copies of what the update may overwrite: the excluded entries, or everything
        (``variables`` is the variable, then its slots)."""
        index = tf.identity(self.index.read_value())

        def nothing():
            return [tf.zeros([0], v.dtype) for v in variables]

        def gather():
            if self.scalar:
                return nothing()
            return [tf.gather_nd(v.value, index) for v in variables]

        def copy():
            return [tf.reshape(tf.identity(v.value), [-1]) for v in variables]

        def copy_values():  # VALUES: the variable only (its slots provably stay +0.0)
            return [tf.reshape(tf.identity(variables[0].value), [-1])] + nothing()[1:]

        return tf.switch_case(mode, [nothing, gather, copy, copy_values])

    @tf.autograph.experimental.do_not_convert
    def restore(self, variables: list, saved: list, mode: Any) -> None:
        """Writes the saved excluded entries back into ``variables`` (after the update)."""
        index, mask = tf.identity(self.index.read_value()), self.mask

        def nothing():
            return tf.constant(0)

        def scatter():
            for variable, old in zip(variables, [] if self.scalar else saved):
                _tf(variable).scatter_nd_update(index, old)
            return tf.constant(0)

        def where(restored):
            def run():
                for variable, old in zip(restored, saved):
                    value = variable.value
                    variable.assign(tf.where(mask, value, tf.reshape(old, tf.shape(value))))
                return tf.constant(0)

            return run

        tf.switch_case(mode, [nothing, scatter, where(variables), where(variables[:1])])
