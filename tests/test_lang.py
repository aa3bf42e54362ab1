"""Tests for maskmagic.lang: the pure parser of the ``%%masked_net`` cell language."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskmagic import lang
from maskmagic.errors import CellError, MaskMagicError
from maskmagic.lang import (
    HELP,
    KEYWORDS,
    DenseSpec,
    DropoutSpec,
    InputSpec,
    Location,
    LossSpec,
    NetSpec,
    OptimizerSpec,
    SelectorSpec,
    TrainSpec,
    parse,
)

from .cells import QUESTION1

BASE = "input x 3\ndense h 4\ndense out 2\n"


def cell(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def error(text: str) -> CellError:
    with pytest.raises(CellError) as info:
        parse(text)
    return info.value


def option(value: str) -> object:
    """The converted value of an ordinary option, through an optimizer statement."""
    return dict(parse(BASE + f"optimizer sgd v={value}").optimizer.options)["v"]


def selector(text: str) -> SelectorSpec:
    net = parse("input x 3\ndense h 4\ndense out 5\ntrain op " + text)
    (spec,) = net.train[0].select
    return spec


# -- the three cells of DESIGN.md ----------------------------------------------------------------


def test_design_example_keep_one_output_fixed():
    net = parse(QUESTION1)
    assert net.inputs == (InputSpec("x", (3,), Location(1, 1, "input x 3")),)
    hidden, out = net.layers
    assert (hidden.name, hidden.units, hidden.sources, hidden.activation) == (
        "hidden",
        4,
        ("x",),
        "sigmoid",
    )
    assert (out.name, out.units, out.sources, out.activation) == ("out", 2, ("hidden",), None)
    for layer in (hidden, out):
        assert layer.mask is None and layer.bias_mask is None
        assert layer.use_bias is True and layer.impl == "auto"
        assert layer.kernel_initializer is None and layer.options == ()
    assert net.loss == LossSpec("mse", (), Location(4, 1, "loss mse"))
    assert net.optimizer.name == "sgd"
    assert net.optimizer.options == (("learning_rate", 0.1),)
    assert [op.name for op in net.train] == [
        "train_op_all",
        "train_op12",
        "train_op2",
        "keep_first",
    ]
    everything, op12, op2, keep = net.train
    assert everything.select == () and everything.freeze == () and everything.optimizer is None
    assert [(s.layer, s.variable, s.index) for s in op12.select] == [("out", None, None)]
    assert [(s.layer, s.variable, s.index) for s in op2.select] == [("out", None, (1,))]
    assert keep.select == ()
    assert [(s.text, s.layer, s.index) for s in keep.freeze] == [("out[0]", "out", (0,))]
    assert keep.loc == Location(9, 1, "train keep_first freeze=out[0]")
    assert keep.freeze[0].loc.column == len("train keep_first freeze=") + 1
    assert net.outputs == ("out",)
    assert net.layer_names() == ("hidden", "out")


def test_design_example_selectively_zero_weights():
    net = parse("input x 3\ndense y 2 activation=relu mask=[[0,1],[1,0],[0,1]]\nloss mse")
    (y,) = net.layers
    assert y.mask == "[[0,1],[1,0],[0,1]]"
    assert y.activation == "relu" and y.units == 2 and y.sources == ("x",)
    assert net.loss.name == "mse" and net.optimizer is None and net.train == ()
    assert y.loc_of("mask") == Location(2, 32, y.loc.source)


def test_design_example_specify_connections():
    net = parse("input x 5\ndense h 3 activation=tanh mask=A bias_mask=B\ndense out 1")
    h, out = net.layers
    assert (h.mask, h.bias_mask, h.activation) == ("A", "B", "tanh")
    assert out.sources == ("h",) and out.mask is None
    assert net.outputs == ("out",) and net.loss is None


# -- statements and options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shape"),
    [("3", (3,)), ("(28, 28, 1)", (28, 28, 1)), ("(28,28,1)", (28, 28, 1)), ("(5,)", (5,))],
)
def test_input_sizes(size, shape):
    net = parse(f"input img {size}\ndense out 2")
    assert net.inputs[0].shape == shape and net.inputs[0].name == "img"


def test_dense_every_option():
    net = parse(
        "input x 3\n"
        "dense h 4 activation=relu use_bias=false kernel_initializer=he_normal impl=sparse "
        "mask=random(0.1, seed=0) kernel_regularizer=l2 dtype=float64 trainable=false "
        "bias_initializer=zeros"
    )
    (h,) = net.layers
    assert isinstance(h, DenseSpec)
    assert h.activation == "relu" and h.use_bias is False
    assert h.kernel_initializer == "he_normal" and h.impl == "sparse"
    assert h.mask == "random(0.1, seed=0)" and h.bias_mask is None
    assert h.options == (
        ("kernel_regularizer", "l2"),
        ("dtype", "float64"),
        ("trainable", False),
        ("bias_initializer", "zeros"),
    )
    assert h.loc_of("impl").column == h.loc.source.index("sparse") + 1
    assert h.loc_of("missing") == h.loc


@pytest.mark.parametrize("impl", ["auto", "dense", "sparse"])
def test_dense_impl_values(impl):
    assert parse(f"input x 3\ndense h 4 impl={impl}").layers[0].impl == impl


def test_activation_none_and_quoted():
    net = parse("input x 3\ndense a 4 activation=none\ndense b 4 activation='softmax'")
    assert [layer.activation for layer in net.layers] == [None, "softmax"]


def test_dropout_and_sources():
    net = parse("input x 3\ndense h 4\ndropout d .5\ndropout e 0 from=x\ndense out 2 from=d")
    d, e = net.layers[1], net.layers[2]
    assert isinstance(d, DropoutSpec) and d.rate == 0.5 and d.sources == ("h",)
    assert e.rate == 0.0 and isinstance(e.rate, float) and e.sources == ("x",)
    assert net.layers[3].sources == ("d",)
    assert net.outputs == ("e", "out")


def test_from_several_sources_and_default_previous_statement():
    net = parse(
        cell(
            """
            input a 3
            input b 2
            dense h 4
            dense g 5 from=a,b
            dense out 1 from=h,g,a
            dense aux 2 from=h
            """
        )
    )
    assert net.find("h").sources == ("b",)  # the previous statement's layer, here an input
    assert net.find("g").sources == ("a", "b")
    assert net.find("out").sources == ("h", "g", "a")
    assert net.outputs == ("out", "aux")
    assert net.layer_names() == ("h", "g", "out", "aux")
    assert isinstance(net.find("a"), InputSpec)
    with pytest.raises(KeyError):
        net.find("nope")


def test_loss_and_optimizer_options_and_call_form():
    net = parse(
        BASE
        + "loss binary_crossentropy(from_logits=true) reduction=sum\noptimizer adam(learning_rate=1e-3, beta_1=0.8)"
    )
    assert net.loss.name == "binary_crossentropy"
    assert net.loss.options == (("from_logits", True), ("reduction", "sum"))
    assert isinstance(net.optimizer, OptimizerSpec) and net.optimizer.name == "adam"
    assert net.optimizer.options == (("learning_rate", 0.001), ("beta_1", 0.8))
    assert parse(BASE + "optimizer adam()").optimizer.options == ()


def test_train_optimizer_and_loss_options():
    net = parse(
        BASE
        + "train a out optimizer=adam\n"
        + "train b out[1] optimizer=adam(learning_rate=0.01) loss=huber(delta=2)\n"
        + "train c *"
    )
    a, b, c = net.train
    assert a.optimizer == OptimizerSpec("adam", (), Location(4, 23, "train a out optimizer=adam"))
    assert b.optimizer.name == "adam" and b.optimizer.options == (("learning_rate", 0.01),)
    ((key, loss),) = b.options
    assert key == "loss" and isinstance(loss, LossSpec)
    assert (loss.name, loss.options) == ("huber", (("delta", 2),))
    assert c.select == () and c.options == () and isinstance(c, TrainSpec)


def test_train_freeze_lists():
    net = parse(
        BASE + "train a freeze=out[0],h[3]\ntrain b h.kernel freeze=out\ntrain c freeze=out[0:2]"
    )
    a, b, c = net.train
    assert [(s.layer, s.variable, s.index) for s in a.freeze] == [
        ("out", None, (0,)),
        ("h", None, (3,)),
    ]
    assert a.freeze[1].loc.column == len("train a freeze=out[0],") + 1
    assert [(s.layer, s.index) for s in b.freeze] == [("out", None)]
    assert [(s.layer, s.variable) for s in b.select] == [("h", "kernel")]
    assert c.freeze[0].index == (slice(0, 2, None),)


def test_train_several_selectors_and_op_name_may_equal_layer_name():
    net = parse(BASE + "train out h.bias out.kernel[0, 1] out[1]")
    assert net.train[0].name == "out"
    assert [s.text for s in net.train[0].select] == ["h.bias", "out.kernel[0, 1]", "out[1]"]


def test_train_may_name_a_layer_defined_later():
    net = parse("input x 3\ntrain early out[1]\ndense out 2")
    assert net.train[0].select[0].layer == "out"


@pytest.mark.parametrize(
    ("text", "layer", "variable", "index"),
    [
        ("out", "out", None, None),
        ("out.kernel", "out", "kernel", None),
        ("out.bias", "out", "bias", None),
        ("out[1]", "out", None, (1,)),
        ("out[-1]", "out", None, (-1,)),
        ("out[0:2]", "out", None, (slice(0, 2, None),)),
        ("out[::2]", "out", None, (slice(None, None, 2),)),
        ("out[1:-1:2]", "out", None, (slice(1, -1, 2),)),
        ("out[::-1]", "out", None, (slice(None, None, -1),)),
        ("out[-3:]", "out", None, (slice(-3, None, None),)),
        ("out.kernel[2, 1]", "out", "kernel", (2, 1)),
        ("out.kernel[:, 1]", "out", "kernel", (slice(None), 1)),
        ("out.kernel[-1,-2]", "out", "kernel", (-1, -2)),
        ("out.kernel[0:2, ::2]", "out", "kernel", (slice(0, 2), slice(None, None, 2))),
        ("out.kernel[3]", "out", "kernel", (3,)),
        ("out.bias[-5]", "out", "bias", (-5,)),
        ("h.kernel[ 1 : 3 ]", "h", "kernel", (slice(1, 3),)),
    ],
)
def test_selector_forms(text, layer, variable, index):
    spec = selector(text)
    assert (spec.text, spec.layer, spec.variable, spec.index) == (text, layer, variable, index)
    assert spec.loc.column == len("train op ") + 1 and spec.loc.line == 4
    if index is not None:
        assert all(type(entry) in (int, slice) for entry in index)


def test_kernel_row_bounds_skipped_when_input_width_unknown():
    net = parse("input img (28, 28, 1)\ndense h 4\ntrain op h.kernel[100, 1]")
    assert net.train[0].select[0].index == (100, 1)


def test_kernel_rows_are_the_sum_of_the_sources():
    net = parse(
        "input a 3\ninput b 2\ndropout d 0.1 from=a\ndense h 4 from=d,b\ntrain op h.kernel[4, 3]"
    )
    assert net.train[0].select[0].index == (4, 3)
    e = error("input a 3\ninput b 2\ndense h 4 from=a,b\ntrain op h.kernel[5, 0]")
    assert "5 inputs" in e.message and "out of range" in e.message


# -- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("-2", -2),
        ("+7", 7),
        ("1e-3", 0.001),
        ("0.5", 0.5),
        (".5", 0.5),
        ("2.", 2.0),
        ("1E3", 1000.0),
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        ("none", None),
        ("None", None),
        ("'a b # c'", "a b # c"),
        ('"quoted"', "quoted"),
        ("l2", "l2"),
        ("(28, 28, 1)", (28, 28, 1)),
        ("(5,)", (5,)),
        ("()", ()),
        ("[1,2]", (1, 2)),
        ("((1,2),x,0.5)", ((1, 2), "x", 0.5)),
    ],
)
def test_value_conversion(text, expected):
    value = option(text)
    assert value == expected and type(value) is type(expected)


def test_mask_expressions_stay_raw_text():
    text = "input x 3\ndense h 2 mask=(A @ B) bias_mask=ones\ndense g 2 mask=eye(2)+0 from=h"
    h, g = parse(text).layers
    assert (h.mask, h.bias_mask, g.mask) == ("(A @ B)", "ones", "eye(2)+0")


# -- comments, continuations, blank lines --------------------------------------------------------


def test_comments_blank_lines_and_hash_in_strings():
    net = parse(
        cell(
            """
            # a comment line

            input x 3   # trailing comment
                dense h 4 mask=from_csv("a#b.csv") # indented statement
            loss mse#no space
            optimizer sgd name='#not a comment'
            """
        )
    )
    assert net.layers[0].mask == 'from_csv("a#b.csv")'
    # the line as written (comment included): an error shows it with a caret under the column
    assert net.layers[0].loc == Location(
        4, 5, '    dense h 4 mask=from_csv("a#b.csv") # indented statement'
    )
    assert net.loss.name == "mse"
    assert net.optimizer.options == (("name", "#not a comment"),)


def test_backslash_continuation():
    text = "input x 3\ndense h 4 \\\n    activation=relu \\\n    use_bias=false\ndense out 2"
    net = parse(text)
    h, out = net.layers
    assert h.activation == "relu" and h.use_bias is False
    assert h.loc.line == 2 and h.loc.source == "dense h 4 \\"
    # an option is located on the physical line it is written on
    assert h.loc_of("use_bias") == Location(4, 14, "    use_bias=false")
    assert out.loc.line == 5
    # a backslash right after a token still separates it from the next line
    assert parse("input x 3\ndense h 4\\\nactivation=relu").layers[0].activation == "relu"


def test_open_brackets_continue_a_mask_over_lines():
    text = "input x 3\ndense y 2 mask=[[0,1],  # first row\n              [1,0],\n              [0,1]] activation=relu\nloss mse"
    net = parse(text)
    (y,) = net.layers
    assert y.activation == "relu"
    assert y.mask.replace(" ", "") == "[[0,1],[1,0],[0,1]]"
    assert net.loss.loc.line == 5


def test_errors_on_continuation_lines_point_at_the_physical_line():
    e = error("input x 3\ndense h 4 \\\n  activation=relu \\\n  impl=fast")
    assert (e.line, e.column) == (4, 8) and e.source == "  impl=fast"
    e = error("input x 3\ndense y 2 mask=[[0,1],\n  [1,0]] activaton=relu")
    assert (e.line, e.column) == (3, 10) and "did you mean 'activation'" in e.message


def test_crlf_line_endings():
    net = parse("input x 3\r\ndense h 4 activation=relu\r\n")
    assert net.layers[0].activation == "relu"


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("", 1, 1, ["cell is empty", "input"]),
        ("  \n# only a comment\n\n", 1, 1, ["cell is empty"]),
        (
            "input x 3\ndnese h 4",
            2,
            1,
            [
                "unknown statement 'dnese'",
                "input, dense, conv1d, conv2d, maxpool, avgpool, flatten, dropout, from_model, loss, optimizer, train",
                "did you mean 'dense'",
            ],
        ),
        ("input x 3\nDense h 4", 2, 1, ["did you mean 'dense'"]),
        ("%%masked_net net\ninput x 3", 1, 1, ["not part of the cell body"]),
        (
            "input x 3\ndense hidden four",
            2,
            14,
            ["expected a positive integer number of units after 'dense hidden'", "found 'four'"],
        ),
        ("input x 3\ndense h 0", 2, 9, ["positive integer", "found '0'"]),
        ("input x 3\ndense h -3", 2, 9, ["positive integer", "found '-3'"]),
        ("input x 3\ndense h 2.5", 2, 9, ["found '2.5'"]),
        ("input x 3\ndense h", 2, 8, ["number of units", "found nothing"]),
        ("input x 3\ndense h " + "9" * 5000, 2, 9, ["too long"]),
        ("input x 3\ndense", 2, 6, ["expected a layer name after 'dense'", "found nothing"]),
        ("input 3x 3", 1, 7, ["expected an input name", "identifier", "found '3x'"]),
        ("input x 3\ndense class 2", 2, 7, ["layer name", "found 'class'"]),
        ("input x", 1, 8, ["expected a size", "found nothing"]),
        ("input x 0", 1, 9, ["expected a size", "found '0'"]),
        ("input x (28, 0)", 1, 9, ["shape tuple", "found '(28, 0)'"]),
        ("input x (a,b)", 1, 9, ["shape tuple"]),
        ("input x ()", 1, 9, ["expected a size"]),
        ("input x 3 4", 1, 11, ["unexpected '4'", "input NAME SIZE"]),
        ("input x 3 dtype=float32", 1, 11, ["`input` takes no options", "dtype="]),
        ("input x 3\ndense x 2", 2, 7, ["'x' is already defined on line 1", "input x"]),
        ("input x 3\ndense h 2\ndropout h 0.1", 3, 9, ["'h' is already defined on line 2"]),
        ("input x 3\ninput x 4", 2, 7, ["already defined on line 1"]),
        (BASE + "train op\ntrain op out", 5, 7, ["train op 'op' is already defined on line 4"]),
        (
            "input x 3\ndense h 2 from=y",
            2,
            16,
            ["'y' is not an input or layer defined above", "known so far: x"],
        ),
        (
            "input x 3\ndense a 2 from=b\ndense b 2",
            2,
            16,
            ["'b' is not an input or layer", "known so far: x"],
        ),
        ("input x 3\ndense a 2 from=a", 2, 16, ["cannot read its own output"]),
        ("input xx 3\ndense a 2 from=x", 2, 16, ["did you mean 'xx'"]),
        ("input x 3\ndense a 2 from=x,'b'", 2, 18, ["from=NAME,NAME", "found \"'b'\""]),
        ("input x 3\ndense a 2 from=x,", 2, 18, ["from=NAME,NAME", "no spaces", "found nothing"]),
        ("dense h 2", 1, 1, ["'dense h' has no input", "input NAME SIZE"]),
        ("loss mse\ndropout d 0.5", 2, 1, ["'dropout d' has no input"]),
        ("input x 3\ndropout d 1", 2, 11, ["dropout rate in [0, 1)", "found '1'"]),
        ("input x 3\ndropout d 1.5", 2, 11, ["found '1.5'"]),
        ("input x 3\ndropout d -0.1", 2, 11, ["dropout rate"]),
        ("input x 3\ndropout d half", 2, 11, ["dropout rate", "found 'half'"]),
        ("input x 3\ndropout d true", 2, 11, ["dropout rate"]),
        (
            "input x 3\ndropout d 0.1 activation=relu",
            2,
            15,
            ["unknown option 'activation='", "expected one of: from"],
        ),
        ("input x 3\ndense h 2 impl=fast", 2, 16, ["auto, dense or sparse", "found 'fast'"]),
        ("input x 3\ndense h 2 use_bias=yes", 2, 20, ["true or false", "found 'yes'"]),
        ("input x 3\ndense h 2 activation=3", 2, 22, ["activation name", "found '3'"]),
        (
            "input x 3\ndense h 2 activaton=relu",
            2,
            11,
            ["unknown option 'activaton='", "did you mean 'activation'", "kernel_regularizer"],
        ),
        ("input x 3\ndense h 2 name=foo", 2, 11, ["'name=' is not an option"]),
        ("input x 3\ndense h 2 mask=A @ B", 2, 18, ["unexpected '@'", "parentheses"]),
        ("input x 3\ndense h 2 mask=1+", 2, 18, ["Python expression for mask=", "found '1+'"]),
        ("input x 3\ndense h 2 bias_mask=)(", 2, 21, ["unmatched ')'"]),
        (
            "input x 3\ndense h 2 activation=relu activation=tanh",
            2,
            27,
            ["'activation=' is given twice"],
        ),
        (
            "input x 3\ndense h 2 activation= relu",
            2,
            22,
            ["expected a value after 'activation='", "without spaces"],
        ),
        ("input x 3\ndense h 2 activation = relu", 2, 22, ["expected an option name before '='"]),
        ("input x 3\ndense h 2 2x=3", 2, 11, ["option name", "found '2x'"]),
        (
            "input x 3\ndense h 2 dtype=@",
            2,
            17,
            ["a number, true/false, none, a quoted string", "found '@'"],
        ),
        ("input x 3\ndense h 2 dtype=1e999", 2, 17, ["finite number"]),
        ("input x 3\ndense h 2 dtype='a'b", 2, 17, ["quoted string"]),
        (BASE + "loss mse\nloss mae", 5, 1, ["a second `loss` statement", "line 4"]),
        (
            BASE + "optimizer sgd\noptimizer adam",
            5,
            1,
            ["a second `optimizer` statement", "line 4"],
        ),
        (BASE + "loss", 4, 5, ["expected a loss name", "found nothing"]),
        (BASE + "loss 3", 4, 6, ["expected a loss name", "found '3'"]),
        (BASE + "loss mse mae", 4, 10, ["unexpected 'mae'"]),
        (
            BASE + "optimizer adam(0.1)",
            4,
            16,
            ["key=value arguments inside 'adam(...)'", "found '0.1'"],
        ),
        (BASE + "optimizer adam(lr=1, lr=2)", 4, 22, ["'lr=' is given twice"]),
        (BASE + "optimizer adam(lr=1) lr=2", 4, 22, ["'lr=' is given twice"]),
        (BASE + "optimizer adam(lr=1)x", 4, 22, ["expected ')' at the end"]),
        (BASE + "train", 4, 6, ["expected a train op name after 'train'"]),
        (
            BASE + "train op outt[1]",
            4,
            10,
            [
                "selector 'outt[1]' names no layer 'outt'",
                "expected one of the dense or conv layers: h, out",
                "did you mean 'out'",
            ],
        ),
        (BASE + "train op x", 4, 10, ["names the input 'x'", "dense or conv layers: h, out"]),
        ("input x 3\ndense h 2\ndropout d 0.5\ntrain op d[0]", 4, 10, ["names the dropout 'd'"]),
        (
            BASE + "train op out.weights",
            4,
            13,
            ["expected .kernel or .bias after 'out'", "found '.weights'"],
        ),
        (BASE + "train op out[0, 1]", 4, 13, ["expected 1 index for a unit selector", "found 2"]),
        (BASE + "train op out.bias[0, 1]", 4, 18, ["1 index for a .bias selector"]),
        (
            BASE + "train op out.kernel[0, 1, 2]",
            4,
            20,
            ["1 or 2 indices for a .kernel selector", "found 3"],
        ),
        (
            BASE + "train op out[2]",
            4,
            13,
            ["index 2 is out of range", "layer 'out' has 2 units", "-2 to 1"],
        ),
        (BASE + "train op out[-3]", 4, 13, ["index -3 is out of range"]),
        (BASE + "train op out.bias[5]", 4, 18, ["index 5 is out of range"]),
        (BASE + "train op out.kernel[0, 2]", 4, 20, ["index 2 is out of range", "2 units"]),
        (BASE + "train op out.kernel[4]", 4, 20, ["index 4 is out of range", "4 inputs"]),
        (
            BASE + "train op h.kernel[-4, 0]",
            4,
            18,
            ["index -4 is out of range", "'h' has 3 inputs"],
        ),
        (
            "input x 3\ndense h 2 use_bias=false\ntrain op h.bias",
            3,
            10,
            ["has no bias (use_bias=false)"],
        ),
        (BASE + "train op * out", 4, 12, ["'*' already selects every trainable variable", "'out'"]),
        (BASE + "train op out *", 4, 10, ["cannot be combined with 'out'"]),
        (
            BASE + "train op freeze=out.kernel",
            4,
            17,
            ["unit selectors", "freeze=", "found 'out.kernel'"],
        ),
        (
            BASE + "train op freeze=out[0],",
            4,
            24,
            ["unit selector", "no spaces in freeze=", "found nothing"],
        ),
        (BASE + "train op freeze=nope[0]", 4, 17, ["names no layer 'nope'"]),
        (BASE + "train op freeze=out[5]", 4, 20, ["out of range"]),
        (
            BASE + "train op select=out",
            4,
            10,
            ["unknown option 'select='", "freeze, hold, hold_on, hold_tol, optimizer, loss"],
        ),
        (BASE + "train op out[a]", 4, 14, ["expected an integer or a slice", "found 'a'"]),
        (BASE + "train op out[1:2:0]", 4, 14, ["slice step cannot be zero"]),
        (BASE + "train op out[]", 4, 14, ["expected an index", "found nothing"]),
        (BASE + "train op out[1:2:3:4]", 4, 14, ["integer or a slice"]),
        (BASE + "train op out[1,]", 4, 16, ["found nothing"]),
        (BASE + "train op out[1][0]", 4, 14, ["integer or a slice"]),
        (BASE + "train op out.kernel.x", 4, 13, ["expected .kernel or .bias"]),
        (BASE + "train op 3out", 4, 10, ["expected a selector such as out, out.kernel"]),
        (BASE + "train op out(1)", 4, 10, ["expected a selector"]),
        (BASE + "train op opt optimizer=3", 4, 24, ["expected an optimizer name", "found '3'"]),
        ("input x 3\ndense h 2 mask='abc", 2, 16, ["unterminated string", "never closed"]),
        (
            "input x 3\ndense h 2 mask=(1]",
            2,
            18,
            ["expected ')' to close the '(' opened at line 2, column 16", "found ']'"],
        ),
        (
            "input x 3\ndense h 2 mask=[[0,1]\ndense g 2",
            2,
            16,
            ["'[' is never closed", "expected ']'"],
        ),
        ("loss mse\noptimizer sgd", 1, 1, ["no `input` statement", "input NAME SIZE"]),
        ("input x 3\ninput y 4 # c", 2, 10, ["defines no layers", "dense NAME UNITS"]),
    ],
)
def test_errors(text, line, column, words):
    e = error(text)
    assert (e.line, e.column) == (line, column), e.short()
    for word in words:
        assert word in e.message, (word, e.message)
    assert e.source == (text.splitlines()[line - 1] if text.strip() else "")
    assert str(e).startswith(f"line {line}, column {column}: ")


def test_cell_error_is_a_maskmagic_value_error():
    e = error("input x 3\ndense hidden four")
    assert isinstance(e, MaskMagicError) and isinstance(e, ValueError)
    assert str(e) == (
        "line 2, column 14: expected a positive integer number of units after 'dense hidden', "
        "found 'four'"
    )


def test_long_tokens_are_shortened_in_messages():
    e = error("input x 3\ndense h " + "u" * 200)
    assert len(e.message) < 150 and "..." in e.message


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError):
        parse(b"input x 3")  # type: ignore[arg-type]


# -- immutability and the module ------------------------------------------------------------------


def test_specs_are_frozen_and_made_of_tuples():
    net = parse(
        BASE + "loss mse\noptimizer sgd learning_rate=0.1\ntrain op out.kernel[:, 1] freeze=out[0]"
    )
    dense = net.layers[0]
    op = net.train[0]
    for obj, field in [
        (net, "inputs"),
        (net, "layers"),
        (net.inputs[0], "shape"),
        (dense, "units"),
        (dense, "options"),
        (net.loss, "name"),
        (net.optimizer, "options"),
        (op, "select"),
        (op.select[0], "index"),
        (dense.loc, "line"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, None)
    for value in (
        net.inputs,
        net.layers,
        net.train,
        dense.sources,
        dense.options,
        op.select,
        op.freeze,
        net.optimizer.options,
        op.select[0].index,
    ):
        assert isinstance(value, tuple)
    for field in dataclasses.fields(NetSpec):
        assert not isinstance(getattr(net, field.name), (list, dict, set))


def test_importing_lang_imports_no_tensorflow_numpy_or_ipython():
    code = (
        "import sys, maskmagic.lang\n"
        "maskmagic.lang.parse('input x 3\\ndense h 2 mask=eye(2)\\ntrain op h[0]')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'IPython', 'numpy', 'ipywidgets'))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_help_and_public_names():
    for word in (*KEYWORDS, "from=", "mask=", "bias_mask=", "freeze=", "out.kernel[:, 1]", "impl="):
        assert word in HELP
    assert lang.__all__ == sorted(
        lang.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in lang.__all__:
        assert hasattr(lang, name)


# -- property: parse returns a NetSpec or raises a CellError, nothing else --------------------------

VALID = [
    "input x 3",
    "input img (28, 28, 1)",
    "input b 2",
    "dense h 4 activation=relu",
    "dense out 2 from=h,x mask=[[0,1],[1,0]]",
    "dense y 3 mask=random(0.1, seed=0) bias_mask=ones use_bias=false impl=sparse",
    "dropout d 0.5",
    "dropout e .1 from=x",
    "loss mse",
    "loss binary_crossentropy(from_logits=true)",
    "optimizer sgd learning_rate=0.1",
    "optimizer adam(learning_rate=1e-3)",
    "train op",
    "train op2 out[1] freeze=out[0],h[3]",
    "train op3 out.kernel[:, 1] optimizer=adam",
    "train op4 h.kernel[-1, ::2] h.bias[0:2]",
    "train op5 *",
    "# comment",
    "dense z 2 \\",
    "dense w 1 mask=[[1],",
]
FRAGMENTS = [
    "input",
    "dense",
    "dropout",
    "loss",
    "optimizer",
    "train",
    "from=",
    "mask=",
    "freeze=",
    "optimizer=",
    "activation=",
    "impl=",
    "=",
    " ",
    "  ",
    "\t",
    "\n",
    "\\",
    "#",
    "'",
    '"',
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "*",
    "@",
    "-1",
    "0",
    "3",
    "1e-3",
    "1e999",
    "x",
    "h",
    "out",
    "kernel",
    "bias",
    "true",
    "none",
    "é",
    "∑",
    "名",
    "\x00",
    "\u2028",
    "\x0c",
    "𝔘",
    "٣",
]

_line = st.one_of(
    st.sampled_from(VALID),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=10).map("".join),
    st.text(max_size=30),
)
_cells = st.one_of(
    st.lists(_line, max_size=10).map("\n".join),
    st.tuples(
        st.lists(st.sampled_from(VALID), min_size=1, max_size=10).map("\n".join),
        st.integers(0, 400),
        st.sampled_from(FRAGMENTS),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cells)
def test_parse_returns_a_netspec_or_raises_cell_error(text):
    try:
        net = parse(text)
    except CellError as e:
        assert e.line >= 1 and e.column >= 1 and e.message
        assert isinstance(e.source, str) and e.column <= len(e.source) + 1
        assert e.source == (text.splitlines() or [""])[e.line - 1]
        return
    assert isinstance(net, NetSpec)
    seen = {spec.name for spec in net.inputs}
    for layer in net.layers:
        assert set(layer.sources) <= seen
        seen.add(layer.name)
    assert set(net.outputs) <= set(net.layer_names())


# -- hold= ---------------------------------------------------------------------------------------


def test_train_hold_options():
    net = parse(
        BASE
        + "train refine out[1] hold=out[0]\n"
        + "train tune hold=out[0],h[3] hold_on=x_ref[:4] hold_tol=1e-7 freeze=out[1]"
    )
    refine, tune = net.train
    assert [(s.layer, s.index) for s in refine.hold] == [("out", (0,))]
    assert (refine.hold_on, refine.hold_tol, refine.freeze) == (None, None, ())
    assert [s.text for s in tune.hold] == ["out[0]", "h[3]"]
    assert tune.hold[1].loc.column == len("train tune hold=out[0],") + 1
    assert tune.hold_on == "x_ref[:4]" and tune.hold_tol == 1e-7
    assert tune.loc_of("hold_on").column == len("train tune hold=out[0],h[3] hold_on=") + 1
    assert [s.text for s in tune.freeze] == ["out[1]"]


@pytest.mark.parametrize(
    ("statement", "column", "words"),
    [
        ("train t hold=out.kernel", 14, ["unit selectors", "hold=", "out.kernel"]),
        ("train t hold=out[0],", 21, ["no spaces in hold="]),
        ("train t hold=nope[0]", 14, ["names no layer 'nope'"]),
        ("train t hold=out[7]", 17, ["out of range", "2 units"]),
        ("train t hold_on=x_ref", 9, ["hold_on= needs hold="]),
        ("train t hold_tol=1e-7", 9, ["hold_tol= needs hold="]),
        ("train t hold=out[0] hold_tol=0", 30, ["between 0 and 1", "'0'"]),
        ("train t hold=out[0] hold_tol=big", 30, ["between 0 and 1", "'big'"]),
        ("train t hold=out[0] hold_on=x+", 31, ["Python expression for hold_on="]),
        ("train t hold=out[0] holds=x", 21, ["unknown option 'holds='", "hold"]),
    ],
)
def test_train_hold_errors_point_at_the_option(statement, column, words):
    exc = error(BASE + statement)
    assert exc.line == 4 and exc.column == column, exc.short()
    for word in words:
        assert word in exc.message


def test_help_documents_hold():
    assert "hold=UNITS [hold_on=EXPR] [hold_tol=X]" in lang.HELP
    assert "freeze is exact on every input; hold is to tolerance" in lang.HELP
