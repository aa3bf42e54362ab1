"""Hypothesis fuzz of masks and selectors: only MaskMagicError may escape, refusals change nothing.

2,800 generated examples in all: arbitrary masks (shapes, values, dtypes, nested lists, sparse
matrices, functions of the shape, named masks) into ``MaskedDense.set_mask``/``set_bias_mask``
and ``masks.validate``, and arbitrary selector strings (and non-strings) into ``TrainOp``'s
``select`` and ``freeze``. An accepted mask must be exactly what ``validate`` returns; a refused
one must leave the layer's kernel, masks and mask version as they were.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from maskmagic import masks
from maskmagic.errors import MaskMagicError
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same examples on every run: CI failures reproduce
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


SHAPE = (3, 4)

VALUES = [0, 1, 0.0, 1.0, True, False, 2, -1, 0.5, -0.0, 1e-30, 1 + 1e-7, math.nan, math.inf,
          -math.inf, 10**30]  # fmt: skip
DTYPES = ["bool", "int8", "uint8", "int64", "float16", "float32", "float64", "complex64",
          "object", "U3", "S2", "datetime64[s]"]  # fmt: skip


@st.composite
def arrays(draw) -> np.ndarray:
    """Numpy arrays of any small shape (often the right one) and any dtype."""
    shape = draw(
        st.one_of(
            st.just(SHAPE),
            st.just((SHAPE[1],)),
            st.lists(st.integers(0, 5), max_size=3).map(tuple),
        )
    )
    flat = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=1))
    if draw(st.booleans()):  # mostly 0/1 so that valid masks come up often
        flat = draw(
            st.lists(
                st.sampled_from([0, 1]), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            )
        )
        base = np.array(flat, dtype=float).reshape(shape)
    else:
        base = np.full(shape, flat[0], dtype=object)
        cells = int(np.prod(shape))
        if cells:
            picks = draw(st.lists(st.sampled_from(VALUES), min_size=cells, max_size=cells))
            base = np.array(picks, dtype=object).reshape(shape)
    dtype = draw(st.sampled_from(DTYPES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return base.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return base


nested = st.recursive(
    st.sampled_from(VALUES) | st.none() | st.text(max_size=2),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children),
    max_leaves=20,
)


@st.composite
def matrices(draw, shape: tuple) -> np.ndarray:
    """A numeric 2-D array of ``shape``, mostly 0/1 (no filtering: every draw is usable)."""
    cells = int(np.prod(shape))
    pool = [0, 1] if draw(st.booleans()) else VALUES
    picks = draw(st.lists(st.sampled_from(pool), min_size=cells, max_size=cells))
    dtype = draw(st.sampled_from(["bool", "int8", "float32", "float64"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.array(picks, dtype=float).reshape(shape).astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return np.array(picks, dtype=float).reshape(shape)


@st.composite
def sparse_matrices(draw):
    shape = draw(st.sampled_from([SHAPE, SHAPE, (2, 4), (3, 5), (4, 3)]))
    dense = draw(matrices(shape))
    fmt = draw(st.sampled_from([sp.csr_array, sp.coo_array, sp.csc_matrix, sp.lil_array]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fmt(dense)


@st.composite
def functions(draw):
    value = draw(arrays() | nested)
    kind = draw(st.sampled_from(["returns", "raises", "returns_function"]))
    if kind == "returns":
        return lambda shape: value
    if kind == "raises":
        error = draw(st.sampled_from([ValueError, TypeError, ZeroDivisionError, KeyError]))

        def raising(shape):
            raise error("from the user's function")

        return raising
    return lambda shape: lambda s: value


@st.composite
def named(draw):
    shape = draw(st.sampled_from([SHAPE, SHAPE, (2, 4), (3, 3)]))
    matrix = draw(matrices(shape))
    try:
        return masks.NamedMask(matrix, tuple("abcd"[: shape[0]]), tuple("pqrs"[: shape[1]]))
    except MaskMagicError:
        return matrix


any_mask = st.one_of(
    arrays(),
    arrays(),
    nested,
    sparse_matrices(),
    functions(),
    named(),
    st.none(),
    st.text(max_size=5),
    st.binary(max_size=4),
    st.integers(),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([masks.eye(), masks.ones(), masks.random(0.5, seed=0), masks.banded(1)]),
)


@pytest.fixture(scope="module")
def layer() -> MaskedDense:
    keras.backend.clear_session()
    layer = MaskedDense(SHAPE[1], name="fuzzed")
    layer.build((None, SHAPE[0]))
    return layer


def _layer_state(layer: MaskedDense) -> tuple:
    return (
        layer.kernel.numpy().copy(),
        layer.kernel_mask.numpy().copy(),
        layer.bias_mask.numpy().copy(),
        layer.mask_version,
    )


def _same(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3])) and a[3] == b[3]


def _dense(mask) -> np.ndarray:
    return mask.toarray() if sp.issparse(mask) else np.asarray(mask)


@fuzz(1400)
@given(mask=any_mask, bias=st.booleans())
def test_fuzz_set_mask_refuses_cleanly_or_applies_exactly(layer, mask, bias):
    before = _layer_state(layer)
    shape = (SHAPE[1],) if bias else SHAPE
    setter = layer.set_bias_mask if bias else layer.set_mask
    getter = layer.get_bias_mask if bias else layer.get_mask
    try:
        setter(mask)
    except MaskMagicError:
        event("refused")
        assert _same(before, _layer_state(layer)), "a refused mask changed the layer"
        return
    event("accepted")
    expected = _dense(masks.validate(mask, shape, name="bias_mask" if bias else "mask"))
    np.testing.assert_array_equal(getter(), expected)
    assert layer.mask_version == before[3] + 1
    np.testing.assert_array_equal(layer.kernel.numpy(), before[0])  # weights untouched


@fuzz(600)
@given(
    mask=any_mask,
    shape=st.one_of(
        st.lists(st.integers(-2, 6), max_size=3).map(tuple),
        st.sampled_from([None, 3, "ab", (1.5, 2), (True, 2), ()]),
    ),
)
def test_fuzz_validate_raises_only_mask_errors(mask, shape):
    try:
        result = masks.validate(mask, shape)
    except MaskMagicError:
        return
    assert tuple(result.shape) == tuple(int(s) for s in shape)
    assert result.dtype == bool


# ----------------------------------------------------------------------------- selectors

NAMES = ["out", "hidden", "x", "nope", "", "OUT", "out_", "hidden.kernel", "*"]
ATTRS = ["", ".kernel", ".bias", ".mask", ".", "..kernel", ".kernel.bias"]


@st.composite
def index_text(draw) -> str:
    part = st.one_of(
        st.integers(-12, 12).map(str),
        st.sampled_from(
            [
                ":",
                "::",
                "::-1",
                "1:",
                ":2",
                "0:4:2",
                "...",
                "None",
                "'a'",
                "1.5",
                "",
                " ",
                "1e3",
                "0x1",
                "-",
                "10**20",
                "[0]",
            ]
        ),  # fmt: skip
    )
    items = draw(st.lists(part, min_size=0, max_size=3))
    opening, closing = draw(
        st.sampled_from([("[", "]"), ("[", ""), ("", "]"), ("[[", "]"), ("(", ")")])
    )
    return opening + draw(st.sampled_from([",", ", ", ":"])).join(items) + closing


structured = st.builds(
    lambda n, a, i, pad: pad + n + a + i + pad,
    st.sampled_from(NAMES),
    st.sampled_from(ATTRS),
    st.one_of(st.just(""), index_text()),
    st.sampled_from(["", " ", "\t", "\n"]),
)


@st.composite
def plausible(draw) -> str:
    """Well-formed selectors with indices in and out of range."""
    layer = draw(st.sampled_from(["out", "hidden", "x", "nope"]))
    index = st.one_of(
        st.integers(-5, 5).map(str),
        st.tuples(st.integers(-5, 5), st.integers(-5, 5)).map(lambda t: f"{t[0]}:{t[1]}"),
        st.just(":"),
    )
    form = draw(st.sampled_from(["layer", "unit", "variable", "entry"]))
    if form == "layer":
        return layer
    if form == "unit":
        return f"{layer}[{draw(index)}]"
    variable = draw(st.sampled_from(["kernel", "bias"]))
    if form == "variable":
        return f"{layer}.{variable}"
    items = draw(st.lists(index, min_size=1, max_size=2))
    return f"{layer}.{variable}[{', '.join(items)}]"


selector_text = st.one_of(
    plausible(),
    plausible(),
    structured,
    structured,
    st.text(alphabet="outhidenkrbal.[]:,-0123456789 *_()'\"\\#\n", max_size=24),
    st.text(max_size=12),
)
any_selector = st.one_of(
    selector_text,
    selector_text,
    st.lists(selector_text, min_size=1, max_size=3),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.one_of(selector_text, st.integers(), st.none()), min_size=1, max_size=2),
)


@pytest.fixture(scope="module")
def net():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    mask = [[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]]
    h = MaskedDense(4, mask=mask, activation="sigmoid", name="hidden")(x)
    model = keras.Model(x, MaskedDense(2, name="out")(h), name="net")
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


@fuzz(800)
@given(selector=any_selector, kind=st.sampled_from(["select", "freeze", "both"]))
def test_fuzz_selectors_raise_only_selector_errors(net, selector, kind):
    model, optimizer = net
    before = [v.numpy().copy() for v in model.variables]
    arguments = {"select": selector, "freeze": selector}
    if kind != "both":
        arguments = {kind: selector}
    try:
        op = TrainOp(model, optimizer=optimizer, **arguments)
    except MaskMagicError:
        event("refused")
    else:
        event("accepted")
        assert op.parameter_count() > 0
        for variable in op.var_list:
            assert op.update_mask(variable).shape == tuple(variable.shape)
    for old, variable in zip(before, model.variables):
        np.testing.assert_array_equal(variable.numpy(), old)
