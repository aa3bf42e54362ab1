"""Tests of maskmagic.codegen: the generated source runs without maskmagic and matches it.

The end-to-end checks execute every generated source in one fresh Python subprocess in which
``import maskmagic`` raises ImportError; the parent writes the maskmagic side (initial weights,
outputs on probe inputs, update masks, and weights after a few steps of each op) to .npz files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

from maskmagic import lang
from maskmagic.builder import build_spec
from maskmagic.codegen import LITERAL_LIMIT, encode_mask, to_source
from maskmagic.display import connected_parameters
from maskmagic.errors import MaskMagicError

from .cells import QUESTION1

CELL_QUESTION1 = QUESTION1
CELL_QUESTION2 = """
input x 3
dense y 2 activation=relu mask=[[0,1],[1,0],[0,1]]
loss mse
"""
CELL_QUESTION3 = """
input x 5
dense h 3 activation=tanh mask=A bias_mask=B
dense out 1
"""
CELL_OPTIMIZERS = """
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,1],[0,1,1,0],[1,1,0,1]]
dense out 2
loss mse
optimizer adam learning_rate=0.01
train keep_first freeze=out[0]
train mom hidden out[1] optimizer=sgd(learning_rate=0.1, momentum=0.9)
train decay out.kernel[:, 1] optimizer=adamw(learning_rate=0.01, weight_decay=0.1)
"""
CELL_WIRED = """
input a 4
input b (2, 3)
input q 40
dense h 6 from=a,b activation=relu mask=random(0.5, seed=1) bias_mask=[1,1,0,1,1,0]
dropout d 0.25
dense big 30 from=d,a activation=tanh mask=random(0.4, seed=2)
dense out 2 from=big use_bias=false
dense aux 1 from=h kernel_regularizer=l2 bias_initializer=ones
dense w 64 from=q mask=random(0.01, seed=3)
loss mse
optimizer adam learning_rate=0.01
train keep0 freeze=out[0]
train only_big big optimizer=sgd(learning_rate=0.05, momentum=0.9)
train decay out.kernel[:, 1] h[2] optimizer=adamw(learning_rate=0.01, weight_decay=0.1)
"""
NAMESPACE = {"A": np.eye(5, 3, dtype=int) + np.eye(5, 3, k=-2, dtype=int), "B": [1, 0, 1]}
CASES = [
    ("q1", CELL_QUESTION1),
    ("q2", CELL_QUESTION2),
    ("q3", CELL_QUESTION3),
    ("optimizers", CELL_OPTIMIZERS),
    ("wired", CELL_WIRED),  # seeded dropout: the same masks on both sides
]
FROZEN = {"q1": {"keep_first": ("out", 0)}, "optimizers": {"keep_first": ("out", 0)},
          "wired": {"keep0": ("out", 0)}}  # fmt: skip
STEPS = 5

CHECK = r"""
import json, sys
import numpy as np

blocker, manifest = sys.argv[1], json.loads(open(sys.argv[2]).read())
sys.path.insert(0, blocker)  # `import maskmagic` finds the blocker first and fails
import keras

def run(case):
    source = open(case["source"]).read()
    data = np.load(case["data"])
    def fresh():
        keras.backend.clear_session()
        namespace = {"__name__": "generated"}
        exec(compile(source, case["source"], "exec"), namespace)
        return namespace
    def load(model):
        for v in model.trainable_variables:
            v.assign(data["init/" + v.path])
    def probe(model):
        xs = [data[k] for k in case["x"]]
        out = model(xs[0] if len(xs) == 1 else xs, training=False)
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]
    ns = fresh()
    model = ns["net"]
    result = {"names": sorted(k for k in ns if not k.startswith("_")), "ops": {}}
    result["callable"] = {op: callable(ns[op]) and len(ns[op].var_list) > 0 for op in case["ops"]}
    connected = 0
    for layer in model.layers:
        if hasattr(layer, "kernel_mask"):
            connected += int(np.asarray(layer.kernel_mask).sum())
            connected += int(np.asarray(layer.bias_mask).sum()) if layer.use_bias else 0
        elif isinstance(layer, keras.layers.Dense):  # written without a mask: all connected
            connected += sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
    result["connected"] = connected
    result["stored"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    result["same_init"] = all(
        np.array_equal(np.asarray(v), data["init/" + v.path]) for v in model.trainable_variables)
    load(model)
    result["output_diff"] = max(float(np.abs(o - data[f"out/{i}"]).max())
                                for i, o in enumerate(probe(model)))
    xs = [data[k] for k in case["x"]]
    ys = [data[k] for k in case["y"]]
    x, y = (xs[0] if len(xs) == 1 else xs), (ys[0] if len(ys) == 1 else ys)
    for op_name in case["ops"]:
        ns = fresh()
        model, op = ns["net"], ns[op_name]
        load(model)
        before = {v.path: np.asarray(v).copy() for v in model.trainable_variables}
        out_before = probe(model)
        losses = [op(x, y) for _ in range(case["steps"])]
        report = {"losses": losses, "outside_changed": [], "final_diff": 0.0, "mask_equal": True}
        for v in model.trainable_variables:
            after = np.asarray(v)
            update = data.get(f"update/{op_name}/{v.path}", np.zeros(after.shape, bool))
            if not np.array_equal(after[~update], before[v.path][~update]):
                report["outside_changed"].append(v.path)
            if not np.array_equal(op.update_mask(v), update):
                report["mask_equal"] = False
            diff = float(np.abs(after - data[f"final/{op_name}/{v.path}"]).max())
            report["final_diff"] = max(report["final_diff"], diff)
        frozen = case["frozen"].get(op_name)
        if frozen is not None:
            index = case["outputs"].index(frozen[0])
            column = frozen[1]
            report["frozen_identical"] = bool(np.array_equal(
                probe(model)[index][:, column], out_before[index][:, column]))
        result["ops"][op_name] = report
    return result

results = {name: run(case) for name, case in manifest.items()}
results["__maskmagic_loaded__"] = "maskmagic" in sys.modules
print("RESULTS " + json.dumps(results))
"""


def _arrays(spec: lang.NetSpec, model, rng: np.random.Generator):
    xs = {f"x/{i.name}": rng.normal(size=(32, *i.shape)).astype("float32") for i in spec.inputs}
    ys = {}
    for name in spec.outputs:
        width = int(model.get_layer(name).output.shape[-1])
        ys[f"y/{name}"] = rng.uniform(-0.5, 0.5, size=(32, width)).astype("float32")
    return xs, ys


def _as_input(arrays: dict):
    values = list(arrays.values())
    return values[0] if len(values) == 1 else values


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Runs every case through maskmagic here and through its generated source in a subprocess."""
    root = tmp_path_factory.mktemp("codegen")
    blocker = root / "blocker"
    blocker.mkdir()
    (blocker / "maskmagic.py").write_text('raise ImportError("maskmagic must not be needed")\n')
    manifest, built_by_case = {}, {}
    for case, cell in CASES:
        spec = lang.parse(cell)
        built = build_spec(spec, NAMESPACE, "net", seed=0)
        built_by_case[case] = built
        model = built.model
        xs, ys = _arrays(spec, model, np.random.default_rng(0))
        data = {**xs, **ys}
        data.update({"init/" + v.path: v.numpy() for v in model.trainable_variables})
        outputs = model(_as_input(xs), training=False)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        data.update({f"out/{i}": np.asarray(o) for i, o in enumerate(outputs)})
        for op_name in built.ops:
            fresh = build_spec(spec, NAMESPACE, "net", seed=0)  # fresh weights and optimizers
            op = fresh.ops[op_name]
            for _ in range(STEPS):
                op(_as_input(xs), _as_input(ys))
            for v in fresh.model.trainable_variables:
                data[f"final/{op_name}/{v.path}"] = v.numpy()
                data[f"update/{op_name}/{v.path}"] = op.update_mask(v)
        source = root / f"{case}.py"
        source.write_text(to_source(built, "net", cell=cell))
        np.savez(root / f"{case}.npz", **data)
        manifest[case] = {
            "source": str(source),
            "data": str(root / f"{case}.npz"),
            "x": list(xs),
            "y": list(ys),
            "ops": list(built.ops),
            "outputs": list(spec.outputs),
            "frozen": FROZEN.get(case, {}),
            "steps": STEPS,
        }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "check.py").write_text(textwrap.dedent(CHECK))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, str(root / "check.py"), str(blocker), str(root / "manifest.json")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULTS ") :]), built_by_case, root


def _connected(built) -> int:
    return sum(connected_parameters(layer) for layer in built.model.layers)


def test_generated_code_never_imports_maskmagic(generated):
    results, _, root = generated
    assert results["__maskmagic_loaded__"] is False
    for case, _ in CASES:
        source = (root / f"{case}.py").read_text()
        assert "maskmagic" not in "".join(
            line for line in source.splitlines() if line.startswith(("import", "from"))
        )


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_defines_the_model_and_every_op(generated, case):
    results, built_by_case, _ = generated
    names = set(results[case]["names"])
    assert "net" in names
    assert set(built_by_case[case].ops) <= names
    assert all(results[case]["callable"].values())


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_same_parameter_counts(generated, case):
    results, built_by_case, _ = generated
    built = built_by_case[case]
    assert results[case]["connected"] == _connected(built)
    assert results[case]["stored"] == sum(
        int(np.prod(v.shape)) for v in built.model.trainable_variables
    )


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_same_outputs_and_same_seeded_initial_weights(generated, case):
    results, _, _ = generated
    assert results[case]["output_diff"] < 1e-6
    assert results[case]["same_init"]  # seeded initializers carry over


@pytest.mark.parametrize("case", [c[0] for c in CASES if c[0] not in ("q2", "q3")])
def test_ops_train_and_touch_only_their_entries(generated, case):
    results, built_by_case, _ = generated
    assert set(results[case]["ops"]) == set(built_by_case[case].ops)
    for op_name, report in results[case]["ops"].items():
        assert report["outside_changed"] == [], (op_name, report)
        assert report["mask_equal"], op_name
        assert report["losses"][-1] < report["losses"][0], (op_name, report["losses"])
        # the same steps as maskmagic's op, from the same weights: the same numbers
        assert report["final_diff"] < 1e-6, (op_name, report["final_diff"])


@pytest.mark.parametrize("case", list(FROZEN))
def test_frozen_output_stays_bit_identical(generated, case):
    results, _, _ = generated
    for op_name in FROZEN[case]:
        assert results[case]["ops"][op_name]["frozen_identical"] is True


# ------------------------------------------------------------------ in-process checks


def _runtime_namespace() -> dict:
    from maskmagic.codegen.source import runtime

    namespace: dict = {}
    exec("import base64\nimport numpy as np\n" + runtime("unpack", "ones_at"), namespace)
    return namespace


def test_header_quotes_the_cell_and_source_compiles():
    built = build_spec(lang.parse(CELL_QUESTION1), {}, "net", seed=0)
    source = to_source(built, "net")
    assert source.startswith("# Generated by maskmagic")
    assert "#     train keep_first freeze=out[0]" in source
    assert "#     %%masked_net net" in source
    compile(source, "<generated>", "exec")
    assert "keep_first = MaskedTrainOp(" in source
    assert "keras.optimizers.SGD(learning_rate=0.1)" in source


def test_small_mask_is_a_literal_and_large_masks_are_packed():
    small = np.array([[0, 1], [1, 0], [0, 1]], dtype=bool)
    assert encode_mask(small) == "np.array([[0, 1], [1, 0], [0, 1]], dtype=bool)"
    assert encode_mask(np.ones((3, 4), bool)) == "np.ones((3, 4), dtype=bool)"
    rng = np.random.default_rng(0)
    dense = rng.random((20, 30)) < 0.5
    sparse = np.zeros((50, 60), dtype=bool)
    sparse[rng.integers(0, 50, 10), rng.integers(0, 60, 10)] = True
    assert dense.size > LITERAL_LIMIT
    runtime = _runtime_namespace()
    for mask, helper in ((dense, "_unpack("), (sparse, "_ones_at(")):
        expr = encode_mask(mask)
        assert expr.startswith(helper)
        assert np.array_equal(eval(expr, runtime), mask)


def test_huge_scipy_mask_is_encoded_without_densifying():
    n = 200_000  # 4e10 cells: densifying would need 40 GB
    mask = sp.csr_array((np.ones(3, dtype=bool), ([0, 5, n - 1], [1, 7, n - 1])), shape=(n, n))
    expr = encode_mask(mask)
    assert expr.startswith("_ones_at(")
    small = sp.csr_array(mask[:10, :10])
    assert np.array_equal(eval(encode_mask(small), _runtime_namespace()), small.toarray())


def test_ops_sharing_an_optimizer_share_it_in_the_source():
    built = build_spec(lang.parse(CELL_OPTIMIZERS), {}, "net", seed=0)
    source = to_source(built, "net")
    assert source.count("keras.optimizers.Adam(") == 1
    assert "_optimizer_2 = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)" in source
    assert "weight_decay=0.1" in source


def test_names_that_would_shadow_the_runtime_are_refused():
    built = build_spec(lang.parse(CELL_QUESTION2), {}, "net", seed=0)
    with pytest.raises(MaskMagicError, match="keras"):
        to_source(built, "keras")


def test_layer_names_that_shadow_helpers_get_safe_locals(tmp_path):
    cell = "input np 2\ndense keras 2 from=np\n"
    built = build_spec(lang.parse(cell), {}, "net", seed=0)
    namespace: dict = {}
    exec(to_source(built, "net"), namespace)
    model = namespace["net"]
    assert [layer.name for layer in model.layers] == ["np", "keras"]
    x = np.ones((1, 2), "float32")
    assert np.allclose(np.asarray(model(x)), np.asarray(built.model(x)))


# ------------------------------------------------------------------ only what the cell uses

QUICKSTART_OP2 = """
input x 3
dense hidden 4 activation=sigmoid
dense out 2
loss mse
optimizer sgd learning_rate=0.1
train train_op2 out[1]
"""


def test_quickstart_op_is_a_short_plain_program():
    # Catches a general runtime (masked layers, slot restoring, mask decoders) pasted into a
    # program that needs none of it: unmasked layers are plain Dense, SGD needs no restoring.
    built = build_spec(lang.parse(QUICKSTART_OP2), {}, "net", seed=None)
    source = to_source(built, "net", cell=QUICKSTART_OP2)
    assert len(source.splitlines()) <= 70, source
    assert source.count("keras.layers.Dense(") == 2
    absent_names = ("MaskedDense", "RestoringTrainOp", "_slots", "_MASKS", "base64", "_unpack")
    for absent in (*absent_names, "def apply"):  # plain SGD: no write-back hook
        assert absent not in source, absent
    assert "train_op2 = MaskedTrainOp(" in source
    assert '"out/kernel": np.array([[0, 1], [0, 1], [0, 1], [0, 1]], dtype=bool)' in source


def test_helpers_are_pasted_only_when_the_cell_needs_them_and_say_why():
    q2 = to_source(build_spec(lang.parse(CELL_QUESTION2), {}, "net", seed=0), "net")
    assert "class MaskedDense" in q2 and "layers with a mask: y." in q2.replace("\n# ", " ")
    assert "MaskedTrainOp" not in q2 and "import tensorflow" not in q2  # no ops: no step
    opt = to_source(build_spec(lang.parse(CELL_OPTIMIZERS), {}, "net", seed=0), "net")
    assert "class RestoringTrainOp" in opt and "def apply(self, grads):" in opt
    why = "RestoringTrainOp, for keep_first (Adam), mom (SGD), decay (AdamW)"
    assert why in opt.replace("\n# ", " ")
    for op in ("keep_first", "mom", "decay"):
        assert f"{op} = RestoringTrainOp(" in opt


def test_only_plain_sgd_skips_the_restoring_step():
    import keras

    from maskmagic.codegen.source import only_by_gradient

    class MySGD(keras.optimizers.SGD):
        pass

    assert only_by_gradient(keras.optimizers.SGD(0.1))
    assert not only_by_gradient(keras.optimizers.SGD(0.1, momentum=0.9))
    assert not only_by_gradient(keras.optimizers.SGD(0.1, weight_decay=0.01))
    assert not only_by_gradient(keras.optimizers.SGD(0.1, use_ema=True))
    assert not only_by_gradient(MySGD(0.1))  # an allow-list: a subclass may add state
    assert not only_by_gradient(keras.optimizers.Adam())


def test_generated_sources_pass_ruff(generated):
    # Catches unused imports or helpers and undefined names in what --code prints.
    _, _, root = generated
    paths = [str(root / f"{case}.py") for case, _ in CASES]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
