"""maskmagic benchmarks of the user path: TrainOp steps and model.fit, masked vs plain Dense.

Each *group* is one layer size, batch, optimizer, op kind and mask density; the models of a
group are built in one fresh worker process and timed side by side: every round times one
burst of each model in turn (interleaved, every other round in reverse order), and each ratio
is the median over rounds of (model time / reference time in the same round), so load from
other processes hits both sides alike; ``bench/report.py`` shows the quartiles of the
per-round ratios next to each verdict. With ``--processes N`` each group runs in N fresh
processes, every other one building and timing the models in reverse order, and the rounds are
pooled: a process can keep a faster or slower speed for one model for its whole life, which
rounds inside it do not cancel. The load average is recorded before and after each group.

Op kinds (what a ``%%masked_net`` cell makes, on a one-layer net ``out``):

* ``all``: ``TrainOp(model)`` (train everything);
* ``unit``: ``TrainOp(model, select="out[1]")``;
* ``freeze``: ``TrainOp(model, freeze="out[0]")``;
* ``fit``: ``model.compile(optimizer, "mse"); model.fit(...)`` over 16 batches per call.

Models: ``dense`` (``keras.layers.Dense``, the reference), ``constant-mask`` (the hand-written
``Dense`` with ``kernel * constant_mask``), ``masked-dense`` / ``masked-sparse`` /
``masked-auto`` (``MaskedDense(impl=...)``), ``beyondml`` (BeyondML's ``MaskedDense``) and
``gennet`` (GenNet's ``LocallyDirected1D``), the last two only when ``bench/.deps`` holds them
(``python bench/deps.py`` installs them there with ``--no-deps``) and only for ``all``. With
``--where``, also ``masked-dense-where``: ``MaskedDense(impl="dense")`` traced with TensorFlow's
``tf.where`` instead of the native mask select (see ``maskmagic/layers/mask_select.py``), side by
side with the native one.

Usage::

    python bench/run.py --quick                      # 1024 and 4096, a few rows (~3 min)
    python bench/run.py                              # the full grid (hours on 2 cores)
    python bench/run.py --sizes 4096 --densities 1 0.01 --ops all --optimizers adam
    python bench/run.py --tiny                       # the 3-4-2 net: op(x, y) vs tf.function

Results go to ``bench/results/run-<date>.json``; ``python bench/report.py`` writes the README
tables from every result file. On a GPU the worker places the models on ``GPU:0`` and lets
TensorFlow grow its memory (``set_memory_growth``), so several models fit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEPS = os.path.join(HERE, ".deps")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

SIZES = [1024, 4096, 8192]
DENSITIES = [1.0, 0.9, 0.5, 0.1, 0.01, 0.001]
BATCHES = [128, 32]
OPTIMIZERS = ["sgd", "adam"]
OPS = ["all", "unit", "freeze", "fit"]
# Batches per model.fit call (one epoch): its fixed cost (data adapter, callbacks) spreads over
# 16 steps, as in a real epoch; with 4, one call per round made the fit rows swing by 0.3x.
FIT_BATCHES = 16


# ----------------------------------------------------------------------------- targets


def targets(op: str, model: str, density: float) -> list[tuple[str, str, float]]:
    """The issue-16 targets of one row: (name, reference, limit) on a ratio to ``reference``.

    ``reference`` is a model of the same group, or ``"best"``: the faster of masked-dense and
    masked-sparse in that round.
    """
    found = []
    if model == "masked-dense":
        if op in ("all", "fit"):
            if op == "all" or density == 1.0:
                found.append(("<= 1.05x Dense", "dense", 1.05))
            if op == "all" and density < 1.0:
                found.append(("<= hand-written mask", "constant-mask", 1.0))
        else:
            found.append(("<= 1.10x Dense", "dense", 1.10))
    if model == "masked-auto" and op == "all":
        limit = {0.01: 0.08, 0.001: 0.03}.get(density)
        if limit is not None:
            found.append((f"<= {limit:g}x Dense", "dense", limit))
        found.append(("<= 1.10x best impl", "best", 1.10))
    return found


# ----------------------------------------------------------------------------- worker side


def _load(name: str, path: str):
    """A module of a benchmark-only package, by file (BeyondML's __init__ imports torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_layer(kind: str, n: int, density: float):
    import keras
    import numpy as np
    import tensorflow as tf
    from scale import random_connections

    from maskmagic.layers import MaskedDense

    mask = random_connections(n, n, max(1, round(n * n * density)), seed=0) if density < 1 else None

    class ConstantMaskDense(keras.layers.Dense):
        """The hand-written baseline: a Dense whose kernel is multiplied by a constant mask."""

        def __init__(self, units, mask, **kwargs):
            super().__init__(units, **kwargs)
            self._mask = mask

        def build(self, input_shape):
            super().build(input_shape)
            self.mask_constant = tf.constant(self._mask, dtype=self.compute_dtype)

        def call(self, inputs):
            return tf.matmul(inputs, self.kernel * self.mask_constant) + self.bias

    if kind == "dense":
        return keras.layers.Dense(n, name="out")
    if kind == "constant-mask":
        full = mask.toarray() if mask is not None else np.ones((n, n), bool)
        return ConstantMaskDense(n, full, name="out")
    if kind == "beyondml":
        module = _load(
            "bml_masked_dense", os.path.join(DEPS, "beyondml/tflow/layers/MaskedDense.py")
        )
        layer = module.MaskedDense(n, kernel_initializer="glorot_uniform", name="out")
        layer.build((None, n))
        if mask is not None:
            layer.w_mask.assign(mask.toarray().astype("float32"))
        return layer
    if kind == "gennet":
        module = _load("gennet_ld", os.path.join(DEPS, "gennet/utils/LocallyDirected1D.py"))
        import scipy.sparse as sp

        coo = sp.coo_matrix(mask if mask is not None else np.ones((n, n), bool))
        return module.LocallyDirected1D(mask=coo, filters=1, name="out")
    impl = {"masked-dense": "dense", "masked-dense-where": "dense", "masked-sparse": "sparse",
            "masked-auto": "auto"}[kind]  # fmt: skip
    return MaskedDense(n, mask=mask, impl=impl, name="out")


def _optimizer(name: str):
    import keras

    return keras.optimizers.SGD(0.01) if name == "sgd" else keras.optimizers.Adam(1e-3)


def _build(kind: str, spec: dict, x, y):
    """A callable running one call of ``spec["op"]`` on a fresh model, the impl used, and the
    steps per call."""
    import keras

    n = spec["n"]
    layer = _make_layer(kind, n, spec["density"])
    if kind == "gennet":
        inputs = keras.Input((n, 1))
        model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
        x = keras.ops.expand_dims(x, -1)
    else:
        inputs = keras.Input((n,))
        model = keras.Model(inputs, layer(inputs))
    impl = getattr(layer, "kernel_format", None) or "-"
    run, steps = _op_call(spec, model, x, y)
    if kind == "masked-dense-where":
        run = _traced_on_tf_where(run)
    return run, impl, steps


def _op_call(spec: dict, model, x, y):
    """(a callable running one call of ``spec["op"]`` on ``model``, steps per call)."""
    from maskmagic.training import TrainOp

    op = spec["op"]
    if op == "fit":
        import tensorflow as tf

        model.compile(optimizer=_optimizer(spec["optimizer"]), loss="mse")
        xs, ys = tf.tile(x, [FIT_BATCHES, 1]), tf.tile(y, [FIT_BATCHES, 1])

        def run():
            model.fit(xs, ys, batch_size=spec["batch"], epochs=1, verbose=0, shuffle=False)

        return run, FIT_BATCHES
    select = {"unit": "out[1]"}.get(op)
    freeze = {"freeze": "out[0]"}.get(op)
    train = TrainOp(model, loss="mse", optimizer=_optimizer(spec["optimizer"]), select=select,
                    freeze=freeze)  # fmt: skip
    return (lambda: train(x, y)), 1


def _traced_on_tf_where(run):
    """``run`` whose first call (the trace) turns the native ops away: ``tf.where`` selects."""
    from maskmagic.layers import native

    traced = []

    def run_on_tf_where():
        if traced:
            return run()
        with native.stock_only():
            result = run()
        traced.append(True)
        return result

    return run_on_tf_where


def _device():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return ("/GPU:0" if gpus else "/CPU:0"), [g.name for g in gpus]


def time_group(spec: dict) -> dict:
    """Times the models of one group side by side; returns per-round times (s per step)."""
    import numpy as np
    import tensorflow as tf

    device, gpus = _device()
    load_before = os.getloadavg()
    with tf.device(device):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(spec["batch"], spec["n"])).astype("float32"))
        y = tf.constant(rng.normal(size=(spec["batch"], spec["n"])).astype("float32"))
        runs = {}
        for kind in spec["models"]:
            run, impl, steps = _build(kind, spec, x, y)
            run()  # trace
            run()
            runs[kind] = (run, impl, steps)
        burst = {}
        for kind, (run, _, _) in runs.items():
            start = time.perf_counter()
            run()
            burst[kind] = max(
                1, min(20, int(spec["burst_s"] / max(time.perf_counter() - start, 1e-4)))
            )
        times: dict[str, list[float]] = {k: [] for k in runs}
        kinds = list(runs)
        for round_ in range(spec["rounds"]):
            # every other round in reverse order: a model's place in the round (after a
            # model that heats the caches, or early in a burst of load) cancels out
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                run, _, steps = runs[kind]
                start = time.perf_counter()
                for _ in range(burst[kind]):
                    run()
                times[kind].append((time.perf_counter() - start) / burst[kind] / steps)
    return {
        "times": times,
        "impl": {k: impl for k, (_, impl, _) in runs.items()},
        "load": [load_before, os.getloadavg()],
        "device": device,
        "gpus": gpus,
    }


# ----------------------------------------------------------------------------- driver side


def _worker(spec: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _workers(spec: dict, processes: int) -> dict:
    """One group timed in ``processes`` fresh worker processes, each building and timing the
    models in the opposite order of the one before; the rounds of all processes are pooled.

    A process keeps a speed it drew for a model for its whole life (the same computation has
    measured 0.73x and 1.40x of itself in two processes), which no number of rounds inside
    one process cancels.
    """
    results = []
    for index in range(processes):
        models = spec["models"] if index % 2 == 0 else spec["models"][::-1]
        results.append(_worker({**spec, "models": models}))
    first = results[0]
    return {
        **first,
        "times": {k: [t for r in results for t in r["times"][k]] for k in spec["models"]},
        "load": [first["load"][0], results[-1]["load"][-1]],
        "processes": processes,
    }


def machine() -> dict:
    """CPU model, core count, platform (recorded with every result file)."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform()}


def models_of(op: str, density: float, extras: bool, where: bool = False) -> list[str]:
    """The models timed side by side in one group (the reference first)."""
    # freeze= walks only layers on the reachability allow-list: the hand-written subclass
    # (its own call) mixes every unit, so freeze=out[0] would leave it nothing to train.
    models = (
        ["dense", "masked-dense"] if op == "freeze" else ["dense", "constant-mask", "masked-dense"]
    )
    if where and density < 1.0:
        models.append("masked-dense-where")
    if op == "all" and density <= 0.5:
        models.append("masked-sparse")
    if density < 1.0:
        models.append("masked-auto")
    if extras and op == "all" and os.path.isdir(DEPS):
        models.append("beyondml")
        if density <= 0.1:
            models.append("gennet")
    return models


def summarize(spec: dict, result: dict) -> list[dict]:
    """Rows with medians, ratios and target verdicts from one group's per-round times."""
    times = result["times"]

    def ratio(model: str, reference: str) -> float | None:
        if reference == "best":
            if "masked-sparse" not in times:
                return None
            best = [min(a, b) for a, b in zip(times["masked-dense"], times["masked-sparse"])]
            # auto runs the code of the impl it chose: judge that impl's dedicated timing
            # (auto's own duplicate would only measure noise)
            chosen = times.get("masked-" + result["impl"][model], times[model])
            return statistics.median(t / b for t, b in zip(chosen, best))
        if reference not in times:
            return None
        return statistics.median(t / r for t, r in zip(times[model], times[reference]))

    rows = []
    for model in times:
        row = {
            "n": spec["n"],
            "batch": spec["batch"],
            "optimizer": spec["optimizer"],
            "op": spec["op"],
            "density": spec["density"],
            "model": model,
            "impl": result["impl"][model],
            "ms": 1000 * statistics.median(times[model]),
            "vs_dense": ratio(model, "dense"),
            "targets": [],
        }
        for name, reference, limit in targets(spec["op"], model, spec["density"]):
            value = ratio(model, reference)
            if value is not None:
                row["targets"].append(
                    {
                        "target": name,
                        "reference": reference,
                        "limit": limit,
                        "ratio": value,
                        "met": value <= limit,
                    }  # fmt: skip
                )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (~3 min)")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--densities", type=float, nargs="*")
    parser.add_argument("--batches", type=int, nargs="*")
    parser.add_argument("--optimizers", nargs="*", choices=OPTIMIZERS)
    parser.add_argument("--ops", nargs="*", choices=OPS)
    parser.add_argument("--rounds", type=int, help="interleaved rounds per group and process")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="fresh processes per group, in alternating build order (rounds are pooled)",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip BeyondML and GenNet")
    parser.add_argument(
        "--where", action="store_true", help="also time masked-dense on tf.where (no native select)"
    )
    parser.add_argument("--tiny", action="store_true", help="the 3-4-2 net (see bench/tiny.py)")
    parser.add_argument("--out", help="result file (default bench/results/run-DATE.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(time_group(json.loads(args.worker))))
        return
    if args.tiny:
        import tiny

        tiny.main()
        return
    quick = args.quick
    sizes = args.sizes or ([1024, 4096] if quick else SIZES)
    densities = args.densities or ([1.0, 0.5, 0.01, 0.001] if quick else DENSITIES)
    batches = args.batches or ([128] if quick else BATCHES)
    optimizers = args.optimizers or (["adam"] if quick else OPTIMIZERS)
    ops = args.ops or (["all", "freeze"] if quick else OPS)
    rounds = args.rounds or (3 if quick else 5)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = args.out or os.path.join(HERE, "results", f"run-{stamp.replace(':', '')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"kind": "run", "machine": machine(), "date": stamp, "command": command,
              "rounds": rounds, "processes": args.processes, "groups": []}  # fmt: skip
    for n in sizes:
        for batch in batches:
            for optimizer in optimizers:
                for op in ops:
                    for density in densities:
                        spec = {"n": n, "batch": batch, "optimizer": optimizer, "op": op,
                                "density": density, "rounds": rounds, "burst_s": 0.25,
                                "models": models_of(op, density, not args.no_extras,
                                                    args.where)}  # fmt: skip
                        started = time.perf_counter()
                        try:
                            result = _workers(spec, args.processes)
                        except RuntimeError as error:
                            print(f"FAILED {spec}: {str(error)[-400:]}", flush=True)
                            record["groups"].append({"spec": spec, "error": str(error)[-2000:]})
                            continue
                        rows = summarize(spec, result)
                        record["groups"].append(
                            {
                                "spec": spec,
                                "load": result["load"],
                                "device": result["device"],
                                "gpus": result["gpus"],
                                "seconds": time.perf_counter() - started,
                                "times": result["times"],
                                "rows": rows,
                            }  # fmt: skip
                        )
                        for row in rows:
                            print(format_row(row), flush=True)
                        with open(path, "w") as f:  # after every group: a partial run counts
                            json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


def format_row(row: dict) -> str:
    verdicts = ", ".join(
        f"{t['target']}: {t['ratio']:.3f}x {'met' if t['met'] else 'MISSED'}"
        for t in row["targets"]
    )
    return (
        f"{row['n']}² b{row['batch']} {row['optimizer']:4s} {row['op']:6s} "
        f"{row['density'] * 100:g}% {row['model']:13s} {row['impl']:6s} {row['ms']:8.2f} ms "
        f"{row['vs_dense']:.3f}x  {verdicts}"
    )


if __name__ == "__main__":
    main()
