"""Tests of maskmagic.display (NetSummary) and maskmagic.display.svg (drawings)."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from maskmagic import lang
from maskmagic.builder import Built, build_spec
from maskmagic.display import NetSummary, frozen_units, layer_infos, op_infos
from maskmagic.display.svg import mask_svg
from maskmagic.lang import InputSpec, Location, NetSpec
from maskmagic.layers import MaskedDense
from maskmagic.training import TrainOp

CELL = """
input x 3
dense hidden 4 activation=sigmoid mask=[[1,0,1,0],[0,1,1,0],[1,1,0,1]]
dense out 2 bias_mask=[1,0]
loss mse
optimizer sgd learning_rate=0.1
train train_op_all
train train_op2 out[1]
train keep_first freeze=out[0]
"""
WIRED = """
input a 3
input b (2, 2)
dense h 5 from=a,b activation=relu mask=random(0.5, seed=1)
dropout d 0.5
dense out 2 from=d,a
train keep freeze=out[1]
"""


def _built(cell: str, namespace: dict | None = None) -> Built:
    return build_spec(lang.parse(cell), namespace or {}, "net", seed=0)


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def test_html_has_layers_densities_ops_and_counts():
    summary = NetSummary(_built(CELL))
    page = summary._repr_html_()
    for name in ("hidden", "out", "train_op_all", "train_op2", "keep_first", "MaskedDense"):
        assert name in page
    assert "7/12 (58%)" in page  # hidden's mask
    assert "8/8 (100%)" in page  # out is fully connected
    assert "1/2" in page  # out's bias mask
    assert "11 / 16" in page  # hidden: 7 connections + 4 biases of 12 + 4 stored
    assert "SGD(lr=0.1)" in page
    assert "20/20 (100%)" in page  # train_op_all may change every connected parameter
    assert "hidden.kernel 7/12" in page
    assert (
        summary.headline() == "net: 2 layers, 3 train ops, 20 of 26 trainable parameters connected"
    )


def test_layer_and_op_rows():
    built = _built(CELL)
    rows = {r.name: r for r in layer_infos(built)}
    assert rows["x"].kind == "Input" and rows["x"].out_shape == (3,)
    assert rows["hidden"].mask_shape == (3, 4) and rows["hidden"].mask_ones == 7
    assert rows["hidden"].activation == "sigmoid" and rows["out"].activation is None
    assert (rows["out"].bias_ones, rows["out"].connected, rows["out"].stored) == (1, 9, 10)
    assert rows["hidden"].impl == "auto (dense)"
    ops = {o.name: o for o in op_infos(built)}
    assert (ops["train_op2"].select, ops["train_op2"].may_change) == ("out[1]", 4)
    assert ops["keep_first"].freeze == "out[0]"
    assert ops["train_op_all"].select == "*" and ops["train_op_all"].total == 20


def test_svg_has_one_line_per_connection():
    built = _built(CELL)
    svg = NetSummary(built).svg()
    assert svg is not None and svg.startswith("<svg")
    ones = sum(int(built.model.get_layer(n).get_mask().sum()) for n in ("hidden", "out"))
    assert _count(r'<line class="conn"', svg) == ones == 15
    assert _count(r'<circle class="unit"', svg) == 3 + 4 + 2
    for name in ("x", "hidden", "out"):
        assert _count(rf'<text class="label"[^>]*>{name}</text>', svg) == 1


def test_line_colour_follows_the_sign_of_the_weight():
    built = _built(CELL)
    layer = built.model.get_layer("out")
    layer.kernel.assign(np.array([[1, -1], [1, -1], [1, -1], [1, -1]], "float32"))
    layer = built.model.get_layer("hidden")
    layer.kernel.assign(np.zeros((3, 4), "float32"))
    svg = NetSummary(built).svg()
    assert _count('stroke="#2563eb"', svg) == 4 + 1  # out's column 0, plus the legend
    assert _count('stroke="#dc2626"', svg) == 4 + 1
    assert _count('class="conn"[^>]*stroke="#9ca3af"', svg) == 7  # zero weights: grey


def test_frozen_units_are_marked_with_a_legend():
    built = _built(CELL)
    assert frozen_units(built) == {"out": {0: ["keep_first"]}}
    summary = NetSummary(built)
    svg = summary.svg()
    assert _count(r'<circle class="frozen"', svg) == 1
    assert 'data-op="keep_first"' in svg
    assert "frozen by keep_first (out[0])" in svg
    assert "out[0] by keep_first" in summary.text()


def test_large_net_has_no_drawing():
    built = _built("input x 3\ndense big 100\ndense out 2\n")
    summary = NetSummary(built)
    assert summary.svg() is None
    assert "<svg" not in summary._repr_html_()
    assert "big" in summary._repr_html_()
    wide = _built("input x 100\ndense out 2\n")
    assert NetSummary(wide).svg() is None


def test_text_repr():
    summary = NetSummary(_built(CELL))
    text = summary.text()
    assert repr(summary) == text
    assert text.splitlines()[0] == summary.headline()
    for piece in ("hidden", "7/12 (58%)", "(3,) -> (4,)", "keep_first", "out[0]", "SGD(lr=0.1)"):
        assert piece in text
    assert "<" not in text
    bundle = summary._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"] == text


def test_no_ops():
    summary = NetSummary(_built("input x 3\ndense y 2 activation=relu mask=[[0,1],[1,0],[0,1]]\n"))
    assert summary.ops == []
    assert "no train ops" in summary.text()
    page = summary._repr_html_()
    assert "mm-ops" not in page and "3/6 (50%)" in page
    assert _count('class="conn"', summary.svg()) == 3


def test_multi_input_concat_and_dropout():
    built = _built(WIRED)
    summary = NetSummary(built)
    rows = {r.name: r for r in summary.layers}
    assert rows["h"].sources == ("a", "b") and rows["h"].in_shape == (7,)
    assert rows["d"].kind == "Dropout" and rows["d"].out_shape == (5,)
    svg = summary.svg()
    ones = sum(int(built.model.get_layer(n).get_mask().sum()) for n in ("h", "out"))
    assert _count('class="conn"', svg) == ones
    assert _count('class="pass"', svg) == 5  # dropout: one dashed line a unit
    assert "dropout (pass-through)" in svg
    assert _count(r'<circle class="unit"', svg) == 3 + 4 + 5 + 5 + 2
    assert _count(r'<circle class="frozen"', svg) == 1


def test_names_are_escaped():
    x = keras.Input((2,), name="x<i>")
    y = MaskedDense(2, mask=[[1, 0], [1, 1]], name="y&<b>")(x)
    model = keras.Model(x, y, name="n<et>")
    loc = Location(1, 1, "")
    spec = NetSpec(
        inputs=(InputSpec("x<i>", (2,), loc),),
        layers=(lang.DenseSpec("y&<b>", 2, sources=("x<i>",), loc=loc),),
        loss=None,
        optimizer=None,
        train=(),
    )
    op = TrainOp(model, name="op<script>")
    summary = NetSummary(Built(spec, model, {"op<script>": op}))
    page = summary._repr_html_()
    for raw in ("x<i>", "y&<b>", "op<script>", "n<et>"):
        assert raw not in page
    assert "x&lt;i&gt;" in page and "y&amp;&lt;b&gt;" in page and "op&lt;script&gt;" in page
    assert _count('class="conn"', page) == 3


class _NoDense(sp.csr_array):
    """A sparse mask that fails if anything densifies it."""

    def toarray(self, *args, **kwargs):
        raise AssertionError("a big sparse mask was densified")

    todense = toarray


def test_sparse_masks_are_counted_not_densified(monkeypatch):
    built = _built("input x 300\ndense big 200\ndense out 2\n")
    layer = built.model.get_layer("big")
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 300, 600), rng.integers(0, 200, 600)
    mask = _NoDense((np.ones(600, dtype=bool), (rows, cols)), shape=(300, 200))
    monkeypatch.setattr(layer, "get_mask", lambda: mask)
    summary = NetSummary(built)
    row = {r.name: r for r in summary.layers}["big"]
    assert row.mask_ones == mask.count_nonzero()
    assert row.impl == "auto (sparse)"
    assert f"{mask.count_nonzero()}/60000" in summary.text()
    assert summary.svg() is None
    picture = mask_svg(mask, max_cells=1000)
    assert _count("<rect ", picture) <= 1000 + 1


def test_small_sparse_layer_is_drawn(monkeypatch):
    built = _built("input x 3\ndense y 2 mask=[[0,1],[1,0],[0,1]]\n")
    layer = built.model.get_layer("y")
    monkeypatch.setattr(layer, "get_mask", lambda: sp.csr_array(np.array([[0, 1], [1, 0], [0, 1]])))
    assert _count('class="conn"', NetSummary(built).svg()) == 3


def test_mask_svg_small_and_large():
    mask = np.array([[1, 0, 1], [0, 0, 1]])
    picture = mask_svg(mask)
    assert picture.startswith("<svg") and _count("<rect ", picture) == 1 + 3
    assert "2 x 3 mask, 3 of 6 connected" in picture
    big = np.zeros((500, 400), dtype=bool)
    big[:250] = True
    picture = mask_svg(big, max_cells=400)
    assert "blocks shaded by density" in picture
    assert _count("<rect ", picture) <= 401
    assert mask_svg([1, 0, 1]).count("<rect ") == 1 + 2  # a bias mask: one row


@pytest.mark.parametrize("value", ["12/16 (75%)"])
def test_density_format(value):
    from maskmagic.display.summary import _fraction

    assert _fraction(12, 16) == value
    assert _fraction(1, 1000) == "1/1000 (0.1%)"
    assert _fraction(999, 1000) == "999/1000 (99.9%)"
    assert _fraction(0, 0) == "0/0 (0%)"
