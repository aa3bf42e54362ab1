"""Each private TensorFlow/Keras access in maskmagic._compat, checked against the installed versions.

A failure here means an upgrade changed an internal that maskmagic relies on; the message names
the function in ``maskmagic/_compat.py`` to update.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic import _compat

PACKAGE = Path(__file__).resolve().parent.parent / "maskmagic"


def _model():
    x = keras.Input((3,), name="x")
    h = keras.layers.Dense(4, name="h")(x)
    out = keras.layers.Dense(2, name="out")(h)
    return keras.Model(x, out)


@pytest.mark.parametrize(
    "make", [lambda: keras.optimizers.SGD(momentum=0.9), lambda: keras.optimizers.Adam()]
)
def test_optimizer_tracks_and_slots(make):
    model = _model()
    optimizer = make()
    optimizer.build(model.trainable_variables)
    tracked = _compat.optimizer_tracks(optimizer)
    assert [id(v) for v in tracked] == [id(v) for v in model.trainable_variables], (
        "_compat.optimizer_tracks: Optimizer._trainable_variables changed"
    )
    kernel = model.get_layer("out").kernel
    slots = _compat.optimizer_slots(optimizer, kernel)
    expected = 1 if isinstance(optimizer, keras.optimizers.SGD) else 2
    assert len(slots) == expected, (
        f"_compat.optimizer_slots found {len(slots)} slots for an {type(optimizer).__name__} "
        f"kernel, expected {expected}: the optimizer's slot lists changed"
    )
    # the slots found are the ones the optimizer writes for this variable
    before = [np.array(s) for s in slots]
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    assert all(not np.array_equal(b, np.array(s)) for b, s in zip(before, slots))


def test_optimizer_unrestorable_names_factored_and_unknown_state():
    """Per-entry slots pass; Adafactor's row/column moments and unlisted state are named."""
    model = _model()
    kernel = model.get_layer("out").kernel
    adam = keras.optimizers.Adam()
    adam.build(model.trainable_variables)
    assert _compat.optimizer_unrestorable(adam, kernel) == [], (
        "_compat.optimizer_unrestorable: Adam's slots are no longer per-variable lists"
    )
    adafactor = keras.optimizers.Adafactor()
    adafactor.build(model.trainable_variables)
    problems = _compat.optimizer_unrestorable(adafactor, kernel)
    assert [p.split()[0] for p in problems] == ["_r", "_c"], problems
    # state in no per-variable list and not a scalar: unknown, so named
    adam.extra = adam.add_variable((4, 2), name="extra")
    assert any("extra" in p for p in _compat.optimizer_unrestorable(adam, kernel))


def test_functional_graph_nodes_and_history():
    model = _model()
    graph = _compat.functional_graph(model)
    assert graph is model
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _compat.functional_graph(seq) is not None, "Sequential._functional changed"

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert _compat.functional_graph(Sub()) is None
    depths = _compat.nodes_by_depth(graph)
    ops = {node.operation.name for nodes in depths.values() for node in nodes}
    assert {"h", "out"} <= ops, "Functional._nodes_by_depth changed"
    nodes = _compat.inbound_nodes(model.get_layer("out"))
    assert len(nodes) == 1, "Operation._inbound_nodes changed"
    source = _compat.producing_layer(nodes[0].input_tensors[0])
    assert source is not None and source.name == "h", "KerasTensor._keras_history changed"
    assert _compat.producing_layer(np.zeros(1)) is None


def test_resizable_variable_keeps_traced_functions_working():
    variable = keras.Variable(np.arange(3, dtype="float32"), trainable=False)

    @tf.function
    def total():
        return tf.reduce_sum(variable.value)

    _compat.make_resizable(variable)
    assert float(total()) == 3.0
    _compat.resize_variable(variable, np.arange(5, dtype="float32"))
    assert variable.shape == (5,), "Variable._shape/_ndim changed"
    assert float(total()) == 10.0, "Variable._value changed"
    assert isinstance(_compat.variable_storage(variable), tf.Variable)


def test_csr_matrix_ops_multiply():
    ops = _compat.csr_matrix_ops()
    dense = np.array([[0, 2], [3, 0]], dtype="float32")
    matrix = ops.dense_to_csr_sparse_matrix(dense, tf.where(dense != 0))
    product = ops.sparse_matrix_mat_mul(matrix, np.eye(2, dtype="float32"))
    np.testing.assert_array_equal(np.array(product), dense)


def test_call_concrete_runs_the_function_on_flat_inputs():
    """Catches a TensorFlow whose ConcreteFunction._call_flat changed its arguments or result."""
    scale = tf.Variable(3.0)  # a captured input

    @tf.function
    def f(x, pair, nothing):
        assert nothing is None
        return {"sum": x * scale + pair[0], "pair": [pair[1] * 2]}

    args = (tf.constant([1.0, 2.0]), (tf.constant(10.0), tf.constant(4)), None)
    concrete = f.get_concrete_function(*args)
    flat = [a for a in tf.nest.flatten(args) if a is not None]
    out = _compat.call_concrete(concrete, flat)
    np.testing.assert_array_equal(out["sum"].numpy(), [13.0, 16.0])
    assert int(out["pair"][0]) == 8
    scale.assign(1.0)  # captures are read at call time, not at trace time
    np.testing.assert_array_equal(_compat.call_concrete(concrete, flat)["sum"].numpy(), [11, 12])


def test_in_xla_context_tells_compiled_from_plain_functions():
    """Catches a TensorFlow whose XLA flag moved (the native ops would then reach XLA)."""
    seen = {}

    def probe(name):
        seen[name] = _compat.in_xla_context()
        return tf.constant(0.0)

    tf.function(lambda: probe("xla"), jit_compile=True)()
    tf.function(lambda: probe("graph"))()
    probe("eager")
    assert seen == {"xla": True, "graph": False, "eager": False}


@pytest.mark.parametrize("mode", [None, "int8"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_serialization_names_are_what_dense_saves(mode, use_bias):
    """Catches a Keras version that writes other Dense entries (the count of a MaskedDense
    file's Dense entries, and so where its masks start, comes from these names)."""
    layer = keras.layers.Dense(3, use_bias=use_bias)
    layer.build((None, 4))
    if mode:
        layer.quantize(mode)
    store: dict = {}
    layer.save_own_variables(store)
    names = _compat.dense_serialization_names(layer)
    assert len(names) == len(store), (names, list(store))
    for i, name in enumerate(names):
        variable = _compat.dense_kernel(layer) if name == "kernel" else getattr(layer, name)
        np.testing.assert_array_equal(
            np.asarray(store[str(i)]), keras.ops.convert_to_numpy(variable)
        )


_PRIVATE = re.compile(
    r"\._(trainable_variables|get_variable_index|inbound_nodes|nodes_by_depth|keras_history"
    r"|functional|value|shape|ndim|tracker|layers|outbound_nodes)\b|tensorflow\.python|keras\.src"
)


def test_no_private_tf_keras_access_outside_compat():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PRIVATE.search(code) and not re.search(r"\bself\._", code):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "private TF/Keras access outside maskmagic/_compat.py:\n" + "\n".join(
        offenders
    )


def test_dense_kernel_is_the_stored_kernel_variable():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    assert _compat.dense_kernel(layer) is layer.kernel, "Dense._kernel changed"
    layer.quantize("int8")
    assert str(_compat.dense_kernel(layer).dtype) == "int8", "Dense._kernel (int8) changed"


def test_dense_attributes_swaps_and_restores_what_quantized_calls_read():
    layer = keras.layers.Dense(3, activation="relu")
    layer.build((None, 4))
    layer.quantize("float8")
    x = np.ones((2, 4), "float32")
    kernel, bias = _compat.dense_kernel(layer), layer.bias
    with _compat.dense_attributes(layer, _kernel=tf.zeros((4, 3)), bias=None, activation=None):
        out = layer(x)
    np.testing.assert_array_equal(out, np.zeros((2, 3)))  # Dense._float8_call reads _kernel
    assert _compat.dense_kernel(layer) is kernel and layer.bias is bias
    assert len(layer.weights) == len(layer.trainable_weights) + len(layer.non_trainable_weights)


@pytest.mark.parametrize("mode", ["gptq", "awq"])
def test_dense_quantized_kernel_matches_dense_calibrated_call(mode):
    # Packed 4-bit values, scales and zero points as a calibration would leave them; the
    # kernel _compat dequantizes must be the one Dense's own calibrated call multiplies by.
    pytest.importorskip(
        f"keras.src.quantizers.{mode}_config",
        reason=f"Keras {keras.__version__} has no {mode} quantization (newer Keras 3 releases only)",
    )
    from keras.src.quantizers.awq_config import AWQConfig
    from keras.src.quantizers.gptq_config import GPTQConfig

    make = GPTQConfig if mode == "gptq" else AWQConfig
    config = make(dataset=None, tokenizer=None, weight_bits=4, group_size=-1)
    layer = keras.layers.Dense(4, use_bias=False)
    layer.build((None, 8))
    layer.quantize(mode, config=config)
    rng = np.random.default_rng(0)
    layer.quantized_kernel.assign(rng.integers(0, 256, layer.quantized_kernel.shape))
    layer.kernel_scale.assign(rng.uniform(0.1, 1, layer.kernel_scale.shape))
    layer.kernel_zero.assign(rng.integers(0, 16, layer.kernel_zero.shape))
    if mode == "awq":
        layer.awq_scales.assign(rng.uniform(0.5, 2, layer.awq_scales.shape))
    setattr(layer, f"is_{mode}_calibrated", True)
    kernel = keras.ops.convert_to_numpy(_compat.dense_quantized_kernel(layer))
    rows = keras.ops.convert_to_numpy(layer(np.eye(8, dtype="float32")))  # e_i @ W = row i
    # A failure: Dense._gptq_call / _awq_call dequantize differently now.
    np.testing.assert_array_equal(rows, kernel)


def test_run_graph_calls_the_substitute_of_each_layer():
    model = _model()
    x = np.random.default_rng(0).normal(size=(5, int(model.inputs[0].shape[-1]))).astype("float32")
    same = _compat.run_graph(model, x, lambda op: op)
    np.testing.assert_array_equal(np.asarray(same), model(x).numpy())
    seen = []

    def doubled(op):
        seen.append(op.name)
        if op.name != "out":
            return op
        return lambda *args, **kwargs: 2 * op(*args, **kwargs)

    twice = _compat.run_graph(model, x, doubled)
    np.testing.assert_allclose(np.asarray(twice), 2 * model(x).numpy(), rtol=1e-6)
    assert "out" in seen, "Functional._run_through_graph no longer calls operation_fn per layer"
