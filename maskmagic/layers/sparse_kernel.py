"""The sparse implementation of :class:`~maskmagic.layers.MaskedDense` (``impl="sparse"``).

Variables: a trainable ``kernel`` of shape (nnz,) (the weight of each connection, in row-major
order of the mask) and non-trainable int32 ``kernel_rows`` / ``kernel_cols`` (the input and
the unit of each connection) and ``kernel_order`` (the connections in column-major order, for
the deterministic forward product). All are resizable (see :func:`maskmagic.layers.csr.resize`), so
a change of topology replaces them in place.
"""

from __future__ import annotations

import base64
from typing import Any

import keras
import numpy as np
from keras import ops

from maskmagic.layers import csr as sparse

__all__ = ["SparseKernelMixin", "pack_connections", "unpack_connections"]

# How many past topology changes a sparse layer remembers (for TrainOp's optimizer slots).
REMAP_HISTORY = 8


def pack_connections(rows: np.ndarray, cols: np.ndarray, shape: tuple) -> dict:
    """A JSON-able form of a sparse mask's connections (for ``get_config``)."""

    def encode(a: np.ndarray) -> str:
        return base64.b64encode(np.asarray(a).astype("<i4").tobytes()).decode("ascii")

    return {"shape": [int(s) for s in shape], "rows": encode(rows), "cols": encode(cols)}


def unpack_connections(packed: dict) -> Any:
    """The ``csr_array`` mask written by :func:`pack_connections`."""
    rows, cols = (
        np.frombuffer(base64.b64decode(packed[k]), dtype="<i4").astype(np.int32)
        for k in ("rows", "cols")
    )
    return sparse.to_csr(rows, cols, np.ones(rows.size, bool), tuple(packed["shape"]))


def _given(array: np.ndarray) -> Any:
    """An initializer that returns ``array`` (in the requested dtype)."""

    def initializer(shape: Any, dtype: Any = None) -> np.ndarray:
        return np.asarray(array, dtype=dtype)

    return initializer


class SparseKernelMixin:
    """Build, call and topology changes of a layer that stores only its connected weights.

    The host layer provides ``input_dim``, ``units``, ``kernel_initializer``,
    ``kernel_regularizer``, ``kernel_constraint``, ``mask_version`` and ``add_weight``.
    """

    # What the host layer provides (declared for the type checker; Keras objects are Any).
    input_dim: int
    units: int
    mask_version: int
    _saved_nnz: int | None
    kernel: Any
    kernel_rows: Any
    kernel_cols: Any
    kernel_order: Any
    kernel_mask: Any
    kernel_initializer: Any
    kernel_regularizer: Any
    kernel_constraint: Any
    compute_dtype: Any
    variable_dtype: Any
    add_weight: Any

    def _build_sparse(self, mask: Any) -> None:
        if mask is None:  # from_config without the mask: placeholder, replaced on load
            count = self._saved_nnz or 0
            rows = (np.arange(count) // self.units).astype(np.int32)
            cols = (np.arange(count) % self.units).astype(np.int32)
        else:
            rows, cols = sparse.structure_of(mask)
        nnz = int(rows.size)
        values = sparse.initial_values(
            self.kernel_initializer, nnz, self.input_dim, self.units, self.variable_dtype
        )
        # Variables start from their values through initializers (no assign): inside a
        # subclassed model, Keras first builds in a stateless scope, where variables are
        # initialized later (see _compat.make_resizable).
        self._kernel = self.add_weight(  # read back through the host's ``kernel`` property
            name="kernel",
            shape=(nnz,),
            initializer=_given(values),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        for name, array in (
            ("kernel_rows", rows),
            ("kernel_cols", cols),
            ("kernel_order", sparse.column_order(rows, cols)),
        ):
            variable = self.add_weight(
                name=name, shape=(nnz,), dtype="int32", initializer=_given(array), trainable=False
            )
            setattr(self, name, variable)
        for variable in (self.kernel, self.kernel_rows, self.kernel_cols, self.kernel_order):
            sparse.make_resizable(variable)
        self.supports_jit = False  # the CSR kernels and resizable variables have no XLA form
        self._remaps: dict[int, np.ndarray] = {}  # mask_version -> new-to-old positions
        self._remap_floor = self.mask_version  # history is complete from this version on

    def _sparse_matmul(self, inputs: Any) -> Any:
        # The CSR kernels have no float16 version: compute in the variable dtype.
        dtype = "float64" if self.kernel.dtype == "float64" else "float32"
        x = ops.cast(inputs, dtype)
        flat = x if len(x.shape) == 2 else ops.reshape(x, (-1, self.input_dim))
        outputs = sparse.sparse_matmul(
            flat,
            ops.cast(self.kernel, dtype),
            ops.convert_to_tensor(self.kernel_rows),
            ops.convert_to_tensor(self.kernel_cols),
            ops.convert_to_tensor(self.kernel_order),
            self.input_dim,
            self.units,
        )
        if len(x.shape) != 2:
            outputs = ops.reshape(outputs, (*ops.shape(x)[:-1], self.units))
        return ops.cast(outputs, self.compute_dtype)

    def _sparse_connections(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            keras.ops.convert_to_numpy(self.kernel_rows),
            keras.ops.convert_to_numpy(self.kernel_cols),
        )

    def _set_sparse_mask(self, checked: Any) -> None:
        """Installs a validated mask; kept connections keep their weights, new ones start at 0."""
        rows, cols = sparse.structure_of(checked)
        old_rows, old_cols = self._sparse_connections()
        self.mask_version += 1
        if np.array_equal(rows, old_rows) and np.array_equal(cols, old_cols):
            return
        index = sparse.match_connections(old_rows, old_cols, rows, cols, self.units)
        old = keras.ops.convert_to_numpy(self.kernel)
        values = np.where(index >= 0, old[np.maximum(index, 0)] if old.size else 0, 0)
        sparse.resize(self.kernel, values.astype(old.dtype))
        sparse.resize(self.kernel_rows, rows)
        sparse.resize(self.kernel_cols, cols)
        sparse.resize(self.kernel_order, sparse.column_order(rows, cols))
        self._remaps[self.mask_version] = index
        for version in sorted(self._remaps)[:-REMAP_HISTORY]:
            del self._remaps[version]
            self._remap_floor = version

    def remap_since(self, version: int) -> np.ndarray | None:
        """Where each current connection was in the values vector at ``mask_version == version``.

        Returns:
            An int64 array with, for each current connection, its old position (-1 for
            connections added since); None when the topology has not changed since; an
            empty array when the history (the last 8 changes) does not reach back that far.
        """
        changes = [v for v in sorted(self._remaps) if v > version]
        if not changes:
            return None
        if version < self._remap_floor:
            return np.empty(0, dtype=np.int64)
        index = self._remaps[changes[0]]
        for v in changes[1:]:
            step = self._remaps[v]
            index = np.where(step >= 0, index[np.maximum(step, 0)], -1) if index.size else step
        return index
