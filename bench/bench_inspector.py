"""The cost of ``GradientInspector.refresh()`` next to a plain ``tf.GradientTape`` gradient.

For each network the same loss on the same batch is differentiated, side by side in one process
and interleaved (so that a busy machine slows every candidate alike), and the median of the
repeats is reported:

* ``tape (eager)``: ``with tf.GradientTape(): loss(y, model(x)); tape.gradient(loss, vars)``;
* ``tape (compiled)``: the same inside a ``tf.function``;
* ``refresh()``: the inspector's whole refresh (the compiled pass -- gradient, would-be
  gradient, pooled heatmaps, statistics, top connections -- then the trait updates);
* ``refresh()+view``: the same with a front end attached (the tile messages are built too).

The ratio column is ``refresh()+view`` over ``tape (compiled)``; the goal is at most 1.5.

Usage::

    python bench/bench_inspector.py            # all networks
    python bench/bench_inspector.py --quick    # fewer repeats, no 4096 x 4096 batch 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskmagic.layers import MaskedDense  # noqa: E402
from maskmagic.training import TrainOp  # noqa: E402
from maskmagic.widgets.inspector import GradientInspector  # noqa: E402


def _net(sizes: list[int], density: float, impl: str = "dense") -> keras.Model:
    rng = np.random.default_rng(0)
    x = inputs = keras.Input((sizes[0],))
    for k, (n_in, units) in enumerate(zip(sizes[:-1], sizes[1:])):
        mask = rng.random((n_in, units)) < density if density < 1 else None
        last = k == len(sizes) - 2
        x = MaskedDense(units, mask=mask, impl=impl, activation=None if last else "tanh")(x)
    return keras.Model(inputs, x)


CASES = [
    ("3-4-2 (DESIGN q1)", [3, 4, 2], 1.0, 64, "dense"),
    ("784-256-10, 20% masks", [784, 256, 10], 0.2, 128, "dense"),
    ("4096x4096, 50% mask", [4096, 4096], 0.5, 64, "dense"),
    ("4096x4096, 50% mask", [4096, 4096], 0.5, 256, "dense"),
    ("4096x4096 sparse, 1%", [4096, 4096], 0.01, 128, "sparse"),
]


def _candidates(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    loss_fn = keras.losses.MeanSquaredError()
    variables = model.trainable_variables
    xt, yt = tf.constant(x), tf.constant(y)

    def eager():
        with tf.GradientTape() as tape:
            loss = loss_fn(yt, model(xt, training=False))
        return tape.gradient(loss, variables)

    @tf.function
    def compiled(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    plain = GradientInspector(model, x, y, op=TrainOp(model, select=None))
    viewed = GradientInspector(model, x, y, op=TrainOp(model, select=None))
    viewed._on_message(viewed, {"type": "hello"}, [])  # as if a front end were attached

    def sync(grads):  # wait for the values, as refresh() does
        for g in grads:
            g.numpy() if g.shape.num_elements() < 2**16 else tf.reduce_sum(g).numpy()

    return {
        "tape (eager)": lambda: sync(eager()),
        "tape (compiled)": lambda: sync(compiled(xt, yt)),
        "refresh()": plain.refresh,
        "refresh()+view": viewed.refresh,
    }, viewed


def run(repeats: int, quick: bool) -> list[tuple]:
    rows = []
    for name, sizes, density, batch, impl in CASES:
        if quick and batch == 256:
            continue
        keras.utils.set_random_seed(0)
        model = _net(sizes, density, impl)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(batch, sizes[0])).astype("float32")
        y = rng.normal(size=(batch, sizes[-1])).astype("float32")
        candidates, viewed = _candidates(model, x, y)
        for fn in candidates.values():  # trace and warm up
            fn()
            fn()
        times = {key: [] for key in candidates}
        for _ in range(repeats):
            for key, fn in candidates.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        medians = {key: statistics.median(v) * 1e3 for key, v in times.items()}
        ratio = medians["refresh()+view"] / medians["tape (compiled)"]
        eager = medians["refresh()+view"] / medians["tape (eager)"]
        rows.append((f"{name}, batch {batch}", medians, ratio, eager, viewed.largest_message))
        _print([rows[-1]], header=len(rows) == 1)
    return rows


def _print(rows: list[tuple], header: bool) -> None:
    keys = ["tape (eager)", "tape (compiled)", "refresh()", "refresh()+view"]
    if header:
        print(
            f"{'network':38s}"
            + "".join(f"{k:>17s}" for k in keys)
            + "  ratio  vs eager  largest msg"
        )
    for name, medians, ratio, eager, largest in rows:
        cells = "".join(f"{medians[k]:14.2f} ms" for k in keys)
        print(f"{name:38s}{cells}  {ratio:5.2f}  {eager:8.2f}  {largest / 1e6:8.2f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--save", action="store_true", help="write bench/results/inspector-DATE.json"
    )
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, median of {repeats} repeats")
    load = [os.getloadavg()]
    rows = run(repeats, args.quick)
    if args.save:
        from record import save

        result = [
            {"network": name, "median_ms": medians, "refresh_over_compiled_tape": ratio,
             "refresh_over_eager_tape": eager, "largest_message_bytes": largest,
             "target": "refresh()+view <= 1.5x compiled tape", "met": ratio <= 1.5}
            for name, medians, ratio, eager, largest in rows
        ]  # fmt: skip
        save("inspector", "bench_inspector.py", sys.argv[1:], result, [*load, os.getloadavg()])


if __name__ == "__main__":
    main()
