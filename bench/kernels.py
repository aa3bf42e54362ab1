"""Compares the sparse matmul kernels TensorFlow offers on this machine (forward + backward).

Each candidate computes ``y = x @ W`` for a sparse ``W`` given as (rows, cols, values), and the
gradients of a scalar loss with respect to ``x`` and to the values. The table shows the median
time of one forward+backward call; ``MaskedDense(impl="sparse")`` uses the fastest one.

Usage::

    python bench/kernels.py            # 4096 and 8192 square layers at 1% and 0.1%, batch 128
    python bench/kernels.py --quick    # 4096 only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskmagic.layers import csr as sparse_ops  # noqa: E402


def _pattern(n_in: int, units: int, density: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    nnz = max(1, int(round(n_in * units * density)))
    flat = np.unique(rng.integers(0, n_in * units, size=nnz, dtype=np.int64))
    return (flat // units).astype(np.int32), (flat % units).astype(np.int32)


def spmm_autograd(x, values, rows, cols, n_in, units):
    """tf.sparse.sparse_dense_matmul with TensorFlow's registered gradient."""
    w = tf.SparseTensor(tf.cast(tf.stack([rows, cols], axis=1), tf.int64), values, [n_in, units])
    return tf.transpose(tf.sparse.sparse_dense_matmul(w, x, adjoint_a=True, adjoint_b=True))


def gather_segment_sum(x, values, rows, cols, n_in, units):
    """gather(x^T, rows) * values, unsorted_segment_sum over cols (autograd)."""
    parts = tf.gather(tf.transpose(x), rows) * values[:, None]
    return tf.transpose(tf.math.unsorted_segment_sum(parts, cols, units))


def spmm_custom_gradient(x, values, rows, cols, n_in, units):
    """tf.sparse.sparse_dense_matmul both ways, values gradient by the chunked sampled dot."""
    indices = tf.cast(tf.stack([rows, cols], axis=1), tf.int64)

    @tf.custom_gradient
    def run(x, values):
        w = tf.SparseTensor(indices, values, [n_in, units])
        y_t = tf.sparse.sparse_dense_matmul(w, x, adjoint_a=True, adjoint_b=True)

        def grad(dy_t):
            dx = tf.transpose(tf.sparse.sparse_dense_matmul(w, dy_t))
            return dx, sparse_ops.sampled_dot(tf.transpose(x), rows, dy_t, cols)

        return y_t, grad

    return tf.transpose(run(x, values))


def csr_custom_gradient(x, values, rows, cols, n_in, units):
    """maskmagic.layers.csr.sparse_matmul: CSR SparseMatrixMatMul, chunked sampled-dot gradient."""
    order = tf.argsort(cols, stable=True)  # the layer stores this (kernel_order)
    return sparse_ops.sparse_matmul(x, values, rows, cols, order, n_in, units)


CANDIDATES = {
    "sparse_dense_matmul, TF gradient": spmm_autograd,
    "gather + unsorted_segment_sum, TF gradient": gather_segment_sum,
    "sparse_dense_matmul, custom gradient": spmm_custom_gradient,
    "CSR SparseMatrixMatMul, custom gradient": csr_custom_gradient,
}
# The CSR ops' registered gradient is left out: it forms the dense (inputs, units) product.


def _time(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(n_in: int, units: int, density: float, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of one forward+backward call for each candidate (and a dense matmul)."""
    rows_np, cols_np = _pattern(n_in, units, density)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(batch, n_in)).astype("float32"))
    values = tf.Variable(rng.normal(size=rows_np.size).astype("float32"))
    rows, cols = tf.constant(rows_np), tf.constant(cols_np)
    probe = tf.constant(rng.normal(size=(batch, units)).astype("float32"))
    results = {}
    for name, kernel in CANDIDATES.items():

        @tf.function
        def step(kernel=kernel):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = kernel(x, values, rows, cols, n_in, units)
                loss = tf.reduce_sum(y * probe)
            return tape.gradient(loss, [x, values])

        check = step()
        assert check[1].shape == (rows_np.size,), name
        results[name] = _time(step, repeats)
    if n_in * units <= 8192 * 8192:
        kernel = tf.Variable(rng.normal(size=(n_in, units)).astype("float32"))

        @tf.function
        def dense_step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.matmul(x, kernel) * probe)
            return tape.gradient(loss, [x, kernel])

        results["dense tf.matmul (reference)"] = _time(dense_step, repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096 only, fewer repeats")
    args = parser.parse_args()
    sizes = [4096] if args.quick else [4096, 8192]
    repeats = 3 if args.quick else 7
    cases = [(n, n, d, 128) for n in sizes for d in (0.01, 0.001)]
    if not args.quick:
        cases.append((200_000, 20_000, 2_000_000 / (200_000 * 20_000), 64))
    lines = []
    for n_in, units, density, batch in cases:
        lines.append(f"\n{n_in} x {units}, density {density:.4%}, batch {batch}")
        print(lines[-1], flush=True)
        for name, seconds in bench(n_in, units, density, batch, repeats).items():
            lines.append(f"  {name:42s} {seconds * 1000:9.2f} ms")
            print(lines[-1], flush=True)
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"kernels-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    with open(path, "w") as f:
        f.write("median forward+backward time per call\n" + "\n".join(lines) + "\n")
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
