"""The gradient of every connection of a Keras model, in one compiled pass (no widget code).

For a dense :class:`~maskmagic.layers.MaskedDense` the network uses ``E = kernel * mask``, so
``d loss / d kernel = mask * d loss / d E``. One compiled forward and backward pass gets both:
the model runs under a ``keras.StatelessScope`` in which the layer's kernel reads as ``E`` (a
watched tensor) and its mask as ones. The network then computes exactly what it always computes
(``E * 1 == E`` bit for bit), the tape returns ``d loss / d E`` -- the *would-be* gradient, what
each connection would receive were it switched on -- and the gradient itself is ``mask * would-be``,
the very product TensorFlow's gradient of ``kernel * mask`` evaluates. Biases work the same way.

Each kind of layer is handled by a small *probe* (:func:`register_probe` adds one): what to
substitute and differentiate inside the pass, and how to summarise the result (pooled heatmaps,
statistics, top connections) inside the same compiled function, so that only small arrays leave
it. The summary of a large dense layer (from
:data:`~maskmagic.layers.mask_select.NATIVE_MIN_ENTRIES` entries) runs on maskmagic's native
``MaskmagicBlockSummary`` op (one pass over the gradient, see
``maskmagic/layers/native_src/summary_ops.cc``), elsewhere as one XLA program. Plain ``Dense``
layers have no mask (gradient == would-be gradient); sparse ``MaskedDense`` layers
(``impl="sparse"``) give the gradient of each stored connection, and no would-be gradient
(their masked connections do not exist as numbers anywhere).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import _compat
from maskmagic.layers import mask_select, native

__all__ = [
    "GRID",
    "TOP_K",
    "Grid",
    "ConvProbe",
    "Probe",
    "apply_mask",
    "apply_mask_numpy",
    "decode_pool",
    "grid_for",
    "probe_for",
    "register_probe",
    "signed_key",
]

#: Most overview cells per axis; larger layers are pooled in blocks.
GRID = 256
#: Connections per layer in the table of top connections.
TOP_K = 10
#: Compile the summaries with XLA (fuses the passes over large gradients) above this many
#: entries (dense layers: cells, sparse layers: stored connections); smaller layers skip XLA's
#: launch cost.
USE_XLA = True
XLA_MIN_CELLS = 1 << 16


@dataclass(frozen=True)
class Grid:
    """How a layer's (inputs, units) matrix maps to overview cells of (bh, bw) connections."""

    inputs: int
    units: int
    bh: int
    bw: int

    @property
    def rows(self) -> int:
        """Overview rows: ceil(inputs / bh)."""
        return -(-self.inputs // self.bh)

    @property
    def cols(self) -> int:
        """Overview columns: ceil(units / bw)."""
        return -(-self.units // self.bw)

    @property
    def pooled(self) -> bool:
        """Whether a cell pools more than one connection."""
        return self.bh > 1 or self.bw > 1


def grid_for(shape: tuple[int, int], limit: int = GRID) -> Grid:
    """The overview grid of a layer: blocks of ceil(size / limit) connections per axis."""
    inputs, units = int(shape[0]), int(shape[1])
    return Grid(inputs, units, max(1, math.ceil(inputs / limit)), max(1, math.ceil(units / limit)))


# ----------------------------------------------------------------------------- graph helpers


def signed_key(x: Any) -> Any:
    """int32 keys whose maximum picks the float32 entry of largest magnitude, sign kept.

    The magnitude's bits with the lowest mantissa bit replaced by the sign: comparing keys
    compares magnitudes (to 1 ulp), and the winner's sign travels with it.
    """
    bits = tf.bitcast(tf.cast(x, tf.float32), tf.int32)
    sign = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 1)
    return tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(bits, 0x7FFFFFFE), sign)


def decode_pool(key: Any) -> Any:
    """float32 values back from :func:`signed_key` keys (empty blocks read 0)."""
    key = tf.maximum(key, 0)
    magnitude = tf.bitcast(tf.bitwise.bitwise_and(key, 0x7FFFFFFE), tf.float32)
    return tf.where(tf.equal(tf.bitwise.bitwise_and(key, 1), 1), -magnitude, magnitude)


def apply_mask(values: Any, mask: Any) -> Any:
    """What a MaskedDense does to its kernel: a select for a bool mask, a product otherwise.

    The same formula gives the gradient from the would-be gradient (the chain rule through
    ``where(mask, kernel, 0)`` or ``kernel * mask``). A large bool mask takes the layer's own
    native select (:func:`maskmagic.layers.mask_select.cleared`: the same bits).
    """
    if mask.dtype == tf.bool:
        return mask_select.cleared(values, mask)
    return values * tf.cast(mask, values.dtype)


def apply_mask_numpy(values: np.ndarray, connected: np.ndarray, select: bool) -> np.ndarray:
    """:func:`apply_mask` in numpy, from a bool ``connected`` array."""
    if select:
        return np.where(connected, values, np.zeros((), values.dtype))
    return values * connected.astype(values.dtype)


def _blocks(x: Any, grid: Grid, reduce: Callable) -> Any:
    """Reduces each (bh, bw) block of an (inputs, units, n) tensor: (rows, cols, n).

    Two stages, the first over the contiguous minor axis, which XLA turns into one fused loop
    over the big tensor; the second works on a tensor bw times smaller.
    """
    n = x.shape[-1]
    x = tf.pad(
        x, [[0, grid.rows * grid.bh - grid.inputs], [0, grid.cols * grid.bw - grid.units], [0, 0]]
    )
    partial = reduce(tf.reshape(x, (grid.rows * grid.bh, grid.cols, grid.bw, n)), axis=2)
    return reduce(tf.reshape(partial, (grid.rows, grid.bh, grid.cols, n)), axis=1)


def _count(condition: Any) -> Any:
    """How many entries are true, as int64 (a layer may hold more than 2**31 connections)."""
    return tf.reduce_sum(tf.reduce_sum(tf.cast(condition, tf.int64), axis=-1))


def _top(wb: Any, mask: Any, g_pool: Any, grid: Grid, k: int) -> tuple[Any, Any]:
    """Flat indices and gradients of the k entries of largest |gradient|, exact.

    The k largest entries lie in the k blocks with the largest maxima: only those blocks are
    gathered (from ``wb`` and ``mask``, so that XLA never materialises the masked gradient).
    """

    def gradient_at(flat: Any) -> Any:
        values = tf.gather(tf.reshape(wb, [-1]), flat)
        return (
            values if mask is None else apply_mask(values, tf.gather(tf.reshape(mask, [-1]), flat))
        )

    if not grid.pooled:
        _, index = tf.math.top_k(_magnitude(tf.reshape(g_pool, [-1])), k)
        return index, gradient_at(index)
    kb = min(k, grid.rows * grid.cols)
    _, blocks = tf.math.top_k(_magnitude(tf.reshape(g_pool, [-1])), kb)
    blocks = tf.cast(blocks, tf.int64)  # flat indices may pass 2**31
    rows = tf.minimum(
        (blocks // grid.cols)[:, None] * grid.bh + tf.range(grid.bh, dtype=tf.int64),
        grid.inputs - 1,
    )
    cols = tf.minimum(
        (blocks % grid.cols)[:, None] * grid.bw + tf.range(grid.bw, dtype=tf.int64),
        grid.units - 1,
    )
    flat = tf.reshape(rows[:, :, None] * grid.units + cols[:, None, :], [-1])
    values = gradient_at(flat)
    _, pick = tf.math.top_k(_magnitude(values), min(k, kb * grid.bh * grid.bw))
    return tf.gather(flat, pick), tf.gather(values, pick)


def _magnitude(values: Any) -> Any:
    """What top_k ranks: |values|, with NaN above inf on every path.

    XLA's float top_k already puts NaN first (and has a fast kernel for float32 only);
    TensorFlow's never picks a NaN, so outside XLA the magnitude's bits rank as int32.
    """
    if _compat.in_xla_context():
        return tf.abs(values)
    return tf.bitwise.bitwise_and(tf.bitcast(tf.cast(values, tf.float32), tf.int32), 0x7FFFFFFF)


def dense_summary(
    wb: Any, mask: Any, update: Any, kernel: Any, grid: Grid, k: int, library: Any = None
) -> dict:
    """Everything the inspector shows about one dense layer, from its would-be gradient.

    Args:
        wb: (inputs, units) would-be gradient ``d loss / d (kernel * mask)``.
        mask: (inputs, units) bool or 0/1 float mask, or None (a plain layer: gradient == wb).
        update: (inputs, units) bool update set of the op, or None (all connected entries).
        kernel: (inputs, units) raw kernel values (for the weights of the top connections).
        grid: the overview grid.
        k: number of top connections.
        library: the native ops (:func:`maskmagic.layers.native.kernel_ops`) to pool a pooled
            grid with a bool (or no) mask in one pass, or None for TensorFlow's ops.

    Returns:
        ``g_pool``, ``wb_pool`` (masked layers), ``upd_pool`` (with an update set): the
        (rows, cols) signed max-|value| of each block (the values themselves when the grid is
        not pooled); ``sumsq``, ``zeros``, ``masked_nonzero``; ``top_index`` (flat), ``top_g``,
        ``top_w``; ``w``, the kernel, when the grid is not pooled.
    """
    wb = tf.cast(wb, tf.float32)
    if grid.pooled and library is not None and (mask is None or mask.dtype == tf.bool):
        pools, sumsq, zeros = _native_pools(library, wb, mask, update, grid)
    else:
        pools, sumsq, zeros = _pools(wb, mask, update, grid)
    out = {"g_pool": pools[0], "sumsq": sumsq, "zeros": zeros}
    if mask is not None:
        out["wb_pool"] = pools[1]

        # g = wb * mask: a masked entry is non-zero only if its would-be gradient is not finite,
        # and then the sum of squares is not finite either; count only in that case.
        def count() -> Any:  # from wb and mask: g itself is never materialised
            masked = tf.logical_not(tf.cast(mask, tf.bool))
            return _count(masked & tf.not_equal(apply_mask(wb, mask), 0))

        out["masked_nonzero"] = tf.cond(
            tf.math.is_finite(sumsq), lambda: tf.constant(0, tf.int64), count
        )
    else:
        out["masked_nonzero"] = tf.constant(0, tf.int64)
    if update is not None:
        out["upd_pool"] = pools[-1]
    index, values = _top(wb, mask, pools[0], grid, k)
    out.update(top_index=index, top_g=values, top_w=tf.gather(tf.reshape(kernel, [-1]), index))
    if not grid.pooled:
        out["w"] = tf.cast(kernel, tf.float32)  # small: the tooltips show every weight
    return out


def _pools(wb: Any, mask: Any, update: Any, grid: Grid) -> tuple[list, Any, Any]:
    """([g, wb (masked layers), update view (with an update set)] pooled, sum of g**2, zeros
    of g), with TensorFlow's ops (one fused program under XLA)."""
    g = wb if mask is None else apply_mask(wb, mask)
    shown = [g] + ([wb] if mask is not None else [])
    if update is not None:
        shown.append(tf.where(update, g, tf.zeros_like(g)))
    if not grid.pooled:
        return shown, tf.reduce_sum(tf.square(g)), _count(tf.equal(g, 0))
    keys = _blocks(tf.stack([signed_key(v) for v in shown], -1), grid, tf.reduce_max)
    pools = [decode_pool(keys[..., i]) for i in range(len(shown))]
    sums = _blocks(
        tf.stack([tf.square(g), tf.cast(tf.equal(g, 0), tf.float32)], -1), grid, tf.reduce_sum
    )
    return pools, tf.reduce_sum(sums[..., 0]), tf.reduce_sum(tf.cast(sums[..., 1], tf.int64))


def _native_pools(
    library: Any, wb: Any, mask: Any, update: Any, grid: Grid
) -> tuple[list, Any, Any]:
    """:func:`_pools` on the native ``MaskmagicBlockSummary`` op: the same pooled values (the
    keys are exact), the sum of squares accumulated in double."""
    absent = tf.zeros((0,), tf.bool)
    keys, sumsq, zeros = library.maskmagic_block_summary(
        wb,
        absent if mask is None else mask,
        absent if update is None else tf.cast(update, tf.bool),
        bh=grid.bh,
        bw=grid.bw,
        has_mask=mask is not None,
        has_update=update is not None,
    )
    views = 1 + (mask is not None) + (update is not None)
    return [decode_pool(keys[..., i]) for i in range(views)], sumsq, zeros


def _sparse_pool(values: Any, block: Any, cells: int) -> Any:
    keys = tf.math.unsorted_segment_max(signed_key(values), block, cells)
    return decode_pool(keys)


# ----------------------------------------------------------------------------- probes


class Probe:
    """How the pass handles one layer with a 2-D kernel (here: a plain ``Dense``).

    Subclasses override :meth:`sources` (what to substitute and differentiate) and
    :meth:`summary` (in-graph summaries); the numpy side reads :attr:`kind`,
    :attr:`has_would_be` and :meth:`connected`.
    """

    kind = "plain"
    has_would_be = True
    #: Whether the pass keeps the kernel-shaped gradient (for conv kernel windows).
    keeps_kernel_gradient = False

    def __init__(self, layer: keras.layers.Layer) -> None:
        self.layer = layer
        self.name = layer.name
        self.shape = self._shape()
        self.grid = grid_for(self.shape)
        self.bias = getattr(layer, "bias", None)
        self.bias_mask = getattr(layer, "bias_mask", None) if self.bias is not None else None
        self.k = min(TOP_K, self.shape[0] * self.shape[1])
        self._library = self._summary_library()
        self._summary = tf.function(
            self._summarise,
            jit_compile=USE_XLA and self._library is None and self._xla_worthwhile(),
            autograph=False,
        )

    def _summary_library(self) -> Any:
        """The native ops for the summary of a pooled layer from
        :data:`~maskmagic.layers.mask_select.NATIVE_MIN_ENTRIES` entries, or None (XLA or
        TensorFlow's ops)."""
        entries = self.shape[0] * self.shape[1]
        if not self.grid.pooled or entries < mask_select.NATIVE_MIN_ENTRIES:
            return None
        return native.kernel_ops()

    def _xla_worthwhile(self) -> bool:
        """Whether XLA's fused summary pays for its launch: above XLA_MIN_CELLS entries."""
        return self.shape[0] * self.shape[1] > XLA_MIN_CELLS

    def _shape(self) -> tuple[int, int]:
        """The layer's (inputs, units)."""
        inputs, units = (int(s) for s in self.layer.kernel.shape)
        return inputs, units

    # graph side -----------------------------------------------------------------------
    def sources(self) -> tuple[list, Any, Any]:
        """(state mapping, kernel target, bias target): the pass substitutes the mapping's
        variables inside a ``keras.StatelessScope`` and differentiates the two targets
        (watched tensors; None for a layer without a bias)."""
        kernel = tf.identity(tf.convert_to_tensor(self.layer.kernel))
        mapping, bias = self._bias_sources()
        return [(self.layer.kernel, kernel), *mapping], kernel, bias

    def _bias_sources(self) -> tuple[list, Any]:
        """(state mapping, watched effective bias) for the bias, or ([], None) without one."""
        if self.bias is None:
            return [], None
        if self.bias_mask is None:
            value = tf.identity(tf.convert_to_tensor(self.bias))
            return [(self.bias, value)], value
        mask = tf.convert_to_tensor(self.bias_mask)
        effective = apply_mask(tf.convert_to_tensor(self.bias), mask)
        ones = tf.ones(tf.shape(mask), dtype=mask.dtype)
        return [(self.bias, effective), (self.bias_mask, ones)], effective

    def overview(self, kernel_grad: Any) -> Any:
        """The (inputs, units) matrix the views show for the kernel target's gradient (in
        graph); the gradient itself for a layer with a 2-D kernel."""
        return kernel_grad

    def table_update(self, update: Any) -> Any:
        """The op's update set over the kernel, as (inputs, units) (numpy; None stays None)."""
        return update

    def weight_matrix(self) -> Any:
        """The (inputs, units) weights shown next to each connection (a tensor)."""
        return tf.convert_to_tensor(self.layer.kernel)

    def mask_tensor(self) -> Any:
        """The kernel's mask as a tensor (bool or 0/1), or None for a layer without one."""
        return None

    def summary(self, kernel_grad: Any, update: Any) -> dict:
        """The in-graph summaries (see :func:`dense_summary`) of the kernel's gradient.

        Args:
            kernel_grad: the gradient of the objective with respect to the kernel target of
                :meth:`sources` (the would-be gradient, for layers that have one).
            update: (inputs, units) bool update set of the op, or None.
        """
        return self._summary(kernel_grad, self.mask_tensor(), update, self.weight_matrix())

    def _summarise(self, wb: Any, mask: Any, update: Any, kernel: Any) -> dict:
        """The compiled body of :meth:`summary`."""
        return dense_summary(wb, mask, update, kernel, self.grid, self.k, self._library)

    def bias_summary(self, bias_grad: Any) -> dict:
        """``{"bias_wb", "bias_g"}``: the bias's would-be gradient and gradient ({} without a
        bias)."""
        if self.bias is None:
            return {}
        wb = tf.convert_to_tensor(bias_grad)
        if self.bias_mask is None:
            return {"bias_wb": wb, "bias_g": wb}
        return {"bias_wb": wb, "bias_g": apply_mask(wb, tf.convert_to_tensor(self.bias_mask))}

    # numpy side -----------------------------------------------------------------------
    def gradient_numpy(self, wb: np.ndarray, connected: np.ndarray) -> np.ndarray:
        """The gradient from the would-be gradient and the (dense bool) connectivity."""
        return wb

    def connected(self) -> Any:
        """The (inputs, units) connectivity: numpy bool, or scipy.sparse for sparse layers."""
        return np.ones(self.shape, dtype=bool)

    def bias_connected(self) -> np.ndarray | None:
        """The (units,) bool connectivity of the bias, or None for a layer without one."""
        if self.bias is None:
            return None
        if self.bias_mask is None:
            return np.ones(self.shape[1], dtype=bool)
        return keras.ops.convert_to_numpy(self.bias_mask) != 0

    def version(self) -> int:
        """The layer's mask version (changes with its mask; 0 for a plain layer)."""
        return int(getattr(self.layer, "mask_version", 0))


class MaskedProbe(Probe):
    """A dense ``MaskedDense``: differentiate the effective kernel, read the mask as ones."""

    kind = "masked"

    def sources(self) -> tuple[list, Any, Any]:
        """Kernel -> effective kernel (watched), mask -> ones; the bias likewise."""
        layer = self.layer
        mask = tf.convert_to_tensor(layer.kernel_mask)
        effective = apply_mask(tf.convert_to_tensor(layer.kernel), mask)
        ones = tf.ones(tf.shape(mask), dtype=mask.dtype)
        mapping = [(layer.kernel, effective), (layer.kernel_mask, ones)]
        bias_mapping, bias = self._bias_sources()
        return mapping + bias_mapping, effective, bias

    @property
    def select(self) -> bool:
        """Whether the mask is bool (the layer selects) rather than a 0/1 factor."""
        return str(self.layer.kernel_mask.dtype) == "bool"

    def gradient_numpy(self, wb: np.ndarray, connected: np.ndarray) -> np.ndarray:
        """The gradient: the would-be gradient with the masked entries zeroed."""
        return apply_mask_numpy(wb, connected, self.select)

    def mask_tensor(self) -> Any:
        """The layer's kernel mask as a tensor."""
        return tf.convert_to_tensor(self.layer.kernel_mask)

    def connected(self) -> np.ndarray:
        """The (inputs, units) bool connectivity: the mask's non-zero entries."""
        return keras.ops.convert_to_numpy(self.layer.kernel_mask) != 0


class SparseProbe(Probe):
    """A sparse ``MaskedDense``: the gradient of each stored connection (no would-be)."""

    kind = "sparse"
    has_would_be = False

    def _shape(self) -> tuple[int, int]:
        """The layer's declared (inputs, units) (it stores only the connected entries)."""
        return (int(self.layer.input_dim), int(self.layer.units))

    def _summary_library(self) -> Any:
        """None: the (nnz,) gradient is pooled by TensorFlow's segment ops (or XLA)."""
        return None

    def _xla_worthwhile(self) -> bool:
        """Above XLA_MIN_CELLS stored connections: the pooling, statistics and top entries of
        the (nnz,) gradient then run as one fused program instead of TensorFlow's separate
        single-threaded ops (``python bench/bench_inspector.py``, the sparse row)."""
        return int(self.layer.kernel.shape[0]) > XLA_MIN_CELLS

    def sources(self) -> tuple[list, Any, Any]:
        """(bias mapping, the (nnz,) kernel itself, bias target)."""
        # A resizable (nnz,) variable cannot be substituted: the tape watches it directly.
        mapping, bias = self._bias_sources()
        return mapping, self.layer.kernel.value, bias

    def summary(self, kernel_grad: Any, update: Any) -> dict:
        """The in-graph summaries of the (nnz,) gradient of the stored connections: pooled
        per block by the connections' rows and columns, plus ``g_values`` (every value)."""
        return self._summary(
            tf.convert_to_tensor(kernel_grad),
            tf.convert_to_tensor(self.layer.kernel_rows),
            tf.convert_to_tensor(self.layer.kernel_cols),
            update,
            tf.convert_to_tensor(self.layer.kernel),
        )

    def _summarise(  # type: ignore[override]  # each probe compiles its own body
        self, g: Any, rows: Any, cols: Any, update: Any, values: Any
    ) -> dict:
        """The compiled body of :meth:`summary`; ``update`` is the (nnz,) bool update set."""
        grid = self.grid
        block = (rows // grid.bh) * grid.cols + cols // grid.bw  # < 256 * 256: int32 is enough
        cells = grid.rows * grid.cols
        shape = (grid.rows, grid.cols)
        # The declared (inputs, units) may exceed 2**31 cells: count and index in int64.
        absent = tf.constant(grid.inputs * grid.units, tf.int64) - tf.size(g, out_type=tf.int64)
        out = {
            "g_values": g,
            "g_pool": tf.reshape(_sparse_pool(g, block, cells), shape),
            "sumsq": tf.reduce_sum(tf.square(tf.cast(g, tf.float32))),
            "zeros": absent + _count(tf.equal(g, 0)),
            "masked_nonzero": tf.constant(0, tf.int64),
        }
        if update is not None:
            applied = tf.where(update, g, tf.zeros_like(g))
            out["upd_pool"] = tf.reshape(_sparse_pool(applied, block, cells), shape)
        k = tf.minimum(self.k, tf.size(g))
        _, pick = tf.math.top_k(tf.abs(g), k)
        out.update(
            top_index=tf.cast(tf.gather(rows, pick), tf.int64) * grid.units
            + tf.cast(tf.gather(cols, pick), tf.int64),
            top_g=tf.gather(g, pick),
            top_w=tf.gather(values, pick),
        )
        return out

    def connected(self) -> Any:
        """The layer's connectivity as a scipy.sparse array."""
        return self.layer.get_mask()


class ConvProbe(MaskedProbe):
    """A ``MaskedConv1D``/``MaskedConv2D``: its (in_channels, filters) channel table.

    Each connection (input channel i, filter j) is shown as the sum of |gradient| over its
    kernel window: over the window's connected taps for a connected pair, over the whole
    window for a masked one (its would-be gradient: what it would receive if the table
    switched it on, which connects the whole window). The gradient view is zero exactly where
    the table is. The weight shown is the sum of |kernel * mask| over the window.
    """

    kind = "conv"
    keeps_kernel_gradient = True

    def _shape(self) -> tuple[int, int]:
        """(in_channels, filters)."""
        return (int(self.layer.in_channels), int(self.layer.filters))

    def _window_axes(self) -> list[int]:
        return list(range(self.layer.rank))

    def overview(self, kernel_grad: Any) -> Any:
        """Sum of |would-be gradient| over each kernel window, in the table's shape."""
        mask = tf.cast(tf.convert_to_tensor(self.layer.kernel_mask), tf.bool)
        pair_on = tf.reduce_any(mask, axis=self._window_axes())
        counted = tf.logical_or(mask, tf.logical_not(pair_on))  # broadcasts over the window
        magnitude = tf.abs(tf.convert_to_tensor(kernel_grad))
        return tf.reduce_sum(
            tf.where(counted, magnitude, tf.zeros_like(magnitude)), axis=self._window_axes()
        )

    def table_update(self, update: Any) -> Any:
        """A pair is in the update set when any tap of its window is."""
        if update is None:
            return None
        return np.asarray(update, dtype=bool).any(axis=tuple(self._window_axes()))

    def weight_matrix(self) -> Any:
        """Sum of |kernel * mask| over each window."""
        kernel = tf.convert_to_tensor(self.layer.kernel)
        mask = tf.cast(tf.convert_to_tensor(self.layer.kernel_mask), tf.bool)
        effective = tf.where(mask, tf.abs(kernel), tf.zeros_like(kernel))
        return tf.reduce_sum(effective, axis=self._window_axes())

    def mask_tensor(self) -> Any:
        """The channel table as a bool tensor."""
        mask = tf.cast(tf.convert_to_tensor(self.layer.kernel_mask), tf.bool)
        return tf.reduce_any(mask, axis=self._window_axes())

    @property
    def select(self) -> bool:
        """The table is bool: the gradient view selects."""
        return True

    def kernel_mask(self) -> np.ndarray:
        """The kernel-shaped bool mask (each tap of each window)."""
        return self.layer.get_mask()

    def connected(self) -> np.ndarray:
        """The (in_channels, filters) channel table."""
        return self.layer.get_channel_table()


_PROBES: list[tuple[Callable[[Any], bool], type[Probe]]] = [
    (lambda layer: hasattr(layer, "get_channel_table"), ConvProbe),
    (lambda layer: getattr(layer, "is_sparse", False), SparseProbe),
    (lambda layer: getattr(layer, "kernel_mask", None) is not None, MaskedProbe),
    (lambda layer: len(getattr(getattr(layer, "kernel", None), "shape", ())) == 2, Probe),
]


def register_probe(test: Callable[[Any], bool], probe: type[Probe]) -> None:
    """Handles layers for which ``test(layer)`` is true with ``probe`` (checked first)."""
    _PROBES.insert(0, (test, probe))


def probe_for(layer: keras.layers.Layer) -> Probe | None:
    """The probe of a layer with a kernel, or None for layers the inspector does not show."""
    if getattr(layer, "kernel", None) is None:
        return None
    for test, probe in _PROBES:
        if test(layer):
            return probe(layer)
    return None
