"""What masking costs a dense implementation's train step: the two selects, timed alone.

A 4096 x 4096 ``MaskedDense(impl="dense")``, batch 128: ``TrainOp`` steps (SGD and Adam) on
plain ``keras.layers.Dense``, on the masked layer with an all-ones mask (the select returns the
kernel itself) and with a random 50% mask; and the two passes a real mask adds, each timed on
its own: the forward select (the masked kernel into a new buffer) and the gradient select (in
place on the kernel gradient fresh from its matmul: that matmul with and without the select).
Every part is timed in interleaved rounds in one process; medians of all calls after warm-up.

The two selects are the least any masked step that applies its mask element-wise pays on top
of a Dense step; ``share of a Dense step`` is their time over the Dense step's. The difference
between the 50% step and the all-ones step is what they cost inside a step (where the
all-ones step shows what the rest of the masked layer and the op cost).

Usage: ``python bench/profile_dense.py [--size 4096]`` (writes
``bench/results/profile-dense-<date>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from timing import interleaved_medians  # noqa: E402

BATCH, DENSITY, ROUNDS, CALLS = 128, 0.5, 7, 4


def measure(size: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from maskmagic.layers import MaskedDense, native
    from maskmagic.training import TrainOp

    library = native.kernel_ops()
    if library is None:
        raise SystemExit("the native kernels are unavailable here; the selects run on tf.where")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, size)).astype("float32"))
    y = tf.constant(rng.normal(size=(BATCH, size)).astype("float32"))
    masks = {
        "all-ones mask": np.ones((size, size), bool),
        "50% mask": rng.random((size, size)) < DENSITY,
    }

    def model(layer):
        inputs = keras.Input((size,))
        return keras.Model(inputs, layer(inputs))

    parts: dict = {}
    for optimizer in ("sgd", "adam"):
        op = TrainOp(model(keras.layers.Dense(size)), optimizer=optimizer)
        parts[f"TrainOp step on Dense, {optimizer}"] = lambda op=op: op(x, y)
        for name, mask in masks.items():
            op = TrainOp(model(MaskedDense(size, mask=mask, impl="dense")), optimizer=optimizer)
            parts[f"TrainOp step, {name}, {optimizer}"] = lambda op=op: op(x, y)
    kernel = tf.Variable(rng.normal(size=(size, size)).astype("float32"))
    mask = tf.constant(masks["50% mask"])
    forward_select = tf.function(lambda: library.maskmagic_mask_select(kernel, mask))
    gradient = tf.function(lambda: tf.matmul(x, y, transpose_a=True))
    selected_gradient = tf.function(
        lambda: library.maskmagic_mask_select(tf.matmul(x, y, transpose_a=True), mask)
    )
    parts["forward select"] = lambda: forward_select()
    parts["kernel gradient matmul"] = lambda: gradient()
    parts["kernel gradient matmul + gradient select"] = lambda: selected_gradient()
    ms = interleaved_medians(parts, ROUNDS, CALLS)
    ms["gradient select"] = (
        ms["kernel gradient matmul + gradient select"] - ms["kernel gradient matmul"]
    )
    ms["two selects"] = ms["forward select"] + ms["gradient select"]
    for optimizer in ("sgd", "adam"):
        dense = ms[f"TrainOp step on Dense, {optimizer}"]
        ms[f"two selects, share of a Dense step, {optimizer}"] = ms["two selects"] / dense
        in_step = (
            ms[f"TrainOp step, 50% mask, {optimizer}"]
            - ms[f"TrainOp step, all-ones mask, {optimizer}"]
        )
        ms[f"50% mask step - all-ones mask step, {optimizer}"] = in_step
        ms[f"that difference, share of a Dense step, {optimizer}"] = in_step / dense
        for name in masks:
            ms[f"ratio to Dense, {name}, {optimizer}"] = (
                ms[f"TrainOp step, {name}, {optimizer}"] / dense
            )
    return {"size": size, "batch": BATCH, "density": DENSITY, "ms": ms}


def main() -> None:
    from run import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="inputs and units of the layer")
    size = parser.parse_args().size
    load = [os.getloadavg()]
    result = measure(size)
    load.append(os.getloadavg())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join(["python bench/profile_dense.py", *sys.argv[1:]])
    record = {"kind": "profile-dense", "machine": machine(), "date": stamp, "command": command,
              "load": load, "result": result}  # fmt: skip
    for part, value in result["ms"].items():
        unit = "x" if part.startswith(("ratio", "two selects, share", "that")) else "ms"
        print(f"  {part:48s} {value:8.3f} {unit}")
    path = os.path.join(HERE, "results", f"profile-dense-{stamp.replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
