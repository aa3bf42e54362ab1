"""Masked Keras 3 layers: masked connections contribute nothing and get a zero gradient.

:class:`MaskedDense` computes ``activation(x @ (kernel * mask) + bias * bias_mask)``. The masks
are non-trainable variables (the kernel mask is stored as bool), so :meth:`MaskedDense.set_mask` changes what the next call of an
already compiled train step uses, without re-tracing it. Masks travel with the weights in
``.keras`` files; small masks are also written into the layer config (bit-packed) so that
``keras.models.clone_model`` and ``from_config`` keep them.

With ``impl="sparse"`` the layer stores only the connected weights (see
:mod:`maskmagic.layers.csr`): a trainable ``kernel`` of shape (nnz,) in row-major order of the
mask, and non-trainable int32 ``kernel_rows`` / ``kernel_cols`` (each weight's input and unit)
and ``kernel_order`` (the weights in column order). No (inputs, units) array is ever created: not at build, in ``call``, in the gradient, nor
in ``.keras`` files (the config records ``nnz`` so that loading builds the right shapes; the
mask itself travels in the weights). ``impl="auto"`` (the default) picks the implementation
with :func:`maskmagic.layers.csr.choose_impl`; the choice is ``layer.kernel_format``.
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
from maskmagic.layers import csr as sparse
from maskmagic.layers.sparse_kernel import SparseKernelMixin, pack_connections, unpack_connections
from maskmagic.masks import check as mask_check

__all__ = ["MaskedDense"]

IMPLS = ("auto", "dense", "sparse")
# Masks with at most this many entries are also stored, bit-packed, in get_config().
CONFIG_MASK_LIMIT = 1 << 22
# Sparse layers with at most this many connections also store them in get_config().
CONFIG_CONNECTIONS_LIMIT = 1 << 16

MaskLike = Any  # numpy array, nested lists, scipy.sparse, NamedMask, or a callable of the shape


def _pack(mask: np.ndarray) -> dict:
    bits = mask_check.pack_bits(mask)
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits).decode("ascii")}


def _unpack(packed: dict) -> Any:
    if "rows" in packed:
        return unpack_connections(packed)
    return mask_check.unpack_bits(base64.b64decode(packed["bits"]), tuple(packed["shape"]))


@keras.saving.register_keras_serializable("maskmagic")
class MaskedDense(SparseKernelMixin, keras.layers.Layer):
    """A Dense layer whose connections (and biases) are switched on or off by 0/1 masks.

    Args:
        units: number of output units.
        mask: (inputs, units) 0/1 connectivity matrix: a numpy array, nested lists, a
            ``scipy.sparse`` matrix, a :class:`maskmagic.masks.NamedMask`, or a callable of the
            shape (such as ``maskmagic.masks.random(0.1, seed=0)``). None means fully connected.
        bias_mask: (units,) 0/1 vector; None means every bias is on.
        activation: a Keras activation name or callable.
        use_bias: whether the layer has a bias.
        impl: ``"dense"`` (kernel and mask variables of shape (inputs, units)), ``"sparse"``
            (only the connected weights; ``get_mask()`` and ``effective_kernel()`` return
            ``scipy.sparse.csr_array``) or ``"auto"``: sparse for large low-density layers
            (at least 65,536 cells and at most 2% density, 5% from 1024 x 1024, 10% from
            4096 x 4096; see :func:`maskmagic.layers.csr.choose_impl`), dense otherwise.
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
        if isinstance(mask, dict) and ("bits" in mask or "rows" in mask):  # from get_config()
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
        self.kernel_format: str | None = None  # "dense" or "sparse", fixed at build
        self._saved_nnz: int | None = None  # set by from_config
        self._saved_format: str | None = None
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def _early_check(self, mask: MaskLike, name: str) -> MaskLike:
        """Checks the unit count of a mask whose shape is known before build."""
        if mask is None or callable(mask):
            return mask
        shape = getattr(mask, "shape", None)
        if shape is None:  # nested lists: check them now (ragged rows, values) for a clear error
            shape = mask_check.check_values(mask, name).shape
        if len(shape) == 2 and shape[1] != self.units:
            raise MaskError(
                f"{name} has shape {tuple(shape)}, expected (inputs, {self.units}) "
                f"(inputs x units) for a layer of {self.units} units"
            )
        return mask

    # ------------------------------------------------------------------ Keras API
    @classmethod
    def from_config(cls, config: dict) -> MaskedDense:
        config = dict(config)
        nnz = config.pop("nnz", None)
        kernel_format = config.pop("kernel_format", None)
        layer = super().from_config(config)
        layer._saved_nnz = None if nnz is None else int(nnz)
        layer._saved_format = kernel_format
        return layer

    def build(self, input_shape: tuple) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise MaskMagicError("MaskedDense needs a known last input dimension; received None")
        self.input_dim = int(input_dim)
        kernel_format, mask = self._resolve_format()
        self.kernel_format = kernel_format
        if kernel_format == "sparse":
            self._build_sparse(mask)
        else:
            self._build_dense(mask)
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

    def _resolve_format(self) -> tuple[str, Any]:
        """("dense" | "sparse", validated mask or None for a from_config placeholder)."""
        shape = (self.input_dim, self.units)
        if self._saved_format == "sparse" and self._pending_mask is None:
            if self._saved_nnz is not None:
                return "sparse", None  # the structure arrives with the weights
        pending = self._pending_mask if self._pending_mask is not None else masklib.ones()
        mask = masklib.validate(pending, shape)
        if self._saved_format in ("dense", "sparse"):
            return self._saved_format, mask
        if self.impl != "auto":
            return self.impl, mask
        nnz = mask.nnz if hasattr(mask, "nnz") else int(np.count_nonzero(mask))
        return sparse.choose_impl(self.input_dim, self.units, nnz), mask

    def _build_dense(self, mask: Any) -> None:
        shape = (self.input_dim, self.units)
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        initial = mask_check.dense_bool(
            mask
        )  # created from the array itself: no second full-size buffer
        self.kernel_mask = self.add_weight(
            name="mask",
            shape=shape,
            dtype="bool",
            initializer=lambda shape, dtype=None: initial,
            trainable=False,
        )

    def call(self, inputs: Any) -> Any:
        if self.kernel_format == "sparse":
            outputs = self._sparse_matmul(inputs)
        else:
            kernel = ops.cast(self._masked_kernel(), self.compute_dtype)
            outputs = ops.matmul(ops.cast(inputs, self.compute_dtype), kernel)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _masked_kernel(self) -> Any:
        """The dense implementation's ``kernel * mask``, as a select on the bool mask.

        A full mask skips the select (an in-graph check of 1 byte per entry, so no re-trace
        when the mask changes): a fully connected MaskedDense trains as fast as a Dense.
        """
        kernel, mask = self.kernel.value, self.kernel_mask.value
        zero = ops.zeros((), dtype=kernel.dtype)  # a scalar: no kernel-sized intermediate
        return ops.cond(ops.all(mask), lambda: kernel, lambda: ops.where(mask, kernel, zero))

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
        if self.built:
            config["kernel_format"] = self.kernel_format
            if self.is_sparse:
                config["nnz"] = int(self.kernel.shape[0])
                if config["nnz"] <= CONFIG_CONNECTIONS_LIMIT:
                    config["mask"] = pack_connections(*self.connections(), self._shape2)
            elif self.input_dim * self.units <= CONFIG_MASK_LIMIT:
                config["mask"] = _pack(self.get_mask())
            if self.use_bias and "mask" in config:
                config["bias_mask"] = _pack(self.get_bias_mask())
        return {**super().get_config(), **config}

    # ------------------------------------------------------------------ masks
    @property
    def is_sparse(self) -> bool:
        """Whether the layer stores only its connected weights (``kernel_format == "sparse"``)."""
        return self.kernel_format == "sparse"

    @property
    def _shape2(self) -> tuple[int, int]:
        return (self.input_dim, self.units)

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise MaskMagicError(
                f"layer '{self.name}' is not built yet, so it has no {what}; call the model "
                "once or build it with an input shape first"
            )

    def connections(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols): the input and the unit of each connection, in row-major order.

        On the sparse implementation entry k of ``kernel`` is the weight of connection k.
        """
        self._require_built("connections")
        if self.is_sparse:
            return self._sparse_connections()
        return sparse.structure_of(self.get_mask())

    def get_mask(self) -> Any:
        """The (inputs, units) connectivity mask.

        Returns:
            A numpy bool array on the dense implementation, a ``scipy.sparse.csr_array`` of
            bool on the sparse one.
        """
        self._require_built("mask")
        if self.is_sparse:
            rows, cols = self.connections()
            return sparse.to_csr(rows, cols, np.ones(rows.size, bool), self._shape2)
        return keras.ops.convert_to_numpy(self.kernel_mask) != 0

    def set_mask(self, mask: MaskLike) -> None:
        """Replaces the connectivity mask (validated: shape (inputs, units), finite, 0/1).

        On the dense implementation the next step of a compiled train step uses the new mask
        without re-tracing. On the sparse implementation a new topology replaces the index
        variables and the values vector in place (their TensorFlow shape is dynamic, so
        compiled functions that read them stay valid): connections present in both masks
        keep their weights, new connections start at exactly 0 (so adding connections does
        not change what the network computes, as in prune-and-regrow training), and removed
        ones are dropped. Optimizer slots sized for the old connections must be remapped:
        :class:`~maskmagic.training.TrainOp` does it (moments of kept connections are kept);
        a ``model.fit`` compiled before the change fails with a shape error instead.
        """
        self._require_built("mask")
        checked = masklib.validate(mask, self._shape2)
        if not self.is_sparse:
            self.kernel_mask.assign(mask_check.dense_bool(checked))
            self.mask_version += 1
            return
        self._set_sparse_mask(checked)

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

    def effective_kernel(self) -> Any:
        """The kernel the network uses: ``kernel * mask``.

        Returns:
            A numpy array on the dense implementation; a ``scipy.sparse.csr_array`` holding
            one entry per connection (zero-valued weights included) on the sparse one.
        """
        self._require_built("kernel")
        if self.is_sparse:
            rows, cols = self.connections()
            values = keras.ops.convert_to_numpy(self.kernel)
            return sparse.to_csr(rows, cols, values, self._shape2)
        return keras.ops.convert_to_numpy(self._masked_kernel())

    def effective_bias(self) -> np.ndarray | None:
        """The bias the network uses: ``bias * bias_mask`` as numpy (None without a bias)."""
        self._require_built("bias")
        if not self.use_bias:
            return None
        return keras.ops.convert_to_numpy(self.bias * self.bias_mask)
