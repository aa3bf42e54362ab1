"""The 3-4-2 net of DESIGN question 1: fixed per-call costs, side by side in one process.

* ``op(x, y)`` of a ``TrainOp`` (train everything, SGD) against a hand-written ``tf.function``
  step (tape, ``optimizer.apply``, ``float(loss)``) on a twin model: target <= 1.2x;
* ``GradientInspector.refresh()`` against a compiled ``tf.GradientTape`` gradient of the same
  loss whose values are fetched: target <= 1.3x.

Each pair is timed interleaved (bursts of 50 calls, 15 rounds); the ratio is the median of the
per-round ratios. Usage: ``python bench/tiny.py`` (or ``python bench/run.py --tiny``); the
result goes to ``bench/results/tiny-<date>.json``.
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

TARGETS = {"op(x, y)": 1.2, "refresh()": 1.3}


def _pair_times(fast, slow, rounds: int = 15, burst: int = 50) -> dict:
    for fn in (fast, slow):
        fn()
        fn()
    times = {"reference": [], "maskmagic": []}
    for _ in range(rounds):
        for key, fn in (("reference", fast), ("maskmagic", slow)):
            start = time.perf_counter()
            for _ in range(burst):
                fn()
            times[key].append((time.perf_counter() - start) / burst)
    ratio = statistics.median(m / r for m, r in zip(times["maskmagic"], times["reference"]))
    return {
        "reference_ms": 1000 * statistics.median(times["reference"]),
        "maskmagic_ms": 1000 * statistics.median(times["maskmagic"]),
        "ratio": ratio,
    }


def measure() -> list[dict]:
    import keras
    import numpy as np
    import tensorflow as tf

    from maskmagic import build
    from maskmagic.widgets.inspector import GradientInspector

    cell = "input x 3\ndense hidden 4 activation=sigmoid\ndense out 2\nloss mse\noptimizer sgd learning_rate=0.1\ntrain train_op_all\n"
    model, ops = build(cell)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    xt, yt = tf.constant(x), tf.constant(y)
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.MeanSquaredError()
    variables = twin.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, twin(x, training=True))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    op = ops["train_op_all"]
    rows = [{"case": "op(x, y)", "reference": "hand-written tf.function step",
             **_pair_times(lambda: float(step(xt, yt)), lambda: op(xt, yt))}]  # fmt: skip

    @tf.function
    def gradient(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, model.trainable_variables)

    inspector = GradientInspector(model, x, y)
    rows.append({"case": "refresh()", "reference": "compiled tape gradient (values fetched)",
                 **_pair_times(lambda: [g.numpy() for g in gradient(xt, yt)],
                               inspector.refresh)})  # fmt: skip
    for row in rows:
        row["target"] = TARGETS[row["case"]]
        row["met"] = row["ratio"] <= row["target"]
    return rows


def main() -> None:
    from run import machine

    load = [os.getloadavg()]
    rows = measure()
    load.append(os.getloadavg())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"kind": "tiny", "machine": machine(), "date": stamp,
              "command": "python bench/tiny.py", "load": load, "rows": rows}  # fmt: skip
    for row in rows:
        verdict = "met" if row["met"] else "MISSED"
        print(f"{row['case']:10s} {row['maskmagic_ms']:.3f} ms vs {row['reference_ms']:.3f} ms "
              f"({row['reference']}): {row['ratio']:.2f}x, target <= {row['target']}x {verdict}")  # fmt: skip
    path = os.path.join(HERE, "results", f"tiny-{stamp.replace(':', '')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
