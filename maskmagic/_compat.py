"""Every use of a private TensorFlow/Keras attribute, each behind one small function.

Nothing else in maskmagic touches a private name of TensorFlow or Keras (a test greps for it).
Each function says what it relies on; ``tests/test_compat.py`` checks each one against the
installed versions, so an upgrade that changes one fails there with a message naming it,
instead of silently breaking exactness somewhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "csr_matrix_ops",
    "dense_attributes",
    "dense_kernel",
    "dense_quantized_kernel",
    "dense_serialization_names",
    "ema_average",
    "fresh_slot_values",
    "functional_graph",
    "inbound_nodes",
    "make_resizable",
    "nodes_by_depth",
    "optimizer_slots",
    "optimizer_step_counter",
    "optimizer_tracks",
    "optimizer_unrestorable",
    "producing_layer",
    "resize_variable",
    "stored_variables",
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


def ema_average(optimizer: Any, variable: Any) -> Any:
    """The moving average an optimizer with ``use_ema`` keeps of ``variable``, or None.

    Relies on: ``Optimizer._model_variables_moving_average``, indexed like
    ``_trainable_variables`` (Keras updates every entry of it in each ``apply``).
    """
    inner = _inner(optimizer)
    averages = getattr(inner, "_model_variables_moving_average", None)
    if not inner.use_ema or not averages:
        return None
    if not any(tracked is variable for tracked in inner._trainable_variables):
        return None
    return averages[inner._get_variable_index(variable)]


def optimizer_step_counter(optimizer: Any) -> Any:
    """The variable that counts an optimizer's steps: ``iterations``, or under gradient
    accumulation (where ``iterations`` is a tensor derived from it) the raw counter.

    Relies on: ``BaseOptimizer._iterations``.
    """
    if getattr(optimizer, "gradient_accumulation_steps", None):
        return optimizer._iterations
    return optimizer.iterations


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


def fresh_slot_values(optimizer: Any, variable: Any) -> list[float]:
    """What each of :func:`optimizer_slots` ``(optimizer, variable, any_length=True)`` holds for
    a variable the optimizer has never stepped (all zeros), read from a fresh copy of the
    optimizer built on a one-entry variable: 0 for momentum and moments,
    ``initial_accumulator_value`` for Adagrad's and Ftrl's accumulators.

    Relies on: ``Optimizer.from_config(get_config())`` rebuilding the same slot kinds, in the
    same order, as the original.
    """
    inner = _inner(optimizer)
    count = len(optimizer_slots(optimizer, variable, any_length=True))
    probe = keras.Variable(np.zeros((1,), dtype=variable.dtype), trainable=True)
    try:
        copy = type(inner).from_config(inner.get_config())
        copy.build([probe])
    except (ValueError, TypeError, KeyError, NotImplementedError):  # a config that does not
        return [0.0] * count  # round-trip (a custom optimizer): zeros, as most slots start

    values = [
        float(np.asarray(keras.ops.convert_to_numpy(s))[0])
        for s in optimizer_slots(copy, probe, any_length=True)
    ]
    if len(values) != count:
        raise AssertionError(f"{type(inner).__name__}: {len(values)} fresh slots, {count} slots")
    return values


def _per_variable_lists(inner: Any) -> dict[str, list]:
    """The optimizer's per-variable state lists, by attribute name."""
    tracked = inner._trainable_variables
    return {
        attr: value
        for attr, value in vars(inner).items()
        if attr != "_trainable_variables" and isinstance(value, list) and len(value) == len(tracked)
    }


def optimizer_unrestorable(
    optimizer: keras.optimizers.Optimizer, variable: Any, any_length: bool = False
) -> list[str]:
    """What keeps state for ``variable`` that :func:`optimizer_slots` cannot restore entry by entry.

    An allow-list: state is restorable only if it is a per-variable slot shaped like the
    variable (see :func:`optimizer_slots`) or a scalar shared by every variable (the
    iteration count, the learning rate, Nadam's momentum product). Anything else is named here:
    a per-variable slot of another shape (Adafactor's factored row and column moments), or an
    optimizer variable that is in no per-variable list and not a scalar (unknown state).

    Relies on: the same private attributes as :func:`optimizer_slots`.
    """
    inner = _inner(optimizer)
    index = inner._get_variable_index(variable)
    lists = _per_variable_lists(inner)
    problems = []
    listed: set[int] = set()
    for attr, value in lists.items():
        listed.update(id(v) for v in value if v is not None)
        slot = value[index]
        if slot is None or not hasattr(slot, "assign") or attr == "_variables":
            continue
        same = tuple(slot.shape) == tuple(variable.shape)
        if not (same or (any_length and len(slot.shape) == 1 and len(variable.shape) == 1)):
            problems.append(
                f"{attr} (shape {tuple(slot.shape)}, the variable's {tuple(variable.shape)})"
            )
    tracked = {id(v) for v in inner._trainable_variables}
    for state in optimizer.variables:
        if id(state) in listed or id(state) in tracked or len(state.shape) == 0:
            continue
        problems.append(f"{state.path} (shape {tuple(state.shape)}, not per variable)")
    return problems


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


def stored_variables(layer: keras.layers.Layer) -> list:
    """A layer's variables in the order ``save_own_variables`` stores them (keys "0", "1", ...).

    Relies on: ``Layer.save_own_variables`` storing ``_trainable_variables`` then
    ``_non_trainable_variables``.
    """
    return [*layer._trainable_variables, *layer._non_trainable_variables]


def make_resizable(variable: keras.Variable) -> keras.Variable:
    """Gives a 1-D Keras variable a TensorFlow shape of ``[None]`` (same value, same object).

    Functions traced while it had one length keep working after :func:`resize_variable`.
    A variable created in a stateless scope (a subclassed model's first, symbolic build) has no
    value yet: it becomes resizable when Keras initializes it.
    Relies on: replacing ``Variable._value`` with a new ``tf.Variable`` of unknown length, and
    ``Variable._initialize(value)``, which Keras' deferred initialization calls.
    """
    if variable._value is None:
        initialize = variable._initialize

        def initialize_resizable(value: Any) -> None:
            initialize(value)
            make_resizable(variable)

        variable._initialize = initialize_resizable
        return variable
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


def call_concrete(function: Any, flat_inputs: list) -> Any:
    """Runs a ``ConcreteFunction`` on its inputs as a flat list of tensors (``None`` arguments
    left out), returning its structured outputs, without the per-call binding of ``__call__``
    (about 0.15 ms: a third of a small net's compiled gradient pass).

    Relies on: ``ConcreteFunction._call_flat(tensor_inputs, captured_inputs)`` and
    ``ConcreteFunction.captured_inputs``.
    """
    return function._call_flat(flat_inputs, function.captured_inputs)


def in_xla_context() -> bool:
    """Whether ops created now are traced into an XLA-compiled function (``jit_compile=True``).

    Relies on: ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``, which
    has no public ``tf.`` alias.
    """
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


# ----------------------------------------------------------------------------- keras.layers.Dense


def dense_kernel(layer: keras.layers.Dense) -> Any:
    """The variable that stores a Dense layer's kernel (float, or int8/packed int4 when quantized).

    Relies on: ``Dense._kernel``, created by ``Dense.build`` / ``Dense.quantized_build`` (the
    public ``Dense.kernel`` is a property that merges LoRA and unpacks int4).
    """
    return layer._kernel


@contextlib.contextmanager
def dense_attributes(layer: keras.layers.Dense, **values: Any) -> Iterator[None]:
    """Temporarily replaces attributes that ``Dense``'s quantized calls read, bypassing tracking.

    Used to run ``Dense.quantized_call`` with a masked float kernel (``_kernel``), without the
    bias, activation or LoRA term (which the masked layer adds itself, masked). Relies on:
    ``Dense._float8_call`` / ``_gptq_call`` / ``_awq_call`` reading ``self._kernel``, and every
    quantized call reading ``self.bias``, ``self.activation`` and ``self.lora_enabled``.
    """
    saved = {name: layer.__dict__[name] for name in values if name in layer.__dict__}
    try:
        for name, value in values.items():
            object.__setattr__(layer, name, value)
        yield
    finally:
        for name in values:
            if name in saved:
                object.__setattr__(layer, name, saved[name])
            else:
                object.__delattr__(layer, name)


# What Dense.save_own_variables writes after the kernel and the bias, per quantization mode, in
# Keras versions without ``variable_serialization_spec`` (3.10 and 3.11).
_OLD_DENSE_ENTRIES = {
    None: [],
    "int8": ["kernel_scale"],
    "int4": ["kernel_scale"],
    "float8": [
        "inputs_scale",
        "inputs_amax_history",
        "kernel_scale",
        "kernel_amax_history",
        "outputs_grad_scale",
        "outputs_grad_amax_history",
    ],
}


def dense_serialization_names(layer: keras.layers.Dense) -> list[str]:
    """The variables ``Dense.save_own_variables`` writes for ``layer``, by name, in file order.

    Relies on: ``Dense.variable_serialization_spec`` ({mode: [names]}; Keras >= 3.12), whose
    ``bias`` is skipped without a bias and ``kernel_zero`` / ``g_idx`` when the layer lacks them
    (as ``Dense.load_own_variables`` does). Older Keras 3 (3.10, 3.11) writes ``kernel``,
    ``bias`` and then a fixed list per mode (:data:`_OLD_DENSE_ENTRIES`).
    """
    mode = layer.quantization_mode
    spec = getattr(layer, "variable_serialization_spec", None)
    names = list(spec[mode]) if spec is not None else ["kernel", "bias", *_OLD_DENSE_ENTRIES[mode]]
    return [
        name
        for name in names
        if not (name == "bias" and layer.bias is None)
        and not (name in ("kernel_zero", "g_idx") and not hasattr(layer, name))
    ]


def dense_quantized_kernel(layer: keras.layers.Dense) -> Any:
    """The float kernel that a calibrated GPTQ/AWQ Dense layer multiplies by, shape (in, units).

    Relies on: ``Dense.quantized_kernel`` (uint8, (units or ceil(units/2), in)),
    ``kernel_scale``/``kernel_zero``/``g_idx`` and ``awq_scales``, dequantized as
    ``Dense._gptq_call`` / ``_awq_call`` do (``keras.src.quantizers.dequantize_with_sz_map``,
    ``gptq_core.get_weight_bits_for_layer``).
    """
    from keras.src.quantizers import gptq_core
    from keras.src.quantizers.quantizers import dequantize_with_sz_map

    mode = layer.quantization_mode
    packed = mode == "awq" or gptq_core.get_weight_bits_for_layer(layer, None) == 4
    w = layer.quantized_kernel
    if packed:
        w = keras.quantizers.unpack_int4(w, orig_len=layer.units, axis=0, dtype="uint8")
    w = keras.ops.transpose(
        dequantize_with_sz_map(w, layer.kernel_scale, layer.kernel_zero, layer.g_idx)
    )
    if mode == "awq":
        w = keras.ops.divide(w, keras.ops.expand_dims(layer.awq_scales, -1))
    return w
