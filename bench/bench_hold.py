"""The cost of a ``hold=`` train step next to a plain train step of the same net.

For each case, two TrainOps on copies of one net (same weights, optimizer, batch) are timed side
by side in one process, interleaved (a busy machine slows both alike), and the medians compared:

* ``plain``: ``TrainOp(model, "mse", "sgd")``, every parameter trained;
* ``hold``: the same op with ``hold=UNITS hold_on=REFERENCE`` (gradient projected, update
  projected by the first of the chord Gauss-Newton corrections to ``hold_tol=1e-6``; the
  Gram's factor kept across steps as a conjugate-gradient preconditioner).

Targets (issue 15): 784-256-10 holding 10 outputs on 64 reference inputs (640 constraints)
<= 4x; a 4096 x 4096 layer with 256 constraints <= 3x. The 20%-mask case takes the exact
masked-Gram path and has no target (shown for honesty).

Usage::

    python bench/bench_hold.py               # prints a table, writes bench/results/hold.json
    python bench/bench_hold.py --quick       # fewer repeats
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
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

# (label, layer sizes, mask density, batch, held units, reference inputs, target ratio)
CASES = [
    ("784-256-10, hold out (10) on 64 inputs", [784, 256, 10], 1.0, 64, "out", 64, 4.0),
    ("4096-4096, hold out[0:4] on 64 inputs", [4096, 4096], 1.0, 64, "out[0:4]", 64, 3.0),
    ("784-256-10 20% masks, hold out on 64", [784, 256, 10], 0.2, 64, "out", 64, None),
]


def _net(sizes: list[int], density: float) -> keras.Model:
    rng = np.random.default_rng(0)
    x = inputs = keras.Input((sizes[0],))
    for k, (n_in, units) in enumerate(zip(sizes[:-1], sizes[1:])):
        mask = rng.random((n_in, units)) < density if density < 1 else None
        last = k == len(sizes) - 2
        name = "out" if last else f"hidden{k}"
        x = MaskedDense(units, mask=mask, activation=None if last else "tanh", name=name)(x)
    return keras.Model(inputs, x)


def _copy(model: keras.Model, sizes, density) -> keras.Model:
    other = _net(sizes, density)
    other.set_weights(model.get_weights())
    return other


def _time(op, x, y) -> float:
    start = time.perf_counter()
    op(x, y)
    return time.perf_counter() - start


def run_case(label, sizes, density, batch, hold, references, target, repeats):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, sizes[0])).astype("float32")
    y = rng.normal(size=(batch, sizes[-1])).astype("float32") * 0.1
    x_ref = rng.normal(size=(references, sizes[0])).astype("float32")
    base = _net(sizes, density)
    plain = TrainOp(_copy(base, sizes, density), "mse", keras.optimizers.SGD(1e-3), name="plain")
    held_model = _copy(base, sizes, density)
    held = TrainOp(
        held_model, "mse", keras.optimizers.SGD(1e-3), hold=hold, hold_on=x_ref, name="hold"
    )
    for _ in range(3):  # trace and warm up
        plain(x, y)
        held(x, y)
    times = {"plain": [], "hold": []}
    for _ in range(repeats):
        times["plain"].append(_time(plain, x, y))
        times["hold"].append(_time(held, x, y))
    plain_s, hold_s = statistics.median(times["plain"]), statistics.median(times["hold"])
    report = held.hold_report
    return {
        "case": label,
        "constraints": report.constraints,
        "rank": report.rank,
        "parameters": report.parameters,
        "plain_ms": round(plain_s * 1e3, 2),
        "hold_ms": round(hold_s * 1e3, 2),
        "ratio": round(hold_s / plain_s, 2),
        "target": target,
        "relative_drift": report.relative_drift,
        "corrections": report.corrections,
        "factorizations": held.hold.factorizations,
        "steps": report.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--cases", type=int, nargs="*", help="indices of CASES to run")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "hold.json")
    )
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    chosen = CASES if args.cases is None else [CASES[i] for i in args.cases]
    load_before = os.getloadavg()
    rows = [run_case(*case, repeats=repeats) for case in chosen]
    load_after = os.getloadavg()
    head = f"{'case':42s} {'M':>4s} {'rank':>5s} {'plain ms':>9s} {'hold ms':>9s} {'ratio':>6s} {'target':>6s}"
    print(head)
    for r in rows:
        target = "-" if r["target"] is None else f"<={r['target']:g}"
        print(
            f"{r['case']:42s} {r['constraints']:4d} {r['rank']:5d} {r['plain_ms']:9.2f} "
            f"{r['hold_ms']:9.2f} {r['ratio']:6.2f} {target:>6s}"
        )
    result = {
        "command": "python bench/bench_hold.py" + (" --quick" if args.quick else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "tensorflow": tf.__version__,
        "repeats": repeats,
        # 1-minute load average before and after the run (the cores may be shared)
        "loadavg": [round(load_before[0], 2), round(load_after[0], 2)],
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
