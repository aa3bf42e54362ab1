"""A catalogue of hostile input: every bad cell, mask, selector, mask file and widget message a
user can plausibly produce, one table row each.

Every row asserts three things: the error is a :class:`MaskMagicError`; its message names what
was expected *and* what was found (the two fragments of the row); and nothing changed: the
notebook namespace (cells run through a real IPython shell with ``%load_ext maskmagic``) and the
model already bound there (its weights and masks, compared bit for bit) are as before.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from IPython.core.interactiveshell import InteractiveShell

from maskmagic import masks
from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp

GOOD = """\
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,1],[0,1,1,0],[1,1,0,1]]
dense out 2
train t freeze=out[0]
"""
BASE = "input x 3\ndense hidden 4 activation=sigmoid\ndense out 2\n"


@dataclass(frozen=True)
class Bad:
    """One catalogue row: an input, and fragments the message must contain."""

    id: str
    given: object  # cell text, (magic line, cell text), or a function of the fixture
    expected: str  # what the message says was expected
    found: str  # what the message says was found

    def __str__(self) -> str:
        return self.id


def _check_message(exc: BaseException, row: Bad) -> None:
    assert isinstance(exc, MaskMagicError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert row.expected in message, f"expected-part {row.expected!r} missing from: {message}"
    assert row.found in message, f"found-part {row.found!r} missing from: {message}"


# ----------------------------------------------------------------------------- cells

CELLS = [
    # tokens, names and the graph
    Bad("units_word", "input x 3\ndense h four\n", "positive integer", "found 'four'"),
    Bad("units_zero", "input x 3\ndense h 0\n", "positive integer", "found '0'"),
    Bad("units_negative", "input x 3\ndense h -2\n", "positive integer", "found '-2'"),
    Bad("unknown_statement", "input x 3\nconv h 3\n", "expected one of: input, dense", "'conv'"),
    Bad("unknown_source", "input x 3\ndense h 2 from=nope\n", "layer defined above", "'nope'"),
    Bad("duplicate_layer", "input x 3\ndense h 2\ndense h 3\n", "its own name", "'h' is already"),
    Bad("duplicate_input", "input x 3\ninput x 4\ndense h 2\n", "its own name", "'x' is already"),
    Bad("duplicate_op", BASE + "train t\ntrain t out\n", "its own name", "'t' is already"),
    Bad("cycle", "input x 3\ndense a 2 from=b\ndense b 2 from=a\n", "defined above", "'b'"),
    Bad("self_loop", "input x 3\ndense a 2 from=a\n", "its own output", "from=a"),
    Bad("no_input", "dense h 2\n", "add an `input NAME SIZE`", "has no input"),
    Bad("empty_cell", "\n", "expected at least an `input`", "the cell is empty"),
    Bad("no_layers", "input x 3\n", "expected at least one `dense", "defines no layers"),
    Bad("input_size", "input x -3\ndense h 2\n", "a shape tuple", "found '-3'"),
    Bad("input_shape_zero", "input x (28, 0)\ndense h 2\n", "a shape tuple", "'(28, 0)'"),
    Bad("dropout_rate", "input x 3\ndropout d 1.5\ndense h 2\n", "in [0, 1)", "found '1.5'"),
    Bad("unknown_option", "input x 3\ndense h 2 colour=red\n", "expected one of: from", "'colour='"),
    Bad("duplicate_option", "input x 3\ndense h 2 use_bias=true use_bias=false\n", "once", "twice"),
    Bad("unclosed_bracket", "input x 3\ndense h 2 mask=[[1,0]\n", "expected ']'", "never closed"),
    Bad("impl", "input x 3\ndense h 2 impl=fast\n", "auto, dense or sparse", "found 'fast'"),
    # Keras names
    Bad("activation", "input x 3\ndense h 2 activation=sigmoidd\n", "activation name", "sigmoidd"),
    Bad("initializer", "input x 3\ndense h 2 kernel_initializer=nope\n", "initializer name", "nope"),
    Bad("loss", BASE + "loss msee\n", "a Keras loss name", "'msee'"),
    Bad("optimizer", BASE + "optimizer sgdd\n", "a Keras optimizer name", "'sgdd'"),
    Bad("optimizer_argument", BASE + "optimizer sgd learning_rate=fast\n", "float", "'fast'"),
    Bad("optimizer_keyword", BASE + "optimizer sgd speed=3\n", "arguments that keras.optimizers.SGD accepts", "{'speed': 3}"),
    # selectors and freeze
    Bad("selector_range", BASE + "train t out[5]\n", "valid: -2 to 1", "index 5"),
    Bad("selector_layer", BASE + "train t nope[0]\n", "dense or conv layers: hidden, out", "'nope'"),
    Bad("selector_variable", BASE + "train t out.weights\n", ".kernel or .bias", "'.weights'"),
    Bad("kernel_index_range", BASE + "train t out.kernel[9, 0]\n", "valid: -4 to 3", "index 9"),
    Bad("selector_unclosed", BASE + "train t out[\n", "expected ']'", "never closed"),
    Bad("freeze_everything", BASE + "train t freeze=out\n", "at least one parameter", "nothing"),
    Bad("freeze_selection", BASE + "train t out[0] freeze=out[0]\n", "at least one", "nothing"),
    Bad("freeze_range", BASE + "train t freeze=out[7]\n", "valid: -2 to 1", "index 7"),
    Bad("freeze_variable", BASE + "train t freeze=out.kernel\n", "such as out[0]", "'out.kernel'"),
    # mask expressions and their values
    Bad("mask_raises", "input x 3\ndense h 2 mask=1/0\n", "giving a 0/1 mask", "ZeroDivisionError"),
    Bad("mask_unknown_name", "input x 3\ndense h 2 mask=NOPE\n", "0/1 mask", "'NOPE' is not"),
    Bad("mask_shape", "input x 3\ndense h 2 mask=[[1,0],[0,1]]\n", "expected (3, 2)", "(2, 2)"),
    Bad("mask_binary", "input x 3\ndense h 2 mask=[[1,0],[0,2],[1,1]]\n", "0 or 1", "found 2"),
    Bad("mask_nan", "input x 3\ndense h 2 mask=np.full((3,2),np.nan)\n", "0 or 1", "found nan"),
    Bad("mask_inf", "input x 3\ndense h 2 mask=np.full((3,2),np.inf)\n", "0 or 1", "found inf"),
    Bad("mask_ragged", "input x 3\ndense h 2 mask=[[1,0],[1],[0,1]]\n", "row 0 has 2", "row 1 has 1"),
    Bad("mask_text", "input x 3\ndense h 2 mask='abc'\n", "0/1 numbers or booleans", "<U3"),
    Bad("mask_3d", "input x 3\ndense h 2 mask=np.ones((3,2,1))\n", "(3, 2)", "(3, 2, 1)"),
    Bad("bias_mask_shape", "input x 3\ndense h 2 bias_mask=[1,0,1]\n", "expected (2,)", "(3,)"),
    Bad("bias_without_bias", "input x 3\ndense h 2 use_bias=false bias_mask=[1,0]\n", "drop", "use_bias=False"),
    Bad("mask_file_missing", "input x 3\ndense h 2 mask=from_csv('nope.csv')\n", "existing file", "'nope.csv' not found"),
    # the magic line
    Bad("net_name", ("1net --quiet", BASE), "Python identifier", "'1net'"),
    Bad("op_named_like_net", ("t --quiet", BASE + "train t\n"), "other than 't'", "same name as the net"),
    Bad("unknown_flag", ("net --loud", BASE), "expected %%masked_net NAME", "--loud"),
    Bad("seed_not_int", ("net --seed x", BASE), "[--seed N]", "'x'"),
    # inputs Keras or TensorFlow would refuse deep inside (each was a traceback shown as a bug)
    Bad("initializer_needs_args", "input x 3\ndense h 2 kernel_initializer=constant\n", "initializer name", "KeyError"),
    Bad("initializer_abstract", "input x 3\ndense h 2 kernel_initializer=Initializer\n", "initializer name", "abstract base class"),
    Bad("optimizer_needs_args", BASE + "optimizer LossScaleOptimizer\n", "a Keras optimizer name", "inner_optimizer"),
    Bad("loss_abstract", BASE + "loss Loss\n", "a Keras loss name", "'Loss'"),
    Bad("loss_option", BASE + "loss mse reduction=foo\n", "a Keras loss name", "Received: reduction=foo"),
    Bad("dtype_int", "input x 3\ndense h 2 dtype=int32\n", "a float dtype", "'int32'"),
    Bad("dtype_string", "input x 3\ndense h 2 dtype=string\n", "a float dtype", "'string'"),
    Bad("units_too_many", "input x 3\ndense h 100000000000\n", "at most 2147483647", "100000000000"),
    Bad("input_too_large", "input x 10000000000\ndense h 2\n", "at most 2147483647", "10000000000"),
    Bad("kernel_too_large", "input x (9, 3)\nconv1d c 2 kernel=10000000000\ndense h 2\n", "at most 2147483647", "10000000000"),
    Bad("select_not_trainable", "input x 3\ndense h 2 trainable=false\ndense out 2\ntrain t2 h\n", "at least one trainable weight", "holds no trainable variable"),
    # names Python could not reach, seeds Keras could not take
    Bad("name_not_nfkc", BASE + "train \ufb01rst\n", "Python identifier", "Python reads it as 'first'"),
    Bad("net_name_not_nfkc", ("\ufb01rst --quiet", BASE), "Python identifier", "Python reads it as 'first'"),
    Bad("seed_range", ("net --seed 99999999999999999999", BASE), "from 0 to 4294967295", "99999999999999999999"),
    Bad("seed_negative", ("net --seed -1", BASE), "from 0 to 4294967295", "received -1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maskmagic")
    assert shell.run_cell(f"%%masked_net net --quiet --seed 0\n{GOOD}").success
    shell.user_ns["A"] = np.eye(3, 2)
    yield shell
    InteractiveShell.clear_instance()


def _namespace(shell) -> dict[str, int]:
    hidden = set(shell.user_ns_hidden)
    return {k: id(v) for k, v in shell.user_ns.items() if k not in hidden and not k.startswith("_")}


def _model_state(model: keras.Model) -> dict[str, np.ndarray]:
    """Every variable (weights and masks) and every layer's mask, as numpy copies."""
    state = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.variables}
    for layer in model.layers:
        if isinstance(layer, MaskedDense):
            state[f"{layer.name}/get_mask"] = np.asarray(layer.get_mask()).copy()
            state[f"{layer.name}/get_bias_mask"] = layer.get_bias_mask().copy()
    return state


def _assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


@pytest.mark.parametrize("row", CELLS, ids=str)
def test_bad_cell(shell, row):
    line, cell = row.given if isinstance(row.given, tuple) else ("net --quiet", row.given)
    names, net = _namespace(shell), shell.user_ns["net"]
    state, op = _model_state(net), shell.user_ns["t"]
    result = shell.run_cell(f"%%masked_net {line}\n{cell}", store_history=False)
    _check_message(result.error_in_exec, row)
    assert _namespace(shell) == names
    assert shell.user_ns["net"] is net and shell.user_ns["t"] is op
    _assert_same_state(state, _model_state(net))


# ----------------------------------------------------------------------------- Python API


def _raising(_):
    raise ZeroDivisionError("division by zero")


API = [
    # masks through MaskedDense and masks.validate; the layer is `hidden` (3 inputs, 4 units)
    Bad("set_mask_shape", lambda m: _hidden(m).set_mask(np.ones((4, 3))), "expected (3, 4)", "(4, 3)"),
    Bad("set_mask_binary", lambda m: _hidden(m).set_mask(np.full((3, 4), 0.5)), "0 or 1", "found 0.5"),
    Bad("set_mask_nan", lambda m: _hidden(m).set_mask(np.full((3, 4), np.nan)), "0 or 1", "found nan"),
    Bad("set_mask_inf", lambda m: _hidden(m).set_mask(np.full((3, 4), np.inf)), "0 or 1", "found inf"),
    Bad("set_mask_negative_inf", lambda m: _hidden(m).set_mask([[1, 0, 1, -np.inf]] * 3), "0 or 1", "-inf"),
    Bad("set_mask_ragged", lambda m: _hidden(m).set_mask([[1, 0, 1, 1], [1, 0, 1]]), "row 0 has 4", "row 1 has 3"),
    Bad("set_mask_object", lambda m: _hidden(m).set_mask(np.array([[1, None, 0, 1]] * 3)), "0/1 numbers", "found None"),
    Bad("set_mask_text", lambda m: _hidden(m).set_mask([["1", "0", "1", "0"]] * 3), "0/1 numbers", "dtype <U1"),
    Bad("set_mask_complex", lambda m: _hidden(m).set_mask(np.ones((3, 4), complex)), "0/1 numbers", "complex128"),
    Bad("set_mask_function_raises", lambda m: _hidden(m).set_mask(_raising), "a function of the shape", "ZeroDivisionError"),
    Bad("set_mask_sparse_binary", lambda m: _hidden(m).set_mask(sp.csr_array(np.full((3, 4), 2.0))), "0 or 1", "found 2.0"),
    Bad("set_mask_sparse_shape", lambda m: _hidden(m).set_mask(sp.csr_array(np.ones((2, 4)))), "expected (3, 4)", "(2, 4)"),
    Bad("set_mask_scalar", lambda m: _hidden(m).set_mask(1), "expected (3, 4)", "shape ()"),
    Bad("set_bias_mask_shape", lambda m: _hidden(m).set_bias_mask([1, 0, 1]), "expected (4,)", "(3,)"),
    Bad("set_bias_mask_nan", lambda m: _hidden(m).set_bias_mask([1, np.nan, 1, 1]), "0 or 1", "found nan"),
    Bad("validate_3d", lambda m: masks.validate(np.ones((3, 4, 1)), (3, 4)), "expected (3, 4)", "(3, 4, 1)"),
    Bad("validate_bad_shape_argument", lambda m: masks.validate(np.ones((3, 4)), (3, -4)), "(inputs, units)", "(3, -4)"),
    Bad("layer_units", lambda m: MaskedDense(0), "positive integer", "received 0"),
    Bad("layer_impl", lambda m: MaskedDense(2, impl="fast"), "one of auto, dense, sparse", "'fast'"),
    Bad("layer_mask_units", lambda m: MaskedDense(2, mask=np.ones((3, 5))), "(inputs, 2)", "(3, 5)"),
    # selectors through TrainOp
    Bad("select_range", lambda m: TrainOp(m, select="out[5]"), "has 2 units (valid: -2 to 1)", "index 5 is out of range in 'out[5]'"),
    Bad("select_layer", lambda m: TrainOp(m, select="nope"), "layers with parameters: hidden, out", "'nope'"),
    Bad("select_kernel_range", lambda m: TrainOp(m, select="out.kernel[9, 0]"), "shape (4, 2)", "index 9"),
    Bad("select_empty_slice", lambda m: TrainOp(m, select="out[1:1]"), "has 2 units", "selects nothing"),
    Bad("select_not_text", lambda m: TrainOp(m, select=3), "a selector string such as 'out[1]'", "received 3"),
    Bad("select_syntax", lambda m: TrainOp(m, select="out[0]]"), "no bracket is open", "unmatched ']'"),
    Bad("freeze_names_variable", lambda m: TrainOp(m, freeze="out.kernel"), "units such as out[0]", "'out.kernel'"),
    Bad("freeze_leaves_nothing", lambda m: TrainOp(m, select="out[0]", freeze="out[0]"), "at least one", "nothing trainable"),
    Bad("masked_selection_only", lambda m: TrainOp(m, select="hidden.kernel[1, 0]"), "mask is 1", "only masked-out"),
    Bad("update_mask_unknown", lambda m: TrainOp(m).update_mask("no/such"), "expected one of", "'no/such'"),
    Bad("fit_lengths", lambda m: TrainOp(m).fit(np.ones((4, 3)), np.ones((3, 2)), verbose=False), "same number", "4 and 3"),
]  # fmt: skip


def _hidden(model: keras.Model) -> MaskedDense:
    return model.get_layer("hidden")


@pytest.fixture
def model():
    x = keras.Input((3,), name="x")
    mask = [[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]]
    h = MaskedDense(4, mask=mask, bias_mask=[1, 0, 1, 1], activation="sigmoid", name="hidden")(x)
    return keras.Model(x, MaskedDense(2, name="out")(h), name="net")


@pytest.mark.parametrize("row", API, ids=str)
def test_bad_python_api_input(model, row):
    before = _model_state(model)
    with pytest.raises(Exception) as info:
        row.given(model)
    _check_message(info.value, row)
    _assert_same_state(before, _model_state(model))


# ----------------------------------------------------------------------------- mask files


def _write(path: Path, name: str, content: bytes | str | Callable[[Path], None]) -> Path:
    target = path / name
    if callable(content):
        content(target)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    return target


def _pickled(path: Path) -> None:
    path.write_bytes(pickle.dumps(np.ones((2, 2))))


def _object_npy(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _object_npz(path: Path) -> None:
    np.savez(path, mask=np.array([None, 1], dtype=object))


def _wrong_key(path: Path) -> None:
    np.savez(path, weights=np.ones((2, 2)))


def _half(path: Path) -> None:
    np.save(path, np.array([[0.5, 1.0]]))


def _cube(path: Path) -> None:
    np.save(path, np.ones((2, 2, 2)))


FILES = [
    Bad("empty_csv", ("empty.csv", ""), "rows of comma-separated 0/1 values", "is empty"),
    Bad("blank_csv", ("blank.csv", "\n  \n\n"), "rows of comma-separated 0/1 values", "is empty"),
    Bad("ragged_csv", ("ragged.csv", "1,0,1\n0,1\n"), "expected 3 like row 1", "row 2 has 2 values"),
    Bad("two_in_csv", ("two.csv", "1,0\n0,2\n"), "expected 0 or 1", "found '2'"),
    Bad("nan_in_csv", ("nan.csv", "1,nan\n0,1\n"), "expected 0 or 1", "found 'nan'"),
    Bad("half_in_csv", ("half.csv", "1,0.5\n0,1\n"), "expected 0 or 1", "found '0.5'"),
    Bad("header_only_csv", ("header.csv", ",a,b\n"), "0/1 rows under it", "no data rows"),
    Bad("latin1_csv", ("latin.csv", "1,0\n\xe9,1\n".encode("latin-1")), "a UTF-8 CSV", "not UTF-8"),
    Bad("pickled_npy", ("pickled.npy", _pickled), "save a 0/1 numeric array", "holds a pickle"),
    Bad("object_npy", ("object.npy", _object_npy), "save a 0/1 numeric array", "object array"),
    Bad("object_npz", ("object.npz", _object_npz), "save a 0/1 numeric array", "object array"),
    Bad("missing_file", ("missing.npz", None), "load reads .npy, .npz, .csv", "not found"),
    Bad("wrong_extension", ("mask.txt", "1,0\n"), "accepted extensions are .npy, .npz, .csv", "mask.txt"),
    Bad("corrupt_npz", ("corrupt.npz", b"PK\x03\x04garbage"), "expected a .npz file", "not a zip file"),
    Bad("npz_without_mask", ("weights.npz", _wrong_key), "expected a 'mask' array", "found ['weights']"),
    Bad("non_binary_npy", ("half.npy", _half), "must be 0 or 1", "found 0.5"),
    Bad("three_d_npy", ("cube.npy", _cube), "1-D (units,) or 2-D", "(2, 2, 2)"),
]  # fmt: skip


@pytest.mark.parametrize("row", FILES, ids=str)
def test_bad_mask_file(model, tmp_path, row):
    name, content = row.given
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    before = _model_state(model)
    with pytest.raises(Exception) as info:
        _hidden(model).set_mask(masks.load(path))
    _check_message(info.value, row)
    _assert_same_state(before, _model_state(model))


SAVES = [
    Bad("save_extension", ("mask.txt", np.ones((2, 2))), "accepted extensions", "mask.txt"),
    Bad("save_csv_1d", ("bias.csv", np.ones(3)), "non-empty 2-D matrix", "shape (3,)"),
    Bad("save_non_binary", ("mask.npy", [[2, 0]]), "must be 0 or 1", "found 2"),
    Bad("save_missing_folder", ("no/such/dir/mask.npz", np.ones((2, 2))), "cannot write", "No such file"),
]  # fmt: skip


@pytest.mark.parametrize("row", SAVES, ids=str)
def test_bad_mask_save(tmp_path, row):
    name, mask = row.given
    with pytest.raises(Exception) as info:
        masks.save(tmp_path / name, mask)
    _check_message(info.value, row)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- widget messages


def test_widget_message_of_the_wrong_length_is_rejected_by_the_editor(model):
    """The editor's front-end message handler: a ``replace`` bitmap one byte short.

    A message from the browser cannot raise into the notebook, so the editor refuses it with a
    warning and a ``reject`` message to the front end, both naming what was expected and found.
    """
    from maskmagic.masks.check import pack_bits
    from maskmagic.widgets.editor import MaskEditor

    editor = MaskEditor(_hidden(model))
    sent: list[dict] = []
    editor.send = lambda content, buffers=None: sent.append(content)
    before, mask_before = _model_state(model), editor.mask.copy()
    content = {"type": "edit", "client": "c1", "id": 1, "shape": [3, 4], "op": "replace"}
    short = pack_bits(np.ones((3, 4), bool))[:1]
    with pytest.warns(UserWarning) as warned:
        editor._on_front_message(editor, content, [short])
    message = str(warned[0].message)
    assert "expected 2" in message and "has 1 bytes" in message, message
    assert sent and sent[-1]["type"] == "reject" and "expected 2" in sent[-1]["reason"]
    np.testing.assert_array_equal(editor.mask, mask_before)
    _assert_same_state(before, _model_state(model))


def test_widget_bits_of_the_wrong_length_are_a_mask_error(model):
    """The codec behind every bit-packed mask message raises a MaskMagicError."""
    from maskmagic.masks.check import pack_bits, unpack_bits

    row = Bad("widget_bits", None, "expected 2 for shape (3, 4)", "has 1 bytes")
    before = _model_state(model)
    good = pack_bits(np.ones((3, 4), bool))
    with pytest.raises(Exception) as info:
        _hidden(model).set_mask(unpack_bits(good[:1], (3, 4)))
    _check_message(info.value, row)
    _assert_same_state(before, _model_state(model))


def test_catalogue_size():
    rows = CELLS + API + FILES + SAVES
    assert len(rows) + 2 >= 40
    assert len({row.id for row in rows}) == len(rows)
