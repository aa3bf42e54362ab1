"""Masked Keras 3 layers: masked connections contribute nothing and get a zero gradient.

:class:`MaskedDense` computes ``activation(x @ (kernel * mask) + bias * bias_mask)``. The masks
are non-trainable variables, so :meth:`MaskedDense.set_mask` changes what the next call of an
already compiled train step uses, without re-tracing it. Masks travel with the weights in
``.keras`` files; small masks are also written into the layer config (bit-packed) so that
``keras.models.clone_model`` and ``from_config`` keep them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from maskmagic import masks as masklib
from maskmagic.errors import MaskError, MaskMagicError

__all__ = ["MaskedDense"]

IMPLS = ("auto", "dense", "sparse")
# Masks with at most this many entries are also stored, bit-packed, in get_config().
CONFIG_MASK_LIMIT = 1 << 22

MaskLike = Any  # numpy array, nested lists, scipy.sparse, NamedMask, or a callable of the shape


def _pack(mask: np.ndarray) -> dict:
    bits = np.packbits(np.asarray(mask, dtype=bool).ravel())
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits.tobytes()).decode("ascii")}


def _unpack(packed: dict) -> np.ndarray:
    shape = tuple(packed["shape"])
    bits = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


@keras.saving.register_keras_serializable("maskmagic")
class MaskedDense(keras.layers.Layer):
    """A Dense layer whose connections (and biases) are switched on or off by 0/1 masks.

    Args:
        units: number of output units.
        mask: (inputs, units) 0/1 connectivity matrix: a numpy array, nested lists, a
            ``scipy.sparse`` matrix, a :class:`maskmagic.masks.NamedMask`, or a callable of the
            shape (such as ``maskmagic.masks.random(0.1, seed=0)``). None means fully connected.
        bias_mask: (units,) 0/1 vector; None means every bias is on.
        activation: a Keras activation name or callable.
        use_bias: whether the layer has a bias.
        impl: ``"dense"``, ``"sparse"`` or ``"auto"`` (see the README for the thresholds).
        input_names: optional names of the inputs (rows of the mask); taken from a NamedMask.
        unit_names: optional names of the units (columns of the mask); taken from a NamedMask.
        **kwargs: initializers, regularizers, constraints and base Layer arguments, as for
            ``keras.layers.Dense``.
    """

    def __init__(
        self,
        units: int,
        mask: MaskLike = None,
        bias_mask: MaskLike = None,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        impl: str = "auto",
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        input_names: Sequence[str] | None = None,
        unit_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise MaskMagicError(f"units must be a positive integer; received {units!r}")
        if impl not in IMPLS:
            raise MaskMagicError(f"impl must be one of {', '.join(IMPLS)}; received {impl!r}")
        self.units = int(units)
        self.impl = impl
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if isinstance(mask, dict) and "bits" in mask:  # from get_config()
            mask = _unpack(mask)
        if isinstance(bias_mask, dict) and "bits" in bias_mask:
            bias_mask = _unpack(bias_mask)
        names = masklib.names_of(mask) if mask is not None else None
        self.input_names = tuple(input_names) if input_names else (names[0] if names else None)
        self.unit_names = tuple(unit_names) if unit_names else (names[1] if names else None)
        self._pending_mask = self._early_check(mask, "mask")
        if bias_mask is not None and not self.use_bias:
            raise MaskMagicError("bias_mask was given but use_bias=False; drop one of them")
        self._pending_bias_mask = (
            None
            if bias_mask is None
            else masklib.validate(bias_mask, (self.units,), name="bias_mask")
        )
        self.mask_version = 0
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def _early_check(self, mask: MaskLike, name: str) -> MaskLike:
        """Checks the unit count of a mask whose shape is known before build."""
        if mask is None or callable(mask):
            return mask
        shape = getattr(mask, "shape", None) or np.shape(mask)
        if len(shape) == 2 and shape[1] != self.units:
            raise MaskError(
                f"{name} has shape {tuple(shape)}, expected (inputs, {self.units}) "
                f"(inputs x units) for a layer of {self.units} units"
            )
        return mask

    # ------------------------------------------------------------------ Keras API
    def build(self, input_shape: tuple) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise MaskMagicError("MaskedDense needs a known last input dimension; received None")
        self.input_dim = int(input_dim)
        mask = None
        if self._pending_mask is not None:
            mask = masklib.validate(self._pending_mask, (self.input_dim, self.units))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.kernel_mask = self.add_weight(
            name="mask", shape=(self.input_dim, self.units), initializer="ones", trainable=False
        )
        if mask is not None:  # the initializer already made an all-ones mask
            self.kernel_mask.assign(_dense(mask).astype(self.kernel_mask.dtype))
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
            if self._pending_bias_mask is not None:
                self.bias_mask.assign(self._pending_bias_mask.astype(self.bias_mask.dtype))
        else:
            self.bias = None
            self.bias_mask = None
        self._pending_mask = self._pending_bias_mask = None

    def call(self, inputs: Any) -> Any:
        kernel = ops.cast(self.kernel * self.kernel_mask, self.compute_dtype)
        outputs = ops.matmul(ops.cast(inputs, self.compute_dtype), kernel)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "impl": self.impl,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "input_names": list(self.input_names) if self.input_names else None,
            "unit_names": list(self.unit_names) if self.unit_names else None,
        }
        if self.built and self.input_dim * self.units <= CONFIG_MASK_LIMIT:
            config["mask"] = _pack(self.get_mask())
            if self.use_bias:
                config["bias_mask"] = _pack(self.get_bias_mask())
        return {**super().get_config(), **config}

    # ------------------------------------------------------------------ masks
    def _require_built(self, what: str) -> None:
        if not self.built:
            raise MaskMagicError(
                f"layer '{self.name}' is not built yet, so it has no {what}; call the model "
                "once or build it with an input shape first"
            )

    def get_mask(self) -> np.ndarray:
        """Returns the (inputs, units) connectivity mask as a numpy bool array."""
        self._require_built("mask")
        return keras.ops.convert_to_numpy(self.kernel_mask) != 0

    def set_mask(self, mask: MaskLike) -> None:
        """Replaces the connectivity mask (validated: shape (inputs, units), finite, 0/1).

        The next step of a compiled train step uses the new mask without re-tracing.
        """
        self._require_built("mask")
        checked = masklib.validate(mask, (self.input_dim, self.units))
        self.kernel_mask.assign(_dense(checked).astype(self.kernel_mask.dtype))
        self.mask_version += 1

    def get_bias_mask(self) -> np.ndarray:
        """Returns the (units,) bias mask as a numpy bool array."""
        self._require_built("bias mask")
        if not self.use_bias:
            raise MaskMagicError(f"layer '{self.name}' has use_bias=False, so no bias mask")
        return keras.ops.convert_to_numpy(self.bias_mask) != 0

    def set_bias_mask(self, bias_mask: MaskLike) -> None:
        """Replaces the bias mask (validated: shape (units,), finite, 0/1)."""
        self._require_built("bias mask")
        if not self.use_bias:
            raise MaskMagicError(f"layer '{self.name}' has use_bias=False, so no bias mask")
        checked = masklib.validate(bias_mask, (self.units,), name="bias_mask")
        self.bias_mask.assign(np.asarray(checked).astype(self.bias_mask.dtype))
        self.mask_version += 1

    def effective_kernel(self) -> np.ndarray:
        """The kernel the network uses: ``kernel * mask`` as numpy."""
        self._require_built("kernel")
        return keras.ops.convert_to_numpy(self.kernel * self.kernel_mask)

    def effective_bias(self) -> np.ndarray | None:
        """The bias the network uses: ``bias * bias_mask`` as numpy (None without a bias)."""
        self._require_built("bias")
        if not self.use_bias:
            return None
        return keras.ops.convert_to_numpy(self.bias * self.bias_mask)


def _dense(mask: Any) -> np.ndarray:
    """A validated mask as a dense numpy bool array."""
    if hasattr(mask, "toarray"):
        return mask.toarray().astype(bool)
    return np.asarray(mask, dtype=bool)
