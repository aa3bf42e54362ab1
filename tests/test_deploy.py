"""Persistence and deployment: .keras round trips (safe mode), SavedModel export, mask files,
and ``maskmagic.strip`` to a plain-Keras model that loads where maskmagic cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

import maskmagic
from maskmagic import masks
from maskmagic.builder import build
from maskmagic.deploy import export, load_model, serve, strip
from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp

from .conftest import make_342
from .numerics import assert_same_value

HIDDEN = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], dtype=bool)

CELL = """\
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,1],[0,1,1,0],[1,1,0,1]] bias_mask=[1,0,1,1]
dense out 2
loss mse
optimizer adam learning_rate=0.05
train keep_first freeze=out[0]
train everything
"""

# Two inputs, one of them an image flattened by the builder, two concatenations, a dropout.
MULTI = """\
input a 3
input img (2, 2, 1)
dense h 5 from=a,img activation=relu mask=random(0.6, seed=1)
dropout d 0.3
dense out 2 from=d,a mask=random(0.7, seed=2)
"""

ROOT = Path(__file__).resolve().parents[1]


def _x(count: int = 32, width: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, width)).astype("float32")


def _y(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5 + 0.3], axis=1).astype("float32")


def _state(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def _multi_inputs(count: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {
        "a": rng.normal(size=(count, 3)).astype("float32"),
        "img": rng.normal(size=(count, 2, 2, 1)).astype("float32"),
    }


@pytest.fixture
def trained(tmp_path):
    """A cell-built net after a few steps of two ops sharing the cell's Adam."""
    model, ops = build(CELL, seed=0)
    x = _x()
    for _ in range(3):
        ops["keep_first"](x, _y(x))
        ops["everything"](x, _y(x))
    return model, ops


def test_build_stays_callable_once_its_module_is_imported():
    """The magic imports the builder module; ``maskmagic.build(text)`` must keep working."""
    import importlib

    importlib.import_module("maskmagic.builder")
    importlib.import_module("maskmagic.magic")
    model, ops = maskmagic.build(CELL, seed=0)
    assert isinstance(model, keras.Model) and set(ops) == {"keep_first", "everything"}


# ----------------------------------------------------------------------------- .keras


def test_keras_round_trip_keeps_masks_weights_optimizer_state_and_outputs(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "net.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # Keras' default: safe_mode=True
    for name in ("hidden", "out"):
        old, new = model.get_layer(name), loaded.get_layer(name)
        assert isinstance(new, MaskedDense)
        np.testing.assert_array_equal(new.get_mask(), old.get_mask())
        np.testing.assert_array_equal(new.get_bias_mask(), old.get_bias_mask())
    before, after = _state(model), _state(loaded)
    assert before.keys() == after.keys()
    for path_ in before:
        np.testing.assert_array_equal(after[path_], before[path_])
    # The optimizer (Adam moments and its step count) travels with a compiled model.
    old_opt = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    new_opt = [keras.ops.convert_to_numpy(v) for v in loaded.optimizer.variables]
    assert len(old_opt) == len(new_opt) > 2
    for a, b in zip(old_opt, new_opt):
        np.testing.assert_array_equal(a, b)
    probe = _x(100, seed=9) * 3
    np.testing.assert_array_equal(loaded.predict(probe, verbose=0), model.predict(probe, verbose=0))


def test_training_resumes_bit_identically_after_a_keras_round_trip(trained, tmp_path):
    model, ops = trained
    path = tmp_path / "net.keras"
    model.save(path)
    loaded = load_model(path)
    resumed = TrainOp(loaded, loss="mse", optimizer=loaded.optimizer, freeze="out[0]")
    x = _x(seed=5)
    theirs = [ops["keep_first"](x, _y(x)) for _ in range(4)]
    ours = [resumed(x, _y(x)) for _ in range(4)]
    assert ours == theirs
    for (path_, a), b in zip(_state(model).items(), _state(loaded).values()):
        np.testing.assert_array_equal(a, b, err_msg=path_)


def test_keras_round_trip_of_a_sparse_layer(tmp_path):
    x = keras.Input((6,), name="x")
    mask = np.random.default_rng(0).random((6, 5)) < 0.4
    out = MaskedDense(5, mask=mask, impl="sparse", name="out")(x)
    model = keras.Model(x, out)
    model.save(tmp_path / "sparse.keras")
    loaded = load_model(tmp_path / "sparse.keras")
    assert loaded.get_layer("out").is_sparse
    np.testing.assert_array_equal(loaded.get_layer("out").get_mask().toarray(), mask)
    probe = _x(20, width=6)
    np.testing.assert_array_equal(loaded(probe).numpy(), model(probe).numpy())


def test_loading_uses_keras_safe_mode(tmp_path):
    """A file that would run code on load (a Lambda's bytecode) is refused by both loaders."""
    x = keras.Input((3,), name="x")
    h = MaskedDense(2, mask=HIDDEN[:, :2], name="h")(x)
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(h)
    path = tmp_path / "lambda.keras"
    keras.Model(x, out).save(path)
    for loader in (keras.models.load_model, load_model):
        with pytest.raises(ValueError, match="safe_mode"):
            loader(path)


def test_masked_layer_config_holds_only_data(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "net.keras"
    model.save(path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    assert layers["hidden"]["registered_name"] == "maskmagic>MaskedDense"
    text = json.dumps(layers["hidden"])
    assert "lambda" not in text.lower() and "function" not in text.lower()


# ----------------------------------------------------------------------------- SavedModel


def test_export_serving_signature_equals_the_model(trained, tmp_path):
    model, _ = trained
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    signature = loaded.signatures["serving_default"]
    probe = _x(64, seed=2)
    served = signature(x=tf.constant(probe))
    assert list(served) == ["output_0"]
    # Exact by construction: the SavedModel holds the model's variables (weights and masks)
    # bit for bit.
    assert _variable_bytes(loaded.variables) == _variable_bytes(model.weights)
    # Two computations of one value: the serving graph is optimized by TensorFlow (under oneDNN
    # the remapper fuses MatMul + BiasAdd + activation), the eager model is not, so on some
    # x86 CPUs (AVX-512) they round differently, by an ulp or so (tests/numerics.py).
    assert_same_value(served["output_0"].numpy(), model(probe).numpy())


def _variable_bytes(variables) -> list:
    """The variables' values as sorted (dtype, shape, bytes): equal iff bit-identical."""
    return sorted(
        (str(np.asarray(v).dtype), np.asarray(v).shape, np.asarray(v).tobytes()) for v in variables
    )


@pytest.mark.parametrize("stripped", [False, True])
def test_export_helper_multi_input_model(tmp_path, stripped):
    model, _ = build(MULTI, seed=0)
    path = export(model, tmp_path / "multi", stripped=stripped)
    inputs = _multi_inputs()
    signature = tf.saved_model.load(path).signatures["serving_default"]
    direct = signature(**{k: tf.constant(v) for k, v in inputs.items()})["output_0"].numpy()
    expected = model([inputs["a"], inputs["img"]]).numpy()
    # The serving graph against the eager model: two computations of one value (see above).
    assert_same_value(direct, expected)
    # serve() runs that same signature on the same inputs: exact.
    np.testing.assert_array_equal(serve(path)(**inputs), direct)
    with pytest.raises(MaskMagicError, match=r"inputs named \['a', 'img'\]; received \['a'\]"):
        serve(path)(a=inputs["a"])


def test_serve_names_what_it_expected_for_bad_inputs(tmp_path):
    model, _ = build(MULTI, seed=0)
    path = export(model, tmp_path / "multi")
    inputs = _multi_inputs()
    f = serve(path)
    # Mixed positional and named: the positional array is not silently dropped.
    with pytest.raises(MaskMagicError, match=r"received 1 positional and \['a', 'img'\] named"):
        f(inputs["a"], **inputs)
    with pytest.raises(MaskMagicError, match=r"inputs named \['a', 'img'\]; received 2 positional"):
        f(inputs["a"], inputs["img"])
    with pytest.raises(MaskMagicError) as info:
        f(a="not a number", img=inputs["img"])
    for words in ("input 'a'", "float32", "str", "a: float32 (batch, 3)", "img: float32"):
        assert words in str(info.value)
    with pytest.raises(
        MaskMagicError, match=r"input 'a' has shape \(16, 2\); expected \(batch, 3\)"
    ):
        f(a=inputs["a"][:, :2], img=inputs["img"])
    single = export(make_342(), tmp_path / "single")
    x = _x(4)
    g = serve(single)
    np.testing.assert_array_equal(g(x), g(x=x))
    with pytest.raises(MaskMagicError, match=r"received 1 positional and \['x'\] named"):
        g(x, x=x)
    with pytest.raises(MaskMagicError, match=r"input .x. cannot be converted to a float32 tensor"):
        g([[1.0, 2.0, 3.0], [1.0]])


def test_load_model_of_a_missing_file_or_a_directory_is_a_maskmagic_error(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(MaskMagicError, match=r"no model file at .*nope\.keras.*model\.save"):
        load_model(missing)
    with pytest.raises(MaskMagicError, match="is a directory.*serve"):
        load_model(tmp_path)


# ----------------------------------------------------------------------------- mask files


@pytest.mark.parametrize("ext", [".npz", ".csv", ".npy"])
def test_masks_saved_and_loaded_on_their_own(trained, tmp_path, ext):
    model, _ = trained
    layer = model.get_layer("hidden")
    path = tmp_path / f"hidden{ext}"
    masks.save(path, layer.get_mask())
    fresh = make_342()
    fresh.get_layer("hidden").set_mask(masks.load(path))
    np.testing.assert_array_equal(fresh.get_layer("hidden").get_mask(), layer.get_mask())


def test_named_and_sparse_masks_round_trip_through_npz_and_csv(tmp_path):
    named = masks.NamedMask(HIDDEN, ("a", "b", "c"), ("g1", "g2", "g3", "g4"))
    for ext in (".npz", ".csv"):
        masks.save(tmp_path / f"named{ext}", named)
        assert masks.load(tmp_path / f"named{ext}") == named
    sparse = sp.csr_array(HIDDEN)
    masks.save(tmp_path / "sparse.npz", sparse)
    loaded = masks.load(tmp_path / "sparse.npz")
    assert sp.issparse(loaded)
    np.testing.assert_array_equal(loaded.toarray(), HIDDEN)
    bias = np.array([1, 0, 1, 1], dtype=bool)
    masks.save(tmp_path / "bias.npz", bias)
    np.testing.assert_array_equal(masks.load(tmp_path / "bias.npz"), bias)


# ----------------------------------------------------------------------------- strip


def _assert_plain(stripped: keras.Model, original: keras.Model) -> None:
    names = [layer.name for layer in original.layers]
    assert [layer.name for layer in stripped.layers] == names
    for layer in stripped.layers:
        assert not isinstance(layer, MaskedDense)
        if isinstance(original.get_layer(layer.name), MaskedDense):
            assert type(layer) is keras.layers.Dense
            old = original.get_layer(layer.name)
            np.testing.assert_array_equal(layer.kernel.numpy(), _dense(old.effective_kernel()))
            if old.use_bias:
                np.testing.assert_array_equal(layer.bias.numpy(), old.effective_bias())


def _dense(kernel):
    return kernel.toarray() if sp.issparse(kernel) else kernel


def test_strip_is_exported_lazily():
    assert maskmagic.strip is strip


def test_strip_342_gives_dense_layers_and_bit_identical_outputs(trained):
    model, _ = trained
    stripped = strip(model)
    _assert_plain(stripped, model)
    assert stripped.name == model.name
    probe = _x(200, seed=1) * 3
    np.testing.assert_array_equal(stripped(probe).numpy(), model(probe).numpy())
    np.testing.assert_array_equal(
        stripped.predict(probe, verbose=0), model.predict(probe, verbose=0)
    )
    assert stripped.get_layer("hidden").activation is keras.activations.sigmoid


def test_strip_multi_input_concatenation_net():
    model, _ = build(MULTI, seed=0)
    stripped = strip(model)
    _assert_plain(stripped, model)
    assert [t.name for t in stripped.inputs] == ["a", "img"]
    inputs = _multi_inputs()
    args = [inputs["a"], inputs["img"]]
    np.testing.assert_array_equal(stripped(args).numpy(), model(args).numpy())


def test_strip_keeps_other_layers_weights_and_nested_models():
    inner_in = keras.Input((4,), name="inner_in")
    inner_out = MaskedDense(3, mask=np.eye(4, 3), use_bias=False, name="inner_dense")(inner_in)
    inner = keras.Model(inner_in, inner_out, name="inner")
    x = keras.Input((3,), name="x")
    h = MaskedDense(4, mask=HIDDEN, activation="tanh", name="hidden")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(2, name="plain")(inner(h))
    model = keras.Model(x, out)
    model.get_layer("bn").set_weights([np.full(4, v, "float32") for v in (1.5, 0.2, 0.3, 2.0)])
    stripped = strip(model)
    assert type(stripped.get_layer("inner").get_layer("inner_dense")) is keras.layers.Dense
    for name in ("bn", "plain"):
        for a, b in zip(stripped.get_layer(name).weights, model.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    probe = _x(50)
    np.testing.assert_array_equal(stripped(probe).numpy(), model(probe).numpy())


def test_strip_sequential_model():
    model = keras.Sequential(
        [keras.Input((3,)), MaskedDense(4, mask=HIDDEN, name="h"), MaskedDense(1, name="o")]
    )
    stripped = strip(model)
    assert isinstance(stripped, keras.Sequential)
    probe = _x(10)
    np.testing.assert_array_equal(stripped(probe).numpy(), model(probe).numpy())


def test_strip_sparse_layer_fits_as_dense_and_agrees_to_rounding():
    """A sparse layer sums in another order (CSR kernel), so outputs agree to float rounding."""
    x = keras.Input((40,), name="x")
    mask = np.random.default_rng(3).random((40, 30)) < 0.1
    h = MaskedDense(30, mask=mask, impl="sparse", activation="relu", name="h")(x)
    model = keras.Model(x, MaskedDense(2, name="out")(h))
    stripped = strip(model)
    _assert_plain(stripped, model)
    probe = _x(64, width=40)
    np.testing.assert_allclose(stripped(probe).numpy(), model(probe).numpy(), rtol=1e-6, atol=1e-6)


def test_strip_refuses_a_sparse_layer_too_large_for_a_dense_kernel():
    x = keras.Input((40,), name="x")
    mask = np.random.default_rng(3).random((40, 30)) < 0.1
    model = keras.Model(x, MaskedDense(30, mask=mask, impl="sparse", name="big")(x))
    with pytest.raises(MaskMagicError) as info:
        strip(model, max_dense_bytes=1000)
    message = str(info.value)
    for word in ("'big'", "(40, 30)", "4,800 bytes", "at most 1,000"):
        assert word in message, message


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = MaskedDense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: "net", ["expects a keras.Model", "str"]),
        (lambda: keras.Sequential([MaskedDense(2)]), ["expects a built model", "not built"]),
        (lambda: _built(_Subclassed()), ["functional or Sequential", "_Subclassed"]),
    ],
)
def test_strip_refuses_what_it_cannot_copy(make, words):
    with pytest.raises(MaskMagicError) as info:
        strip(make())
    for word in words:
        assert word in str(info.value)


def _built(model):
    model(np.zeros((1, 3), "float32"))
    return model


# A fresh interpreter in which `import maskmagic` fails: the stripped model must not need it.
_NO_MASKMAGIC = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "maskmagic" or name.startswith("maskmagic."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
try:
    import maskmagic
    raise SystemExit("maskmagic was importable")
except ModuleNotFoundError:
    pass
import numpy as np, keras
model = keras.models.load_model(sys.argv[1])
inputs = dict(np.load(sys.argv[2]))
args = [inputs[t.name] for t in model.inputs]
out = model(args if len(args) > 1 else args[0]).numpy()
expected = np.load(sys.argv[3])
print(json.dumps({
    "equal": bool(np.array_equal(out, expected)),
    "classes": sorted({type(l).__name__ for l in model.layers}),
    "maskmagic_loaded": any(m.startswith("maskmagic") for m in sys.modules),
}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("cell", [CELL, MULTI], ids=["342", "multi_input"])
def test_stripped_model_loads_and_runs_where_maskmagic_cannot_be_imported(tmp_path, cell):
    model, _ = build(cell, seed=0)
    stripped = strip(model)
    path = tmp_path / "plain.keras"
    stripped.save(path)
    assert "maskmagic" not in zipfile.ZipFile(path).read("config.json").decode()
    inputs = _multi_inputs() if cell is MULTI else {"x": _x(40)}
    args = [inputs[t.name] for t in model.inputs]
    expected = model(args if len(args) > 1 else args[0]).numpy()
    np.savez(tmp_path / "inputs.npz", **inputs)
    np.save(tmp_path / "expected.npy", expected)
    script = tmp_path / "load.py"
    script.write_text(_NO_MASKMAGIC)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(path),
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "expected.npy"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["equal"] and not result["maskmagic_loaded"]
    assert "MaskedDense" not in result["classes"] and "Dense" in result["classes"]
