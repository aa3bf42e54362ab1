"""The helpers that :func:`maskmagic.codegen.to_source` copies into every generated source.

This file is never imported by maskmagic: ``to_source`` reads its text (from the line after the
``# --- runtime ---`` marker) and pastes it into the generated code, which therefore needs only
``tensorflow`` and ``numpy``. It is a real module so that ruff checks it and tests can import it.
"""

# --- runtime ---
import base64

import keras
import numpy as np
import tensorflow as tf


def _unpack(data, shape):
    """A bool array of `shape` from base64 text of np.packbits (row-major order)."""
    bits = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _ones_at(data, shape):
    """A bool array of `shape`, True at the flat (row-major) indices in base64 little-endian u8."""
    array = np.zeros(int(np.prod(shape)), dtype=bool)
    array[np.frombuffer(base64.b64decode(data), dtype="<u8")] = True
    return array.reshape(shape)


class MaskedDense(keras.layers.Layer):
    """A Dense layer computing ``activation(x @ (kernel * mask) + bias * bias_mask)``.

    ``mask`` (inputs x units) and ``bias_mask`` (units,) are constant 0/1 arrays, stored as
    non-trainable weights (None means all ones): a masked-out connection contributes nothing
    to the output and its gradient is exactly zero.
    """

    def __init__(
        self,
        units,
        mask=None,
        bias_mask=None,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._masks = (mask, bias_mask)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.kernel_mask = self.add_weight(
            name="mask", shape=shape, initializer="ones", trainable=False
        )
        mask, bias_mask = self._masks
        if mask is not None:
            self.kernel_mask.assign(np.asarray(mask).astype(self.kernel_mask.dtype))
        self.bias = self.bias_mask = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            self.bias_mask = self.add_weight(
                name="bias_mask", shape=(self.units,), initializer="ones", trainable=False
            )
            if bias_mask is not None:
                self.bias_mask.assign(np.asarray(bias_mask).astype(self.bias_mask.dtype))

    def call(self, inputs):
        kernel = keras.ops.cast(self.kernel * self.kernel_mask, self.compute_dtype)
        outputs = keras.ops.matmul(keras.ops.cast(inputs, self.compute_dtype), kernel)
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


def _slots(optimizer, variable):
    """The optimizer variables that shadow `variable` entry by entry (momentum, moments, ...)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    tracked = optimizer._trainable_variables
    index = optimizer._get_variable_index(variable)
    found = []
    for attr, value in vars(optimizer).items():
        if attr == "_trainable_variables" or not isinstance(value, list):
            continue
        if len(value) == len(tracked) and hasattr(value[index], "assign"):
            if tuple(value[index].shape) == tuple(variable.shape):
                found.append(value[index])
    return found


def _total_loss(loss, y, prediction):
    """The loss of one output, or the sum over the outputs of a multi-output model."""
    if isinstance(prediction, (list, tuple)):
        return tf.add_n([tf.reduce_mean(loss(t, p)) for t, p in zip(y, prediction)])
    return tf.reduce_mean(loss(y, prediction))


def _tensors(data):
    """Arrays (or a list of arrays, one per model input or output) as tensors."""
    if isinstance(data, (list, tuple)) and data and np.ndim(data[0]) >= 2:
        return tuple(tf.convert_to_tensor(np.asarray(d)) for d in data)
    return tf.convert_to_tensor(np.asarray(data))


class MaskedTrainOp:
    """One train step that changes only the entries where ``update_masks`` is True.

    ``update_masks`` maps a variable path (``"out/kernel"``) to a bool array shaped like the
    variable, or to None for all of it. A step zeroes the gradient outside the mask, lets the
    optimizer update, then writes back the entries outside the mask and their optimizer slots,
    so they stay bit-identical under any optimizer (momentum and weight decay included).
    ``op(x, y)`` runs one step and returns the loss (before the update) as a float.
    """

    def __init__(self, model, loss, optimizer, update_masks, name):
        self.model, self.loss, self.optimizer, self.name = model, loss, optimizer, name
        variables = {v.path: v for v in model.trainable_variables}
        self.var_list = [variables[path] for path in update_masks]
        self._masks = [None if m is None else tf.constant(m) for m in update_masks.values()]
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._slots = [_slots(optimizer, v) for v in self.var_list]
        self._step = tf.function(self._one_step, reduce_retracing=True)

    def _one_step(self, x, y):
        with tf.GradientTape() as tape:
            prediction = self.model(x, training=True)
            loss = _total_loss(self.loss, y, prediction) + sum(self.model.losses)
        grads = tape.gradient(loss, self.var_list)
        grads = [
            tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, self.var_list)
        ]
        grads = [
            g if m is None else tf.where(m, g, tf.zeros_like(g)) for g, m in zip(grads, self._masks)
        ]
        guarded = [
            (v, m, s) for v, m, s in zip(self.var_list, self._masks, self._slots) if m is not None
        ]
        saved = [
            (tf.identity(v.value), [tf.identity(s.value) for s in slots]) for v, _, slots in guarded
        ]
        self.optimizer.apply(grads, self.var_list)
        for (variable, mask, slots), (old, old_slots) in zip(guarded, saved):
            variable.assign(tf.where(mask, variable.value, old))
            for slot, old_slot in zip(slots, old_slots):
                slot.assign(tf.where(mask, slot.value, old_slot))
        return loss

    def __call__(self, x, y):
        return float(self._step(_tensors(x), _tensors(y)))

    def update_mask(self, variable):
        """Bool array of the entries of `variable` (or its path) this op may change."""
        path = variable if isinstance(variable, str) else variable.path
        for v, mask in zip(self.var_list, self._masks):
            if v.path == path:
                return np.ones(v.shape, dtype=bool) if mask is None else mask.numpy()
        shape = {v.path: v.shape for v in self.model.trainable_variables}[path]
        return np.zeros(shape, dtype=bool)
