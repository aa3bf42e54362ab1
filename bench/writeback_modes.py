"""The write-back's VALUES mode against the full WHERE write-back, side by side in one process.

A unit selection (``TrainOp(model, select="out[1]")``) on a ``keras.layers.Dense`` and on a
``MaskedDense`` with a 50% mask, trained by Adam: once with the mode the op picks (``VALUES``:
the excluded gradient zeroed, only the kernel copied and restored) and once with the full
write-back forced (``WHERE``: the kernel and both Adam slots copied and restored). Timed
interleaved (bursts of 4 steps, 9 rounds); each ratio is the median of the per-round ratios.

Usage: ``python bench/writeback_modes.py [--size 4096] [--batch 128]``; the result goes to
``bench/results/writeback-<date>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def _op(layer_kind: str, n: int, forced: bool):
    import keras
    import numpy as np

    from maskmagic.layers import MaskedDense
    from maskmagic.training import TrainOp, zero_steps

    inputs = keras.Input((n,))
    if layer_kind == "dense":
        layer = keras.layers.Dense(n, name="out")
    else:
        mask = np.random.default_rng(0).random((n, n)) < 0.5
        layer = MaskedDense(n, mask=mask, impl="dense", name="out")
    model = keras.Model(inputs, layer(inputs))
    keeps = zero_steps.keeps_zero_gradient_entries
    if forced:  # the op's check then finds no optimizer it may trust: WHERE
        zero_steps.keeps_zero_gradient_entries = lambda optimizer: False
    try:
        op = TrainOp(model, loss="mse", optimizer=keras.optimizers.Adam(1e-3), select="out[1]")
    finally:
        zero_steps.keeps_zero_gradient_entries = keeps
    mode = int(op._write_backs[layer.kernel.path].mode.numpy())  # noqa: SLF001 - what ran
    return op, mode


def measure(n: int, batch: int, rounds: int = 9, burst: int = 4) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from maskmagic.training import writeback

    names = {writeback.VALUES: "VALUES", writeback.WHERE: "WHERE"}
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, n)).astype("float32"))
    y = tf.constant(rng.normal(size=(batch, n)).astype("float32"))
    rows = []
    for kind in ("dense", "masked-dense"):
        ops = {}
        for forced in (False, True):
            op, mode = _op(kind, n, forced)
            op(x, y)
            op(x, y)
            ops[names.get(mode, str(mode))] = op
        times: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(rounds):
            for name, op in ops.items():
                start = time.perf_counter()
                for _ in range(burst):
                    op(x, y)
                times[name].append((time.perf_counter() - start) / burst)
        ratio = statistics.median(v / w for v, w in zip(times["VALUES"], times["WHERE"]))
        rows.append({"layer": kind, "n": n, "batch": batch, "optimizer": "adam", "op": "out[1]",
                     "values_ms": 1000 * statistics.median(times["VALUES"]),
                     "where_ms": 1000 * statistics.median(times["WHERE"]),
                     "ratio": ratio})  # fmt: skip
    return rows


def main() -> None:
    from record import save

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    load = [os.getloadavg()]
    rows = measure(args.size, args.batch)
    load.append(os.getloadavg())
    for row in rows:
        print(f"{row['layer']:12s} {row['n']}² b{row['batch']} adam out[1]: VALUES "
              f"{row['values_ms']:.1f} ms, WHERE {row['where_ms']:.1f} ms: {row['ratio']:.2f}x")  # fmt: skip
    save("writeback", "writeback_modes.py", sys.argv[1:], rows, load)


if __name__ == "__main__":
    main()
