"""``where(mask, kernel, 0)``: the masked kernel of the dense implementation, and its gradient.

The dense ``MaskedDense`` computes with ``where(mask, kernel, 0)``, so a masked connection
contributes nothing and its gradient is exactly ``+0.0``. On a large kernel the two selects (the
kernel in the forward pass, its gradient in the backward pass) are a visible share of a step:
each is a pass over the whole array. From :data:`NATIVE_MIN_ENTRIES` entries on, they run on
maskmagic's native ``MaskmagicMaskSelect`` op (:mod:`maskmagic.layers.native`), which clears the
masked entries in place where it can and skips a mask of all ones; below that, and wherever the
native kernels do not run (a GPU, XLA, a SavedModel export, ``MASKMAGIC_SPARSE_KERNEL=stock``),
on TensorFlow's ``tf.where``. Both give the same bits.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from keras import ops

from maskmagic.layers import native

__all__ = ["NATIVE_MIN_ENTRIES", "cleared", "masked"]

# From here the native op pays for the one-off build (`bench/run.py --where`, 1024² and 4096²:
# a train step on the native select takes about 0.9x of the same step on tf.where); a smaller
# kernel (the quickstart's 784 x 256) keeps TensorFlow's select and builds nothing.
NATIVE_MIN_ENTRIES = 2**20


def masked(kernel: Any, mask: Any) -> Any:
    """``where(mask, kernel, 0)``; a mask of all ones returns ``kernel`` unchanged.

    Args:
        kernel: a float tensor.
        mask: a bool tensor of the same shape.
    """
    library = _library_for(kernel)
    if library is None:
        zero = ops.zeros((), dtype=kernel.dtype)  # a scalar: no kernel-sized intermediate
        return ops.cond(ops.all(mask), lambda: kernel, lambda: ops.where(mask, kernel, zero))
    return _native_masked(library, kernel, mask)


def cleared(values: Any, mask: Any) -> Any:
    """``where(mask, values, +0.0)`` outside a gradient (a train op zeroing excluded entries);
    in place on the native op where ``values`` is not shared."""
    library = _library_for(values)
    if library is None:
        return tf.where(mask, values, tf.zeros_like(values))
    return library.maskmagic_mask_select(values, mask)


def _library_for(values: Any) -> Any:
    """The native ops for a tensor of this size, or None for ``tf.where``."""
    entries = values.shape.num_elements()
    if entries is None or entries < NATIVE_MIN_ENTRIES:
        return None
    return native.kernel_ops()


def _native_masked(library: Any, kernel: Any, mask: Any) -> Any:
    """The select on the native op; its gradient is the same select of the upstream gradient."""

    @tf.custom_gradient
    def select(kernel):
        def grad(upstream):
            return library.maskmagic_mask_select(upstream, mask)

        return library.maskmagic_mask_select(kernel, mask), grad

    mask = tf.convert_to_tensor(mask)  # read once, outside the custom gradient
    return select(tf.convert_to_tensor(kernel))
