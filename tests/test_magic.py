"""The %%masked_net magic in a real IPython shell: binding, display, errors, namespace safety."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

from maskmagic.training import TrainOp

from .cells import QUESTION1


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maskmagic")
    yield shell
    InteractiveShell.clear_instance()


def run(shell, line: str, cell: str):
    return shell.run_cell(f"%%masked_net {line}\n{cell}", store_history=False)


def test_cell_binds_model_and_every_op(shell):
    result = run(shell, "net --quiet", QUESTION1)
    assert result.success
    ns = shell.user_ns
    assert ns["net"].name == "net"
    for name in ("train_op_all", "train_op12", "train_op2", "keep_first"):
        assert isinstance(ns[name], TrainOp) and ns[name].model is ns["net"]
    assert ns["train_op2"].parameter_count() == 5


def test_mask_expressions_see_the_namespace_and_constructors(shell):
    shell.user_ns["A"] = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    shell.user_ns["B"] = [1, 0, 1]
    cell = "input x 5\ndense h 3 activation=tanh mask=A bias_mask=B\ndense out 1 mask=random(0.5, seed=0)\n"
    assert run(shell, "q3 --quiet", cell).success
    layer = shell.user_ns["q3"].get_layer("h")
    np.testing.assert_array_equal(layer.get_mask(), shell.user_ns["A"].astype(bool))
    np.testing.assert_array_equal(layer.get_bias_mask(), [True, False, True])


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("input x 3\ndense h four\n", ["line 2", "column 9", "positive integer", "four"]),
        ("input x 3\ndense h 2 mask=NOPE\n", ["line 2", "NameError", "NOPE"]),
        ("input x 3\ndense h 2 mask=[[1,0],[0,1]]\n", ["line 2", "(2, 2)", "(3, 2)"]),
        ("input x 3\ndense h 2 mask=[[1,0],[0,1],[2,0]]\n", ["0 or 1", "2"]),
        ("input x 3\ndense h 2\ntrain t freeze=h\n", ["line 3", "leaves nothing trainable"]),
        ("input x 3\ndense h 2\ntrain net h\n", ["line 3", "same name as the net"]),
        ("", ["empty"]),
    ],
)
def test_bad_cell_shows_one_short_message_and_changes_nothing(shell, capsys, cell, words):
    shell.user_ns["net"] = sentinel = object()
    shell.user_ns["t"] = "untouched"
    before = dict(shell.user_ns)
    result = run(shell, "net", cell)
    assert not result.success
    out = capsys.readouterr()
    shown = out.out + out.err
    for word in words:
        assert word in shown
    assert "Traceback" not in shown and "File " not in shown
    assert shell.user_ns["net"] is sentinel and shell.user_ns["t"] == "untouched"
    assert set(shell.user_ns) == set(before)


@pytest.mark.parametrize("line", ["", "1net", "net --sed 3", "net --seed x", "net extra"])
def test_bad_magic_arguments_name_the_usage(shell, capsys, line):
    result = run(shell, line, "input x 3\ndense h 2\n")
    assert not result.success
    shown = "".join(capsys.readouterr())
    assert "%%masked_net NAME" in shown and "Traceback" not in shown


def test_seed_makes_weights_reproducible(shell):
    cell = "input x 3\ndense h 4\ndense out 2\n"
    run(shell, "a --quiet --seed 3", cell)
    run(shell, "b --quiet --seed 3", cell)
    run(shell, "c --quiet --seed 4", cell)
    ns = shell.user_ns
    wa, wb, wc = (ns[n].get_layer("h").kernel.numpy() for n in "abc")
    np.testing.assert_array_equal(wa, wb)
    assert np.any(wa != wc)


def test_summary_is_displayed_unless_quiet(shell, capsys):
    result = shell.run_cell(
        "%%masked_net shown\ninput x 3\ndense h 4\ndense out 2\ntrain t out[1]\n"
    )
    assert result.success
    shown = capsys.readouterr().out
    assert "h" in shown and "t" in shown
    run(shell, "quiet --quiet", "input x 3\ndense h 4\n")
    assert capsys.readouterr().out == ""


def test_code_prints_plain_keras_source(shell, capsys):
    assert run(shell, "coded --code --quiet", QUESTION1).success
    source = capsys.readouterr().out
    assert "import tensorflow" in source
    assert "import maskmagic" not in source and "from maskmagic" not in source
    assert "coded =" in source and "keep_first =" in source


def test_help_shows_the_language(shell):
    info = shell.object_inspect("%%masked_net")
    assert "dense NAME UNITS" in info["docstring"] and "freeze=" in info["docstring"]


def test_failing_code_generation_binds_nothing(shell, capsys):
    shell.user_ns["np"] = sentinel = object()
    result = run(
        shell, "np --code", "input x 3\ndense h 2\n"
    )  # `np` would shadow the source's numpy
    assert not result.success
    assert shell.user_ns["np"] is sentinel
    assert "Traceback" not in "".join(capsys.readouterr())


def test_mask_expressions_may_use_constructors_inside_comprehensions(shell):
    cell = "input x 3\ndense h 2 mask=np.stack([ones((2,)) for _ in range(3)]) bias_mask=(lambda: eye(2)[0])()\n"
    shell.user_ns["np"] = np
    assert run(shell, "comp --quiet", cell).success
    assert shell.user_ns["comp"].get_layer("h").get_mask().all()
    np.testing.assert_array_equal(
        shell.user_ns["comp"].get_layer("h").get_bias_mask(), [True, False]
    )


HOLD_CELL = """\
input x 3
dense hidden 4 activation=sigmoid
dense out 2
loss mse
optimizer sgd learning_rate=0.1 momentum=0.9
train refine hold=out[0]
train tune hold=out[0],hidden[3] hold_on=x_ref hold_tol=1e-5
"""


def test_hold_cell_binds_ops_that_hold(shell):
    from .cells import SEED_X, SEED_Y

    x, y = np.array(SEED_X, "float32"), np.array(SEED_Y, "float32")
    shell.user_ns["x_ref"] = x[:3]
    assert run(shell, "held --quiet", HOLD_CELL).success
    net, refine, tune = (shell.user_ns[k] for k in ("held", "refine", "tune"))
    assert tune.hold.tol == 1e-5 and tune.hold.reference.shape == (3, 3)
    assert refine.hold.reference is None and refine.hold.tol == 1e-6
    before = net(x).numpy()[:, 0]
    for _ in range(5):
        refine(x, y)
    assert np.abs(net(x).numpy()[:, 0] - before).max() <= 1e-5
    assert tune.hold_report is None and refine.hold_report.constraints == 8


@pytest.mark.parametrize(
    ("hold_on", "words"),
    [
        ("NOPE", ["line 7", "column 42", "hold_on=NOPE", "NameError"]),
        ("x_ref[:, :2]", ["line 7", "column 42", "shape (samples, 3)", "(8, 2)"]),
    ],
)
def test_bad_hold_on_is_a_short_message_and_binds_nothing(shell, capsys, hold_on, words):
    from .cells import SEED_X

    shell.user_ns["x_ref"] = np.array(SEED_X, "float32")
    shell.user_ns.pop("badhold", None)
    result = run(shell, "badhold", HOLD_CELL.replace("hold_on=x_ref", f"hold_on={hold_on}"))
    assert not result.success
    shown = "".join(capsys.readouterr())
    for word in words:
        assert word in shown
    assert "Traceback" not in shown and "badhold" not in shell.user_ns


def test_hold_shows_in_summary_and_refuses_code(shell, capsys):
    shell.user_ns["x_ref"] = np.zeros((4, 3), "float32")
    assert run(shell, "shown", HOLD_CELL).success
    text = capsys.readouterr().out
    assert "holds" in text and "out[0] on each batch, tol 1e-06" in text
    assert "out[0], hidden[3] on 4 inputs, tol 1e-05" in text
    shell.user_ns.pop("coded_hold", None)
    assert not run(shell, "coded_hold --code --quiet", HOLD_CELL).success
    shown = "".join(capsys.readouterr())
    assert "line 6" in shown and "--code cannot write train op 'refine': hold=" in shown
    assert "coded_hold" not in shell.user_ns


def test_help_shows_hold(shell):
    info = shell.object_inspect("%%masked_net")
    assert "hold=UNITS [hold_on=EXPR] [hold_tol=X]" in info["docstring"]


def test_a_maskmagic_bug_is_shown_as_one_with_its_traceback(shell, capsys, monkeypatch):
    """A fault inside maskmagic is not the user's mistake: the header says it is a maskmagic
    bug, the traceback follows, and nothing is bound. Bug caught: internal errors reported as
    ``line 4, column 1: train op 'keep' failed: AttributeError`` (blaming the cell)."""
    from maskmagic.training import reach

    def broken(*args, **kwargs):
        raise AttributeError("injected fault")

    monkeypatch.setattr(reach, "influencers", broken)
    shell.user_ns["buggy"] = sentinel = object()
    shell.user_ns.pop("keep", None)
    capsys.readouterr()
    result = run(
        shell, "buggy --quiet", "input x 3\ndense h 2\ndense out 2\ntrain keep freeze=out[0]\n"
    )
    assert not result.success and isinstance(result.error_in_exec, AttributeError)
    shown = "".join(capsys.readouterr())
    assert "maskmagic bug: AttributeError raised inside maskmagic, not by your cell" in shown
    assert shown.index("maskmagic bug") < shown.index("Traceback") < shown.index("injected fault")
    assert "line 4, column" not in shown
    assert shell.user_ns["buggy"] is sentinel and "keep" not in shell.user_ns


def test_from_model_cell_binds_the_converted_model_and_refuses_code(shell, capsys):
    # Catches: from_model cells failing in the magic (summary, binding), or --code writing
    # source for a model whose source maskmagic does not have.
    import keras

    from maskmagic.layers import MaskedDense

    shell.user_ns["plain"] = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="h"), keras.layers.Dense(2, name="o")]
    )
    cell = "from_model plain\ntrain keep freeze=o[0]\n"
    assert run(shell, "converted", cell).success
    assert isinstance(shell.user_ns["converted"].get_layer("h"), MaskedDense)
    assert isinstance(shell.user_ns["keep"], TrainOp)
    assert "MaskedDense" in capsys.readouterr().out
    assert not run(shell, "coded_base --code --quiet", cell).success
    shown = "".join(capsys.readouterr())
    assert "--code cannot write source for a from_model cell" in shown
    assert "coded_base" not in shell.user_ns and "Traceback" not in shown
