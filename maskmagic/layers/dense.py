"""Masked Keras 3 layers: masked connections contribute nothing and get a zero gradient.

:class:`MaskedDense` is a subclass of ``keras.layers.Dense`` computing
``activation(x @ (kernel * mask) + bias * bias_mask)``. The masks are non-trainable variables
(the kernel mask is stored as bool), so :meth:`MaskedDense.set_mask` changes what the next call
of an already compiled train step uses, without re-tracing it. They are *not* tracked as layer
weights: ``get_weights``/``set_weights``, ``layer.weights`` and weight counts are Dense's
(``[kernel, bias]``), so Dense weights and Dense weight files load into a MaskedDense. Masks
are reached through :meth:`~MaskedDense.get_mask`/:meth:`~MaskedDense.set_mask` and still
travel in ``.keras`` and ``.weights.h5`` files (after Dense's entries); small masks are also
written into the layer config (bit-packed) so that ``keras.models.clone_model`` and
``from_config`` keep them.

Quantization (``layer.quantize`` / ``model.quantize``, int8, int4, float8, GPTQ, AWQ, and the
quantized dtype policies) and LoRA (``enable_lora``, ``lora_rank=``) are Dense's, with the mask
applied so that masked connections stay absent: the int8/int4 kernel holds an exact zero (the
quantized zero point) at masked entries, float8 and GPTQ/AWQ mask the kernel they multiply by,
and the LoRA update is masked: the layer uses ``mask * (kernel + alpha / rank * A @ B)``.

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

from maskmagic import _compat
from maskmagic import masks as masklib
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.lang.specs import IMPLS
from maskmagic.layers import csr as sparse
from maskmagic.layers import mask_select
from maskmagic.layers.bias_mask import BiasMaskMixin
from maskmagic.layers.sparse_kernel import SparseKernelMixin, pack_connections, unpack_connections
from maskmagic.masks import check as mask_check

__all__ = ["MaskedDense"]

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


class _MaskVariables:
    """The mask variables of one layer, held outside Keras' tracking (not layer weights)."""

    def __init__(self) -> None:
        self.kernel: keras.Variable | None = None
        self.bias: keras.Variable | None = None


# The Dense entries come first in a saved store, then the kernel mask, then the bias mask.
_FLOAT_KERNEL_MODES = ("float8", "gptq", "awq")  # quantized modes that read the float kernel


def _gib(nbytes: int) -> str:
    """``nbytes`` in GiB for a message."""
    return f"{nbytes / 2**30:,.1f} GiB"


@keras.saving.register_keras_serializable("maskmagic")
class MaskedDense(BiasMaskMixin, SparseKernelMixin, keras.layers.Dense):
    """A ``keras.layers.Dense`` whose connections (and biases) are switched on or off by 0/1 masks.

    With ``mask=None`` it behaves like ``Dense`` wherever a user can see: outputs, weights
    (``get_weights()`` is ``[kernel, bias]``), weight files, quantization and LoRA.

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
            (at least 65,536 cells and at most 2% density, 10% from 1024 x 1024 with the
            native kernel, 5% and from 4096 x 4096 3% on TensorFlow's stock kernels; see
            :func:`maskmagic.layers.csr.choose_impl`), dense otherwise.
            Quantization and LoRA need the dense implementation.
        input_names: optional names of the inputs (rows of the mask); taken from a NamedMask.
        unit_names: optional names of the units (columns of the mask); taken from a NamedMask.
        **kwargs: initializers, regularizers, constraints, ``lora_rank``, ``lora_alpha``,
            ``quantization_config`` and base Layer arguments, as for ``keras.layers.Dense``.
    """

    bias: Any  # a keras.Variable, or None without a bias (Any at the Keras boundary)

    def __init__(
        self,
        units: int,
        mask: MaskLike = None,
        bias_mask: MaskLike = None,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        impl: str = "auto",
        input_names: Sequence[str] | None = None,
        unit_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise MaskMagicError(f"units must be a positive integer; received {units!r}")
        if impl not in IMPLS:
            raise MaskMagicError(f"impl must be one of {', '.join(IMPLS)}; received {impl!r}")
        super().__init__(int(units), activation=activation, use_bias=bool(use_bias), **kwargs)
        self._check_float_dtype()
        self._masks = _MaskVariables()
        self.impl = impl
        if isinstance(mask, dict) and ("bits" in mask or "rows" in mask):  # from get_config()
            mask = _unpack(mask)
        if isinstance(bias_mask, dict) and "bits" in bias_mask:
            bias_mask = _unpack(bias_mask)
        names = masklib.names_of(mask) if mask is not None else None
        self.input_names = tuple(input_names) if input_names else (names[0] if names else None)
        self.unit_names = tuple(unit_names) if unit_names else (names[1] if names else None)
        self._pending_mask = self._early_check(mask, "mask")
        self._pending_bias_mask = self._checked_bias_mask(bias_mask, self.units)
        self.mask_version = 0
        # A quantized layer whose masks were full when it was quantized (or built quantized)
        # runs Dense's quantized call unchanged: its graph reads no mask (see _check_quantized).
        self._quantized_without_masks = False
        self.kernel_format: str | None = None  # "dense" or "sparse", fixed at build
        self._saved_nnz: int | None = None  # set by from_config
        self._saved_format: str | None = None

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

    # ------------------------------------------------------------------ variables
    @property
    def kernel_mask(self) -> Any:  # a keras.Variable or None: Any at the Keras boundary
        """The (inputs, units) bool mask variable (None on the sparse implementation)."""
        return self._masks.kernel

    @property
    def bias_mask(self) -> Any:  # a keras.Variable or None: Any at the Keras boundary
        """The (units,) bias mask variable (None without a bias)."""
        return self._masks.bias

    @property
    def kernel(self) -> Any:
        """Dense's ``kernel``: the kernel variable (unmasked; see :meth:`effective_kernel`).

        With LoRA or int4 quantization it is Dense's merged or unpacked tensor; on the sparse
        implementation the (nnz,) values variable.
        """
        if self.kernel_format == "sparse":
            return _compat.dense_kernel(self)
        return keras.layers.Dense.kernel.fget(self)

    def _mask_variable(self, name: str, shape: tuple, dtype: str, initial: Any) -> keras.Variable:
        """A non-trainable variable named ``<layer>/<name>`` that Keras does not track."""
        with keras.name_scope(self.name, caller=self):
            return keras.Variable(
                initializer=initial, shape=shape, dtype=dtype, trainable=False, name=name
            )

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
            self.bias = None
            if self.use_bias:
                self.bias = self.add_weight(
                    name="bias",
                    shape=(self.units,),
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )
            self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: self.input_dim})
        else:
            initial = mask_check.dense_bool(mask)  # the array itself: no second full-size buffer
            self._masks.kernel = self._mask_variable(
                "mask", (self.input_dim, self.units), "bool", lambda shape, dtype=None: initial
            )
            super().build(input_shape)  # kernel, bias, input spec, LoRA (lora_rank=)
        if self.use_bias:
            self._masks.bias = self._mask_variable(
                "bias_mask", (self.units,), self.variable_dtype, "ones"
            )
            if self._pending_bias_mask is not None:
                self.bias_mask.assign(self._pending_bias_mask.astype(self.bias_mask.dtype))
        self._pending_mask = self._pending_bias_mask = None
        self.built = True
        if self.quantization_mode:  # built from a quantized dtype policy
            self._quantized_without_masks = self._masks_full()

    def _masks_full(self) -> bool:
        kernel_full = self.kernel_mask is None or bool(ops.all(self.kernel_mask.value))
        return kernel_full and (self.bias_mask is None or bool(ops.all(self.bias_mask.value)))

    def _all_ones(self, shape: tuple[int, int]) -> Any:
        """The mask of a layer given none; a layer too large for memory is the caller's error."""
        try:
            return masklib.ones(shape)
        except MemoryError:
            raise MaskMagicError(
                f"layer '{self.name}' has {shape[0]} x {shape[1]} connections; a dense kernel "
                f"that large needs {_gib(shape[0] * shape[1] * 5)} (kernel and mask), more memory "
                "than there is; expected a smaller layer, or a sparse mask with impl='sparse'"
            ) from None

    def _resolve_format(self) -> tuple[str, Any]:
        """("dense" | "sparse", validated mask or None for a from_config placeholder)."""
        shape = (self.input_dim, self.units)
        needs_dense = bool(self.quantization_mode or self.lora_rank)
        if needs_dense and "sparse" in (self.impl, self._saved_format):
            what = "quantization" if self.quantization_mode else "LoRA"
            raise MaskMagicError(
                f"layer '{self.name}': {what} needs impl='dense' (or 'auto'); received "
                "impl='sparse'"
            )
        if self._saved_format == "sparse" and self._pending_mask is None:
            if self._saved_nnz is not None:
                return "sparse", None  # the structure arrives with the weights
        pending = self._pending_mask if self._pending_mask is not None else self._all_ones(shape)
        mask = masklib.validate(pending, shape)
        if self._saved_format in ("dense", "sparse"):
            return self._saved_format, mask
        if self.impl != "auto":
            return self.impl, mask
        if needs_dense:
            return "dense", mask
        nnz = mask.nnz if hasattr(mask, "nnz") else int(np.count_nonzero(mask))
        return sparse.choose_impl(self.input_dim, self.units, nnz), mask

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self.kernel_format == "sparse":
            outputs = self._sparse_matmul(inputs)
        else:
            kernel = ops.cast(self._masked_kernel(), self.compute_dtype)
            outputs = ops.matmul(ops.cast(inputs, self.compute_dtype), kernel)
        return self._bias_and_activation(outputs)

    def _bias_and_activation(self, outputs: Any) -> Any:
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _masked_kernel(self) -> Any:
        """The dense implementation's ``kernel * mask``, as a select on the bool mask.

        A full mask skips the select (an in-graph check of 1 byte per entry, so no re-trace
        when the mask changes): a fully connected MaskedDense trains as fast as a Dense. A large
        kernel uses the native select (see :mod:`maskmagic.layers.mask_select`). With LoRA the
        mask applies to the merged kernel, so the low-rank update is masked too.
        """
        kernel = self.kernel if self.lora_enabled else _compat.dense_kernel(self).value
        return mask_select.masked(kernel, self.kernel_mask.value)

    def quantized_call(self, inputs: Any, training: bool | None = None) -> Any:
        """Dense's quantized call with the mask applied (see the module docstring)."""
        if self._quantized_without_masks:
            return super().quantized_call(inputs, training=training)
        mode = self.quantization_mode
        swap: dict[str, Any] = {"bias": None, "activation": None, "lora_enabled": False}
        calibrated = getattr(self, f"is_{mode}_calibrated", False)
        if mode == "float8" or (mode in ("gptq", "awq") and not calibrated):
            float_kernel = _compat.dense_kernel(self)
            swap["_kernel"] = ops.where(self.kernel_mask.value, float_kernel, 0)
        if mode in ("gptq", "awq") and calibrated:
            outputs = ops.matmul(ops.cast(inputs, self.compute_dtype), self._quantized_float())
        else:
            with _compat.dense_attributes(self, **swap):
                outputs = super().quantized_call(inputs, training=training)
        if self.lora_enabled:
            delta = ops.matmul(self.lora_kernel_a, self.lora_kernel_b)
            delta = ops.where(self.kernel_mask.value, delta, 0)
            lora = ops.matmul(ops.cast(inputs, delta.dtype), delta)
            outputs = outputs + ops.cast((self.lora_alpha / self.lora_rank) * lora, outputs.dtype)
        return self._bias_and_activation(outputs)

    def _quantized_float(self) -> Any:
        """A calibrated GPTQ/AWQ layer's dequantized kernel, masked, in the compute dtype."""
        kernel = ops.cast(_compat.dense_quantized_kernel(self), self.compute_dtype)
        return ops.where(self.kernel_mask.value, kernel, 0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        config: dict[str, Any] = {
            "impl": self.impl,
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

    # ------------------------------------------------------------------ quantization, LoRA
    def quantize(
        self, mode: str | None = None, type_check: bool = True, config: Any = None
    ) -> None:
        """Quantizes like ``Dense.quantize``; masked connections stay exactly zero.

        Raises:
            MaskMagicError: on the sparse implementation.
        """
        if type_check and type(self) is not MaskedDense:
            raise self._not_implemented_error(self.quantize)
        if self.built and self.is_sparse:
            raise MaskMagicError(
                f"layer '{self.name}' is sparse (impl='sparse'); quantization needs the dense "
                "implementation"
            )
        if self.built and mode in ("int8", "int4"):  # quantize what the network uses
            kernel = _compat.dense_kernel(self)
            kernel.assign(ops.where(self.kernel_mask.value, kernel, 0))
        super().quantize(mode, type_check=False, config=config)
        self._quantized_without_masks = self._masks_full()
        self._zero_masked_quantized()

    def _check_quantized(self, what: str, full: bool) -> None:
        """Refuses a mask change that the graph of a layer quantized with full masks cannot see.

        Such a layer runs Dense's quantized call, which reads no mask (so it exports and counts
        its variables like a Dense). Its int8/int4 kernel still takes a kernel mask exactly
        (masked entries are written as the quantized zero), unless LoRA is on.
        """
        if not (self.quantization_mode and self._quantized_without_masks) or full:
            return
        if what == "mask" and self.quantization_mode in ("int8", "int4") and not self.lora_enabled:
            return
        raise MaskMagicError(
            f"layer '{self.name}' was quantized ({self.quantization_mode}) with full masks, so "
            f"its quantized call reads no {what}; set the {what} before quantizing"
        )

    def _check_new_bias_mask(self, checked: np.ndarray) -> None:
        self._check_quantized("bias_mask", bool(checked.all()))

    def _zero_masked_quantized(self) -> None:
        """Writes the quantized zero at masked entries of an int8/int4 kernel."""
        mode = self.quantization_mode
        if mode not in ("int8", "int4") or self.kernel_mask is None:
            return
        mask = self.get_mask()
        if mask.all():
            return
        stored = _compat.dense_kernel(self)
        values = keras.ops.convert_to_numpy(stored)
        if mode == "int4":
            values = keras.ops.convert_to_numpy(
                keras.quantizers.unpack_int4(values, self.units, axis=-1)
            )
        zero = np.zeros_like(values)
        grouped = tuple(self.kernel_scale.shape) != (self.units,)
        if mode == "int4" and grouped:  # sub-channel (n_groups, units) scales: asymmetric
            groups = keras.ops.convert_to_numpy(self.g_idx).astype(int)
            zero = keras.ops.convert_to_numpy(self.kernel_zero)[groups].astype(values.dtype)
        values = np.where(mask, values, zero)
        if mode == "int4":
            values = keras.ops.convert_to_numpy(keras.quantizers.pack_int4(values, axis=-1)[0])
        stored.assign(values)

    def enable_lora(self, rank: int, *args: Any, **kwargs: Any) -> None:
        """Dense's ``enable_lora``; the low-rank update is masked like the kernel.

        Raises:
            MaskMagicError: on the sparse implementation.
        """
        if self.built and self.is_sparse:
            raise MaskMagicError(
                f"layer '{self.name}' is sparse (impl='sparse'); LoRA needs the dense "
                "implementation"
            )
        super().enable_lora(rank, *args, **kwargs)

    # ------------------------------------------------------------------ weights and files
    def _mask_entries(self) -> list:
        """The mask variables that follow Dense's entries in files (dense implementation)."""
        masks = [self.kernel_mask] if self.kernel_mask is not None else []
        return masks + ([self.bias_mask] if self.use_bias else [])

    def _dense_entry_count(self) -> int:
        """How many entries ``Dense.load_own_variables`` reads for this layer."""
        return len(_compat.dense_serialization_names(self))

    def _sparse_entries(self) -> list:
        """The sparse layer's file layout (that of the first version: kept as it was)."""
        bias = [self.bias] if self.use_bias else []
        return [self.kernel, *bias, self.kernel_rows, self.kernel_cols, self.kernel_order] + (
            [self.bias_mask] if self.use_bias else []
        )

    def save_own_variables(self, store: Any) -> None:
        """Dense's entries (``"0"``, ``"1"``, ...), then the kernel mask and the bias mask."""
        if not self.built:
            return
        if self.is_sparse:
            for i, variable in enumerate(self._sparse_entries()):
                store[str(i)] = variable
            return
        dense: dict = {}
        super().save_own_variables(dense)
        for i in range(len(dense)):
            store[str(i)] = dense[str(i)]
        for i, variable in enumerate(self._mask_entries(), start=len(dense)):
            store[str(i)] = variable

    def load_own_variables(self, store: Any) -> None:
        """Loads this layer's files, a Dense layer's (masks kept), or the first version's."""
        if not self.built:
            return super().load_own_variables(store)
        count = len(store.keys())
        if self.is_sparse:
            self._load_sparse([store[str(i)] for i in range(count)], "weights file")
            return
        dense, masks = self._dense_entry_count(), self._mask_entries()
        if count == 0:
            raise MaskMagicError(
                f"layer '{self.name}': the weights file has no entries for it; Keras keys "
                "weight files by layer class, so a file written by a model of "
                "keras.layers.Dense keeps them under 'dense' paths: load it with "
                "maskmagic.deploy.load_dense_weights(model, path)"
            )
        if count not in (dense, dense + len(masks)):
            raise MaskMagicError(
                f"layer '{self.name}': the weights file holds {count} entries, expected "
                f"{dense} (a Dense layer's) or {dense + len(masks)} (with the masks)"
            )
        super().load_own_variables(_Entries(store, dense))
        if count > dense:
            if self.quantization_mode:  # loading happens before the first call
                self._quantized_without_masks = False
            self._assign_masks([store[str(i)] for i in range(dense, count)])
            if self.quantization_mode:
                self._quantized_without_masks = self._masks_full()
        self._zero_masked_quantized()

    def _assign_masks(self, values: list) -> None:
        values = [np.asarray(v) for v in values]
        if self.kernel_mask is not None:
            self.set_mask(values[0])
        if self.use_bias:
            self.set_bias_mask(values[-1])

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Sets ``layer.weights`` from numpy arrays: Dense's ``[kernel, bias]`` on a dense layer.

        Also accepted: the list followed by the kernel mask and the bias mask (the
        ``get_weights()`` of the first version). On a sparse layer the list is
        ``[values (nnz,), bias, rows, cols, order]`` (plus the bias mask), or Dense's
        ``[kernel, bias]`` with zeros outside the layer's connections (converted).

        Raises:
            MaskMagicError: a wrong number of arrays or a wrong shape, naming both.
        """
        weights = list(weights)
        self._require_built("weights")
        if self.is_sparse:
            self._load_sparse(weights, "set_weights")
            return
        own, masks = self.weights, self._mask_entries()
        if len(weights) not in (len(own), len(own) + len(masks)):
            raise MaskMagicError(
                f"layer '{self.name}' set_weights expected {len(own)} arrays "
                f"({_shapes(own)}), or {len(own) + len(masks)} with the masks; received "
                f"{len(weights)} ({_shapes(weights)})"
            )
        _check_shapes(self.name, own + masks, weights)
        super().set_weights(weights[: len(own)])
        if len(weights) > len(own):
            self._assign_masks(weights[len(own) :])
        self._zero_masked_quantized()

    def _load_sparse(self, values: list, where: str) -> None:
        """Sets a sparse layer from its own layout or from Dense's ``[kernel, bias]``."""
        expected = self._sparse_entries()
        n_bias = int(self.use_bias)
        dense_like = len(values) == 1 + n_bias and np.ndim(values[0]) == 2
        if dense_like:
            values = [np.asarray(v) for v in values]
            _check_shapes(self.name, [_Shape(self._shape2), *([self.bias] * n_bias)], values)
            rows, cols = self.connections()
            outside = np.count_nonzero(values[0]) - np.count_nonzero(values[0][rows, cols])
            if outside:
                raise MaskMagicError(
                    f"layer '{self.name}' is sparse: {where} received a dense kernel of shape "
                    f"{self._shape2} with {outside} non-zero weights outside the layer's "
                    f"{rows.size} connections; expected zeros there (set the mask first)"
                )
            self.kernel.assign(values[0][rows, cols].astype(self.kernel.dtype))
            if n_bias:
                self.bias.assign(values[1])
            return
        if len(values) not in (len(expected) - n_bias, len(expected)):
            raise MaskMagicError(
                f"layer '{self.name}' is sparse: {where} expected [kernel (nnz,), "
                f"{'bias, ' if n_bias else ''}kernel_rows, kernel_cols, kernel_order"
                f"{', bias_mask' if n_bias else ''}] or Dense's [kernel "
                f"{self._shape2}{', bias' if n_bias else ''}]; received {len(values)} arrays "
                f"({_shapes(values)})"
            )
        values = [np.asarray(v) for v in values]
        sizes = {np.shape(values[i]) for i in (0, 1 + n_bias, 2 + n_bias, 3 + n_bias)}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise MaskMagicError(
                f"layer '{self.name}' is sparse: {where} expected kernel, kernel_rows, "
                f"kernel_cols and kernel_order of one length (nnz,); received {_shapes(values)}"
            )
        kernel, *rest = values
        if n_bias:
            bias, rest = rest[0], rest[1:]
            _check_shapes(self.name, [self.bias], [bias])
        rows, cols, order = rest[:3]
        self._check_connections(rows, cols, order, where)  # all checks before any change
        self.set_mask(sparse.to_csr(rows, cols, np.ones(rows.size, bool), self._shape2))
        sparse.resize(self.kernel, kernel.astype(keras.ops.convert_to_numpy(self.kernel).dtype))
        if n_bias:
            self.bias.assign(bias)
            if len(rest) > 3:
                self.set_bias_mask(rest[3])

    def _check_connections(self, rows: Any, cols: Any, order: Any, where: str) -> None:
        """Checks a sparse layout's kernel_rows, kernel_cols and kernel_order: integers, inside
        the layer's shape, connections in row-major order without repeats, and the order that
        sorts them by column."""
        problem = ""
        if not all(a.dtype.kind in "iu" for a in (rows, cols, order)):
            problem = f"integer arrays; received dtypes {rows.dtype}, {cols.dtype}, {order.dtype}"
        elif rows.size and (rows.min() < 0 or rows.max() >= self.input_dim):
            problem = (
                f"kernel_rows within 0..{self.input_dim - 1}; received {rows.min()}..{rows.max()}"
            )
        elif cols.size and (cols.min() < 0 or cols.max() >= self.units):
            problem = f"kernel_cols within 0..{self.units - 1}; received {cols.min()}..{cols.max()}"
        else:
            flat = rows.astype(np.int64) * self.units + cols
            if np.any(np.diff(flat) <= 0):
                problem = (
                    "connections in row-major order, each once; received them unsorted or repeated"
                )
            elif not np.array_equal(order, sparse.column_order(rows, cols)):
                problem = "a kernel_order that sorts the connections by column; received another"
        if problem:
            raise MaskMagicError(
                f"layer '{self.name}' is sparse: {where} expected {problem} (nothing was changed)"
            )

    # ------------------------------------------------------------------ masks
    @property
    def is_sparse(self) -> bool:
        """Whether the layer stores only its connected weights (``kernel_format == "sparse"``)."""
        return self.kernel_format == "sparse"

    @property
    def _shape2(self) -> tuple[int, int]:
        return (self.input_dim, self.units)

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
            self._check_quantized("mask", bool(mask_check.dense_bool(checked).all()))
            self.kernel_mask.assign(mask_check.dense_bool(checked))
            self.mask_version += 1
            if self.quantization_mode in ("int8", "int4"):
                self._zero_masked_quantized()  # a quantized kernel holds the mask as zeros
            return
        self._set_sparse_mask(checked)

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
        if self.quantization_mode:
            raise MaskMagicError(
                f"layer '{self.name}' is quantized ({self.quantization_mode}); its effective "
                "kernel is not a float array (strip and effective_kernel need a float layer)"
            )
        return keras.ops.convert_to_numpy(self._masked_kernel())


class _Entries:
    """The first ``count`` entries of a weights store (Dense's part of a masked layer's)."""

    def __init__(self, store: Any, count: int) -> None:
        self._store, self._count = store, count

    def keys(self) -> list[str]:
        return [str(i) for i in range(self._count)]

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __len__(self) -> int:
        return self._count


class _Shape:
    """A stand-in with a ``shape`` for :func:`_check_shapes`."""

    def __init__(self, shape: tuple) -> None:
        self.shape = shape


def _shapes(values: Sequence[Any]) -> str:
    return ", ".join(
        str(tuple(np.shape(v) if not hasattr(v, "shape") else v.shape)) for v in values
    )


def _check_shapes(name: str, expected: Sequence[Any], received: Sequence[Any]) -> None:
    for i, (want, got) in enumerate(zip(expected, received)):
        if tuple(want.shape) != tuple(np.shape(got)):
            raise MaskMagicError(
                f"layer '{name}' weight {i} has shape {tuple(want.shape)}; received an array "
                f"of shape {tuple(np.shape(got))} (expected shapes: {_shapes(expected)})"
            )
