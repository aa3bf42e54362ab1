"""Masked convolutions: a channel table (or a kernel-shaped mask) chooses the connections.

:class:`MaskedConv2D` computes ``activation(conv(x, kernel * mask) + bias * bias_mask)`` (and
:class:`MaskedConv1D` the same in one spatial dimension). ``mask=`` is either a channel table of
shape (in_channels, filters), 1 where input map i feeds filter j (LeNet-5's C3 table), or a
kernel-shaped mask (kernel_h, kernel_w, in_channels, filters) that switches single kernel taps.
The mask is stored kernel-shaped as a non-trainable bool variable, so :meth:`set_mask` changes
what the next call of an already compiled train step uses without re-tracing it. Masked
connections contribute nothing and get a gradient of exactly zero.

``impl="grouped"`` (or ``"auto"`` when it pays) splits the channel table into its connected
blocks (block-diagonal after permuting channels) and runs one smaller convolution per block,
gathering each block's input channels and scattering its filters back into place; the kernel
variable keeps its full shape, so selectors, ``strip`` and saved files are the same for every
implementation. The blocks are fixed at build: a later :meth:`set_mask` may change connections
inside them but not connect two blocks (that raises :class:`~maskmagic.errors.MaskMagicError`).

Data format: channels last only (Keras' default).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from maskmagic import _compat
from maskmagic import masks as masklib
from maskmagic.errors import MaskError, MaskMagicError
from maskmagic.lang.specs import CONV_IMPLS, KERAS_OPTIONS
from maskmagic.layers.bias_mask import BiasMaskMixin
from maskmagic.masks import check as mask_check

__all__ = [
    "CONV_IMPLS",
    "MaskedConv1D",
    "MaskedConv2D",
    "channel_blocks",
    "grouped_cost",
    "validate_conv_mask",
]

# Kernel masks with at most this many entries are also stored, bit-packed, in get_config().
CONFIG_MASK_LIMIT = 1 << 22
# impl="auto" runs the blocks separately when they hold at most this fraction of the table
# (bench/bench_conv.py: at two equal blocks, 1/2 of the cells, the split already wins).
AUTO_GROUPED_MAX_FRACTION = 0.75

MaskLike = Any


def channel_blocks(table: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The connected blocks of a channel table, as (input channels, filters) index arrays.

    Two channels are in one block when a chain of connections joins them, so the table is
    block-diagonal after sorting channels and filters by block. Input channels that connect
    to nothing are left out; filters that nothing feeds join the first block (their kernel
    columns are masked, so they compute exactly zero, as on the dense implementation).
    Blocks are ordered by their smallest filter; indices inside a block are sorted.

    Returns:
        A list of (in_idx, filter_idx) int arrays; empty for a table with no connection.
    """
    table = np.asarray(table, dtype=bool)
    n_in, n_out = table.shape
    parent = list(range(n_in + n_out))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in zip(*np.nonzero(table), strict=True):
        ra, rb = find(int(i)), find(n_in + int(j))
        if ra != rb:
            parent[rb] = ra
    groups: dict[int, tuple[list[int], list[int]]] = {}
    idle: list[int] = []
    for j in range(n_out):
        if not table[:, j].any():
            idle.append(j)
            continue
        groups.setdefault(find(n_in + j), ([], []))[1].append(j)
    for i in range(n_in):
        if table[i].any():
            groups[find(i)][0].append(i)
    blocks = sorted(groups.values(), key=lambda g: g[1][0])
    if not blocks:
        return []
    first_in, first_out = blocks[0]
    blocks[0] = (first_in, sorted(first_out + idle))
    return [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in blocks]


def grouped_cost(blocks: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> float:
    """The fraction of the full convolution's multiply-adds that the blocks need."""
    total = shape[0] * shape[1]
    return sum(len(a) * len(b) for a, b in blocks) / total if total else 1.0


def validate_conv_mask(mask: MaskLike, kernel_shape: tuple[int, ...]) -> np.ndarray:
    """A channel table or a kernel-shaped mask, checked, as a kernel-shaped numpy bool array.

    Args:
        mask: an (in_channels, filters) table (array, nested lists, scipy.sparse, NamedMask, or
            a callable of the table shape) or an array of ``kernel_shape``.
        kernel_shape: (*kernel_size, in_channels, filters).

    Raises:
        MaskError: another shape, values other than 0/1, NaN.
    """
    table_shape = tuple(kernel_shape[-2:])
    if callable(mask):
        mask = masklib.validate(mask, table_shape)
    shape = getattr(mask, "shape", None)
    if shape is None:
        try:
            shape = np.shape(mask)
        except ValueError:  # ragged nested lists: the 2-D check names the row
            shape = mask_check.check_values(mask, "mask").shape
    if len(shape) == 2:
        if tuple(int(s) for s in shape) != table_shape:
            raise MaskError(
                f"mask has shape {tuple(int(s) for s in shape)}, expected the channel table "
                f"{table_shape} (in_channels x filters) or the kernel shape {tuple(kernel_shape)}"
            )
        table = mask_check.dense_bool(masklib.validate(mask, table_shape))
        return np.broadcast_to(table, kernel_shape).copy()
    if tuple(int(s) for s in shape) != tuple(kernel_shape):
        raise MaskError(
            f"mask has shape {tuple(shape)}, expected the channel table {table_shape} "
            f"(in_channels, filters) or the kernel shape {tuple(kernel_shape)}"
        )
    flat = np.reshape(np.asarray(mask), (-1, kernel_shape[-1]))
    checked = masklib.validate(flat, flat.shape)
    return mask_check.dense_bool(checked).reshape(kernel_shape)


def _tuple(value: Any, rank: int, name: str) -> tuple[int, ...]:
    items = (value,) * rank if isinstance(value, (int, np.integer)) else tuple(value)
    if len(items) != rank or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in items
    ):
        raise MaskMagicError(
            f"{name} must be a positive integer or a tuple of {rank} positive integers; "
            f"received {value!r}"
        )
    return tuple(int(v) for v in items)


def _pack(mask: np.ndarray) -> dict:
    bits = mask_check.pack_bits(mask)
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits).decode("ascii")}


def _unpack(packed: dict) -> np.ndarray:
    return mask_check.unpack_bits(base64.b64decode(packed["bits"]), tuple(packed["shape"]))


def _selection(order: np.ndarray, size: int) -> np.ndarray:
    """The (size, len(order)) 0/1 matrix whose product with x picks channels ``order``."""
    matrix = np.zeros((size, len(order)), dtype=np.float32)
    matrix[order, np.arange(len(order))] = 1.0
    return matrix


def _permute(x: Any, matrix: np.ndarray) -> Any:
    """Channels of ``x`` picked by a 0/1 selection matrix, as one matmul on the channel axis.

    Each output channel is ``x_c * 1`` plus exact zeros, so finite values come through
    unchanged; the gradient is the transposed product. On CPU this is several times faster
    than ``take`` along the last axis, whose gradient is a scatter-add.
    """
    return ops.matmul(x, ops.cast(matrix, x.dtype))


class _MaskedConv(BiasMaskMixin, keras.layers.Layer):
    """Shared implementation of :class:`MaskedConv1D` and :class:`MaskedConv2D`."""

    rank = 2

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, ...],
        strides: int | tuple[int, ...] = 1,
        padding: str = "valid",
        dilation_rate: int | tuple[int, ...] = 1,
        mask: MaskLike = None,
        bias_mask: MaskLike = None,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        impl: str = "auto",
        data_format: str | None = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._check_float_dtype()
        kind = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise MaskMagicError(
                f"{kind}: filters must be a positive integer; received {filters!r}"
            )
        if impl not in CONV_IMPLS:
            raise MaskMagicError(
                f"{kind}: impl must be one of {', '.join(CONV_IMPLS)}; received {impl!r}"
            )
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise MaskMagicError(f"{kind}: padding must be 'valid' or 'same'; received {padding!r}")
        if data_format not in (None, "channels_last"):
            raise MaskMagicError(
                f"{kind} supports data_format='channels_last' only; received {data_format!r}"
            )
        self.filters = int(filters)
        self.kernel_size = _tuple(kernel_size, self.rank, "kernel_size")
        self.strides = _tuple(strides, self.rank, "strides")
        self.dilation_rate = _tuple(dilation_rate, self.rank, "dilation_rate")
        self.padding = padding.lower()
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
        self._pending_mask = self._early_check(mask)
        self._pending_bias_mask = self._checked_bias_mask(bias_mask, self.filters)
        self.mask_version = 0
        self.kernel_format: str | None = None  # "dense" or "grouped", fixed at build
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self._plan_cache: dict | None = None
        self._saved_format: str | None = None
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _early_check(self, mask: MaskLike) -> MaskLike:
        """Checks what can be checked before the input channel count is known."""
        if mask is None or callable(mask):
            return mask
        shape = getattr(mask, "shape", None)
        if shape is None:
            try:
                shape = np.shape(mask)
            except ValueError:  # ragged nested lists
                shape = mask_check.check_values(mask, "mask").shape
        shape = tuple(int(s) for s in shape)
        if (
            len(shape) not in (2, self.rank + 2)
            or shape[-1] != self.filters
            or (len(shape) == self.rank + 2 and shape[: self.rank] != self.kernel_size)
        ):
            raise MaskError(
                f"mask has shape {shape}, expected a channel table (in_channels, "
                f"{self.filters}) or a kernel-shaped mask {(*self.kernel_size, 'in_channels', self.filters)}"
                f" for a {type(self).__name__} of {self.filters} filters"
            )
        return mask

    # ------------------------------------------------------------------ Keras API
    @classmethod
    def from_config(cls, config: dict) -> _MaskedConv:
        config = dict(config)
        kernel_format = config.pop("kernel_format", None)
        layer = super().from_config(config)
        layer._saved_format = kernel_format
        return layer

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """(*kernel_size, in_channels, filters); known once built."""
        return (*self.kernel_size, self.in_channels, self.filters)

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise MaskMagicError(
                f"{type(self).__name__} needs a known number of input channels; received None"
            )
        self.in_channels = int(channels)
        pending = self._pending_mask if self._pending_mask is not None else masklib.ones()
        full = self._validate(pending)
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.kernel_mask = self.add_weight(
            name="mask",
            shape=self.kernel_shape,
            dtype="bool",
            initializer=lambda shape, dtype=None: full,
            trainable=False,
        )
        self.kernel_format, self.blocks = self._choose_impl(full)
        self._plan_cache = None
        if self.kernel_format == "grouped":
            _ = self._plan  # index arrays computed once, outside any traced function
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
            if self._pending_bias_mask is not None:
                self.bias_mask.assign(self._pending_bias_mask.astype(self.bias_mask.dtype))
        else:
            self.bias = None
            self.bias_mask = None
        self._pending_mask = self._pending_bias_mask = None

    def _choose_impl(self, full: np.ndarray) -> tuple[str, list]:
        table = np.asarray(full.any(axis=tuple(range(self.rank))))
        blocks = channel_blocks(table)
        wanted = self._saved_format or self.impl
        if wanted == "dense" or not blocks:
            return "dense", []
        if wanted == "grouped":
            return "grouped", blocks
        fraction = grouped_cost(blocks, table.shape)
        if len(blocks) >= 2 and fraction <= AUTO_GROUPED_MAX_FRACTION:
            return "grouped", blocks
        return "dense", []

    def _validate(self, mask: MaskLike) -> np.ndarray:
        return validate_conv_mask(mask, self.kernel_shape)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        kernel, mask = self.kernel.value, self.kernel_mask.value
        zero = ops.zeros((), dtype=kernel.dtype)
        if self.kernel_format == "grouped":
            outputs = self._grouped(x, kernel, mask, zero)
        else:
            # A full mask skips the select (an in-graph check: no re-trace when it changes).
            masked = ops.cond(ops.all(mask), lambda: kernel, lambda: ops.where(mask, kernel, zero))
            outputs = self._conv(x, ops.cast(masked, self.compute_dtype))
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias * self.bias_mask, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _conv(self, x: Any, kernel: Any) -> Any:
        return ops.conv(
            x, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate
        )

    def _grouped(self, x: Any, kernel: Any, mask: Any, zero: Any) -> Any:
        """One convolution per block: permute channels once, split, convolve, concat, permute.

        The input channels are put in block order with one permutation (a product with a 0/1
        matrix, exact for finite inputs), split into contiguous slices, and each slice is
        convolved with its block of the kernel (gathered from the full kernel variable, so
        entries outside the blocks get a zero gradient); the filters are put back in order by
        one more permutation.
        """
        plan = self._plan
        if plan["in_perm"] is not None:
            x = _permute(x, plan["in_perm"])
        pieces = ops.split(x, plan["in_splits"], axis=-1) if plan["in_splits"] else [x]
        kernel = ops.where(mask, kernel, zero)
        if plan["k_in"] is not None:
            kernel = ops.take(kernel, plan["k_in"], axis=self.rank)
        if plan["k_out"] is not None:
            kernel = ops.take(kernel, plan["k_out"], axis=self.rank + 1)
        outputs = []
        ranges = zip(pieces, plan["in_ranges"], plan["out_ranges"], strict=True)
        for piece, (i0, i1), (o0, o1) in ranges:
            index = [slice(None)] * self.rank
            block = kernel[(*index, slice(int(i0), int(i1)), slice(int(o0), int(o1)))]
            outputs.append(self._conv(piece, ops.cast(block, self.compute_dtype)))
        y = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)
        if plan["out_perm"] is not None:
            y = _permute(y, plan["out_perm"])
        return y

    @property
    def _plan(self) -> dict:
        """Index arrays of the grouped path, computed once from ``self.blocks``."""
        if getattr(self, "_plan_cache", None) is None:
            in_order = np.concatenate([a for a, _ in self.blocks])
            out_order = np.concatenate([b for _, b in self.blocks])
            in_bounds = np.cumsum([0, *[len(a) for a, _ in self.blocks]])
            out_bounds = np.cumsum([0, *[len(b) for _, b in self.blocks]])
            identity_in = np.array_equal(in_order, np.arange(self.in_channels))
            identity_out = np.array_equal(out_order, np.arange(self.filters))
            self._plan_cache = {
                # input channels in block order (channels in no block dropped)
                "in_perm": None if identity_in else _selection(in_order, self.in_channels),
                "in_splits": [int(b) for b in in_bounds[1:-1]],
                "in_ranges": list(zip(in_bounds[:-1], in_bounds[1:], strict=True)),
                "out_ranges": list(zip(out_bounds[:-1], out_bounds[1:], strict=True)),
                "k_in": None if identity_in else in_order,
                "k_out": None if identity_out else out_order,
                # the concatenated outputs come in out_order: put filter j back at j
                "out_perm": None
                if identity_out
                else _selection(np.argsort(out_order), self.filters),
            }
        return self._plan_cache  # type: ignore[return-value]  # set just above

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        spatial: list[int | None] = []
        for n, k, s, d in zip(
            input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate, strict=True
        ):
            if n is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(-(-int(n) // s))
            else:
                spatial.append((int(n) - d * (k - 1) - 1) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self) -> dict:
        config = {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "impl": self.impl,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }
        if self.built:
            config["kernel_format"] = self.kernel_format
            if int(np.prod(self.kernel_shape)) <= CONFIG_MASK_LIMIT:
                config["mask"] = _pack(self.get_mask())
                if self.use_bias:
                    config["bias_mask"] = _pack(self.get_bias_mask())
        return {**super().get_config(), **config}

    def plain_config(self) -> dict:
        """The config of the equivalent plain ``keras.layers.ConvND`` (for ``strip``)."""
        config = self.get_config()
        keys = (
            "name", "trainable", "dtype", "filters", "kernel_size", "strides", "padding",
            "dilation_rate", *KERAS_OPTIONS,
        )  # fmt: skip
        return {key: config[key] for key in keys if key in config}

    # ------------------------------------------------------------------ masks
    def get_mask(self) -> np.ndarray:
        """The kernel-shaped mask (*kernel_size, in_channels, filters) as a numpy bool array."""
        self._require_built("mask")
        return keras.ops.convert_to_numpy(self.kernel_mask) != 0

    def get_channel_table(self) -> np.ndarray:
        """The (in_channels, filters) channel table: True where any kernel tap connects them."""
        return np.asarray(self.get_mask().any(axis=tuple(range(self.rank))))

    def set_mask(self, mask: MaskLike) -> None:
        """Replaces the mask: a channel table (in_channels, filters) or a kernel-shaped mask.

        Validated (shape, finite, 0/1). The next step of a compiled train step uses it without
        re-tracing.

        Raises:
            MaskMagicError: on the grouped implementation, a mask that connects two blocks.
        """
        self._require_built("mask")
        full = self._validate(mask)
        self._check_blocks(np.asarray(full.any(axis=tuple(range(self.rank)))))
        self.kernel_mask.assign(full)
        self.mask_version += 1

    def set_weights(self, weights: list) -> None:
        """Keras' ``set_weights``, with the masks among them checked like :meth:`set_mask`."""
        self._check_stored_masks(self.weights, weights, "set_weights")
        super().set_weights(weights)
        self.mask_version += 1

    def load_own_variables(self, store: Any) -> None:
        """Keras' loading of this layer's weights, with the stored masks checked first."""
        order = _compat.stored_variables(self)
        self._check_stored_masks(
            order, [store[str(i)] for i in range(len(store.keys()))], "weights file"
        )
        super().load_own_variables(store)
        self.mask_version += 1

    def _check_stored_masks(self, variables: list, values: list, where: str) -> None:
        """Checks the kernel and bias masks in ``values`` (matched to ``variables`` by position)
        as :meth:`set_mask` and :meth:`set_bias_mask` would, before anything is written. A
        list of the wrong length is left to Keras, which refuses it."""
        if len(values) != len(variables):
            return
        for variable, value in zip(variables, values):
            if variable is self.kernel_mask:
                full = self._validate(np.asarray(value))
                self._check_blocks(np.asarray(full.any(axis=tuple(range(self.rank)))))
            elif self.use_bias and variable is self.bias_mask:
                masklib.validate(np.asarray(value), (self.filters,), name=f"bias_mask in {where}")

    def _check_blocks(self, table: np.ndarray) -> None:
        """On the grouped implementation, refuses a table that connects two blocks."""
        if self.kernel_format != "grouped":
            return
        allowed = np.zeros((self.in_channels, self.filters), dtype=bool)
        for in_idx, out_idx in self.blocks:
            allowed[np.ix_(in_idx, out_idx)] = True
        outside = np.asarray(table, dtype=bool) & ~allowed
        if outside.any():
            i, j = (int(v[0]) for v in np.nonzero(outside))
            raise MaskMagicError(
                f"layer '{self.name}' runs its channel table as {len(self.blocks)} separate "
                f"blocks (impl='grouped', fixed at build); the new mask connects input "
                f"channel {i} to filter {j}, across blocks; expected a mask inside the "
                "blocks, or build the layer with impl='dense' to change them freely"
            )

    def check_channel_table(self, table: MaskLike) -> np.ndarray:
        """Validates a channel table for :meth:`set_channel_table` without changing anything.

        Returns:
            The table as a numpy bool array.

        Raises:
            MaskError, MaskMagicError: a bad table, or one that connects two grouped blocks.
        """
        self._require_built("mask")
        new = mask_check.dense_bool(masklib.validate(table, (self.in_channels, self.filters)))
        self._check_blocks(new)
        return new

    def set_channel_table(self, table: MaskLike) -> None:
        """Connects input channel i to filter j where ``table[i, j]`` is 1 (what editors change).

        Pairs whose table entry stays the same keep their kernel-shaped mask (single taps
        included); a newly connected pair gets its whole kernel window, a disconnected pair
        none. Validated like :meth:`set_mask`; no re-trace.
        """
        new = self.check_channel_table(table)
        full = self.get_mask()
        old = full.any(axis=tuple(range(self.rank)))
        full = np.where(new == old, full, new)
        self.set_mask(full)

    def effective_kernel(self) -> np.ndarray:
        """The kernel the network uses: ``kernel * mask`` (numpy, kernel-shaped)."""
        self._require_built("kernel")
        kernel = keras.ops.convert_to_numpy(self.kernel)
        return np.where(self.get_mask(), kernel, np.zeros((), kernel.dtype))


@keras.saving.register_keras_serializable("maskmagic")
class MaskedConv2D(_MaskedConv):
    """A 2-D convolution whose channel connections (or kernel taps) are switched by 0/1 masks.

    Args:
        filters: number of output channels.
        kernel_size: an int or (height, width).
        strides, dilation_rate: an int or a pair, as for ``keras.layers.Conv2D``.
        padding: ``"valid"`` or ``"same"``.
        mask: an (in_channels, filters) channel table (1 where input map i feeds filter j), a
            kernel-shaped (kh, kw, in_channels, filters) mask, or a callable of the table shape
            (``maskmagic.masks.blocks(4)``). None means fully connected.
        bias_mask: (filters,) 0/1 vector; None means every bias is on.
        activation: a Keras activation name or callable.
        use_bias: whether the layer has a bias.
        impl: ``"dense"`` (one convolution with the masked kernel), ``"grouped"`` (one
            convolution per connected block of the channel table) or ``"auto"`` (grouped when
            the table has at least 2 blocks holding at most 75% of its cells).
        data_format: ``"channels_last"`` or None (channels first is not supported).
        **kwargs: initializers, regularizers, constraints and base Layer arguments, as for
            ``keras.layers.Conv2D``.
    """

    rank = 2


@keras.saving.register_keras_serializable("maskmagic")
class MaskedConv1D(_MaskedConv):
    """A 1-D convolution with a channel table or kernel-shaped mask; see :class:`MaskedConv2D`.

    The kernel-shaped mask has shape (kernel_size, in_channels, filters).
    """

    rank = 1
