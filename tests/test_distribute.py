"""TrainOp and MaskedDense under tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

TensorFlow fixes its devices when it first uses them, so each strategy runs in a subprocess:
MirroredStrategy over two logical CPU devices (one process), MultiWorkerMirroredStrategy over two
worker processes on 127.0.0.1 (TF_CONFIG with free ports). Each subprocess runs every check once
and prints one JSON line; the tests below assert on it. The guarantees: gradients of masked
connections are exactly zero on every replica, frozen entries (``freeze=out[0]``) and masked-out
weights stay bit-identical on every replica's copy, and the losses and weights after N steps equal
the single-device run on the same data (within float tolerance: the all-reduce sums the
gradients in another order).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds per subprocess; the runs take ~10 s on two shared cores
TOLERANCE = 1e-5

pytestmark = pytest.mark.slow

CELL = """\
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,1],[0,1,1,0],[1,1,0,1]]
dense out 2
loss mse
optimizer sgd learning_rate=0.1 momentum=0.9
train keep_first freeze=out[0]
train train_all
"""


# ----------------------------------------------------------------------------- subprocess side
# Nothing below imports TensorFlow at module level: the subprocesses configure devices first.


def _data(count: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 3)).astype("float32")
    y = np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5 + 0.3], axis=1).astype("float32")
    return x, y


def _make_model(name: str = "net"):
    import keras

    from maskmagic.layers import MaskedDense

    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    h = MaskedDense(
        4,
        mask=[[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]],
        activation="sigmoid",
        name="hidden",
    )(x)
    out = MaskedDense(2, kernel_regularizer="l2", name="out")(h)
    return keras.Model(x, out, name=name)


def _optimizer(kind: str):
    import keras

    if kind == "adam":
        return keras.optimizers.Adam(0.05)
    return keras.optimizers.SGD(0.1, momentum=0.9)


def _copies(variable) -> list:
    """Every replica's copy of a Keras variable (one array for a plain variable)."""
    value = variable.value
    parts = getattr(value, "values", None) or (value,)
    return [p.numpy().copy() for p in parts]


def _gap(a, b) -> float:
    """Largest difference between two variables (masks are bool)."""
    import numpy as np

    return float(np.max(np.abs(a.numpy().astype("float64") - b.numpy().astype("float64"))))


def _predict(model, x):
    """Outputs computed eagerly in cross-replica context (each variable's primary copy)."""
    return model(x, training=False).numpy()


def _training_run(strategy, kind: str, count: int, steps: int = 6) -> dict:
    """Single-device and distributed runs of the same op on the same data, compared."""
    import numpy as np

    from maskmagic.training import TrainOp

    x, y = _data(count)
    single = _make_model()
    op_single = TrainOp(single, optimizer=_optimizer(kind), freeze="out[0]")
    with strategy.scope():
        model = _make_model()
        op = TrainOp(model, optimizer=_optimizer(kind), freeze="out[0]")
    out, hidden = model.get_layer("out"), model.get_layer("hidden")
    frozen_before = [c[:, 0] for c in _copies(out.kernel)] + [c[0] for c in _copies(out.bias)]
    masked = ~hidden.get_mask()
    masked_before = [c[masked] for c in _copies(hidden.kernel)]
    probe = _data(50, seed=3)[0] * 3
    probe_before = _predict(model, probe)[:, 0]
    ours = [op(x, y) for _ in range(steps)]
    theirs = [op_single(x, y) for _ in range(steps)]
    frozen_after = [c[:, 0] for c in _copies(out.kernel)] + [c[0] for c in _copies(out.bias)]
    masked_after = [c[masked] for c in _copies(hidden.kernel)]
    copies_agree = all(
        all(np.array_equal(c, _copies(v)[0]) for c in _copies(v)) for v in model.variables
    )
    weight_gap = max(_gap(a, b) for a, b in zip(model.weights, single.weights))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "losses": ours,
        "single_losses": theirs,
        "loss_gap": float(np.max(np.abs(np.subtract(ours, theirs)))),
        "weight_gap": weight_gap,
        "loss_moved": ours[-1] < ours[0],
        "frozen_identical": all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after)),
        "masked_identical": all(np.array_equal(a, b) for a, b in zip(masked_before, masked_after)),
        "output0_identical": bool(np.array_equal(_predict(model, probe)[:, 0], probe_before)),
        "copies_agree": copies_agree,
        "trace_count": op.trace_count,
    }


def _masked_gradients(strategy) -> dict:
    """Per replica: the gradient of every masked-out connection is exactly 0."""
    import numpy as np
    import tensorflow as tf

    with strategy.scope():
        model = _make_model()
    hidden = model.get_layer("hidden")
    x, y = _data(8)

    def grads(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        return tape.gradient(loss, [hidden.kernel.value, hidden.bias.value])

    from maskmagic.training.distributed import feed

    xs, ys = feed(strategy, tf.constant(x), tf.constant(y))
    kernel_grads, _ = strategy.run(tf.function(grads), args=(xs, ys))
    local = [g.numpy() for g in strategy.experimental_local_results(kernel_grads)]
    masked = ~hidden.get_mask()
    return {
        "replicas_checked": len(local),
        "masked_zero": all(bool(np.all(g[masked] == 0)) for g in local),
        "connected_nonzero": all(bool(np.any(g[~masked] != 0)) for g in local),
    }


def _set_mask_run(strategy) -> dict:
    """set_mask under a strategy: next step uses it on every replica, with no re-trace."""
    import numpy as np

    from maskmagic.training import TrainOp

    x, y = _data(8)
    with strategy.scope():
        model = _make_model()
    op = TrainOp(model, optimizer="adam")  # made outside the scope: it enters the model's
    hidden = model.get_layer("hidden")
    op(x, y)
    new = hidden.get_mask().copy()
    new[0, 0] = False
    hidden.set_mask(new)
    before = [c[0, 0] for c in _copies(hidden.kernel)]
    for _ in range(3):
        op(x, y)
    after = [c[0, 0] for c in _copies(hidden.kernel)]
    masks = _copies(hidden.kernel_mask)
    return {
        "trace_count": op.trace_count,
        "closed_entry_fixed": before == after,
        "mask_on_every_replica": all(not m[0, 0] for m in masks),
        "update_mask_follows": not op.update_mask(hidden.kernel)[0, 0],
        "optimizer_mirrored": type(op.optimizer.iterations.value).__name__,
        "update_mask_mirrored": type(op._mask_vars[hidden.kernel.path]).__name__,
        "finite": bool(np.isfinite(op(x, y))),
    }


def _sparse_run(strategy) -> dict:
    """A sparse layer (impl="sparse") under the strategy, across a change of topology."""
    import keras
    import numpy as np

    from maskmagic.layers import MaskedDense
    from maskmagic.training import TrainOp

    mask = np.random.default_rng(0).random((6, 4)) < 0.5

    def make():
        keras.utils.set_random_seed(0)
        x = keras.Input((6,), name="x")
        h = MaskedDense(4, mask=mask, impl="sparse", activation="tanh", name="h")(x)
        return keras.Model(x, MaskedDense(2, name="out")(h))

    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 6)).astype("float32")
    y = x[:, :2]
    single = make()
    op_single = TrainOp(single, optimizer="adam", freeze="out[0]")
    with strategy.scope():
        model = make()
    op = TrainOp(model, optimizer="adam", freeze="out[0]")
    ours, theirs = [], []
    for step in range(5):
        if step == 3:  # a new topology: fewer connections, slots remapped in place
            closed = mask.copy()
            closed[0, :] = False
            model.get_layer("h").set_mask(closed)
            single.get_layer("h").set_mask(closed)
        ours.append(op(x, y))
        theirs.append(op_single(x, y))
    kernel = model.get_layer("h").kernel
    return {
        "is_sparse": bool(model.get_layer("h").is_sparse),
        "loss_gap": float(np.max(np.abs(np.subtract(ours, theirs)))),
        "weight_gap": max(_gap(a, b) for a, b in zip(model.weights, single.weights)),
        "copies_agree": all(np.array_equal(c, _copies(kernel)[0]) for c in _copies(kernel)),
        "trace_count": op.trace_count,
    }


def _cell_run(strategy) -> dict:
    """A cell built with maskmagic.build under strategy.scope(): its ops run distributed."""
    import numpy as np

    import maskmagic

    x, y = _data(16)
    with strategy.scope():
        model, ops = maskmagic.build(CELL, seed=0)
    single, single_ops = maskmagic.build(CELL, seed=0)
    probe = _data(40, seed=5)[0]
    before = _predict(model, probe)[:, 0]
    ours = [ops["keep_first"](x, y) for _ in range(4)]
    theirs = [single_ops["keep_first"](x, y) for _ in range(4)]
    return {
        "loss_gap": float(np.max(np.abs(np.subtract(ours, theirs)))),
        "output0_identical": bool(np.array_equal(_predict(model, probe)[:, 0], before)),
        "fit_gap": float(
            np.max(
                np.abs(
                    np.subtract(
                        ops["train_all"].fit(x, y, epochs=2, batch_size=5, verbose=False),
                        single_ops["train_all"].fit(x, y, epochs=2, batch_size=5, verbose=False),
                    )
                )
            )
        ),
    }


def _errors(strategy) -> dict:
    """Mixing scopes is refused with a message that says what to do."""
    import keras

    from maskmagic.errors import MaskMagicError
    from maskmagic.training import TrainOp

    found = {}
    plain = _make_model()
    with strategy.scope():
        mirrored = _make_model()
    cases = {
        "model_outside_scope": lambda: _in_scope(strategy, lambda: TrainOp(plain)),
        "optimizer_outside_scope": lambda: TrainOp(mirrored, optimizer=keras.optimizers.SGD()),
    }
    for name, case in cases.items():
        try:
            case()
            found[name] = "no error"
        except MaskMagicError as exc:
            found[name] = str(exc)
    return found


def _in_scope(strategy, fn):
    with strategy.scope():
        return fn()


def _mirrored_main() -> None:
    """Entry point of the MirroredStrategy subprocess (two logical CPU devices)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {
        "devices": list(strategy.extended.worker_devices),
        "sgd_even": _training_run(strategy, "sgd", 8),
        "adam_uneven": _training_run(strategy, "adam", 9),
        "adam_one_sample": _training_run(strategy, "adam", 1),
        "gradients": _masked_gradients(strategy),
        "set_mask": _set_mask_run(strategy),
        "cell": _cell_run(strategy),
        "sparse": _sparse_run(strategy),
        "errors": _errors(strategy),
    }
    print("REPORT " + json.dumps(report), flush=True)


def _worker_main() -> None:
    """Entry point of one MultiWorkerMirroredStrategy worker (TF_CONFIG names it)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    report = {
        "task": json.loads(os.environ["TF_CONFIG"])["task"]["index"],
        "sgd_uneven": _training_run(strategy, "sgd", 7),
        "adam_even": _training_run(strategy, "adam", 8),
        "set_mask": _set_mask_run(strategy),
    }
    report["weights"] = [v.tolist() for v in _final_weights(strategy)]
    print("REPORT " + json.dumps(report), flush=True)


def _final_weights(strategy) -> list:
    from maskmagic.training import TrainOp

    x, y = _data(10)
    with strategy.scope():
        model = _make_model()
        op = TrainOp(model, optimizer="adam", freeze="out[1]")
    for _ in range(3):
        op(x, y)
    return [v.numpy() for v in model.weights]


# ----------------------------------------------------------------------------- pytest side


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _command(entry: str) -> list[str]:
    return [sys.executable, "-c", f"from tests.test_distribute import {entry}; {entry}()"]


def _report(stdout: str, stderr: str, returncode: int) -> dict:
    for line in stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT ") :])
    raise AssertionError(f"no report (exit {returncode}):\n{stdout[-3000:]}\n{stderr[-6000:]}")


@pytest.fixture(scope="module")
def mirrored() -> dict:
    proc = subprocess.Popen(
        _command("_mirrored_main"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return _report(stdout, stderr, proc.returncode)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def workers() -> list[dict]:
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(2):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(
                subprocess.Popen(
                    _command("_worker_main"),
                    cwd=ROOT,
                    env=_env(TF_CONFIG=config),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            results.append(_report(stdout, stderr, proc.returncode))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


# --- MirroredStrategy, two logical CPU devices


def test_mirrored_runs_on_two_replicas(mirrored):
    assert len(mirrored["devices"]) == 2
    assert mirrored["sgd_even"]["replicas"] == 2


@pytest.mark.parametrize("run", ["sgd_even", "adam_uneven", "adam_one_sample"])
def test_mirrored_loss_and_weights_equal_single_device(mirrored, run):
    result = mirrored[run]
    assert result["loss_gap"] < TOLERANCE, (result["losses"], result["single_losses"])
    assert result["weight_gap"] < TOLERANCE
    assert result["loss_moved"]


@pytest.mark.parametrize("run", ["sgd_even", "adam_uneven", "adam_one_sample"])
def test_mirrored_frozen_and_masked_entries_bit_identical_on_every_replica(mirrored, run):
    result = mirrored[run]
    assert result["frozen_identical"]
    assert result["masked_identical"]
    assert result["output0_identical"]
    assert result["copies_agree"]
    assert result["trace_count"] == 1


def test_mirrored_masked_gradients_are_zero_on_every_replica(mirrored):
    result = mirrored["gradients"]
    assert result["replicas_checked"] == 2
    assert result["masked_zero"] and result["connected_nonzero"]


def test_mirrored_set_mask_reaches_every_replica_without_retrace(mirrored):
    result = mirrored["set_mask"]
    assert result["trace_count"] == 1
    assert result["closed_entry_fixed"] and result["mask_on_every_replica"]
    assert result["update_mask_follows"] and result["finite"]
    assert result["optimizer_mirrored"] == "MirroredVariable"
    assert result["update_mask_mirrored"] == "MirroredVariable"


def test_mirrored_cell_built_in_scope_keeps_output0_and_matches_single_device(mirrored):
    result = mirrored["cell"]
    assert result["output0_identical"]
    assert result["loss_gap"] < TOLERANCE
    assert result["fit_gap"] < TOLERANCE


def test_mirrored_sparse_layer_matches_single_device_across_a_topology_change(mirrored):
    result = mirrored["sparse"]
    assert result["is_sparse"] and result["copies_agree"]
    assert result["loss_gap"] < TOLERANCE and result["weight_gap"] < TOLERANCE
    assert result["trace_count"] == 1


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("model_outside_scope", ["MirroredStrategy.scope()", "outside any strategy scope"]),
        ("optimizer_outside_scope", ["created outside", "MirroredStrategy.scope()", "expected"]),
    ],
)
def test_mirrored_mistakes_are_refused_with_a_message(mirrored, case, words):
    message = mirrored["errors"][case]
    for word in words:
        assert word in message, message


# --- MultiWorkerMirroredStrategy, two worker processes


def test_multiworker_two_workers_one_replica_each(workers):
    assert sorted(w["task"] for w in workers) == [0, 1]
    assert all(w["sgd_uneven"]["replicas"] == 2 for w in workers)


@pytest.mark.parametrize("run", ["sgd_uneven", "adam_even"])
def test_multiworker_matches_single_device_and_keeps_frozen_entries(workers, run):
    for worker in workers:
        result = worker[run]
        assert result["loss_gap"] < TOLERANCE, (result["losses"], result["single_losses"])
        assert result["weight_gap"] < TOLERANCE
        assert result["frozen_identical"] and result["masked_identical"]
        assert result["output0_identical"] and result["loss_moved"]
        assert result["trace_count"] == 1
    assert workers[0][run]["losses"] == workers[1][run]["losses"]


def test_multiworker_workers_end_with_identical_weights(workers):
    assert workers[0]["weights"] == workers[1]["weights"]


def test_multiworker_set_mask_without_retrace(workers):
    for worker in workers:
        result = worker["set_mask"]
        assert result["trace_count"] == 1 and result["closed_entry_fixed"]
        assert result["update_mask_follows"] and result["finite"]
