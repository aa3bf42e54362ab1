"""Jacobians of held values and the least-squares solves of a hold (see ``hold.py``).

``J`` has one row per held value (reference input x held unit) and one column per parameter
entry the op may change (columns of other entries are zero). A hold needs three products:
``J v`` (how a change ``v`` moves the held values), ``J^T alpha`` and the Gram matrix ``J J^T``,
whose float64 eigendecomposition gives the pseudo-inverse and the rank.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["Factorizer", "Solver", "RCOND"]

# Eigenvalues of J J^T below RCOND * the largest are dependencies, not constraints. J is float32
# (relative error ~1e-7 per entry), so a dependency shows up as an eigenvalue of about
# (1e-7)^2 = 1e-14 of the largest, far below 1e-10; a real constraint that weak (singular
# value 1e-5 of the largest) would need corrections 1e5 times larger than the drift they remove.
RCOND = 1e-10


class Solver:
    """Products with ``J`` and its pseudo-inverse at one point, for one set of references.

    Args:
        jac: list of per-variable Jacobians shaped (M, *variable shape), masked, or None.
        variables: the variables, for shapes.
    """

    def __init__(self, jac: list, variables: list) -> None:
        self._shapes = [tf.shape(v.value) for v in variables]
        self._dtype = variables[0].dtype
        rows = [tf.reshape(j, [tf.shape(j)[0], -1]) for j in jac if j is not None]
        self._jac = jac
        self._flat = tf.cast(tf.concat(rows, axis=1), tf.float64)
        gram = tf.matmul(self._flat, self._flat, transpose_b=True)
        values, vectors = tf.linalg.eigh(gram)
        top = tf.reduce_max(values)
        keep = values > RCOND * tf.maximum(top, 1e-300)
        self.rank = tf.reduce_sum(tf.cast(keep, tf.int32))
        inverse = tf.where(keep, 1.0 / tf.where(keep, values, 1.0), 0.0)
        self._pinv = tf.matmul(vectors * inverse[None, :], vectors, transpose_b=True)

    def _flatten(self, vectors: list) -> tf.Tensor:
        parts = [
            tf.reshape(tf.cast(v, tf.float64), [-1])
            for v, j in zip(vectors, self._jac)
            if j is not None
        ]
        return tf.concat(parts, axis=0)

    def _unflatten(self, flat: tf.Tensor) -> list:
        out, start = [], 0
        for j, shape in zip(self._jac, self._shapes):
            if j is None:
                out.append(tf.zeros(shape, self._dtype))
                continue
            size = tf.reduce_prod(shape)
            out.append(tf.cast(tf.reshape(flat[start : start + size], shape), self._dtype))
            start += size
        return out

    def apply(self, vectors: list) -> tf.Tensor:
        """``J v`` for ``v`` given per variable (float64, shape (M,))."""
        return tf.linalg.matvec(self._flat, self._flatten(vectors))

    def transpose(self, alpha: tf.Tensor) -> list:
        """``J^T alpha`` per variable."""
        return self._unflatten(tf.linalg.matvec(self._flat, alpha, transpose_a=True))

    def min_norm(self, residual: tf.Tensor) -> list:
        """The smallest change ``d`` (per variable) with ``J d = residual`` (least squares)."""
        alpha = tf.linalg.matvec(self._pinv, tf.cast(residual, tf.float64))
        return self.transpose(alpha)

    def project(self, vectors: list) -> list:
        """``v - J^T (J J^T)^+ J v``: ``v`` with every component that moves a held value removed."""
        alpha = tf.linalg.matvec(self._pinv, self.apply(vectors))
        back = self.transpose(alpha)
        return [tf.cast(v, b.dtype) - b for v, b in zip(vectors, back)]


class Factorizer:
    """Builds a :class:`Solver` at the current parameters.

    Args:
        model: the op's model.
        held_model: a model from the inputs to the layers of the held units.
        indices: per held layer, the held unit indices.
        variables: the op's step variables.
    """

    def __init__(self, model: keras.Model, held_model: keras.Model, indices: list, variables: list):
        self._held_model = held_model
        self._indices = indices
        self._variables = variables

    def held(self, x: tf.Tensor) -> tf.Tensor:
        outputs = self._held_model(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        parts = [tf.gather(out, idx, axis=-1) for out, idx in zip(outputs, self._indices)]
        return tf.reshape(tf.concat(parts, axis=-1), [-1])

    def solver(self, x: tf.Tensor, allowed: list) -> Solver:
        """The solver for reference inputs ``x`` and update masks ``allowed`` (None: all)."""
        with tf.GradientTape() as tape:
            values = self.held(x)
        jac = tape.jacobian(values, self._variables, experimental_use_pfor=True)
        masked = []
        for j, mask in zip(jac, allowed):
            if j is not None and mask is not None:
                j = j * tf.cast(mask, j.dtype)[None]
            masked.append(j)
        if all(j is None for j in masked):
            masked[0] = tf.zeros(
                tf.concat([tf.shape(values), tf.shape(self._variables[0].value)], 0),
                self._variables[0].dtype,
            )
        return Solver(masked, self._variables)
