"""conv1d/conv2d/maxpool/avgpool/flatten in the cell language: parse, build, summary, --code."""

from __future__ import annotations

import numpy as np
import pytest

from maskmagic import lang
from maskmagic.builder import build, build_spec
from maskmagic.codegen import to_source
from maskmagic.display.summary import NetSummary
from maskmagic.errors import CellError

from .test_conv import C3_TABLE

LENET = """
input img (16, 16, 1)
conv2d c1 6 kernel=3 padding=same activation=tanh
maxpool s2 2
conv2d c3 16 kernel=5 mask=T activation=tanh bias_mask=[1]*15+[0]
avgpool s4 2
flatten f
dense out 10
loss mse
optimizer adam learning_rate=0.01
train keep freeze=out[0]
train filt c3[5] c3.kernel[:, :, 2, 5]
"""


def test_parse_gives_conv_pool_and_flatten_specs():
    spec = lang.parse(LENET)
    c1, s2, c3, s4, f, out = spec.layers
    assert isinstance(c1, lang.ConvSpec) and (c1.rank, c1.filters, c1.kernel) == (2, 6, (3, 3))
    assert (c1.padding, c1.strides, c1.activation, c1.impl) == ("same", (1, 1), "tanh", "auto")
    assert c3.mask == "T" and c3.padding == "valid" and c3.sources == ("s2",)
    assert isinstance(s2, lang.PoolSpec) and (s2.kind, s2.size) == ("max", (2,))
    assert isinstance(s4, lang.PoolSpec) and s4.kind == "avg"
    assert isinstance(f, lang.FlattenSpec) and f.sources == ("s4",)
    assert spec.outputs == ("out",)
    one = lang.parse("input s (20, 3)\nconv1d c 4 kernel=5 stride=2 impl=grouped").layers[0]
    assert (one.rank, one.kernel, one.strides, one.impl) == (1, (5,), (2,), "grouped")


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("conv2d c 4", 11, "needs kernel=K"),
        ("conv2d c 4 kernel=3 padding=full", 29, "expected valid or same for padding="),
        ("conv2d c 4 kernel=3 impl=sparse", 26, "expected auto, dense or grouped"),
        ("conv2d c 4 kernel=(3,3,3)", 19, "an int or a tuple of 2 ints"),
        ("conv2d c 0 kernel=3", 10, "positive integer number of filters"),
        ("conv2d c 4 kernel=3 stride=0", 28, "positive size for stride="),
        ("conv2d c 4 kernel=3 groups=2", 21, "unknown option 'groups='"),
        ("maxpool p", 10, "expected a pool size"),
        ("avgpool p x", 11, "positive size for the pool size"),
        ("flatten f 3", 11, "unexpected '3'"),
    ],
)
def test_bad_statements_are_cell_errors_at_the_right_place(line, column, words):
    with pytest.raises(CellError) as info:
        lang.parse(f"input img (8, 8, 2)\n{line}")
    assert (info.value.line, info.value.column) == (2, column), str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("train", "words"),
    [
        ("train t c[4]", "index 4 is out of range"),
        ("train t c.kernel[0, 0, 0, 0, 0]", "at most 4 indices (kh, kw, in_channels, filters)"),
        ("train t c.kernel[3, 0]", "has 3 kernel taps"),
        ("train t c.kernel[:, :, 0, 9]", "has 4 filters"),
        ("train t freeze=p[0]", "names the maxpool 'p'"),
    ],
)
def test_conv_selectors_are_checked_by_the_parser(train, words):
    with pytest.raises(CellError, match="line 4") as info:
        lang.parse(f"input img (8, 8, 2)\nconv2d c 4 kernel=3\nmaxpool p 2\n{train}")
    assert words in str(info.value)


def test_done_means_cell_keeps_output_0_bit_identical_and_trains_the_rest():
    model, ops = build(LENET, {"T": C3_TABLE}, seed=0)
    c3 = model.get_layer("c3")
    np.testing.assert_array_equal(c3.get_channel_table(), C3_TABLE)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 16, 16, 1)).astype("float32"), rng.normal(size=(16, 10))
    probe = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    before = model(probe).numpy()
    for _ in range(3):
        ops["keep"](x, y.astype("float32"))
    after = model(probe).numpy()
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    assert np.any(after[:, 1:] != before[:, 1:])
    # A single filter and one (masked-out) kernel entry: only filter 5's connected taps move.
    kernel = c3.kernel.numpy()
    ops["filt"](x, y.astype("float32"))
    moved = c3.kernel.numpy() != kernel
    assert moved[..., 5].sum() == 3 * 25 and not moved[..., :5].any()


@pytest.mark.parametrize(
    ("cell", "column", "words"),
    [
        ("input x 3\nconv2d c 4 kernel=3", 1, "needs an input of shape (height, width, channels)"),
        ("input img (8, 8, 2)\nconv2d c 4 kernel=9", 1, "does not fit the input"),
        (
            "input img (8, 8, 2)\nconv2d c 4 kernel=3 mask=np.ones((3, 4))",
            26,
            "expected the channel table (2, 4) (in_channels x filters)",
        ),
        ("input img (8, 8, 2)\nmaxpool p 9", 1, "pool size 9 does not fit"),
        ("input s (8, 2)\nconv2d c 4 kernel=3", 1, "'s' gives (8, 2)"),
    ],
)
def test_build_errors_name_the_statement(cell, column, words):
    with pytest.raises(CellError) as info:
        build(cell)
    assert (info.value.line, info.value.column) == (2, column)
    assert words in str(info.value)


def test_summary_shows_the_channel_table_of_each_conv():
    built = build_spec(lang.parse(LENET), {"T": C3_TABLE})
    summary = NetSummary(built)
    row = next(r for r in summary.layers if r.name == "c3")
    assert (row.kind, row.mask_shape, row.mask_ones) == ("MaskedConv2D", (6, 16), 60)
    assert row.connected == 60 * 25 + 15 and row.stored == 96 * 25 + 16
    text = summary.text()
    assert "60/96 (62%)" in text and "AveragePooling2D" in text and "(2, 2, 16) -> (64,)" in text
    assert summary.svg() is None and "mm-layers" in summary._repr_html_()


def test_code_defines_the_same_model_and_ops_without_maskmagic():
    built = build_spec(lang.parse(LENET), {"T": C3_TABLE}, name="net", seed=0)
    source = to_source(built, "net")
    assert "maskmagic" not in "\n".join(
        line for line in source.splitlines() if line.lstrip().startswith(("import", "from"))
    )
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - our own generated code
    generated = namespace["net"]
    for layer in built.model.layers:
        for weight in layer.trainable_weights:
            getattr(generated.get_layer(layer.name), weight.name).assign(weight.numpy())
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 1)).astype("float32")
    # The same convolutions of the same effective kernels: bit-identical.
    np.testing.assert_array_equal(generated(x).numpy(), built.model(x).numpy())
    generated_variables = {v.path: v for v in generated.trainable_variables}
    for name, op in built.ops.items():
        for variable in op.var_list:
            np.testing.assert_array_equal(
                namespace[name].update_mask(generated_variables[variable.path]),
                op.update_mask(variable),
            )
    assert "class MaskedConv" in source and "keras.layers.Conv2D(" in source  # c1 has no mask
    dense_only = build_spec(lang.parse("input x 3\ndense out 2"), {}, name="d")
    assert "class MaskedConv" not in to_source(dense_only, "d")  # only what the cell uses


def test_conv1d_cell_builds_pools_in_1d_and_freezes_exactly():
    cell = """
input seq (12, 3)
conv1d c 4 kernel=3 padding=same mask=[[1,0,0,1],[0,1,0,1],[0,0,1,1]] activation=relu
maxpool p 2
flatten f
dense out 2 mask=M
train keep freeze=out[0]
"""
    mask = np.ones((24, 2), dtype=bool)
    mask[:, 0] = np.arange(24) % 4 == 0  # out[0] reads channel 0 of the pooled maps only
    model, ops = build(cell, {"M": mask}, seed=0)
    assert type(model.get_layer("p")).__name__ == "MaxPooling1D"
    assert model.get_layer("p").output.shape[1:] == (6, 4)
    # out[0] reads only channel 0 of c, which reads only input channel 0: the kernel column
    # of filter 0 and its bias are frozen, filters 1-3 stay trainable.
    update = ops["keep"].update_mask(model.get_layer("c").kernel)
    assert not update[..., 0].any() and update[..., 1:].any()
