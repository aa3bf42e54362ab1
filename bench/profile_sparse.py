"""Where the sparse implementation's train step goes: its parts timed, per kernel path.

A 4096 x 4096 ``MaskedDense(impl="sparse")`` at 1% and 0.1% density, batch 128 (the README's
``impl=auto`` rows), on both kernel paths (``MASKMAGIC_SPARSE_KERNEL=stock``: TensorFlow's CSR
ops; ``native``: maskmagic's compiled op, see ``maskmagic/layers/native.py``): the compiled
forward pass, forward + backward, and ``TrainOp`` steps with SGD and Adam, next to ``TrainOp``
steps on ``keras.layers.Dense``, and the floor: ``TrainOp`` steps on the same layer with no
connections at all (what the loss, the bias and the op cost when no connection is computed). Every part is timed in interleaved rounds, stock and native
side by side in one process; medians of all calls after warm-up.

Usage: ``python bench/profile_sparse.py [--size 4096]`` (writes
``bench/results/profile-sparse-<date>.json``).
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

SIZE, BATCH, DENSITIES, PATHS = 4096, 128, (0.01, 0.001), ("stock", "native")
ROUNDS, CALLS = 5, 5


def _times_ms(fn, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times


def _interleaved(fns: dict, rounds: int = ROUNDS, calls: int = CALLS) -> dict:
    """Median ms of each function, timed in alternating rounds (shared machine: same noise)."""
    for fn in fns.values():
        fn()
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += _times_ms(fn, calls)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_density(density: float) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from maskmagic.layers import MaskedDense
    from maskmagic.training import TrainOp

    rng = np.random.default_rng(0)
    mask = rng.random((SIZE, SIZE)) < density
    x = tf.constant(rng.normal(size=(BATCH, SIZE)).astype("float32"))
    y = tf.constant(rng.normal(size=(BATCH, SIZE)).astype("float32"))
    inputs = keras.Input((SIZE,))
    layer = MaskedDense(SIZE, mask=mask, impl="sparse")
    model = keras.Model(inputs, layer(inputs))
    parts: dict = {}
    for path in PATHS:  # the path is read when a function is traced: trace each one now
        os.environ["MASKMAGIC_SPARSE_KERNEL"] = path
        forward = tf.function(lambda: model(x))

        @tf.function
        def forward_backward():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - y) ** 2)
            return tape.gradient(loss, model.trainable_variables)

        forward()
        forward_backward()
        parts[f"forward, {path}"] = lambda f=forward: f().numpy()
        parts[f"forward + backward, {path}"] = lambda f=forward_backward: [g.numpy() for g in f()]
        for optimizer in ("sgd", "adam"):
            op = TrainOp(model, optimizer=optimizer)
            op(x, y)
            parts[f"TrainOp step, {optimizer}, {path}"] = lambda op=op: op(x, y)
    os.environ.pop("MASKMAGIC_SPARSE_KERNEL")
    empty_layer = MaskedDense(SIZE, mask=np.zeros((SIZE, SIZE), bool), impl="sparse")
    empty = keras.Model(inputs, empty_layer(inputs))
    for optimizer in ("sgd", "adam"):
        op = TrainOp(empty, optimizer=optimizer)
        op(x, y)
        parts[f"TrainOp step, {optimizer}, no connections"] = lambda op=op: op(x, y)
    ms = _interleaved(parts)
    for optimizer in ("sgd", "adam"):
        dense = keras.Sequential([keras.Input((SIZE,)), keras.layers.Dense(SIZE)])
        dense_op = TrainOp(dense, optimizer=optimizer)
        sparse_ops = {path: parts[f"TrainOp step, {optimizer}, {path}"] for path in PATHS}
        floor = parts[f"TrainOp step, {optimizer}, no connections"]
        both = _interleaved({"dense": lambda op=dense_op: op(x, y), "floor": floor, **sparse_ops},
                            calls=4)  # fmt: skip
        ms[f"TrainOp step on Dense, {optimizer}"] = both["dense"]
        for path in PATHS:
            ms[f"ratio to Dense, {optimizer}, {path}"] = both[path] / both["dense"]
        ms[f"ratio to Dense, {optimizer}, no connections"] = both["floor"] / both["dense"]
    return {"density": density, "connections": int(mask.sum()), "ms": ms}


def measure() -> dict:
    return {
        "size": SIZE,
        "batch": BATCH,
        "densities": [measure_density(density) for density in DENSITIES],
    }


def main() -> None:
    import argparse

    from run import machine

    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=SIZE, help="inputs and units of the layer")
    SIZE = parser.parse_args().size
    load = [os.getloadavg()]
    result = measure()
    load.append(os.getloadavg())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"kind": "profile-sparse", "machine": machine(), "date": stamp,
              "command": " ".join(["python bench/profile_sparse.py", *sys.argv[1:]]), "load": load, "result": result}  # fmt: skip
    for row in result["densities"]:
        print(f"density {row['density']}: {row['connections']} connections")
        for part, value in row["ms"].items():
            unit = "x" if part.startswith("ratio") else "ms"
            print(f"  {part:36s} {value:8.3f} {unit}")
    path = os.path.join(HERE, "results", f"profile-sparse-{stamp.replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
