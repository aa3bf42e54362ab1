"""Scale check: a 200,000 x 20,000 sparse layer with 2,000,000 connections.

Builds the layer (a dense kernel would be 16 GB), runs one Adam train step on a batch of 64
through a :class:`maskmagic.training.TrainOp`, saves the model as ``.keras``, loads it back
(``keras.models.load_model``, safe mode) and checks that masks, weights and outputs are
identical. Prints the time of each phase and the peak resident memory of the process
(``resource.getrusage``), and with ``--json`` one JSON line for tests.

Usage::

    python bench/scale.py [--inputs 200000] [--units 20000] [--nnz 2000000] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


STEPS = 9  # timed steps after the first (a median of 9 steadies a 2-core machine's noise)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_connections(n_in: int, units: int, nnz: int, seed: int = 0):
    """A ``csr_array`` mask with exactly ``nnz`` distinct random connections."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    cells = n_in * units
    if nnz > cells // 20:  # dense enough to sample the cells directly
        flat = np.sort(rng.choice(cells, size=nnz, replace=False))
    else:  # oversample, drop repeats, then keep nnz of the distinct cells
        flat = np.unique(rng.integers(0, cells, size=int(nnz * 1.1) + 16, dtype=np.int64))
        flat = np.sort(rng.choice(flat, size=nnz, replace=False))
    rows, cols = flat // units, flat % units
    return sp.csr_array((np.ones(nnz, bool), (rows, cols)), shape=(n_in, units))


def run(n_in: int, units: int, nnz: int, batch: int) -> dict:
    """Builds, trains one step, saves and loads; returns timings (s) and peak RSS (MiB)."""
    started = time.perf_counter()
    import keras

    from maskmagic.layers import MaskedDense
    from maskmagic.training import TrainOp

    result = {"inputs": n_in, "units": units, "nnz": nnz, "batch": batch}
    result["rss_after_import_mib"] = peak_rss_mib()
    t = time.perf_counter()
    mask = random_connections(n_in, units, nnz)
    x_in = keras.Input((n_in,), name="x")
    layer = MaskedDense(units, mask=mask, impl="sparse", name="genes")
    model = keras.Model(x_in, layer(x_in))
    del mask
    result["build_s"] = time.perf_counter() - t
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, n_in)).astype("float32")
    y = rng.normal(size=(batch, units)).astype("float32")
    t = time.perf_counter()
    op = TrainOp(model, loss="mse", optimizer="adam")
    before = keras.ops.convert_to_numpy(layer.kernel).copy()
    loss = op(x, y)
    result["first_step_s"] = time.perf_counter() - t  # includes tracing
    steps = []
    for _ in range(STEPS):
        t = time.perf_counter()
        op(x, y)
        steps.append(time.perf_counter() - t)
    result["step_s"] = float(np.median(steps))  # median of STEPS steps after tracing
    result["steps"] = STEPS
    result["step_times_s"] = steps
    copies = []  # part of each step: TensorFlow copies the numpy batch into a tensor
    for _ in range(5):
        t = time.perf_counter()
        keras.ops.convert_to_tensor(x)
        copies.append(time.perf_counter() - t)
    result["batch_to_tensor_s"] = float(np.median(copies))
    moved = int(np.count_nonzero(keras.ops.convert_to_numpy(layer.kernel) != before))
    result["loss"] = loss
    result["moved"] = moved
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "scale.keras")
        t = time.perf_counter()
        model.save(path)
        result["save_s"] = time.perf_counter() - t
        result["file_mib"] = os.path.getsize(path) / 2**20
        t = time.perf_counter()
        loaded = keras.models.load_model(path)
        result["load_s"] = time.perf_counter() - t
    twin = loaded.get_layer("genes")
    probe = x[:8]
    result["identical"] = bool(
        twin.is_sparse
        and (twin.get_mask() != layer.get_mask()).nnz == 0
        and np.array_equal(twin.kernel.numpy(), layer.kernel.numpy())
        and np.array_equal(twin.bias.numpy(), layer.bias.numpy())
        and np.array_equal(loaded(probe).numpy(), model(probe).numpy())
    )
    result["total_s"] = time.perf_counter() - started
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def _save(result: dict, load: list, argv: list) -> None:
    """Writes the result with machine, date, command and load (for bench/report.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from record import save

    targets = [
        {"target": "step <= 0.1 s", "value": result["step_s"], "met": result["step_s"] <= 0.1},
        {"target": "peak RSS < 1.2 GiB", "value": result["peak_rss_mib"] / 1024,
         "met": result["peak_rss_mib"] < 1.2 * 1024},
    ]  # fmt: skip
    save("scale", "scale.py", argv, result, load, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=200_000)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--save", action="store_true", help="write bench/results/scale-DATE.json")
    args = parser.parse_args()
    load = [os.getloadavg()]
    result = run(args.inputs, args.units, args.nnz, args.batch)
    load.append(os.getloadavg())
    if args.save:
        _save(result, load, sys.argv[1:])
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:22s} {shown}")


if __name__ == "__main__":
    main()
