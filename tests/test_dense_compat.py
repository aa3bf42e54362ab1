"""MaskedDense as a drop-in for keras.layers.Dense; masked(), strip() and from_model cells.

Each test names the bug it catches.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import maskmagic as mm
from maskmagic.builder import build
from maskmagic.errors import CellError, MaskMagicError
from maskmagic.layers import MaskedDense
from tests.numerics import assert_same_value

V1 = Path(__file__).parent / "data" / "v1"
RNG = np.random.default_rng(0)
X8 = RNG.normal(size=(16, 8)).astype("float32")


def _half_mask(shape=(8, 6), seed=1):
    mask = np.random.default_rng(seed).random(shape) < 0.5
    mask[0, :] = True  # every unit keeps a connection
    return mask


def _layer(mask=None, units=6, **kwargs):
    layer = MaskedDense(units, mask=mask, **kwargs)
    layer.build((None, 8))
    return layer


# ------------------------------------------------------------------ files of the first version


def test_v1_keras_file_loads_with_masks_weights_and_outputs():
    # Catches: a file layout change that makes earlier .keras files unreadable.
    expected = np.load(V1 / "expected.npz")
    model = mm.deploy.load_model(V1 / "model.keras")
    # The stored outputs were computed on the machine that made the fixtures: another CPU may
    # round the same matmuls differently (oneDNN picks kernels by CPU), so a few ulps. The
    # weights and masks, loaded from the file, are compared bit for bit below.
    assert_same_value(model.predict(expected["inputs"], verbose=0), expected["outputs"])
    hidden = model.get_layer("hidden")
    np.testing.assert_array_equal(hidden.get_mask(), expected["hidden_mask"])
    np.testing.assert_array_equal(hidden.get_bias_mask(), expected["hidden_bias_mask"])
    np.testing.assert_array_equal(hidden.kernel.numpy(), expected["hidden_kernel"])
    sparse = model.get_layer("sparse")
    assert sparse.is_sparse
    np.testing.assert_array_equal(sparse.get_mask().toarray(), expected["sparse_mask"])


def test_v1_weights_file_loads_into_a_fresh_model():
    # Catches: .weights.h5 of the first version (kernel, bias, mask, bias_mask) not loading.
    expected = np.load(V1 / "expected.npz")
    x = keras.Input((5,), name="x")
    h = MaskedDense(4, activation="tanh", name="hidden")(x)
    s = MaskedDense(3, mask=expected["sparse_mask"], impl="sparse", name="sparse")(h)
    out = MaskedDense(2, use_bias=False, name="out")(s)
    model = keras.Model(x, out)
    model.load_weights(V1 / "model.weights.h5")
    np.testing.assert_array_equal(model.get_layer("hidden").get_mask(), expected["hidden_mask"])
    # Computed on the fixtures' machine: a few ulps (see the test above).
    assert_same_value(model.predict(expected["inputs"], verbose=0), expected["outputs"])


# ------------------------------------------------------------------ Dense-shaped weights


def test_dense_weights_and_weight_file_load_into_masked_dense_keeping_its_mask(tmp_path):
    # Catches: "expected 4 variables, received 2" when copying or loading Dense weights.
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, name="d")])
    dense.save_weights(tmp_path / "dense.weights.h5")
    mask = _half_mask()
    model = keras.Sequential([keras.Input((8,)), MaskedDense(6, mask=mask, name="d")])
    with pytest.raises(ValueError, match="load_dense_weights"):  # Keras keys files by class
        model.load_weights(tmp_path / "dense.weights.h5")
    mm.deploy.load_dense_weights(model, tmp_path / "dense.weights.h5")
    layer = model.layers[0]
    np.testing.assert_array_equal(layer.kernel.numpy(), dense.layers[0].kernel.numpy())
    np.testing.assert_array_equal(layer.get_mask(), mask)  # the layer's mask is kept
    full = _layer()
    full.set_weights(dense.layers[0].get_weights())
    np.testing.assert_array_equal(full(X8).numpy(), dense.layers[0](X8).numpy())


def test_masks_travel_in_weight_files_after_dense_entries(tmp_path):
    # Catches: masks lost by save_weights now that they are not layer weights.
    mask = _half_mask()
    model = keras.Sequential([keras.Input((8,)), MaskedDense(6, mask=mask, name="d")])
    model.layers[0].set_bias_mask([1, 0, 1, 1, 0, 1])
    model.save_weights(tmp_path / "m.weights.h5")
    other = keras.Sequential([keras.Input((8,)), MaskedDense(6, name="d")])
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(other.layers[0].get_mask(), mask)
    np.testing.assert_array_equal(other.predict(X8, verbose=0), model.predict(X8, verbose=0))


def test_set_weights_errors_name_expected_and_received():
    # Catches: a shape error from deep inside Keras instead of a MaskMagicError.
    layer = _layer()
    with pytest.raises(MaskMagicError, match=r"expected 2 arrays .*received 3"):
        layer.set_weights([np.zeros((8, 6))] * 3)
    with pytest.raises(
        MaskMagicError, match=r"shape \(8, 6\); received an array of shape \(6, 8\)"
    ):
        layer.set_weights([np.zeros((6, 8)), np.zeros(6)])
    with pytest.raises(MaskMagicError, match="expected"):
        layer.load_own_variables({"0": np.zeros((8, 6))})


def test_input_width_is_checked_when_the_model_is_built():
    # Catches: a layer built for 2 inputs accepting 3 and failing only at the first call.
    layer = MaskedDense(2, mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="incompatible with the layer"):
        keras.Sequential([keras.Input((2,)), layer, keras.layers.Identity()])(np.zeros((1, 3)))


# ------------------------------------------------------------------ sparse layers


def test_sparse_set_weights_converts_dense_arrays_or_refuses_clearly():
    # Catches: Dense-shaped arrays on a sparse layer failing with an internal shape error or
    # silently dropping weights outside its connections.
    mask = np.zeros((8, 6), bool)
    mask[[0, 2, 5], [1, 3, 4]] = True
    layer = _layer(mask, impl="sparse")
    kernel = np.where(mask, RNG.normal(size=(8, 6)), 0).astype("float32")
    layer.set_weights([kernel, np.arange(6, dtype="float32")])
    np.testing.assert_array_equal(layer.effective_kernel().toarray(), kernel)
    with pytest.raises(MaskMagicError, match="non-zero weights outside"):
        layer.set_weights([np.ones((8, 6)), np.zeros(6)])
    with pytest.raises(MaskMagicError, match=r"is sparse: set_weights expected \[kernel \(nnz,\)"):
        layer.set_weights([np.ones(3)])
    own = layer.get_weights()
    layer.set_weights(own)  # its own layout round-trips
    np.testing.assert_array_equal(layer.effective_kernel().toarray(), kernel)


# ------------------------------------------------------------------ quantization and LoRA


def _rows_of_effective_kernel(layer):
    """Row i of the kernel the layer multiplies by: its output on the unit vector e_i, less
    the bias (exact: a product with 0/1 entries and a sum of one term, bias subtracted back)."""
    return keras.ops.convert_to_numpy(
        layer(np.eye(8, dtype="float32"))
    ) - keras.ops.convert_to_numpy(layer.bias)


@pytest.mark.parametrize(
    ("mode", "config"),
    [
        ("int8", None),
        ("int4", None),  # Keras' default int4: sub-channel groups with a zero point
        ("int4", keras.quantizers.Int4QuantizationConfig(block_size=-1)),  # per channel
        ("float8", None),
    ],
)
def test_quantized_masked_connections_contribute_exactly_nothing(mode, config):
    # Catches: quantizing the unmasked kernel, or masked int4 entries holding 0 instead of
    # the group's zero point (they would dequantize to a non-zero weight).
    mask = _half_mask()
    layer = _layer(mask)
    layer.quantize(mode, config=config)
    assert layer.quantization_mode == mode
    rows = _rows_of_effective_kernel(layer)
    assert np.all(rows[~mask] == 0)
    assert np.count_nonzero(rows[mask]) > mask.sum() // 2
    if mode != "float8":  # a further cut after quantizing (float8 refuses: see below)
        cut = mask & _half_mask(seed=2)
        layer.set_mask(cut)
        assert np.all(_rows_of_effective_kernel(layer)[~cut] == 0)


@pytest.mark.parametrize("mode", ["gptq", "awq"])
def test_calibrated_gptq_awq_multiply_by_the_masked_kernel(mode):
    # Catches: a calibrated GPTQ/AWQ layer using quantized values at masked connections (the
    # calibration's error compensation and zero points make them non-zero). The quantized
    # state is set as a calibration would leave it (Keras calibrates whole models only).
    make = keras.quantizers.GPTQConfig if mode == "gptq" else keras.quantizers.AWQConfig
    mask = _half_mask()
    layer = _layer(mask)
    layer.quantize(mode, config=make(dataset=None, tokenizer=None, weight_bits=4, group_size=-1))
    rng = np.random.default_rng(0)
    layer.quantized_kernel.assign(rng.integers(0, 256, layer.quantized_kernel.shape))
    layer.kernel_zero.assign(rng.integers(0, 16, layer.kernel_zero.shape))
    rows = _rows_of_effective_kernel(layer)
    assert np.all(rows[~mask] == 0)  # uncalibrated: the masked float kernel
    setattr(layer, f"is_{mode}_calibrated", True)
    rows = _rows_of_effective_kernel(layer)
    assert np.all(rows[~mask] == 0)
    assert np.count_nonzero(rows[mask]) > mask.sum() // 2


def test_lora_update_is_masked():
    # Catches: a LoRA update that brings masked connections back.
    mask = _half_mask()
    layer = _layer(mask, lora_rank=2)
    layer.lora_kernel_b.assign(np.ones((2, 6), "float32"))  # a non-zero update everywhere
    x = np.eye(8, dtype="float32")
    effective = layer(x).numpy() - layer.bias.numpy()  # row i: the kernel's row i
    assert np.all(effective[~mask] == 0)
    assert np.count_nonzero(effective[mask]) == mask.sum()


def test_quantized_with_full_masks_refuses_a_later_bias_cut():
    # Catches: a mask change that a quantized graph (which reads no mask) would ignore.
    layer = _layer()
    layer.quantize("float8")
    with pytest.raises(MaskMagicError, match="set the mask before quantizing"):
        layer.set_mask(_half_mask())


def test_sparse_layers_refuse_quantization_and_lora():
    # Catches: NotImplementedError or shape errors from Keras on a sparse layer.
    mask = np.zeros((8, 6), bool)
    mask[0] = True
    layer = _layer(mask, impl="sparse")
    with pytest.raises(MaskMagicError, match="quantization needs the dense"):
        layer.quantize("int8")
    with pytest.raises(MaskMagicError, match="LoRA needs the dense"):
        layer.enable_lora(2)


# ------------------------------------------------------------------ masked() and strip()


def _trained_functional():
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="h")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(3, name="out")(h)
    model = keras.Model(x, out, name="trained")
    model.compile("adam", "mse")
    model.fit(X8, RNG.normal(size=(16, 3)), epochs=2, verbose=0)
    return model


def test_masked_keeps_graph_names_weights_and_strip_inverts_it_bit_for_bit():
    # Catches: masked() losing weights (BatchNorm statistics included), names or the graph;
    # strip(masked(m)) computing anything but m.
    model = _trained_functional()
    copy = mm.masked(model)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    assert [type(layer).__name__ for layer in copy.layers][1:] == [
        "MaskedDense",
        "BatchNormalization",
        "MaskedDense",
    ]
    assert copy.compiled
    np.testing.assert_array_equal(copy.predict(X8, verbose=0), model.predict(X8, verbose=0))
    stripped = mm.strip(copy)
    assert all(type(layer) is not MaskedDense for layer in stripped.layers)
    np.testing.assert_array_equal(stripped.predict(X8, verbose=0), model.predict(X8, verbose=0))


def test_masked_applies_masks_and_refuses_unknown_layers():
    # Catches: masks ignored or set on the wrong layer; a typo failing silently.
    model = _trained_functional()
    mask = _half_mask()
    copy = mm.masked(model, masks={"h": mask}, bias_masks={"out": [1, 0, 1]})
    np.testing.assert_array_equal(copy.get_layer("h").get_mask(), mask)
    np.testing.assert_array_equal(copy.get_layer("out").effective_bias()[1], 0)
    assert np.array_equal(model.get_layer("h").kernel.numpy(), copy.get_layer("h").kernel.numpy())
    with pytest.raises(MaskMagicError, match="masks names 'bn', expected one of .*h, out"):
        mm.masked(model, masks={"bn": mask})
    with pytest.raises(MaskMagicError, match="mask of layer 'h'"):
        mm.masked(model, masks={"h": np.ones((3, 3))})


def test_masked_sequential():
    # Catches: Sequential models not converted.
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    copy = mm.masked(model, masks={model.layers[0].name: mm.masks.random(0.5, seed=0)})
    assert isinstance(copy, keras.Sequential)
    assert all(isinstance(layer, MaskedDense) for layer in copy.layers)
    np.testing.assert_array_equal(mm.strip(mm.masked(model))(X8), model(X8))


# ------------------------------------------------------------------ from_model cells


def test_from_model_cell_trains_with_freeze_exactly():
    # Catches: from_model cells not building, or freeze not holding on a converted model.
    model = _trained_functional()
    cell = "from_model trained masks=M\nloss mse\noptimizer adam\ntrain keep freeze=out[0]"
    net, ops = build(cell, {"trained": model, "M": {"h": _half_mask()}})
    assert isinstance(net.get_layer("h"), MaskedDense)
    y = RNG.normal(size=(16, 3)).astype("float32")
    before = net.predict(X8, verbose=0)
    for _ in range(3):
        ops["keep"](X8, y)
    after = net.predict(X8, verbose=0)
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    assert not np.array_equal(after[:, 1:], before[:, 1:])


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("from_model nothing", "expected a built functional or Sequential keras.Model"),
        ("from_model m\ninput x 3", "in a from_model cell"),
        ("from_model m masks=5", "expected a dict"),
        ("from_model m\ntrain t nope[0]", "nope"),
    ],
)
def test_from_model_errors_are_cell_errors(cell, words):
    # Catches: foreign exceptions or tracebacks for bad from_model cells.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(CellError, match=words):
        build(cell, {"m": model, "nothing": None})
