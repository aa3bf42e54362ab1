"""Jacobians of held values and the least-squares solves of a hold (see ``hold.py``).

``J`` has one row per held value (reference input ``n`` x held unit ``u``, sample-major) and one
column per parameter entry the op may change (columns of other entries are zero). A hold needs
``J v``, ``J^T alpha`` and the Gram matrix ``G = J J^T`` (float64), factored once per step.

Two ways to get them:

* :class:`DenseJacobian`, when every variable of the op belongs to a Dense-like layer
  (``MaskedDense`` on its dense implementation, ``keras.layers.Dense``): the row of sample ``n``
  and unit ``u`` for a kernel is ``W * outer(a_n, d_nu)`` (``a_n`` the layer's input,
  ``d_nu = d held_nu / d z_n`` the gradient at the layer's pre-activation, ``W`` the entries the
  op may change that the mask connects). So ``J^T alpha = W * (A^T E)`` with
  ``E_n = sum_u alpha_nu d_nu``, ``J v = rowwise(A (W * V), D)``, and with ``W`` all ones
  ``G = (A A^T expanded) * (D D^T)``; with a partial ``W``, ``G = sum_j (A diag(W_j) A^T) * d_j
  d_j^T``. ``D`` comes from one backward pass per held unit (samples are independent in
  inference mode), never from one per held value, and ``J`` is never materialised.
  A held layer that nothing else in the held graph reads, with an element-wise activation,
  is computed on its held units only (``_restrict_held``): its forward pass, ``J v`` and
  ``J^T alpha`` touch only those kernel columns (``J^T`` is expanded with a one-hot product).
  ``J J^T v`` never needs the Gram: ``D_nu . ((A A^T + 1) E)_n`` (:meth:`gram_matvec`).
* :class:`ExplicitJacobian` otherwise: ``tf.GradientTape.jacobian`` (M x parameters).

:class:`Solver` factors the Gram per step, or, with a :class:`FactorCache` (fixed reference
inputs), solves by preconditioned conjugate gradients with the factor of an earlier step.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import _compat
from maskmagic.layers import MaskedDense

__all__ = ["RCOND", "DenseJacobian", "ExplicitJacobian", "FactorCache", "Solver", "make_jacobian"]

# G = J J^T is formed in float64 from float32 factors and factored by Cholesky with a ridge
# RIDGE * max(diag G): J v for kernels runs in float32 (error e ~ 1e-7 relative), and the
# solve turns e into a change of at most e / (2 sqrt(RIDGE * max diag G)) along directions that
# barely move the held values (the change in held values stays <= e). RIDGE = 1e-8 keeps that
# ~1e-3 of the vector; directions weaker than the ridge are only partly projected, and the
# Gauss-Newton corrections remove what is left. A constraint whose pivot (squared distance of its
# row of J to the span of the previous rows) is below RCOND * max(diag G), 100 times the ridge,
# counts as dependent in the reported rank (a distance under 1e-3 of the largest row).
RCOND = 1e-6
RIDGE = 1e-8
# Large Grams (from FLOAT32_MIN_WORK multiply-adds) of a DenseJacobian are built and factored in
# float32 (float32 GEMMs and Cholesky run ~10x / ~2x faster than float64 on CPU). Each entry of G
# then carries a rounding error of about sqrt(k) * EPS32 of the Cauchy-Schwarz bound (k = the
# layer's width), and the float32 Cholesky a backward error of about sqrt(M) * EPS32 (M rows):
# the noise estimate is NOISE32 (4 * EPS32) times the larger square root, relative to
# max(diag G). The ridge is twice the noise (so the Cholesky of dependent constraints cannot
# fail); a pivot counts in the rank above max(RCOND, 100 * ridge) (a dependent row's pivot is
# ridge * (1 + |its combination coefficients|^2)): for such Grams the rank is a coarser
# estimate (~1e-3 of max(diag G) for k ~ 1000). Projections are refined once against the exact
# J (Solver.project); the chord corrections finish what the ridge leaves.
NOISE32 = 4 * 2.0**-24
FLOAT32_MIN_WORK = 2**22  # multiply-adds of the Gram's products from which float32 is used


def _f64(x: Any) -> tf.Tensor:
    return tf.cast(x, tf.float64)


class FactorCache:
    """The inverse of ``J J^T + ridge`` kept across steps (fixed reference inputs, ``M`` rows).

    ``J`` moves little from one step to the next, so the last inverse is a good preconditioner:
    :class:`Solver` solves each system by conjugate gradients against the current ``J J^T``
    (exact, :meth:`DenseJacobian.gram_matvec`) preconditioned by it, and forms and factors
    the Gram again only when that does not converge within ``PCG_MAX`` iterations (or the
    number of entries the op may change differs from the one at the last factorisation). The
    inverse is kept in float32 (a preconditioner: one M x M float32 product per iteration, far
    cheaper than two float64 triangular solves).
    """

    def __init__(self, size: int) -> None:
        self.inverse = tf.Variable(tf.zeros([size, size], tf.float32), trainable=False)
        self.ridge = tf.Variable(tf.constant(0.0, tf.float64), trainable=False)
        self.rank = tf.Variable(0, trainable=False)
        self.count = tf.Variable(tf.constant(-1.0, tf.float64), trainable=False)
        self.valid = tf.Variable(False, trainable=False)
        self.factorizations = tf.Variable(0, trainable=False)  # for tests and benchmarks
        self.iterations = tf.Variable(0, trainable=False)  # conjugate-gradient iterations


# Conjugate gradients against the exact J J^T (cached inverse as preconditioner) stop at a
# residual of PCG_TOL * |rhs| (float64 products; below the float32 rounding of J v, ~1e-7) for
# the gradient's projection (the optimizer's state must see a projected gradient), at LOOSE_TOL
# for the solves of the corrections (their loop checks the held values themselves and runs until
# the drift is within hold_tol), or after PCG_MAX iterations, when the Gram is factored again.
PCG_TOL = 1e-8
LOOSE_TOL = 1e-3
PCG_MAX = 8


class Solver:
    """Least-squares solves with ``J`` at one point (``J J^T`` factored once).

    Args:
        jacobian: an object with ``gram()``, ``apply(vectors)`` and ``transpose(alpha)``.
        cache: a :class:`FactorCache` to reuse across steps (only with ``gram_matvec``).
        count: the number of entries the op may change now (checked against the cache's).
    """

    def __init__(self, jacobian: Any, cache: FactorCache | None = None, count=None) -> None:
        self._jacobian = jacobian
        self.values = getattr(jacobian, "values", None)  # the held values, when computed
        self._cache = cache if hasattr(jacobian, "gram_matvec") else None
        self._count = count
        self._refine = False
        if self._cache is None:
            self._chol, _, self._rank = self._factor()
            self._refine = getattr(jacobian, "noise", 0.0) > 0  # approximate Gram: refine

    def _require_cache(self) -> FactorCache:
        if self._cache is None:
            raise AssertionError("the cached solve runs only with a FactorCache")
        return self._cache

    @property
    def rank(self) -> tf.Tensor:
        """Pivots of the (last) factorisation above the rank threshold."""
        return self._rank if self._cache is None else self._cache.rank.read_value()

    def _factor(self) -> tuple:
        """(Cholesky factor of ``J J^T + ridge``, absolute ridge, rank) from the formed Gram."""
        jacobian = self._jacobian
        gram = jacobian.gram()
        noise = getattr(jacobian, "noise", 0.0)  # relative error of an approximate Gram
        top = tf.reduce_max(tf.linalg.diag_part(gram))
        top = tf.maximum(top, tf.constant(1e-300, tf.float64))
        size = tf.shape(gram)[0]
        if noise > 0:  # an approximate Gram: factor in float32
            # The float32 Cholesky adds a backward error of about sqrt(M) * EPS32 (M rows).
            noise = tf.maximum(
                tf.constant(noise, tf.float64), NOISE32 * tf.sqrt(tf.cast(size, tf.float64))
            )
            ridge = 2 * noise
            # A dependent row's pivot is ridge * (1 + |its combination coefficients|^2).
            threshold = tf.maximum(tf.constant(RCOND, tf.float64), 100 * ridge)
            shifted = gram + ridge * top * tf.eye(size, dtype=tf.float64)
            chol = tf.linalg.cholesky(tf.cast(shifted, tf.float32))
        else:
            ridge = tf.constant(RIDGE, tf.float64)
            threshold = tf.constant(RCOND, tf.float64)
            chol = tf.linalg.cholesky(gram + RIDGE * top * tf.eye(size, dtype=tf.float64))
        pivots = _f64(tf.square(tf.linalg.diag_part(chol)))
        rank = tf.reduce_sum(tf.cast(pivots > threshold * top, tf.int32))
        return chol, ridge * top, rank

    def refresh(self) -> tf.Tensor:
        """Forms and factors the Gram now (into the cache, if any); returns the rank."""
        if self._cache is None:
            return self._rank
        with tf.control_dependencies(self._store(*self._factor())):
            return self._cache.rank.read_value()

    def _store(self, chol, ridge, rank) -> list:
        cache = self._require_cache()
        count = tf.constant(-1.0, tf.float64) if self._count is None else self._count
        return [
            cache.inverse.assign(self._inverse(chol)),
            cache.ridge.assign(ridge),
            cache.rank.assign(rank),
            cache.count.assign(_f64(count)),
            cache.valid.assign(True),
            cache.factorizations.assign_add(1),
        ]

    @staticmethod
    def _inverse(chol: tf.Tensor) -> tf.Tensor:
        """``(L L^T)^-1`` in float32, symmetric (a preconditioner for conjugate gradients)."""
        eye = tf.eye(tf.shape(chol)[0], dtype=chol.dtype)
        inverse = tf.cast(tf.linalg.cholesky_solve(chol, eye), tf.float32)
        return 0.5 * (inverse + tf.transpose(inverse))

    def _solve(self, rhs: tf.Tensor, tol: float = PCG_TOL) -> tf.Tensor:
        if self._cache is not None:
            return self._cached_solve(_f64(rhs), tol)
        rhs = tf.cast(rhs[:, None], self._chol.dtype)
        return _f64(tf.linalg.cholesky_solve(self._chol, rhs)[:, 0])

    def _cached_solve(self, rhs: tf.Tensor, tol: float) -> tf.Tensor:
        """PCG with the cached inverse; a fresh factor (and PCG again) when it does not pay."""
        cache = self._require_cache()
        usable = cache.valid.read_value()
        if self._count is not None:
            usable = tf.logical_and(usable, tf.equal(cache.count.read_value(), self._count))

        def reuse():
            return self._pcg(rhs, cache.inverse.read_value(), cache.ridge.read_value(), tol)

        def skip():
            return tf.zeros_like(rhs), tf.constant(False)

        x, ok = tf.cond(usable, reuse, skip)

        def refactor():
            chol, ridge, rank = self._factor()
            with tf.control_dependencies(self._store(chol, ridge, rank)):
                return self._pcg(rhs, cache.inverse.read_value(), ridge, tol)[0]

        return tf.cond(ok, lambda: tf.identity(x), refactor)

    def _pcg(self, b: tf.Tensor, inverse: tf.Tensor, ridge: tf.Tensor, tol: float) -> tuple:
        """Preconditioned conjugate gradients on ``(J J^T + ridge) x = b``: (x, converged).

        The float32 preconditioner is applied with rounding, so ``beta`` is Polak-Ribiere's
        (flexible CG), which keeps converging when the preconditioner is not exactly linear.
        """
        matvec = self._jacobian.gram_matvec

        def precondition(r):
            return _f64(tf.linalg.matvec(inverse, tf.cast(r, tf.float32)))

        goal = tol * tf.norm(b)
        z = precondition(b)
        start = (tf.constant(0), tf.zeros_like(b), b, z, z, tf.tensordot(b, z, 1))

        def going(i, x, r, z, p, rz):
            return tf.logical_and(i < PCG_MAX, tf.norm(r) > goal)

        def step(i, x, r, z, p, rz):
            q = matvec(p) + ridge * p
            a = rz / tf.tensordot(p, q, 1)
            x, r_next = x + a * p, r - a * q
            z_next = precondition(r_next)
            rz_next = tf.tensordot(r_next, z_next, 1)
            beta = tf.tensordot(r_next - r, z_next, 1) / rz
            return i + 1, x, r_next, z_next, z_next + beta * p, rz_next

        count, x, r, _, _, _ = tf.while_loop(going, step, start, parallel_iterations=1)
        with tf.control_dependencies([self._require_cache().iterations.assign_add(count)]):
            return tf.identity(x), tf.norm(r) <= goal

    def min_norm(self, residual: tf.Tensor, tol: float = PCG_TOL) -> list:
        """The smallest change ``d`` (per variable) with ``J d = residual`` (least squares)."""
        return self._jacobian.transpose(self._solve(_f64(residual), tol))

    def project(self, vectors: list, tol: float = PCG_TOL) -> list:
        """``v - J^T (J J^T)^+ J v``: ``v`` with every component that moves a held value removed.

        With an approximate (float32-built) Gram factored directly the projection runs twice:
        the second pass is one sweep of iterative refinement (its right-hand side ``J p`` is the
        residual of the first solve, computed with the exact ``J``), reusing the same factor.
        The cached path needs no sweep: its conjugate gradients run against the exact Gram.
        """
        projected = self._project_once(vectors, tol)
        return self._project_once(projected, tol) if self._refine else projected

    def _project_once(self, vectors: list, tol: float) -> list:
        back = self._jacobian.transpose(self._solve(self._jacobian.apply(vectors), tol))
        return [tf.cast(v, b.dtype) - b for v, b in zip(vectors, back)]


class ExplicitJacobian:
    """``J`` materialised with ``tf.GradientTape.jacobian`` (any layers; small nets)."""

    def __init__(self, values_fn, x: tf.Tensor, variables: list, allowed: list) -> None:
        self._variables = variables
        with tf.GradientTape() as tape:
            values = values_fn(x)
        jac = tape.jacobian(values, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        rows = tf.size(values)
        flat = []
        for j, mask in zip(jac, allowed):
            if mask is not None:
                j = j * tf.cast(mask, j.dtype)[None]
            flat.append(tf.reshape(j, [rows, -1]))
        self._flat = _f64(tf.concat(flat, axis=1))
        self._sizes = [tf.size(v.value) for v in variables]

    def gram(self) -> tf.Tensor:
        return tf.matmul(self._flat, self._flat, transpose_b=True)

    def apply(self, vectors: list) -> tf.Tensor:
        flat = tf.concat([tf.reshape(_f64(v), [-1]) for v in vectors], axis=0)
        return tf.linalg.matvec(self._flat, flat)

    def transpose(self, alpha: tf.Tensor) -> list:
        flat = tf.linalg.matvec(self._flat, alpha, transpose_a=True)
        parts = tf.split(flat, tf.stack(self._sizes))
        return [
            tf.cast(tf.reshape(p, tf.shape(v.value)), v.dtype)
            for p, v in zip(parts, self._variables)
        ]


def _dense_like(layer: Any) -> bool:
    """Layers whose call is ``activation(x @ kernel_eff + bias_eff)`` on a 2-D input (no LoRA,
    no quantization, float32; MaskedDense on its dense implementation, or exactly Dense)."""
    if getattr(layer, "compute_dtype", None) != "float32":
        return False
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return False
    if type(layer) is MaskedDense:  # exact types: conv layers and subclasses take the general path
        return not layer.is_sparse and _mask_of(layer, "kernel") is not None
    return type(layer) is keras.layers.Dense


def _mask_of(layer: Any, kind: str) -> Any:
    """The layer's ``kernel_mask`` / ``bias_mask`` variable, or None."""
    return getattr(layer, f"{kind}_mask", None)


class _Layer:
    """One Dense-like layer of the op: its variables' positions and connectivity."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.kernel = self.bias = None  # indices into the op's variables
        # Output columns computed (None: all): a held layer whose output nothing else in the
        # held graph reads, with an element-wise activation, needs only its held units.
        self.cols: np.ndarray | None = None

    def columns(self, x: tf.Tensor, axis: int) -> tf.Tensor:
        """``x`` restricted to the computed output columns along ``axis``."""
        return x if self.cols is None else tf.gather(x, self.cols, axis=axis)

    def expand(self, x: tf.Tensor) -> tf.Tensor:
        """The inverse of :meth:`columns` on the last axis: zeros in the other columns."""
        if self.cols is None:
            return x
        width = int(self.layer.kernel.shape[-1])
        return tf.matmul(x, tf.one_hot(self.cols, width, dtype=x.dtype))

    def kernel_eff(self) -> tf.Tensor:
        kernel = self.columns(tf.convert_to_tensor(self.layer.kernel), 1)
        mask = self.connected("kernel")
        return kernel if mask is None else tf.where(mask, kernel, tf.zeros_like(kernel))

    def bias_eff(self) -> tf.Tensor | None:
        if getattr(self.layer, "bias", None) is None:
            return None
        bias = self.columns(tf.convert_to_tensor(self.layer.bias), 0)
        mask = self.connected("bias")
        return bias if mask is None else bias * tf.cast(mask, bias.dtype)

    def connected(self, kind: str) -> tf.Tensor | None:
        """Bool entries the network uses in the computed columns (None: all)."""
        mask = _mask_of(self.layer, kind)
        if mask is None:
            return None
        return self.columns(
            tf.cast(tf.convert_to_tensor(mask), tf.bool), 1 if kind == "kernel" else 0
        )

    def call(self, a: tf.Tensor) -> tf.Tensor:
        """The pre-activation ``a @ kernel_eff + bias_eff`` (computed columns only)."""
        z = tf.matmul(a, self.kernel_eff())
        bias = self.bias_eff()
        return z if bias is None else z + bias


def _restrict(x: tf.Tensor, mask: tf.Tensor, everything: tf.Tensor) -> tf.Tensor:
    """``x`` with entries outside ``mask`` zeroed (``everything``, ``all(mask)``: skips the
    kernel-sized select)."""
    return tf.cond(
        everything,
        lambda: tf.identity(x),
        lambda: tf.where(mask, x, tf.zeros([], x.dtype)),
    )


def _and(a: tf.Tensor | None, b: tf.Tensor | None) -> tf.Tensor | None:
    """Elementwise and of two masks (bool or 0/1 floats) as bool; None means all."""
    masks = [tf.cast(m, tf.bool) for m in (a, b) if m is not None]
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else tf.logical_and(*masks)


class DenseJacobian:
    """``J`` of Dense-like layers, kept as per-layer factors ``A`` (inputs) and ``D``."""

    noise = 0.0  # relative error of its float32-built Gram (see NOISE32), set in __init__

    def __init__(self, graph, layers: dict, values_fn, x, variables: list, allowed: list):
        self._variables = variables
        inputs: dict = {}
        probes: dict = {}

        def wrap(operation):
            entry = layers.get(id(operation))
            if entry is None:
                return operation

            def call(a, *args, **kwargs):
                a = tf.convert_to_tensor(a)
                z = entry.call(a)
                probe = tf.zeros_like(z)
                tape.watch(probe)
                inputs[id(operation)], probes[id(operation)] = a, probe
                z = z + probe
                activation = entry.layer.activation
                return z if activation is None else activation(z)

            return call

        with tf.GradientTape() as tape:
            outputs = _compat.run_graph(graph, x, wrap)
            held = values_fn(outputs)  # (N, U)
            sums = tf.reduce_sum(held, axis=0)  # samples are independent: one pass per unit
        order = [key for key in layers if key in probes]
        grads = tape.jacobian(
            sums, [probes[k] for k in order], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        self.values = tf.reshape(held, [-1])
        self._n = tf.shape(held)[0]
        self._u = tf.shape(held)[1]
        widths: list[int] = []
        kernel_work = 0
        self._parts = []  # (entry, A (N, in) f64, D (N, U, out) f64, kernel W, bias W)
        self._inputs32 = {}  # kernel-sized products run in float32 (see apply/transpose)
        self._d32: dict = {}  # D in float32, for the Gram's products (see NOISE32)
        self._kernels: dict = {}  # A A^T per layer (float64), for gram_matvec
        self._kernel_all: dict = {}  # all(kernel W) per layer
        self._full: dict = {}  # all(kernel W) and all(bias W) per layer
        for key, d in zip(order, grads):
            entry = layers[key]
            kernel_w = bias_w = None
            if entry.kernel is not None:
                mask = allowed[entry.kernel]
                mask = None if mask is None else entry.columns(mask, 1)
                kernel_w = _and(entry.connected("kernel"), mask)
                kernel_w = (
                    tf.ones(tf.shape(entry.kernel_eff()), tf.bool) if kernel_w is None else kernel_w
                )
            if entry.bias is not None:
                mask = allowed[entry.bias]
                mask = None if mask is None else entry.columns(mask, 0)
                bias_w = _and(entry.connected("bias"), mask)
                bias_w = tf.ones(tf.shape(d)[-1:], tf.bool) if bias_w is None else bias_w
            d32 = tf.transpose(d, [1, 0, 2])  # (N, U, out)
            self._inputs32[id(entry)] = inputs[key]
            self._d32[id(entry)] = d32
            self._parts.append((entry, _f64(inputs[key]), _f64(d32), kernel_w, bias_w))
            # all(W) per variable and per layer, once per Jacobian (not in each solve)
            alls = [tf.reduce_all(w) for w in (kernel_w, bias_w) if w is not None]
            self._kernel_all[id(entry)] = alls[0] if kernel_w is not None else None
            self._full[id(entry)] = alls[0] if len(alls) == 1 else tf.logical_and(*alls)
            if kernel_w is not None:  # A A^T (N x N) for gram_matvec: small, float64
                a64 = self._parts[-1][1]
                self._kernels[id(entry)] = tf.matmul(a64, a64, transpose_b=True)
            widths.append(max(int(d32.shape[-1] or 1), int(inputs[key].shape[-1] or 1)))
            kernel_work += int(inputs[key].shape[-1] or 0) * int(d32.shape[-1] or 0)
        if self._float32_pays(held.shape, [int(d.shape[-1] or 0) for d in grads], kernel_work):
            self.noise = NOISE32 * max(widths) ** 0.5

    @staticmethod
    def _float32_pays(held_shape: Any, outs: list, kernel_work: int) -> bool:
        """Float32 Grams only where they pay: float64 keeps the exact semantics (RIDGE, RCOND)
        for small Grams, for an unknown number of rows (reference = each batch), and where the
        kernel-sized products of the refinement sweeps (4 more per layer and step, each
        N x in x out) would cost more than a float64 Gram (~10x its float32 GEMM) saves."""
        if held_shape[0] is None or held_shape[1] is None:
            return False
        n, rows = held_shape[0], held_shape[0] * held_shape[1]
        gram_work = rows * rows * sum(outs)
        return gram_work >= FLOAT32_MIN_WORK and 9 * gram_work > 4 * n * kernel_work

    def gram(self) -> tf.Tensor:
        m = self._n * self._u
        gram = tf.zeros([m, m], tf.float64)
        for entry, a, d, kernel_w, bias_w in self._parts:
            flat = tf.reshape(d, [m, -1])
            full = self._full[id(entry)]
            fast = self.noise > 0  # float32 products (see NOISE32); else float64
            a_full = self._inputs32[id(entry)] if fast else a
            d_full = tf.reshape(self._d32[id(entry)], [m, -1]) if fast else flat
            gram += tf.cond(
                full,
                lambda a=a_full, flat=d_full, k=kernel_w, b=bias_w: self._full_gram(a, flat, k, b),
                lambda a=a, d=d, flat=flat, k=kernel_w, b=bias_w: self._partial_gram(
                    a, d, flat, k, b
                ),
            )
        return gram

    def _full_gram(self, a, flat, kernel_w, bias_w) -> tf.Tensor:
        """Every entry allowed: ``(expand(A A^T) + 1) * (D D^T)``, one product of D.

        With float32 ``a`` and ``flat`` both products run as float32 GEMMs (see NOISE32).
        """
        n, u = self._n, self._u
        factor = tf.zeros([], a.dtype)
        if kernel_w is not None:  # (N, N) broadcast over units: never expanded
            factor = factor + tf.matmul(a, a, transpose_b=True)[:, None, :, None]
        if bias_w is not None:
            factor = factor + 1.0
        dd = tf.reshape(tf.matmul(flat, flat, transpose_b=True), [n, u, n, u])
        # Only the lower triangle is read by the Cholesky: no need to symmetrize.
        return _f64(tf.reshape(factor * dd, [n * u, n * u]))

    def _partial_gram(self, a, d, flat, kernel_w, bias_w) -> tf.Tensor:
        gram = tf.zeros([tf.shape(flat)[0]] * 2, tf.float64)
        if kernel_w is not None:
            gram += self._masked_gram(a, d, kernel_w)
        if bias_w is not None:
            gram += tf.matmul(flat * _f64(bias_w)[None], flat, transpose_b=True)
        return gram

    def _masked_gram(self, a: tf.Tensor, d: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        # B[n, m, j] = sum_i a_ni a_mi W_ij; G[nu, mv] = sum_j d_nuj d_mvj B[n, m, j]
        pairs = tf.reshape(a[:, None, :] * a[None, :, :], [self._n * self._n, -1])
        b = tf.reshape(tf.matmul(pairs, _f64(w)), [self._n, self._n, -1])
        t = tf.einsum("nuj,nmj->mnuj", d, b)  # batched over m below
        g = tf.einsum("mnuj,mvj->numv", t, d)
        m = self._n * self._u
        return tf.reshape(g, [m, m])

    def apply(self, vectors: list) -> tf.Tensor:
        total = tf.zeros([self._n, self._u], tf.float64)
        for part in self._parts:
            entry = part[0]
            kernel = None if entry.kernel is None else vectors[entry.kernel]
            bias = None if entry.bias is None else vectors[entry.bias]
            total += self._apply_part(part, kernel, bias)
        return tf.reshape(total, [-1])

    def _apply_part(self, part, kernel, bias) -> tf.Tensor:
        """``J_l v`` of one layer as (N, U) float64."""
        entry, _, d, kernel_w, bias_w = part
        total = tf.zeros([self._n, self._u], tf.float64)
        if kernel_w is not None:
            # The (N, in) x (in, out) product in float32 like the forward pass: J v is then
            # exact to float32 rounding (the corrections remove what is left).
            v = _restrict(entry.columns(kernel, 1), kernel_w, self._kernel_all[id(entry)])
            z = _f64(tf.matmul(self._inputs32[id(entry)], tf.cast(v, tf.float32)))
            total += tf.einsum("nj,nuj->nu", z, d)
        if bias_w is not None:
            v = tf.where(bias_w, _f64(entry.columns(bias, 0)), tf.zeros([], tf.float64))
            total += tf.einsum("j,nuj->nu", v, d)
        return total

    def transpose(self, alpha: tf.Tensor) -> list:
        out: list = [None] * len(self._variables)  # each variable belongs to one layer
        alpha = tf.reshape(alpha, [self._n, self._u])
        for part in self._parts:
            entry = part[0]
            k, b = self._transpose_part(part, alpha)
            if k is not None:  # a restricted layer: (in, cols) x one-hot (cols, out)
                k = entry.expand(k)
                out[entry.kernel] = tf.cast(k, self._variables[entry.kernel].dtype)
            if b is not None:
                b = entry.expand(b[None])[0]
                out[entry.bias] = tf.cast(b, self._variables[entry.bias].dtype)
        return [tf.zeros_like(v.value) if o is None else o for o, v in zip(out, self._variables)]

    def _transpose_part(self, part, alpha: tf.Tensor) -> tuple:
        """``J_l^T alpha`` of one layer: (kernel float32 or None, bias float64 or None)."""
        entry, _, d, kernel_w, bias_w = part
        e = tf.einsum("nu,nuj->nj", alpha, d)
        k = b = None
        if kernel_w is not None:  # kernel-sized: float32, like a gradient
            k = tf.matmul(self._inputs32[id(entry)], tf.cast(e, tf.float32), transpose_a=True)
            k = _restrict(k, kernel_w, self._kernel_all[id(entry)])
        if bias_w is not None:
            b = tf.where(bias_w, tf.reduce_sum(e, axis=0), tf.zeros([], tf.float64))
        return k, b

    def gram_matvec(self, v: tf.Tensor) -> tf.Tensor:
        """``J J^T v`` (float64) without forming ``J J^T``.

        A layer whose entries are all allowed contributes ``D_nu . ((A A^T + 1) E)_n`` (1: the all-ones N x N matrix of a bias) with
        ``E_n = sum_u v_nu d_nu``: float64 products of sizes N x U x out and N x N x out, never
        kernel-sized. A layer with a partial ``W`` runs ``J_l (J_l^T v)`` (two kernel-sized
        float32 products, like :meth:`apply` and :meth:`transpose`).
        """
        alpha = tf.reshape(_f64(v), [self._n, self._u])
        total = tf.zeros([self._n, self._u], tf.float64)
        for part in self._parts:
            entry, _, d, kernel_w, bias_w = part
            full = self._full[id(entry)]

            def structured(d=d, entry=entry, kernel_w=kernel_w, bias_w=bias_w):
                e = tf.einsum("nu,nuj->nj", alpha, d)
                f = tf.zeros_like(e)
                if kernel_w is not None:
                    f += tf.matmul(self._kernels[id(entry)], e)
                if bias_w is not None:  # the bias's factor is 1 for every pair of samples
                    f += tf.reduce_sum(e, axis=0, keepdims=True)
                return tf.einsum("nj,nuj->nu", f, d)

            def explicit(part=part):
                k, b = self._transpose_part(part, alpha)
                return self._apply_part(part, k, b)

            total += tf.cond(full, structured, explicit)
        return tf.reshape(total, [-1])


def make_jacobian(model: keras.Model, held_model: keras.Model, variables: list, units=None):
    """A function ``(values_fn, x, allowed) -> jacobian`` for the op's variables.

    The structured :class:`DenseJacobian` when every variable is the kernel or bias of a
    Dense-like layer of the held model's graph; else :class:`ExplicitJacobian`. The function's
    ``restricted`` attribute names the held layers computed on their held units only
    ({layer name: columns}; see :func:`_restrict_held`), and its ``forward(x)`` runs the held
    graph that way (outputs of those layers: their held units, in order).
    """
    graph = _compat.functional_graph(held_model)
    layers: dict[int, _Layer] = {}
    ok = graph is not None
    for index, variable in enumerate(variables):
        owner = None
        for layer in selectors_layers(model):
            for kind in ("kernel", "bias"):
                if getattr(layer, kind, None) is variable:
                    owner = (layer, kind)
        if owner is None or not _dense_like(owner[0]):
            ok = False
            break
        entry = layers.setdefault(id(owner[0]), _Layer(owner[0]))
        setattr(entry, owner[1], index)

    def structured(values_fn, x, allowed):
        return DenseJacobian(graph, layers, values_fn, x, variables, allowed)

    def forward(x):
        def wrap(operation):
            entry = layers.get(id(operation))
            if entry is None or entry.cols is None:
                return operation

            def call(a, *args, **kwargs):
                z = entry.call(tf.convert_to_tensor(a))
                activation = entry.layer.activation
                return z if activation is None else activation(z)

            return call

        return _compat.run_graph(graph, x, wrap)

    restricted = _restrict_held(graph, layers, units or {}) if ok else {}
    structured.restricted = restricted  # type: ignore[attr-defined]
    structured.forward = forward  # type: ignore[attr-defined]

    def explicit(values_fn, x, allowed):
        return ExplicitJacobian(
            lambda inputs: tf.reshape(values_fn(held_model(inputs, training=False)), [-1]),
            x,
            variables,
            allowed,
        )

    explicit.restricted = {}  # type: ignore[attr-defined]
    return structured if ok else explicit


def _restrict_held(graph, layers: dict, units: dict) -> dict:
    """Marks the held layers to compute on their held units only; returns {name: columns}.

    A held layer qualifies when the op trains it (a Dense-like entry), no other layer of the
    held graph reads its output, its activation is element-wise (each held unit depends on its
    own pre-activation only) and at most half its units are held (else the one-hot expansion
    of ``J^T`` would cost as much as the full product).
    """
    from maskmagic.training.reach import is_per_unit_activation

    read = set()
    for layer in graph.layers:
        for node in _compat.inbound_nodes(layer):
            for tensor in node.arguments.keras_tensors:
                read.add(id(_compat.producing_layer(tensor)))
    restricted = {}
    by_name = {entry.layer.name: entry for entry in layers.values()}
    for name, vector in units.items():
        entry = by_name.get(name)
        if entry is None or id(entry.layer) in read:
            continue
        if not is_per_unit_activation(entry.layer.activation):
            continue
        cols = np.flatnonzero(vector).astype("int32")
        if 2 * cols.size <= vector.size:
            entry.cols = cols
            restricted[name] = cols
    return restricted


def selectors_layers(model: keras.Model) -> list:
    from maskmagic.training.selectors import parameter_layers

    return list(parameter_layers(model).values())
