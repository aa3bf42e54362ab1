"""Every use of a private TensorFlow/Keras attribute, each behind one small function.

Nothing else in maskmagic touches a private name of TensorFlow or Keras (a test greps for it).
Each function says what it relies on; ``tests/test_compat.py`` checks each one against the
installed versions, so an upgrade that changes one fails there with a message naming it,
instead of silently breaking exactness somewhere else.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "csr_matrix_ops",
    "functional_graph",
    "inbound_nodes",
    "make_resizable",
    "nodes_by_depth",
    "optimizer_slots",
    "optimizer_tracks",
    "producing_layer",
    "resize_variable",
    "variable_storage",
]


# ----------------------------------------------------------------------------- optimizers


def _inner(optimizer: Any) -> Any:
    """The optimizer that owns the slots (a LossScaleOptimizer wraps another)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def optimizer_tracks(optimizer: keras.optimizers.Optimizer) -> list:
    """The variables a built optimizer keeps state for, in the order of its slot lists.

    Relies on: ``Optimizer._trainable_variables`` (Keras 3.x base optimizer), the list the
    optimizer was built with; every per-variable slot list is indexed like it.
    """
    return list(_inner(optimizer)._trainable_variables)


def optimizer_slots(
    optimizer: keras.optimizers.Optimizer, variable: Any, any_length: bool = False
) -> list:
    """The optimizer variables that hold state for ``variable`` (momentum, moments, ...).

    Relies on: ``Optimizer._get_variable_index(variable)`` and on every slot kind being an
    instance attribute that is a list as long as ``_trainable_variables`` (``momentums``,
    ``_momentums``, ``_velocities``, ``_accumulators``, ``_average_gradients``, ...). A slot
    counts when it is shaped like the variable (with ``any_length``, a sparse kernel whose
    length changes with its topology: any 1-D slot).
    """
    inner = _inner(optimizer)
    tracked = inner._trainable_variables
    index = inner._get_variable_index(variable)
    found = []
    for attr, value in vars(inner).items():
        if attr == "_trainable_variables" or not isinstance(value, list):
            continue
        if len(value) != len(tracked):
            continue
        slot = value[index]
        if slot is not None and hasattr(slot, "assign"):
            same = tuple(slot.shape) == tuple(variable.shape)
            if same or (any_length and len(slot.shape) == 1):
                found.append(slot)
    return found


# ----------------------------------------------------------------------------- model graphs


def functional_graph(model: Any) -> Any | None:
    """The functional graph behind ``model`` (a Sequential's inner Functional), or None.

    Relies on: ``Sequential._functional`` and ``Functional._nodes_by_depth``. None means the
    model is subclassed: its connections cannot be traced.
    """
    graph = getattr(model, "_functional", None) or model
    return graph if hasattr(graph, "_nodes_by_depth") else None


def nodes_by_depth(graph: Any) -> dict[int, list]:
    """``{depth: [node, ...]}`` of a functional graph; depth 0 holds the output nodes.

    Relies on: ``Functional._nodes_by_depth`` (each node has ``.operation``,
    ``.input_tensors`` and ``.outputs``).
    """
    return dict(graph._nodes_by_depth)


def run_graph(graph: Any, inputs: Any, operation_fn: Any) -> Any:
    """Runs a functional graph on ``inputs``, calling ``operation_fn(layer)(*args, **kwargs)``
    for each node instead of the layer itself (used by ``hold=`` to reach pre-activations).

    Relies on: ``Functional._run_through_graph(inputs, operation_fn=...)``, which walks the
    nodes by depth and calls ``operation_fn(node.operation)`` with each node's arguments.
    """
    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def inbound_nodes(layer: keras.layers.Layer) -> list:
    """The nodes at which ``layer`` was called in functional graphs.

    Relies on: ``Operation._inbound_nodes``.
    """
    return list(layer._inbound_nodes)


def producing_layer(tensor: Any) -> Any | None:
    """The layer (operation) whose call produced a symbolic Keras tensor, or None.

    Relies on: ``KerasTensor._keras_history.operation``.
    """
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


# ----------------------------------------------------------------------------- variables


def variable_storage(variable: keras.Variable) -> tf.Variable:
    """The ``tf.Variable`` that stores a Keras variable's value on the TensorFlow backend.

    Relies on: ``keras.src.backend.tensorflow.Variable._value``.
    """
    return variable._value


def make_resizable(variable: keras.Variable) -> keras.Variable:
    """Gives a 1-D Keras variable a TensorFlow shape of ``[None]`` (same value, same object).

    Functions traced while it had one length keep working after :func:`resize_variable`.
    Relies on: replacing ``Variable._value`` with a new ``tf.Variable`` of unknown length.
    """
    old = variable._value
    variable._value = tf.Variable(
        old.read_value(),
        shape=tf.TensorShape([None]),
        dtype=old.dtype,
        trainable=old.trainable,
        name=variable.name,
    )
    return variable


def resize_variable(variable: keras.Variable, value: Any) -> None:
    """Assigns a 1-D value of any length to a Keras variable (made resizable if needed).

    Relies on: ``Variable._value`` (the backing ``tf.Variable``) and the cached ``_shape`` and
    ``_ndim`` that ``Variable.shape``/``ndim`` report.
    """
    value = np.asarray(value)
    if variable._value.shape.is_fully_defined():
        make_resizable(variable)
    variable._value.assign(tf.convert_to_tensor(value, dtype=variable._value.dtype))
    variable._shape = (int(value.shape[0]),)
    variable._ndim = 1


# ----------------------------------------------------------------------------- sparse ops


def csr_matrix_ops() -> Any:
    """TensorFlow's CSR sparse-matrix ops module (``SparseMatrixMatMul`` and friends).

    Relies on: ``tensorflow.python.ops.linalg.sparse.sparse_csr_matrix_ops``, which has no
    public ``tf.`` alias.
    """
    from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops

    return sparse_csr_matrix_ops
