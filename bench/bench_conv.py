"""Benchmark of masked convolutions: the grouped fast path against the full convolution.

Run from the repository root:

    python bench/bench_conv.py [--groups 2 4 8 16] [--rounds 7] [--out bench/results/conv.json]

For each g it times one forward + backward step (gradients of the input and of every trainable
variable, as for a hidden layer in training) of a 3x3 convolution on 32x32x64 maps, batch 32,
64 filters, whose channel table is block-diagonal with g equal blocks. Variants, timed side by
side and interleaved round by round (the machine is shared and noisy), reported as medians of
per-round ratios to the plain full ``keras.layers.Conv2D``:

* ``masked``: ``MaskedConv2D(impl="dense")``, the masked full kernel;
* ``auto``: ``MaskedConv2D(impl="auto")`` on the block-diagonal table (grouped: split, g
  convolutions, concat);
* ``auto_permuted``: the same table with its rows and columns shuffled, so the blocks are found
  only after permuting channels (two extra channel permutations, as 0/1 matmuls);
* ``split``: the plain split for reference: ``tf.split`` + g plain convolutions + concat;
* ``keras_groups``: ``keras.layers.Conv2D(groups=g)``, only with --keras-groups.

Targets (issue 14): ``auto`` and ``auto_permuted`` never slower than ``masked``; ``auto`` <= 0.55
at g=2 and <= 0.35 at g=4. The JSON written to --out holds the machine, the date, the command
and every round.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskmagic.layers import MaskedConv2D  # noqa: E402

SIZE, CHANNELS, BATCH, KERNEL = 32, 64, 32, 3
TARGETS = {2: 0.55, 4: 0.35}


def blocks(groups: int) -> np.ndarray:
    """A (64, 64) block-diagonal channel table of ``groups`` equal blocks."""
    width = CHANNELS // groups
    return np.kron(np.eye(groups, dtype=bool), np.ones((width, width), dtype=bool))


def permuted_blocks(groups: int, seed: int = 0) -> np.ndarray:
    """:func:`blocks` with rows and columns shuffled."""
    rng = np.random.default_rng(seed)
    return blocks(groups)[rng.permutation(CHANNELS)][:, rng.permutation(CHANNELS)]


class SplitConv(keras.layers.Layer):
    """The plain split: g convolutions on contiguous channel slices, concatenated."""

    def __init__(self, groups: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.groups = groups
        self.convs = [
            keras.layers.Conv2D(CHANNELS // groups, KERNEL, padding="same") for _ in range(groups)
        ]

    def call(self, x):
        parts = tf.split(x, self.groups, axis=-1)
        return tf.concat([conv(p) for conv, p in zip(self.convs, parts)], axis=-1)


def step_fn(layer) -> tf.types.experimental.GenericFunction:
    """One compiled forward + backward step of ``layer``."""

    @tf.function(jit_compile=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x, *layer.trainable_variables])

    return step


def variants(groups: int, keras_groups: bool) -> dict:
    table, shuffled = blocks(groups), permuted_blocks(groups)
    found = {
        "full": keras.layers.Conv2D(CHANNELS, KERNEL, padding="same"),
        "masked": MaskedConv2D(CHANNELS, KERNEL, padding="same", mask=table, impl="dense"),
        "auto": MaskedConv2D(CHANNELS, KERNEL, padding="same", mask=table, impl="auto"),
        "auto_permuted": MaskedConv2D(CHANNELS, KERNEL, padding="same", mask=shuffled),
        "split": SplitConv(groups),
    }
    if keras_groups:
        found["keras_groups"] = keras.layers.Conv2D(CHANNELS, KERNEL, padding="same", groups=groups)
    return found


def measure(groups: int, rounds: int, repeats: int, keras_groups: bool) -> dict:
    x = tf.constant(np.random.default_rng(1).normal(size=(BATCH, SIZE, SIZE, CHANNELS)), tf.float32)
    layers = variants(groups, keras_groups)
    steps = {}
    for name, layer in layers.items():
        layer(x)
        steps[name] = step_fn(layer)
        for _ in range(2):  # trace and warm up
            [g.numpy() for g in steps[name](x)]
    for name in ("auto", "auto_permuted"):
        assert layers[name].kernel_format == "grouped", f"{name} did not choose the grouped path"
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # interleaved both ways
        for name in order:
            start = time.perf_counter()
            for _ in range(repeats):
                out = steps[name](x)
            _ = out[0].numpy()
            times[name].append((time.perf_counter() - start) / repeats)
    ratios = {
        name: statistics.median(t / f for t, f in zip(times[name], times["full"], strict=True))
        for name in steps
    }
    over_masked = {
        name: statistics.median(a / m for a, m in zip(times[name], times["masked"], strict=True))
        for name in ("auto", "auto_permuted")
    }
    return {
        "groups": groups,
        "blocks_found": len(layers["auto"].blocks),
        "median_ms": {name: 1000 * statistics.median(t) for name, t in times.items()},
        "ratio_to_full": ratios,
        "over_masked": over_masked,
        "target_auto_ratio": TARGETS.get(groups),
        "rounds_ms": {name: [1000 * v for v in t] for name, t in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keras-groups", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "conv.json"))
    args = parser.parse_args()
    results = []
    for groups in args.groups:
        row = measure(groups, args.rounds, args.repeats, args.keras_groups)
        results.append(row)
        ratios = "  ".join(f"{k}={v:.2f}" for k, v in row["ratio_to_full"].items())
        target = row["target_auto_ratio"]
        verdict = ""
        if target is not None:
            met = "met" if row["ratio_to_full"]["auto"] <= target else "MISSED"
            verdict = f"  target auto<={target:.2f}: {met}"
        slower = [k for k, v in row["over_masked"].items() if v > 1.0]
        verdict += "  never slower than masked: " + (
            "MISSED " + ",".join(slower) if slower else "met"
        )
        over = "  ".join(f"{k}/masked={v:.2f}" for k, v in row["over_masked"].items())
        print(
            f"g={groups:2d}  full={row['median_ms']['full']:.1f} ms  {ratios}  {over}{verdict}",
            flush=True,
        )
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    report = {
        "benchmark": "bench/bench_conv.py",
        "command": "python " + " ".join(["bench/bench_conv.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "devices": devices,
            "gpu": bool(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        },
        "shape": {
            "maps": [SIZE, SIZE, CHANNELS],
            "kernel": KERNEL,
            "batch": BATCH,
            "filters": CHANNELS,
        },  # fmt: skip
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
