"""Sparse kernels for ``MaskedDense(impl="sparse")``: only the connected weights exist.

A sparse layer keeps a values vector (one weight per connection, in row-major order of the
(inputs, units) mask) and three int32 index vectors: the row and the column of each connection,
and the order that sorts them by column. The product ``x @ W`` runs on maskmagic's compiled
kernel when it is available (:mod:`maskmagic.layers.native`: the same three products, each
output summed in a fixed order by one thread, the input gradient a separate op that TensorFlow
prunes where nothing reads it), otherwise on TensorFlow's CSR
sparse-matrix kernels (``tf.linalg.sparse``: ``SparseTensorToCSRSparseMatrix`` then
``SparseMatrixMatMul``) with a custom gradient:

* forward, ``y.T = W.T @ x.T`` with the CSR form of ``W.T``;
* ``dx = dy @ W.T`` with the CSR form of ``W``;
* ``dvalues[k] = x[:, row_k] . dy[:, col_k]`` (a sampled dense-dense product) is computed in
  chunks of :data:`CHUNK_ELEMENTS` gathered numbers, so its memory stays bounded however many
  connections a layer has. (The registered gradient of ``SparseMatrixMatMul`` forms the dense
  (inputs, units) product and prunes it; that of ``tf.sparse.sparse_dense_matmul`` gathers all
  ``nnz x batch`` numbers at once, three times.)

All three are deterministic (``SparseMatrixMatMul(transpose_a=True)`` is not: its parallel
transpose sums in a varying order, which would break the bit-identical guarantees of freeze).
Nothing of shape (inputs, units) is ever created, in the forward pass or the backward pass.
``bench/kernels.py`` compares this kernel with the other options TensorFlow offers on CPU
(``tf.sparse.sparse_dense_matmul`` with TensorFlow's gradient, gather + ``unsorted_segment_sum``,
the CSR ``SparseMatrixMatMul`` of ``tf.linalg.sparse``); see :func:`choose_impl` for the
measured numbers and the ``impl="auto"`` thresholds.

The layer's sparse variables are *resizable* (their TensorFlow shape is ``[None]``), so that a
change of topology with a different number of connections assigns new values in place: compiled
functions that read them stay valid. Optimizer slots of such a variable keep their old size
until :func:`remap_slot` resizes them (``TrainOp`` does this itself).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from maskmagic import _compat
from maskmagic.layers import native

csr_ops = _compat.csr_matrix_ops()

__all__ = [
    "AUTO_MIN_CELLS",
    "AUTO_THRESHOLDS",
    "STOCK_AUTO_THRESHOLDS",
    "CHUNK_ELEMENTS",
    "choose_impl",
    "column_order",
    "initial_values",
    "make_resizable",
    "match_connections",
    "remap_slot",
    "resize",
    "sampled_dot",
    "sparse_matmul",
    "structure_of",
    "sync_slots",
    "to_csr",
    "track_slots",
]

# Gathered numbers per chunk and operand of the values gradient (1 MiB of float32: the
# fastest of 2^16..2^22 on the benchmark machine, and a cache-sized block).
CHUNK_ELEMENTS = 1 << 18

# impl="auto": (at least this many cells, at most this density) -> sparse, with maskmagic's
# native kernel (AUTO_THRESHOLDS) and on TensorFlow's stock kernels (STOCK_AUTO_THRESHOLDS);
# measured with `python bench/run.py` (see choose_impl). Smaller layers are always dense.
AUTO_THRESHOLDS = ((1 << 16, 0.02), (1 << 20, 0.10))
STOCK_AUTO_THRESHOLDS = ((1 << 16, 0.02), (1 << 20, 0.05), (1 << 24, 0.03))
AUTO_MIN_CELLS = AUTO_THRESHOLDS[0][0]


# ----------------------------------------------------------------------------- kernels


def sampled_dot(a: Any, a_index: Any, b: Any, b_index: Any, chunk: int = CHUNK_ELEMENTS) -> Any:
    """``out[k] = sum_j a[a_index[k], j] * b[b_index[k], j]``, in bounded-memory chunks.

    Args:
        a: (n_a, width) tensor.
        a_index: (nnz,) int tensor of rows of ``a``.
        b: (n_b, width) tensor.
        b_index: (nnz,) int tensor of rows of ``b``.
        chunk: most gathered numbers (rows x width) per chunk and operand.

    Returns:
        (nnz,) tensor.
    """
    total = tf.shape(a_index)[0]
    width = tf.maximum(tf.shape(a)[1], 1)
    step = tf.maximum(chunk // width, 1)
    count = tf.maximum((total + step - 1) // step, 1)
    parts = tf.TensorArray(a.dtype, size=count, infer_shape=False, element_shape=[None])

    def body(i, parts):
        start = i * step
        size = tf.maximum(tf.minimum(step, total - start), 0)
        rows = tf.gather(a, tf.slice(a_index, [start], [size]))
        cols = tf.gather(b, tf.slice(b_index, [start], [size]))
        return i + 1, parts.write(i, tf.reduce_sum(rows * cols, axis=1))

    _, parts = tf.while_loop(lambda i, _: i < count, body, [0, parts], parallel_iterations=2)
    return parts.concat()


def sparse_matmul(
    x: Any, values: Any, rows: Any, cols: Any, order: Any, n_in: int, units: int
) -> Any:
    """``x @ W`` for the sparse (n_in, units) matrix ``W[rows[k], cols[k]] = values[k]``.

    The forward product uses the CSR form of ``W.T`` (built from the connections taken in
    ``order``), the input gradient the CSR form of ``W``: both are deterministic, unlike
    ``SparseMatrixMatMul(transpose_a=True)``, whose parallel transpose sums in varying order.

    Args:
        x: (batch, n_in) float32 or float64 tensor.
        values: (nnz,) tensor of the same dtype as ``x``.
        rows: (nnz,) int32 tensor of input indices, sorted (row-major order).
        cols: (nnz,) int32 tensor of unit indices, sorted within each row.
        order: (nnz,) int32 positions that sort the connections by (col, row), from
            :func:`column_order`.
        n_in: number of inputs.
        units: number of units.

    Returns:
        (batch, units) tensor. Gradients flow to ``x`` and ``values`` (see the module docs).
    """
    kernel = native.kernel_ops()
    if kernel is not None:
        return _native_matmul(kernel, x, values, rows, cols, n_in, units)
    by_input = tf.cast(tf.stack([rows, cols], axis=1), tf.int64)
    by_unit = tf.cast(tf.stack([tf.gather(cols, order), tf.gather(rows, order)], axis=1), tf.int64)

    @tf.custom_gradient
    def matmul(x, values):
        w_t = csr_ops.sparse_tensor_to_csr_sparse_matrix(
            by_unit, tf.gather(values, order), [units, n_in]
        )
        y_t = csr_ops.sparse_matrix_mat_mul(w_t, x, transpose_b=True)  # (units, batch)

        def grad(dy):
            dy_t = tf.transpose(dy)
            w = csr_ops.sparse_tensor_to_csr_sparse_matrix(by_input, values, [n_in, units])
            dx = tf.transpose(csr_ops.sparse_matrix_mat_mul(w, dy_t))  # (batch, n_in)
            return dx, sampled_dot(tf.transpose(x), rows, dy_t, cols)

        return tf.transpose(y_t), grad

    y = matmul(x, values)
    y.set_shape([x.shape[0], units])
    return y


def _native_matmul(
    kernel: Any, x: Any, values: Any, rows: Any, cols: Any, n_in: int, units: int
) -> Any:
    """``sparse_matmul`` on the native kernel (:mod:`maskmagic.layers.native`).

    The gradient is two ops, the values gradient and the input gradient; where nothing reads
    ``dx`` (a first layer), TensorFlow prunes the second.
    """

    @tf.custom_gradient
    def matmul(x, values):
        y = kernel.maskmagic_sparse_matmul(x, values, rows, cols, units=units)

        def grad(dy):
            dvalues = kernel.maskmagic_sparse_matmul_grad_values(x, dy, rows, cols)
            dx = kernel.maskmagic_sparse_matmul_grad_input(dy, values, rows, cols, n_in=n_in)
            return dx, dvalues

        return y, grad

    y = matmul(x, values)
    y.set_shape([x.shape[0], units])
    return y


# ----------------------------------------------------------------------------- impl="auto"


def choose_impl(n_in: int, units: int, nnz: int) -> str:
    """The implementation ``impl="auto"`` picks for a layer: ``"dense"`` or ``"sparse"``.

    Sparse when the density ``nnz / (n_in * units)`` is at most the limit for the layer's
    size. With the native kernel (:mod:`maskmagic.layers.native`, the default on CPU), from
    :data:`AUTO_THRESHOLDS`; on TensorFlow's stock kernels, from :data:`STOCK_AUTO_THRESHOLDS`:

    ==========================  ==========================  ============  ============
    cells (n_in x units)        for example                 native        stock
    ==========================  ==========================  ============  ============
    below 65,536                128 x 128                   never         never
    65,536 to 1,048,575         256 x 256 to 1024 x 1023    <= 2%         <= 2%
    1,048,576 to 16,777,215     1024 x 1024 to 4096 x 4095  <= 10%        <= 5%
    16,777,216 and more         4096 x 4096 and larger      <= 10%        <= 3%
    ==========================  ==========================  ============  ============

    Native (``python bench/run.py --sizes 1024 --densities 0.2 0.1 0.05 0.01 0.001`` and
    ``--sizes 4096 --densities 0.2 0.1 0.05 0.01 0.001``, TrainOp steps, batch 128 and 32, SGD
    and Adam, ``bench/results/run-2026-12-01T154713Z.json`` and ``…155748Z.json``): sparse over
    dense at 5% is 0.2x-0.6x, at 10% 0.45x-0.9x, at 20% 0.8x-1.0x with Adam (whose dense slots
    make a dense step dearer) and 1.3x-1.4x with SGD; 10% is the largest limit where sparse
    wins with both optimizers.
    Stock: the first release's sweep and issue 16's re-measurements (sparse 2.3x of Dense at
    10% and 0.33x at 1% on 4096²; 0.49x at 5% on 1024²). The 65,536-cell tier was measured on
    the stock kernels only. Under 65,536 cells both steps take well under a millisecond, so
    small layers stay dense whatever their density.

    Asking whether the native kernel is there builds it (once per machine) only for a layer
    whose density falls between the two limits.

    Args:
        n_in: number of inputs.
        units: number of units.
        nnz: number of connections.
    """
    cells = int(n_in) * int(units)

    def within(thresholds: tuple) -> bool:
        limit = None
        for min_cells, max_density in thresholds:
            if cells >= min_cells:
                limit = max_density
        return limit is not None and nnz <= math.ceil(limit * cells)

    if within(STOCK_AUTO_THRESHOLDS):
        return "sparse"
    if within(AUTO_THRESHOLDS) and native.kernel_ops() is not None:
        return "sparse"
    return "dense"


# ----------------------------------------------------------------------------- structure


def structure_of(mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int32 arrays of the connections of a validated mask, in row-major order."""
    if sp.issparse(mask):
        csr = sp.csr_array(mask)
        csr.sum_duplicates()
        counts = np.diff(csr.indptr)
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int32), counts)
        return rows, csr.indices.astype(np.int32)
    rows, cols = np.nonzero(np.asarray(mask))
    return rows.astype(np.int32), cols.astype(np.int32)


def column_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """int32 positions that sort row-major connections by (col, row) (column-major order)."""
    del rows  # already sorted: a stable sort on the columns keeps them in order
    return np.argsort(cols, kind="stable").astype(np.int32)


def to_csr(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple) -> sp.csr_array:
    """A canonical ``csr_array`` from row-major (rows, cols, data) triplets."""
    counts = np.bincount(rows, minlength=shape[0]) if rows.size else np.zeros(shape[0], int)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_array((data, cols.astype(np.int32), indptr), shape=shape)


def match_connections(
    old_rows: np.ndarray,
    old_cols: np.ndarray,
    new_rows: np.ndarray,
    new_cols: np.ndarray,
    units: int,
) -> np.ndarray:
    """For each new connection, its position among the old ones, or -1 if it is new.

    Both structures must be in row-major order (as :func:`structure_of` returns them).
    """
    old_key = old_rows.astype(np.int64) * units + old_cols
    new_key = new_rows.astype(np.int64) * units + new_cols
    where = np.searchsorted(old_key, new_key)
    where = np.minimum(where, max(old_key.size - 1, 0))
    found = old_key.size > 0
    hit = (old_key[where] == new_key) if found else np.zeros(new_key.size, bool)
    return np.where(hit, where, -1).astype(np.int64)


# ----------------------------------------------------------------------------- initial values


def initial_values(
    initializer: keras.initializers.Initializer, nnz: int, n_in: int, units: int, dtype: str
) -> np.ndarray:
    """Values for ``nnz`` connections drawn like the entries of an (n_in, units) kernel.

    Variance-scaling initializers (``glorot_uniform``, ``he_normal``, ...) use the fans of the
    full (n_in, units) kernel, as the dense implementation does; element-wise initializers
    (``zeros``, ``random_normal``, ``constant``...) are called on the (nnz,) shape. Initializers
    that need the whole matrix (``orthogonal``, ``identity``) are refused for large layers.
    Drawn eagerly, also while Keras traces a subclassed model's build in a graph.
    """
    with tf.init_scope():
        return _initial_values(initializer, nnz, n_in, units, dtype)


def _initial_values(
    initializer: keras.initializers.Initializer, nnz: int, n_in: int, units: int, dtype: str
) -> np.ndarray:
    if isinstance(initializer, keras.initializers.VarianceScaling):
        mode = initializer.mode
        fan = {"fan_in": n_in, "fan_out": units}.get(mode, (n_in + units) / 2)
        # On a 1-D shape (nnz,) the fan is nnz: rescale so that the variance is scale / fan.
        scaled = keras.initializers.VarianceScaling(
            scale=initializer.scale * max(nnz, 1) / max(fan, 1),
            mode="fan_in",
            distribution=initializer.distribution,
            seed=initializer.seed,
        )
        return np.asarray(scaled((max(nnz, 1),), dtype=dtype))[:nnz]
    if isinstance(initializer, (keras.initializers.Orthogonal, keras.initializers.Identity)):
        from maskmagic.errors import MaskMagicError

        raise MaskMagicError(
            f"kernel_initializer {type(initializer).__name__} needs the whole (inputs, units) "
            "matrix, which impl='sparse' never creates; expected an element-wise or "
            "variance-scaling initializer such as glorot_uniform, he_normal or random_normal"
        )
    return np.asarray(initializer((nnz,), dtype=dtype))


# ----------------------------------------------------------------------------- variables


make_resizable = _compat.make_resizable
resize = _compat.resize_variable


def remap_slot(slot: keras.Variable, index: np.ndarray, start: float = 0.0) -> None:
    """Resizes an optimizer slot after a topology change (kept connections keep their state).

    Args:
        slot: a variable shaped like the old values vector (momentum, Adam moments...).
        index: for each new connection, its old position or -1 (a new connection).
        start: what a new connection's entry starts from (Adagrad's and Ftrl's accumulators
            start from ``initial_accumulator_value``, most slots from 0).
    """
    old = keras.ops.convert_to_numpy(slot)
    new = np.where(index >= 0, old[np.maximum(index, 0)] if old.size else start, start)
    resize(slot, new.astype(old.dtype))


# ----------------------------------------------------------------------------- optimizer slots


def track_slots(layer: Any, slots: list) -> None:
    """Prepares the optimizer slots of a sparse layer's kernel for later topology changes.

    Makes them resizable (before any step is traced, so traced steps see later resizes) and
    records the mask version they correspond to.
    """
    for slot in slots:
        if getattr(slot, "_maskmagic_version", None) is not None:
            continue
        if _compat.variable_storage(slot).shape.is_fully_defined():
            make_resizable(slot)
        fits = tuple(slot.shape) == tuple(layer.kernel.shape)
        slot._maskmagic_version = layer.mask_version if fits else -1


def sync_slots(layer: Any, slots: list, starts: list | None = None) -> None:
    """Remaps optimizer slots after ``layer.set_mask`` changed the topology.

    The state of kept connections (momentum, Adam moments, ...) follows them to their new
    positions; new connections start from ``starts`` (one value per slot: a fresh variable's
    state, zeros if None). If the layer's history does not reach back to the slot's version
    (more than 8 changes between two steps), the whole slot restarts from there.
    """
    nnz = int(layer.kernel.shape[0])
    starts = starts if starts is not None else [0.0] * len(slots)
    for slot, start in zip(slots, starts):
        seen = getattr(slot, "_maskmagic_version", -1)
        if seen == layer.mask_version:
            continue
        index = layer.remap_since(seen) if seen >= 0 else np.empty(0, dtype=np.int64)
        if index is None and tuple(slot.shape) == (nnz,):
            pass
        elif index is not None and index.size == nnz:
            remap_slot(slot, index, start)
        else:
            resize(slot, np.full(nnz, start, dtype=keras.ops.convert_to_numpy(slot).dtype))
        slot._maskmagic_version = layer.mask_version
