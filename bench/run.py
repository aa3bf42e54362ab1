"""maskmagic benchmark suite: train-step time and peak memory of masked layers vs plain Dense.

One command prints a table (and writes it to ``bench/results/``)::

    python bench/run.py            # 4096 and 8192 square layers, batch 128 (about 5-10 min)
    python bench/run.py --quick    # 4096 only, one group, 3 memory probes (under a minute)
    python bench/run.py --sweep    # sparse vs dense impl over sizes and densities (auto)

Every model is one layer on an ``Input(n)``, trained by the same ``tf.function`` step (MSE
loss, Adam). Each ratio is measured side by side in one worker process: the models of a
group take turns (one timed burst each per round, alternating), and the ratio reported is
the median over rounds of (model time / plain Dense time in the same round), so load from
other processes hits both sides alike. Peak memory is measured in a fresh process per model:
the growth of resident memory (RSS high-water mark, reset after TensorFlow is imported and
the batch is made) while the model is built and trained for 3 steps; on a GPU the peak of
``tf.config.experimental.get_memory_info``.

Layers compared: ``keras.layers.Dense``; ``MaskedDense(impl="dense")`` with a full mask;
the common baseline, a ``Dense`` subclass multiplying its kernel by a constant 0/1 mask
(``ConstantMaskDense``); ``MaskedDense(impl="auto")`` (sparse or dense as it chooses).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

TARGETS = {"masked-dense-full": 1.05, 0.01: 0.2, 0.001: 0.05}


# ----------------------------------------------------------------------------- worker side


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the RSS high-water mark to the current RSS
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_layer(kind: str, n: int, density: float):
    import keras
    import tensorflow as tf
    from scale import random_connections

    from maskmagic.layers import MaskedDense

    class ConstantMaskDense(keras.layers.Dense):
        """The common baseline: Dense with ``kernel * constant_mask``."""

        def __init__(self, units, mask, **kwargs):
            super().__init__(units, **kwargs)
            self._mask = mask

        def build(self, input_shape):
            super().build(input_shape)
            self.mask_constant = tf.constant(self._mask, dtype=self.compute_dtype)

        def call(self, inputs):
            return tf.matmul(inputs, self.kernel * self.mask_constant) + self.bias

    mask = None
    if density < 1:
        mask = random_connections(n, n, max(1, round(n * n * density)), seed=0)
    if kind == "dense":
        return keras.layers.Dense(n)
    if kind == "constant-mask":
        return ConstantMaskDense(n, mask.toarray() if mask is not None else None)
    impl = {"masked-dense": "dense", "masked-sparse": "sparse", "masked-auto": "auto"}[kind]
    return MaskedDense(n, mask=mask, impl=impl)


def _build(kind: str, n: int, density: float):
    import keras
    import tensorflow as tf

    inputs = keras.Input((n,))
    layer = _make_layer(kind, n, density)
    model = keras.Model(inputs, layer(inputs))
    optimizer = keras.optimizers.Adam(1e-3)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    impl = getattr(layer, "kernel_format", None) or "-"
    return step, impl


def _data(n: int, batch: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, n)).astype("float32"))
    y = tf.constant(rng.normal(size=(batch, n)).astype("float32"))
    return x, y


def time_group(spec: dict) -> dict:
    """Times the models of one group side by side; returns per-model medians and ratios."""
    n, batch, rounds = spec["n"], spec["batch"], spec["rounds"]
    x, y = _data(n, batch)
    models = {}
    for key, (kind, density) in spec["models"].items():
        step, impl = _build(kind, n, density)
        float(step(x, y))  # trace
        float(step(x, y))
        models[key] = (step, impl)
    # Burst size: about 0.3 s of the slowest model, at least one step.
    probe = {}
    for key, (step, _) in models.items():
        start = time.perf_counter()
        float(step(x, y))
        probe[key] = time.perf_counter() - start
    burst = {k: max(1, min(20, int(0.3 / max(t, 1e-4)))) for k, t in probe.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, (step, _) in models.items():
            start = time.perf_counter()
            for _ in range(burst[key]):
                loss = step(x, y)
            float(loss)
            times[key].append((time.perf_counter() - start) / burst[key])
    reference = spec["reference"]
    out = {}
    for key, (_, impl) in models.items():
        ratios = [t / r for t, r in zip(times[key], times[reference])]
        out[key] = {
            "ms": 1000 * statistics.median(times[key]),
            "ratio": statistics.median(ratios),
            "impl": impl,
        }
    return out


def memory_of(spec: dict) -> dict:
    """Peak memory growth (MiB) while building ``spec``'s model and training 3 steps."""
    import tensorflow as tf

    n, batch = spec["n"], spec["batch"]
    x, y = _data(n, batch)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
        base = tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
    else:
        base = _rss_mib()
        if not _reset_peak():
            base = _peak_mib()
    step, impl = _build(spec["kind"], n, spec["density"])
    for _ in range(3):
        float(step(x, y))
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak = _peak_mib()
    return {"mib": max(0.0, peak - base), "impl": impl, "device": "GPU" if gpu else "CPU"}


# ----------------------------------------------------------------------------- driver side


def _worker(task: str, spec: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", task, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {task} {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pct(density: float) -> str:
    return f"{density * 100:g}%"


def _groups(n: int, densities: list[float], quick: bool) -> list[dict]:
    """The side-by-side groups for one size: {key: (kind, density, label, target)}."""
    full = {
        "dense": ("dense", 1.0, "keras Dense", None),
        "masked": ("masked-dense", 1.0, "MaskedDense", TARGETS["masked-dense-full"]),
    }
    per_density = [
        {
            f"constant-{d}": ("constant-mask", d, "Dense * const mask", None),
            f"auto-{d}": ("masked-auto", d, "MaskedDense auto", TARGETS.get(d)),
        }
        for d in densities
    ]
    if quick:  # one group; the constant-mask baseline costs the same at every density
        merged = dict(full)
        merged.update(per_density[0])
        for group in per_density[1:]:
            merged.update({k: v for k, v in group.items() if k.startswith("auto")})
        return [merged]
    return [full] + [{"dense": full["dense"], **group} for group in per_density]


def suite(sizes: list[int], densities: list[float], batch: int, rounds: int, quick: bool):
    """Runs the timing groups and memory probes; returns table rows."""
    rows = []
    for n in sizes:
        for index, group in enumerate(_groups(n, densities, quick)):
            spec = {"n": n, "batch": batch, "rounds": rounds, "reference": "dense"}
            spec["models"] = {key: [kind, d] for key, (kind, d, _, _) in group.items()}
            timing = _worker("time", spec)
            for key, (kind, d, label, target) in group.items():
                if key == "dense" and index > 0:
                    continue  # the reference row is printed once per size
                mib = None
                if not quick or kind in ("dense", "masked-auto"):
                    probe = {"n": n, "batch": batch, "kind": kind, "density": d}
                    mib = _worker("memory", probe)["mib"]
                t = timing[key]
                rows.append((n, d, label, t["impl"], t["ms"], t["ratio"], target, mib))
                print(_format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| layer (n x n, batch) | density | model | impl | step ms | vs Dense | target | peak MiB |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _format_row(row) -> str:
    n, d, label, impl, ms, ratio, target, mib = row
    goal = "" if target is None else f"<= {target:g}x " + ("ok" if ratio <= target else "MISSED")
    memory = "" if mib is None else f"{mib:.0f}"
    return f"| {n} x {n} | {_pct(d)} | {label} | {impl} | {ms:.1f} | {ratio:.3f}x | {goal} | {memory} |"


def sweep(sizes: list[int], densities: list[float], batch: int, rounds: int) -> list[str]:
    """sparse/dense train-step time ratios of MaskedDense, to place impl='auto' thresholds."""
    lines = ["| n x n | " + " | ".join(_pct(d) for d in densities) + " |"]
    lines.append("|---" * (len(densities) + 1) + "|")
    print(lines[0], flush=True)
    for n in sizes:
        cells = []
        for d in densities:
            spec = {
                "n": n,
                "batch": batch,
                "rounds": rounds,
                "reference": "dense",
                "models": {"dense": ["masked-dense", d], "sparse": ["masked-sparse", d]},
            }
            cells.append(f"{_worker('time', spec)['sparse']['ratio']:.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset, under a minute")
    parser.add_argument("--sweep", action="store_true", help="sparse/dense ratios for auto")
    parser.add_argument("--sizes", type=int, nargs="*", help="layer sizes n (n x n)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, help="alternating rounds per group")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        task, spec = args.worker[0], json.loads(args.worker[1])
        print(json.dumps(time_group(spec) if task == "time" else memory_of(spec)))
        return
    started = time.perf_counter()
    if args.sweep:
        sizes = args.sizes or [128, 256, 512, 1024, 2048, 4096]
        densities = [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001]
        lines = sweep(sizes, densities, args.batch, args.rounds or 5)
        text = "sparse / dense MaskedDense train-step time\n\n" + "\n".join(lines)
        _save("sweep", text)
        return
    if args.quick:
        sizes, densities, rounds = args.sizes or [4096], [0.01, 0.001], args.rounds or 3
    else:
        sizes, densities, rounds = args.sizes or [4096, 8192], [0.1, 0.01, 0.001], args.rounds or 5
    print(HEADER, flush=True)
    rows = suite(sizes, densities, args.batch, rounds, quick=args.quick)
    elapsed = time.perf_counter() - started
    table = "\n".join([HEADER] + [_format_row(r) for r in rows])
    note = (
        f"\n\nbatch {args.batch}, Adam, {rounds} alternating rounds per group, "
        f"{os.cpu_count()} CPU cores, {elapsed:.0f} s in all; peak MiB: growth of the "
        "resident set while building and training 3 steps, in a fresh process per row."
    )
    print(note.strip())
    _save("quick" if args.quick else "cpu", table + note)


def _save(kind: str, text: str) -> None:
    folder = os.path.join(HERE, "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
