"""Parse + build time of a 10-layer net (512 units a layer) beside Keras' own build time.

Run: python bench/bench_build.py [--repeats N]
Both are measured alternately in one process; the ratio of medians is printed.
Target (issue 3): the magic adds under 20% to Keras' own build time (ratio < 1.20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from maskmagic.build import build  # noqa: E402

LAYERS, UNITS, INPUTS = 10, 512, 512
CELL = "\n".join(
    [f"input x {INPUTS}"]
    + [f"dense h{i} {UNITS} activation=relu" for i in range(LAYERS)]
    + ["loss mse", "optimizer adam learning_rate=0.001"]
)


def keras_build() -> keras.Model:
    """What a user writes by hand: the same model with plain Dense layers, compiled."""
    x = keras.Input((INPUTS,), name="x")
    h = x
    for i in range(LAYERS):
        h = keras.layers.Dense(UNITS, activation="relu", name=f"h{i}")(h)
    model = keras.Model(x, h, name="net")
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    return model


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
    args = parser.parse_args()
    _time(keras_build), _time(maskmagic_build)  # warm up imports and kernels
    plain, magic = [], []
    for _ in range(args.repeats):
        plain.append(_time(keras_build))
        magic.append(_time(maskmagic_build))
    p, m = statistics.median(plain), statistics.median(magic)
    print(f"{'what':<40}{'median s':>10}")
    print(f"{'keras: Input + 10 Dense + compile':<40}{p:>10.4f}")
    print(f"{'maskmagic: parse + build (+ compile)':<40}{m:>10.4f}")
    print(f"ratio maskmagic / keras: {m / p:.3f}  (target < 1.20)")


if __name__ == "__main__":
    main()
