"""Where the sparse implementation's train step goes: its parts timed one by one.

A 4096 x 4096 ``MaskedDense(impl="sparse")`` at 1% density, batch 128 (the README's
``impl=auto`` row): the compiled forward pass, forward + backward, the sampled values gradient
alone (``csr.sampled_dot``) and the same product under XLA, and ``TrainOp`` steps with SGD and
Adam, next to a ``TrainOp`` step on ``keras.layers.Dense``. Medians of 20 calls after warm-up.

Usage: ``python bench/profile_sparse.py`` (writes ``bench/results/profile-sparse-<date>.json``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

SIZE, BATCH, DENSITY = 4096, 128, 0.01


def _median_ms(fn, calls: int = 20) -> float:
    fn()
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from maskmagic.layers import MaskedDense, csr
    from maskmagic.training import TrainOp

    rng = np.random.default_rng(0)
    mask = rng.random((SIZE, SIZE)) < DENSITY
    x = tf.constant(rng.normal(size=(BATCH, SIZE)).astype("float32"))
    y = tf.constant(rng.normal(size=(BATCH, SIZE)).astype("float32"))
    inputs = keras.Input((SIZE,))
    layer = MaskedDense(SIZE, mask=mask, impl="sparse")
    model = keras.Model(inputs, layer(inputs))
    forward = tf.function(lambda: model(x))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    rows, cols = layer.kernel_rows.value, layer.kernel_cols.value
    x_t, dy_t = tf.transpose(x), tf.transpose(y)
    sampled = tf.function(lambda: csr.sampled_dot(x_t, rows, dy_t, cols))

    @tf.function(jit_compile=True)
    def gathered_product(a, a_index, b, b_index):
        return tf.reduce_sum(tf.gather(a, a_index) * tf.gather(b, b_index), axis=1)

    sampled_xla = tf.function(lambda: gathered_product(x_t, rows, dy_t, cols))
    parts = {
        "forward": _median_ms(lambda: forward().numpy()),
        "forward + backward": _median_ms(lambda: [g.numpy() for g in forward_backward()]),
        "sampled values gradient": _median_ms(lambda: sampled().numpy()),
        "sampled values gradient under XLA": _median_ms(lambda: sampled_xla().numpy()),
    }
    for optimizer in ("sgd", "adam"):
        op = TrainOp(model, optimizer=optimizer)
        parts[f"TrainOp step, {optimizer}"] = _median_ms(lambda op=op: op(x, y))
    dense = keras.Sequential([keras.Input((SIZE,)), keras.layers.Dense(SIZE)])
    dense_op = TrainOp(dense, optimizer="sgd")
    parts["TrainOp step on Dense, sgd"] = _median_ms(lambda: dense_op(x, y), calls=10)
    return {"size": SIZE, "batch": BATCH, "density": DENSITY, "connections": int(mask.sum()),
            "ms": parts}  # fmt: skip


def main() -> None:
    from run import machine

    load = [os.getloadavg()]
    result = measure()
    load.append(os.getloadavg())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"kind": "profile-sparse", "machine": machine(), "date": stamp,
              "command": "python bench/profile_sparse.py", "load": load, "result": result}  # fmt: skip
    for part, ms in result["ms"].items():
        print(f"{part:36s} {ms:8.1f} ms")
    path = os.path.join(HERE, "results", f"profile-sparse-{stamp.replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
