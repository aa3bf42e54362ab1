"""When an optimizer leaves an entry bit for bit unchanged: a zero gradient on zero state.

A train op writes back the entries it may not change (values and optimizer slots) after each
update. For the masked connections of a ``MaskedDense`` kernel that write-back is the whole
extra cost of a real mask (a copy and a ``tf.where`` of the kernel and of every slot), and it
is not needed when the update provably leaves those entries alone: their gradient is exactly
``+0.0`` (the layer computes with ``where(mask, kernel, 0)``) and, for the optimizers below,
an update with a ``+0.0`` gradient on slots that are ``+0.0`` subtracts exactly ``+0.0`` from
the variable and leaves every slot ``+0.0`` (read from the ``update_step`` of each Keras
optimizer; ``x - (+0.0)`` is ``x`` bit for bit, ``-0.0`` and NaN included, except that
TensorFlow's CPU kernels flush a subnormal ``x`` to zero). By induction the entries then stay
unchanged over any number of steps.

The op checks the state (slots +0.0, no subnormal weight) whenever its masks change. A
subnormal weight assigned by hand to a masked connection after that may be flushed to 0 by
such a step; the connection is masked, so nothing the model computes can see it.

An allow-list, by exact type and configuration: anything not listed keeps the write-back.
Left out on purpose: SGD with momentum (adds ``m = +0.0``, which turns a ``-0.0`` weight
into ``+0.0``), weight decay (moves every entry; even ``weight_decay=0`` turns ``-0.0`` into ``+0.0``, so AdamW
is out), EMA (its copies move), gradient
accumulation, clipnorm/global_clipnorm (a NaN norm elsewhere would reach the masked entries),
loss scaling, and every optimizer whose slots start non-zero or mix entries (Adagrad,
Adadelta, Adafactor, Ftrl, Lamb, Muon, ...).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from maskmagic import _compat

__all__ = [
    "keeps_zero_gradient_entries",
    "slots_are_zero",
    "update_leaves_alone",
    "updates_entry_by_entry",
]

# Optimizers whose update_step, for a +0.0 gradient and +0.0 slots, subtracts exactly +0.0
# from the variable and writes +0.0 back into every slot (given the checks in _configured_ok).
_ZERO_PRESERVING = (
    keras.optimizers.SGD,
    keras.optimizers.Adam,
    keras.optimizers.Adamax,
    keras.optimizers.Nadam,
    keras.optimizers.RMSprop,
    keras.optimizers.Lion,
)


# Optimizers whose update of one entry reads only that entry's gradient, value and slots
# (and shared scalars such as the step count), given _mixes_nothing_else.
_PER_ENTRY = (
    *_ZERO_PRESERVING,
    keras.optimizers.AdamW,
    keras.optimizers.Adagrad,
    keras.optimizers.Adadelta,
)


def _mixes_nothing_else(optimizer: Any) -> bool:
    """No option that makes one entry's update depend on other entries' gradients."""
    if getattr(optimizer, "clipnorm", None) or getattr(optimizer, "global_clipnorm", None):
        return False  # one norm over many entries
    return not (
        getattr(optimizer, "use_ema", False)
        or getattr(optimizer, "gradient_accumulation_steps", None)
    )


def updates_entry_by_entry(optimizer: Any) -> bool:
    """Whether each entry's update depends on that entry's gradient alone (not on the others).

    Then the gradient of entries a train op writes back need not be zeroed first: whatever the
    optimizer does to them is undone, and it does the same to every other entry either way.
    """
    return type(optimizer) in _PER_ENTRY and _mixes_nothing_else(optimizer)


def _configured_ok(optimizer: Any) -> bool:
    if not _mixes_nothing_else(optimizer):
        return False
    if getattr(optimizer, "weight_decay", None) is not None:  # even 0: -0.0 - (-0.0 * 0) is +0.0
        return False
    if isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum != 0:
        return False
    epsilon = getattr(optimizer, "epsilon", None)  # sqrt(0) + epsilon divides the zero update
    return epsilon is None or float(epsilon) > 0


def keeps_zero_gradient_entries(optimizer: Any) -> bool:
    """Whether ``optimizer`` leaves an entry with a ``+0.0`` gradient and ``+0.0`` slots unchanged."""
    return type(optimizer) in _ZERO_PRESERVING and _configured_ok(optimizer)


def slots_are_zero(optimizer: Any, variable: Any, entries: np.ndarray) -> bool:
    """Whether every optimizer slot of ``variable`` is ``+0.0`` (bit for bit) at ``entries``.

    ``entries`` is a bool array shaped like ``variable``; a ``-0.0`` slot entry counts as not
    zero (Adam's ``m + (0 - m) * c`` would turn it into ``+0.0``).
    """
    for slot in _compat.optimizer_slots(optimizer, variable):
        values = np.asarray(keras.ops.convert_to_numpy(slot))[entries]
        if (values != 0).any() or np.signbit(values).any():
            return False
    return True


def _has_subnormal(values: np.ndarray) -> bool:
    tiny = np.finfo(values.dtype).tiny
    return bool(((values != 0) & (np.abs(values) < tiny)).any())


def update_leaves_alone(optimizer: Any, variable: Any, entries: np.ndarray) -> bool:
    """Whether a step with a ``+0.0`` gradient at ``entries`` leaves them and their slots exact.

    True for an allow-listed optimizer (:func:`keeps_zero_gradient_entries`) whose slots are
    ``+0.0`` there, when no weight there is subnormal (TensorFlow would flush it to zero) and
    the variable has no constraint (Keras applies it to the whole variable after the update).
    """
    if not keeps_zero_gradient_entries(optimizer) or getattr(variable, "constraint", None):
        return False
    values = np.asarray(keras.ops.convert_to_numpy(variable))
    if not np.issubdtype(values.dtype, np.floating) or _has_subnormal(values[entries]):
        return False
    return slots_are_zero(optimizer, variable, entries)
