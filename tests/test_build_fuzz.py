"""Fuzzing parse + build: whatever the cell, the only exception that escapes is MaskMagicError.

The builder converts only cell-caused errors (see ``builder._at``), so any other exception
escaping here is a maskmagic bug found by the fuzzer; the fault-injection tests at the end
check that a fault inside maskmagic does escape, so these tests can fail.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskmagic import masks
from maskmagic.builder import build
from maskmagic.errors import CellError, MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import reach

NAMESPACE = {"A": np.ones((3, 2)), "B": [1, 0], "bad": np.full((3, 2), 0.5), "boom": None}

NAMES = st.sampled_from(["x", "h", "out", "y", "h2", "x", "1a", "for", "ünï"])
UNITS = st.sampled_from(["1", "2", "3", "0", "-1", "two", "2.5", "(2, 2)", ""])
MASKS = st.sampled_from(
    [
        "A",
        "B",
        "bad",
        "boom",
        "nope",
        "ones",
        "eye(3)",
        "random(0.5, seed=1)",
        "random(2)",
        "[[1,0],[0,1],[1,1]]",
        "[[1,0],[0,1]]",
        "[[1, 0], [0, 1], [1, nan]]",
        "1/0",
        "blocks(2)",
        "banded(1)",
        "np.eye(3, 2)",
        "from_csv('missing.csv')",
        "(",
        "[[1,0],[0,1],[1,2]]",
    ]
)
OPTIONS = st.sampled_from(
    [
        "",
        "activation=relu",
        "activation=relux",
        "activation=softmax",
        "use_bias=false",
        "use_bias=maybe",
        "impl=dense",
        "impl=fast",
        "kernel_initializer=he_normal",
        "kernel_initializer=nope",
        "from=x",
        "from=x,h",
        "from=zz",
        "kernel_regularizer=l2",
        "bias_initializer=ones",
        "name=q",
        "dtype=float64",
    ]
)
SELECTORS = st.sampled_from(
    [
        "",
        "*",
        "out",
        "h",
        "out[0]",
        "out[5]",
        "h.kernel[0, 0]",
        "h.kernel[:, 1]",
        "out.bias",
        "out.weights",
        "h[0:2]",
        "zz",
        "h[1:1]",
        "out.kernel[9, 9]",
    ]
)


@st.composite
def statements(draw):
    kind = draw(
        st.sampled_from(
            ["input", "dense", "dense", "dense", "dropout", "loss", "optimizer", "train", "junk"]
        )
    )
    if kind == "input":
        return f"input {draw(NAMES)} {draw(UNITS)}"
    if kind == "dense":
        mask = f" mask={draw(MASKS)}" if draw(st.booleans()) else ""
        bias = " bias_mask=B" if draw(st.booleans()) else ""
        return f"dense {draw(NAMES)} {draw(UNITS)} {draw(OPTIONS)}{mask}{bias}"
    if kind == "dropout":
        return f"dropout {draw(NAMES)} {draw(st.sampled_from(['0.5', '1.5', 'x', '0']))}"
    if kind == "loss":
        return "loss " + draw(
            st.sampled_from(
                ["mse", "msee", "binary_crossentropy from_logits=true", "huber delta=x"]
            )
        )
    if kind == "optimizer":
        return "optimizer " + draw(
            st.sampled_from(
                ["sgd", "adam learning_rate=0.1", "adamm", "sgd momentum=2", "sgd lr=x"]
            )
        )
    if kind == "train":
        freeze = draw(
            st.sampled_from(
                ["", " freeze=out[0]", " freeze=h", " freeze=out.kernel", " freeze=zz[0]"]
            )
        )
        return f"train {draw(NAMES)}_op {draw(SELECTORS)}{freeze}"
    return draw(st.text(max_size=30))


@st.composite
def near_valid_cells(draw):
    """A mostly valid net (so the builder runs), sometimes with one line broken."""
    width = draw(st.integers(1, 4))
    lines = [f"input x {width}"]
    sizes = {"x": width}
    previous = "x"
    for k in range(draw(st.integers(1, 3))):
        units = draw(st.integers(1, 4))
        name = f"h{k}"
        mask = draw(
            st.sampled_from(
                [
                    "",
                    " mask=ones",
                    " mask=random(0.7, seed=3)",
                    " mask=eye(1)",
                    f" mask=np.ones(({sizes[previous]}, {units}))",
                    " mask=blocks(1)",
                ]
            )
        )
        option = draw(
            st.sampled_from(
                [
                    "",
                    " activation=relu",
                    " activation=tanh",
                    " use_bias=false",
                    " impl=dense",
                    " bias_mask=ones",
                ]
            )
        )
        lines.append(f"dense {name} {units}{mask}{option}")
        if draw(st.booleans()):
            lines.append(f"dropout d{k} 0.25")
            sizes[f"d{k}"] = units
            previous = f"d{k}"
        else:
            previous = name
        sizes[name] = units
    last = name
    lines.append(
        draw(
            st.sampled_from(
                ["", "loss mse", "loss huber", "loss binary_crossentropy from_logits=true"]
            )
        )
    )
    lines.append(
        draw(
            st.sampled_from(["", "optimizer adam learning_rate=0.01", "optimizer sgd momentum=0.9"])
        )
    )
    for k in range(draw(st.integers(0, 3))):
        selector = draw(
            st.sampled_from(["", last, f"{last}[0]", f"{last}.kernel[0, 0]", "h0.bias", "h0[-1]"])
        )
        freeze = draw(st.sampled_from(["", f" freeze={last}[0]", " freeze=h0[0]"]))
        lines.append(f"train op{k} {selector}{freeze}")
    if draw(st.booleans()):
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = draw(
            st.sampled_from(
                [
                    lines[index][:-1],
                    lines[index] + " ]",
                    lines[index].replace(" ", "=", 1),
                    draw(statements()),
                ]
            )
        )
    return "\n".join(lines)


def _check(cell: str) -> bool:
    """Builds the cell; True if it built, False if it was refused with a MaskMagicError."""
    try:
        model, ops = build(cell, dict(NAMESPACE))
    except MaskMagicError:
        return False
    assert isinstance(model, keras.Model)
    assert all(op.model is model for op in ops.values())
    return True


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(statements(), min_size=0, max_size=7))
def test_random_statements_only_raise_maskmagic_errors(lines):
    _check("\n".join(lines))


BUILT = []


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_cells())
def test_near_valid_cells_build_or_raise_maskmagic_errors(cell):
    BUILT.append(_check(cell))


def test_the_near_valid_generator_really_builds_nets():
    """Guards the fuzz test above against a generator that only ever makes broken cells."""
    if len(BUILT) < 100:  # run on its own: sample the generator here

        @settings(max_examples=100, deadline=None, database=None)
        @given(near_valid_cells())
        def sample(cell):
            BUILT.append(_check(cell))

        sample()
    assert sum(BUILT) > len(BUILT) / 4


def _broken_reach(*args, **kwargs):
    raise AttributeError("injected fault in maskmagic's reachability")


@pytest.mark.parametrize(
    ("target", "name", "cell"),
    [
        (reach, "influencers", "input x 3\ndense h 2\ndense out 2\ntrain keep freeze=out[0]\n"),
        (MaskedDense, "build", "input x 3\ndense h 2\n"),
        (masks, "validate", "input x 3\ndense h 2 mask=ones\n"),
    ],
)
def test_a_fault_inside_maskmagic_escapes_as_itself(monkeypatch, target, name, cell):
    """Bug caught: a builder that turns every exception into a CellError at the user's line,
    which makes the fuzz tests above pass whatever maskmagic's code raises."""
    monkeypatch.setattr(target, name, _broken_reach)
    with pytest.raises(AttributeError, match="injected fault") as caught:
        build(cell, {})
    assert not isinstance(caught.value, MaskMagicError)


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("input x 3\ndense h 2 mask=1/0\n", ["line 2", "ZeroDivisionError"]),
        ("input x 3\ndense h 2 mask=undefined_name\n", ["line 2", "NameError"]),
        ("input x 3\ndense h 2 activation=relux\n", ["line 2", "relux"]),
        ("input x 3\ndense h 2 kernel_regularizer=nope\n", ["line 2", "nope"]),
        ("input x 3\ndense h 2\noptimizer sgd momentum=x\n", ["line 3", "momentum"]),
        ("input x 3\ndense h 2\nloss msee\n", ["line 3", "msee"]),
    ],
)
def test_errors_the_cell_causes_are_cell_errors(cell, words):
    """The user's own expression and values Keras rejects stay short cell errors."""
    with pytest.raises(CellError) as caught:
        build(cell, {})
    for word in words:
        assert word in str(caught.value)
