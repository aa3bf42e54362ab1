"""The helpers that :func:`maskmagic.codegen.to_source` copies into generated sources, by need.

This file is never imported by maskmagic: ``to_source`` reads its text and pastes the sections a
cell needs (each starts at a ``# --- section: NAME ---`` line) into the generated code, which
therefore needs only ``tensorflow`` and ``numpy``. It is a real module so that ruff checks it,
the private-access grep of ``tests/test_compat.py`` covers it, and tests can execute it. It uses
public TensorFlow/Keras API only.
"""

import base64

import keras
import numpy as np
import tensorflow as tf

# --- section: unpack ---


def _unpack(data, shape):
    """A bool array of `shape` from base64 text of np.packbits (row-major order)."""
    bits = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


# --- section: ones_at ---


def _ones_at(data, shape):
    """A bool array of `shape`, True at the flat (row-major) indices in base64 little-endian u8."""
    array = np.zeros(int(np.prod(shape)), dtype=bool)
    array[np.frombuffer(base64.b64decode(data), dtype="<u8")] = True
    return array.reshape(shape)


# --- section: masked_dense ---


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
        self.mask_values = (mask, bias_mask)

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
        mask, bias_mask = self.mask_values
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


# --- section: train_op ---


class MaskedTrainOp:
    """`op(x, y)`: one step that may change only the True entries of `update_masks` (None: all
    of a variable). The others get a zero gradient, which plain SGD turns into no change."""

    def __init__(self, model, loss, optimizer, update_masks):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.update_masks = update_masks
        self.var_list = [v for v in model.trainable_variables if v.path in update_masks]
        self.masks = [update_masks[v.path] for v in self.var_list]
        if not optimizer.built:  # for every variable, so that ops can share the optimizer
            optimizer.build(model.trainable_variables)

    @tf.function
    def step(self, x, y):
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.model(x, training=True))
        grads = tape.gradient(loss, self.var_list)
        grads = [g if m is None else tf.where(m, g, 0.0) for g, m in zip(grads, self.masks)]
        self.apply(grads)
        return loss

    def apply(self, grads):
        self.optimizer.apply(grads, self.var_list)

    def __call__(self, x, y):
        """Runs one step on the batch (x, y) and returns the loss before the update."""
        return float(self.step(tf.convert_to_tensor(x), tf.convert_to_tensor(y)))

    def update_mask(self, variable):
        """The entries of `variable` this op may change, as a bool array."""
        mask = self.update_masks.get(variable.path, False)
        return np.broadcast_to(True if mask is None else mask, variable.shape)


# --- section: restore ---


def _slots(optimizer, model):
    """{variable path: the optimizer variables that shadow it entry by entry (momentum, ...)}.

    Keras names such a variable "<variable path, '/' as '_'>_<slot name>" (documented in
    `Optimizer.add_variable_from_reference`); the longest matching path owns it.
    """
    owners = {v.path.replace("/", "_") + "_": v for v in model.trainable_variables}
    slots = {v.path: [] for v in model.trainable_variables}
    for slot in optimizer.variables:
        prefixes = [prefix for prefix in owners if slot.name.startswith(prefix)]
        if prefixes:
            owner = owners[max(prefixes, key=len)]
            if tuple(slot.shape) == tuple(owner.shape):
                slots[owner.path].append(slot)
    return slots


class RestoringTrainOp(MaskedTrainOp):
    """A MaskedTrainOp that, after each update, writes back the entries outside the op and the
    same entries of their optimizer slots, so that they stay bit-identical."""

    def __init__(self, model, loss, optimizer, update_masks):
        super().__init__(model, loss, optimizer, update_masks)
        slots = _slots(optimizer, model)
        self.guarded = [
            (v, m, slots[v.path]) for v, m in zip(self.var_list, self.masks) if m is not None
        ]

    def apply(self, grads):
        saved = [
            (tf.identity(v.value), [tf.identity(s.value) for s in slots])
            for v, _, slots in self.guarded
        ]
        super().apply(grads)
        for (variable, mask, slots), (old, old_slots) in zip(self.guarded, saved):
            variable.assign(tf.where(mask, variable.value, old))
            for slot, old_slot in zip(slots, old_slots):
                slot.assign(tf.where(mask, slot.value, old_slot))


# --- section: masked_conv ---


class MaskedConv(keras.layers.Layer):
    """A convolution computing ``activation(conv(x, kernel * mask) + bias * bias_mask)``.

    ``mask`` is an (in_channels, filters) channel table or a kernel-shaped
    (*kernel_size, in_channels, filters) 0/1 array, ``bias_mask`` a (filters,) one; both are
    stored as non-trainable weights (None means all ones), so a masked-out connection
    contributes nothing and its gradient is exactly zero. Channels last; 1-D or 2-D by
    ``len(kernel_size)``.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
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
        self.filters = filters
        self.kernel_size = tuple(kernel_size)
        self.strides = strides
        self.padding = padding
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
        shape = (*self.kernel_size, input_shape[-1], self.filters)
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
            full = np.broadcast_to(np.asarray(mask), shape)
            self.kernel_mask.assign(full.astype(self.kernel_mask.dtype))
        self.bias = self.bias_mask = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            self.bias_mask = self.add_weight(
                name="bias_mask", shape=(self.filters,), initializer="ones", trainable=False
            )
            if bias_mask is not None:
                self.bias_mask.assign(np.asarray(bias_mask).astype(self.bias_mask.dtype))

    def call(self, inputs):
        kernel = keras.ops.cast(self.kernel * self.kernel_mask, self.compute_dtype)
        x = keras.ops.cast(inputs, self.compute_dtype)
        outputs = keras.ops.conv(x, kernel, strides=self.strides, padding=self.padding)
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
