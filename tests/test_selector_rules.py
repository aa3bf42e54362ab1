"""Selector meaning has one home (lang/selectors.py): the parser and the run-time resolver agree."""

from __future__ import annotations

import pytest

from maskmagic import build, lang
from maskmagic.errors import CellError, SelectorError
from maskmagic.lang import selectors as rules
from maskmagic.training import selectors

DENSE = "input x 3\ndense hidden 4\ndense out 2 use_bias=false\n"
CONV = "input img (8, 8, 2)\nconv2d c 4 kernel=3\nflatten f\ndense out 2\n"


def _parse_message(cell: str, selector: str) -> str:
    with pytest.raises(CellError) as info:
        lang.parse(f"{cell}train t {selector}\n")
    assert info.value.line == cell.count("\n") + 1, info.value.short()
    return info.value.message


def _resolve_message(cell: str, selector: str) -> str:
    model, _ = build(cell)
    with pytest.raises(SelectorError) as info:
        selectors.resolve(model, selector)
    return str(info.value)


@pytest.mark.parametrize(
    ("cell", "selector", "words"),
    [
        (DENSE, "out[2]", ["index 2 is out of range", "has 2 units", "valid: -2 to 1"]),
        (DENSE, "out[-3]", ["index -3 is out of range"]),
        (DENSE, "out[0, 1]", ["expected 1 index for a unit selector", "found 2"]),
        (DENSE, "out.kernel[0, 1, 2]", ["1 or 2 indices for a .kernel selector", "found 3"]),
        (DENSE, "out.kernel[4, 0]", ["has 4 inputs (kernel rows)", "shape (4, 2)"]),
        (DENSE, "hidden[1:1]", ["selects nothing", "has 4 units", "1:1 picks none"]),
        (DENSE, "hidden.kernel[:, 3:0]", ["selects nothing", "3:0 picks none"]),
        (DENSE, "out.bias", ["has no bias (use_bias=false)", "expected one of its variables"]),
        (CONV, "c[4]", ["index 4 is out of range", "has 4 filters"]),
        (CONV, "c.kernel[3, 0]", ["has 3 kernel taps", "shape (3, 3, ?, 4)"]),
        (CONV, "c.kernel[0, 0, 0, 0, 0]", ["at most 4 indices (kh, kw, in_channels, filters)"]),
    ],
)
def test_parser_and_resolver_give_the_same_message(cell, selector, words):
    # Catches a rule (or its wording) changed in the parser but not at run time, or the
    # reverse: both apply lang.selectors, so the messages agree apart from the shape the parser
    # does not know yet (a conv's input channels, shown as ?).
    parsed = _parse_message(cell, selector)
    resolved = _resolve_message(cell, selector)
    assert parsed == resolved.replace("(3, 3, 2, 4)", "(3, 3, ?, 4)")
    for word in words:
        assert word in parsed, (word, parsed)


def test_unknown_layers_name_what_the_selector_can_address():
    # Catches the layer list drifting between parse time (the cell's dense and conv layers) and
    # run time (the model's layers with parameters); both name the layer kind that cannot be
    # selected, so a selector on a dropout layer says it is one.
    parsed = _parse_message(DENSE + "dropout d 0.5\n", "d[0]")
    assert "names the dropout 'd'" in parsed and "dense or conv layers: hidden, out" in parsed
    model, _ = build(DENSE + "dropout d 0.5\n")
    with pytest.raises(SelectorError, match="names the Dropout 'd'.*parameters: hidden, out"):
        selectors.resolve(model, "d[0]")
    with pytest.raises(SelectorError, match=r"names no layer 'outt'.*did you mean 'out'"):
        selectors.resolve(model, "outt")


def test_unit_options_share_one_rule():
    # Catches freeze=/hold= accepting a variable selector on one side only.
    parsed = _parse_message(DENSE, "freeze=out.kernel")
    assert parsed.startswith("freeze expects units such as out[0]")
    assert "found 'out.kernel' in freeze=" in parsed
    model, _ = build(DENSE)
    with pytest.raises(SelectorError) as info:
        selectors.resolve_units(model, "out.kernel", option="hold")
    assert str(info.value) == parsed.replace("freeze", "hold")


def test_unknown_sizes_are_not_checked():
    # Catches the parser rejecting a kernel row it cannot know yet (an input of unknown width).
    layer = rules.Addressable("h", (None, 4), True, 4)
    spec = lang.parse_selector("h.kernel[100, 3]")
    rules.check_index(spec, layer)
    with pytest.raises(SelectorError, match=r"index 4 is out of range.*shape \(\?, 4\)"):
        rules.check_index(lang.parse_selector("h.kernel[100, 4]"), layer)


def test_every_kernel_layout_gets_one_index_per_axis():
    # Catches an index that passes the rules but not numpy (an IndexError instead of a
    # SelectorError) on layers whose kernel is not (inputs, units): 1-D, or 3-D as in
    # EinsumDense, each axis checked in turn.
    one_d = rules.Addressable("v", (5,), False, 5)
    with pytest.raises(SelectorError, match="expected 1 index for a .kernel selector"):
        rules.check_index(lang.parse_selector("v.kernel[0, 0]"), one_d)
    three_d = rules.Addressable("e", (4, 2, 3), True, 3)
    rules.check_index(lang.parse_selector("e.kernel[3, 1, 2]"), three_d)
    with pytest.raises(SelectorError, match="index 2 is out of range.*shape \\(4, 2, 3\\)"):
        rules.check_index(lang.parse_selector("e.kernel[0, 2]"), three_d)
