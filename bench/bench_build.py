"""Parse + build time of a 10-layer net (512 units a layer) beside Keras' own build time.

Run: python bench/bench_build.py [--repeats N] [--save]  (--save: bench/results/build-DATE.json)
All builds are measured alternately in one process; ratios of medians are printed.
Target (issue 3): the magic adds under 20% to the time Keras takes to build the same model
from Python (MaskedDense layers, compiled): ratio < 1.20. For information it also shows a plain
keras.layers.Dense model: the difference is the cost of the mask variables themselves, which
every masked layer needs so that set_mask never re-traces a compiled step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from maskmagic.builder import build  # noqa: E402
from maskmagic.layers import MaskedDense  # noqa: E402

LAYERS, UNITS, INPUTS = 10, 512, 512
CELL = "\n".join(
    [f"input x {INPUTS}"]
    + [f"dense h{i} {UNITS} activation=relu" for i in range(LAYERS)]
    + ["loss mse", "optimizer adam learning_rate=0.001"]
)


def _keras_build(layer_class) -> keras.Model:
    x = keras.Input((INPUTS,), name="x")
    h = x
    for i in range(LAYERS):
        h = layer_class(UNITS, activation="relu", name=f"h{i}")(h)
    model = keras.Model(x, h, name="net")
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    return model


def keras_build() -> keras.Model:
    """The same model written by hand in Keras: MaskedDense layers, compiled."""
    return _keras_build(MaskedDense)


def plain_build() -> keras.Model:
    """For information: plain keras.layers.Dense layers (no masks at all)."""
    return _keras_build(keras.layers.Dense)


def maskmagic_build() -> keras.Model:
    return build(CELL, {}, name="net")[0]


def _time(fn) -> float:
    keras.backend.clear_session()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--save", action="store_true", help="write bench/results/build-DATE.json")
    args = parser.parse_args()
    load = [os.getloadavg()]
    runs = {"keras": keras_build, "magic": maskmagic_build, "plain": plain_build}
    times: dict[str, list[float]] = {key: [] for key in runs}
    for fn in runs.values():
        _time(fn)  # warm up imports and kernels
    for _ in range(args.repeats):
        for key, fn in runs.items():
            times[key].append(_time(fn))
    k, m, p = (statistics.median(times[key]) for key in ("keras", "magic", "plain"))
    print(f"{'what':<52}{'median s':>10}")
    print(f"{'keras by hand: Input + 10 MaskedDense + compile':<52}{k:>10.4f}")
    print(f"{'maskmagic: parse + build the same cell (+ compile)':<52}{m:>10.4f}")
    print(f"{'for information: Input + 10 plain Dense + compile':<52}{p:>10.4f}")
    print(f"ratio magic / keras by hand:  {m / k:.3f}  (target < 1.20)")
    print(f"ratio masked / plain Dense:   {k / p:.3f}  (the cost of the mask variables)")
    if args.save:
        from record import save

        result = {"median_s": {"keras_masked": k, "magic": m, "keras_plain": p},
                  "magic_over_keras": m / k, "masked_over_plain": k / p,
                  "targets": [{"target": "magic / keras by hand < 1.20", "value": m / k,
                               "met": m / k < 1.2}]}  # fmt: skip
        save("build", "bench_build.py", sys.argv[1:], result, [*load, os.getloadavg()])


if __name__ == "__main__":
    main()
