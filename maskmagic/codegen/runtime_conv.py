"""The convolution helper that :func:`maskmagic.codegen.to_source` adds for conv cells.

Like :mod:`maskmagic.codegen.runtime`, never imported by maskmagic: ``to_source`` pastes the text
after the ``# --- runtime ---`` marker into the generated code, only when the cell has a
``conv1d`` or ``conv2d`` statement (the imports above the marker are the runtime's own).
"""

import keras
import numpy as np

# --- runtime ---


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
