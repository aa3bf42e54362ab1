"""Other ways to write the native sparse kernel, timed side by side with the shipped one.

Each variant is the shipped ``maskmagic/layers/native_src/sparse_ops.cc`` with one part
rewritten (text replacements applied here, so the variants follow the shipped source), its ops
renamed, built into a temporary directory with the same flags. Every op of every variant is
checked against the shipped op (same bits where the variant keeps the order of every sum, else
within rtol 1e-5), then the three ops (forward, values gradient, input gradient) are timed in
interleaved rounds, shipped and variant in one process.

- ``gather-forward``: the forward product per unit (a column of W), its sum kept in registers
  over read-only gathers of transposed activations, instead of adding every connection into a
  per-tile accumulator. Timed in its most favourable form: the connections arrive already sorted
  by unit (a layer would have to sort or gather its values into that order every step).
- ``sorted-values-gradient``: the values gradient visits each block's connections by unit
  (a counting sort per block and call), so a unit's gradient row is read once per block.
- ``avx512``: 64-byte vectors and ``-mavx512f`` (only where the CPU has AVX-512).

Ops a variant leaves as shipped are timed too: their ratios show the noise of the run.

Usage: ``python bench/sparse_variants.py [--size 4096]`` (writes
``bench/results/sparse-variants-<date>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from timing import interleaved_medians  # noqa: E402

CASES = ((128, 0.01), (128, 0.001), (32, 0.01))  # (batch, density)
ROUNDS, CALLS = 7, 8
OPS = ("forward", "values gradient", "input gradient")

_GATHER_KERNEL = r"""
// Units per work item of GatherByCols.
constexpr int64_t kUnitBlock = 256;

template <typename T, int64_t kTile>
void GatherByCols(OpKernelContext* ctx, const std::vector<int64_t>& colptr, const int32_t* rows_c,
                  const T* values_c, const T* xt, int64_t batch, int64_t units, T* y) {
  using V = Vec<T>;
  constexpr int kVectors = kTile / V::kLanes;
  const int64_t tiles = (batch + kTile - 1) / kTile;
  const int64_t ublocks = (units + kUnitBlock - 1) / kUnitBlock;
  const int64_t nnz = colptr.back();
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost =
      std::max<int64_t>(1, (nnz / std::max<int64_t>(ublocks, 1) + kUnitBlock) * kTile * 4);
  tensorflow::Shard(
      workers->num_threads, workers->workers, tiles * ublocks, cost, [&](int64_t i0, int64_t i1) {
        Scratch<T> out(kUnitBlock * kTile);
        for (int64_t item = i0; item < i1; ++item) {
          const int64_t t = item % tiles, ub = item / tiles;
          const int64_t b0 = t * kTile, bt = std::min(kTile, batch - b0);
          const int64_t u0 = ub * kUnitBlock, un = std::min(kUnitBlock, units - u0);
          const T* xb = xt + b0;
          const int64_t kend = colptr[u0 + un];
          for (int64_t u = 0; u < un; ++u) {
            typename V::type acc[kVectors];
            for (int i = 0; i < kVectors; ++i) acc[i] = typename V::type{};
            for (int64_t k = colptr[u0 + u]; k < colptr[u0 + u + 1]; ++k) {
              if (k + kAhead < kend)
                Prefetch(xb + static_cast<int64_t>(rows_c[k + kAhead]) * batch, kTile * sizeof(T));
              const T* xr = xb + static_cast<int64_t>(rows_c[k]) * batch;
              const T v = values_c[k];
              if (bt == kTile) {
                for (int i = 0; i < kVectors; ++i) acc[i] += v * V::Load(xr + i * V::kLanes);
              } else {  // the batch's last, partial tile
                T tail[kTile] = {};
                for (int64_t j = 0; j < bt; ++j) tail[j] = xr[j];
                for (int i = 0; i < kVectors; ++i) acc[i] += v * V::Load(tail + i * V::kLanes);
              }
            }
            for (int i = 0; i < kVectors; ++i)
              V::Store(out.data + u * kTile + i * V::kLanes, acc[i]);
          }
          TransposeRows<T>(out.data, kTile, un, bt, y + b0 * units + u0, units);
        }
      });
}

"""

_GATHER_CALL = r"""
    const int32_t* rows_c = rows.flat<int32_t>().data();
    Tensor xt;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(x.dtype(), TensorShape({n_in, batch}), &xt));
    Transpose<T>(ctx, x_p, batch, n_in, xt.flat<T>().data());
    WithTileWidth(batch, [&](auto tile) {
      GatherByCols<T, decltype(tile)::value>(ctx, colptr, rows_c, values_p, xt.flat<T>().data(),
                                             batch, units_, y_p);
    });"""

_SORTED_LOOP = r"""            if ((k1 - k0) * 2 >= units) {  // by unit within the block
              std::fill(start.begin(), start.end(), 0);
              for (int64_t k = k0; k < k1; ++k) ++start[cols_p[k] + 1];
              for (int64_t u = 0; u < units; ++u) start[u + 1] += start[u];
              perm.resize(k1 - k0);
              for (int64_t k = k0; k < k1; ++k) perm[start[cols_p[k]]++] = static_cast<int32_t>(k);
              const int64_t n = k1 - k0;
              for (int64_t i = 0; i < n; ++i) {
                if (i + kAhead < n)
                  Prefetch(xloc.data + (static_cast<int64_t>(rows_p[perm[i + kAhead]]) - r0) * batch,
                           batch * sizeof(T));
                const int64_t k = perm[i];
                dv_p[k] = Dot<T>(xloc.data + (static_cast<int64_t>(rows_p[k]) - r0) * batch,
                                 dyt_p + static_cast<int64_t>(cols_p[k]) * batch, batch);
              }
              continue;
            }
            for (int64_t k = k0; k < k1; ++k) {"""


def variants(cpu_words: set) -> dict:
    """name -> (replacements [(old, new, count)], extra compiler flags, same bits, sorted input)."""
    found = {
        "gather-forward": (
            [
                (
                    "// dx (batch, n_in) = dy (batch, units) @ W.T",
                    _GATHER_KERNEL + "// dx (batch, n_in) = dy (batch, units) @ W.T",
                    1,
                ),
                (
                    "    if (!CheckConnections(ctx, rows, cols, nnz, n_in, units_, &rowptr)) return;",
                    "    std::vector<int64_t> colptr(units_ + 1, 0);  // cols arrive sorted\n"
                    "    for (int64_t k = 0; k < nnz; ++k) ++colptr[cols.flat<int32_t>()(k) + 1];\n"
                    "    for (int64_t u = 0; u < units_; ++u) colptr[u + 1] += colptr[u];",
                    1,
                ),
                (
                    """    WithTileWidth(batch, [&](auto tile) {
      ScatterByRows<T, decltype(tile)::value>(ctx, rowptr, cols_p, values_p, x_p, batch, n_in,
                                              units_, y_p);
    });""",
                    _GATHER_CALL,
                    1,
                ),
            ],
            [],
            True,
            True,
        ),
        "sorted-values-gradient": (
            [
                (
                    "          Scratch<T> xloc(kRowBlock * std::max<int64_t>(batch, 1));\n",
                    "          Scratch<T> xloc(kRowBlock * std::max<int64_t>(batch, 1));\n"
                    "          std::vector<int32_t> start(units + 1), perm;\n",
                    1,
                ),
                (
                    "            for (int64_t k = k0; k < k1; ++k) {\n              if (k + kAhead < k1)",
                    _SORTED_LOOP + "\n              if (k + kAhead < k1)",
                    1,
                ),
            ],
            [],
            True,
            False,
        ),
    }
    if "avx512f" in cpu_words:
        found["avx512"] = (
            [("vector_size(32)", "vector_size(64)", 1),
             ("kLanes = 32 / sizeof(T)", "kLanes = 64 / sizeof(T)", 1)],
            ["-mavx512f"], False, False,
        )  # fmt: skip
    return found


def build_variant(name: str, tag: str, replacements: list, flags: list, directory: str):
    """The variant's library, loaded; its ops are named ``Variant<tag>...`` instead of
    ``Maskmagic...`` (a name per variant: TensorFlow keeps every loaded op)."""
    import tensorflow as tf

    from maskmagic.layers import native

    source = native.SOURCES[0].read_text()
    for old, new, count in replacements:
        if source.count(old) != count:
            raise SystemExit(f"{name}: the shipped source changed; {old[:60]!r} not found")
        source = source.replace(old, new)
    source = source.replace('"MaskmagicSparse', f'"Variant{tag}Sparse')
    path = os.path.join(directory, f"{name}.cc")
    with open(path, "w") as f:
        f.write(source)
    library = os.path.join(directory, f"{name}.so")
    command = [*native.compiler(), *native.FLAGS, *native.cpu_flags(), *flags, path, "-o", library,
               *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: build failed\n{done.stderr[-2000:]}")
    return tf.load_op_library(library)


def _ops(library, prefix: str, x, dy, values, rows, cols, n_in: int, units: int) -> dict:
    """The three ops as zero-argument functions returning tensors."""
    import tensorflow as tf

    op = lambda name: getattr(library, f"{prefix}_sparse_matmul{name}")  # noqa: E731
    return {
        "forward": tf.function(lambda: op("")(x, values, rows, cols, units=units)),
        "values gradient": tf.function(lambda: op("_grad_values")(x, dy, rows, cols)),
        "input gradient": tf.function(lambda: op("_grad_input")(dy, values, rows, cols, n_in=n_in)),
    }  # fmt: skip


def measure_case(size: int, batch: int, density: float, built: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from maskmagic.layers import native

    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(rng.random((size, size)) < density)
    values = rng.normal(size=rows.size).astype("float32")
    by_unit = np.lexsort((rows, cols))  # (col, row) order, for a variant that wants it
    x = tf.constant(rng.normal(size=(batch, size)).astype("float32"))
    dy = tf.constant(rng.normal(size=(batch, size)).astype("float32"))

    def as_tf(order):
        return [tf.constant(a[order]) for a in (values, rows.astype("int32"), cols.astype("int32"))]

    row_major = as_tf(np.arange(rows.size))
    shipped = _ops(native.kernel_ops(), "maskmagic", x, dy, *row_major, size, size)
    result: dict = {"batch": batch, "density": density, "connections": int(rows.size)}
    for name, (library, tag, same_bits, sorted_input) in built.items():
        inputs = as_tf(by_unit) if sorted_input else row_major
        variant = _ops(library, f"variant_{tag.lower()}", x, dy, *inputs, size, size)
        if sorted_input:  # only its forward is meant for (col, row) order
            variant = {"forward": variant["forward"]}
        checks = {}
        for op, fn in variant.items():
            ours, theirs = shipped[op]().numpy(), fn().numpy()
            exact = ours.tobytes() == theirs.tobytes()
            if same_bits and not exact or not np.allclose(ours, theirs, rtol=1e-5, atol=1e-5):
                raise SystemExit(f"{name}: {op} differs from the shipped op")
            checks[op] = "same bits" if exact else "within rtol 1e-5"
        pair = {**{f"shipped {op}": shipped[op] for op in variant},
                **{f"{name} {op}": fn for op, fn in variant.items()}}  # fmt: skip
        ms = interleaved_medians(pair, ROUNDS, CALLS, warmup=1)
        result[name] = {
            op: {"shipped ms": ms[f"shipped {op}"], "variant ms": ms[f"{name} {op}"],
                 "ratio": ms[f"{name} {op}"] / ms[f"shipped {op}"], "check": checks[op]}
            for op in variant
        }  # fmt: skip
    return result


def main() -> None:
    from run import machine

    from maskmagic.layers import native

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="inputs and units of the layer")
    size = parser.parse_args().size
    if native.kernel_ops() is None:
        raise SystemExit("the native kernels are unavailable here; nothing to compare")
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as directory:
        built = {}
        found = variants(set(native._cpu().split()))
        for tag, (name, (replacements, flags, same_bits, sorted_input)) in zip(
            "ABC", found.items()
        ):
            print(f"building {name}", flush=True)
            library = build_variant(name, tag, replacements, flags, directory)
            built[name] = (library, tag, same_bits, sorted_input)
        cases = [measure_case(size, batch, density, built) for batch, density in CASES]
    load.append(os.getloadavg())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join(["python bench/sparse_variants.py", *sys.argv[1:]])
    record = {"kind": "sparse-variants", "machine": machine(), "date": stamp, "command": command,
              "load": load, "size": size, "cases": cases}  # fmt: skip
    for case in cases:
        print(
            f"{size}², batch {case['batch']}, {case['density']:.1%} ({case['connections']} connections)"
        )
        for name in built:
            for op, row in case[name].items():
                print(f"  {name:24s} {op:16s} {row['shipped ms']:7.3f} ms -> {row['variant ms']:7.3f} ms"
                      f"  {row['ratio']:.2f}x  ({row['check']})")  # fmt: skip
    path = os.path.join(HERE, "results", f"sparse-variants-{stamp.replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
