"""The inspector's native block summary (MaskmagicBlockSummary): XLA's summary, in one pass.

A large dense layer's gradient is pooled, counted and ranked by ``summary_ops.cc`` instead of
one XLA program (see maskmagic/widgets/inspector/probes.py). Needs a C++ compiler (g++), like
tests/test_mask_select.py: ``MASKMAGIC_SPARSE_KERNEL=native`` makes a failed build an error.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from maskmagic.layers import MaskedDense, mask_select, native
from maskmagic.widgets.inspector import GradientInspector, probes

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-42, -1e-42], "float32")


@pytest.fixture
def library(monkeypatch):
    """The native ops, and probes that use them from any size on."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    return native.kernel_ops()


def _gradient(shape, seed, specials=True):
    rng = np.random.default_rng(seed)
    wb = rng.normal(size=shape).astype("float32")
    wb[rng.random(shape) < 0.05] = 0.0
    if specials:  # each special value at a few places, some masked and some not below
        for value in SPECIALS:
            wb.reshape(-1)[rng.integers(0, wb.size, 6)] = value
    return wb, rng.random(shape) < 0.5, rng.random(shape) < 0.5


def _summaries(library, wb, mask, update, grid):
    """(XLA's summary, the native one) of the same arguments, as numpy."""
    args = (
        tf.constant(wb),
        None if mask is None else tf.constant(mask),
        None if update is None else tf.constant(update),
        tf.constant(-wb),  # the "kernel": top_w must read it at the top indices
        grid,
        10,
    )
    xla = tf.function(lambda: probes.dense_summary(*args), jit_compile=True)()
    own = tf.function(lambda: probes.dense_summary(*args, library=library))()
    return (
        {k: v.numpy() for k, v in xla.items()},
        {k: v.numpy() for k, v in own.items()},
    )


def _bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.int32) if values.dtype == np.float32 else values


@pytest.mark.parametrize("shape", [(1000, 700), (257, 513), (301, 2001)])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_update", [False, True])
def test_native_summary_has_the_bits_of_the_xla_summary(library, shape, with_mask, with_update):
    """Catches the native pooling losing a sign, a view, a partial block at an edge, the mask or
    the update set: every pooled value, count and top connection (NaN, -NaN, +-inf, -0.0 and
    subnormals included) must carry XLA's bits; the sum of squares its value."""
    wb, mask, update = _gradient(shape, seed=shape[0])
    grid = probes.grid_for(shape)
    assert grid.pooled and (shape[0] % grid.bh or shape[1] % grid.bw)  # partial edge blocks
    xla, own = _summaries(
        library, wb, mask if with_mask else None, update if with_update else None, grid
    )
    assert sorted(own) == sorted(xla)
    for key in xla:
        if key == "sumsq":
            np.testing.assert_allclose(own[key], xla[key], rtol=1e-6)
        else:
            np.testing.assert_array_equal(_bits(own[key]), _bits(xla[key]), err_msg=key)


def test_native_summary_statistics_of_finite_gradients(library):
    """The native sum of squares and zero count against numpy's (no special values)."""
    wb, mask, update = _gradient((1000, 700), seed=3, specials=False)
    grid = probes.grid_for(wb.shape)
    out = tf.function(
        lambda: probes.dense_summary(
            tf.constant(wb), tf.constant(mask), tf.constant(update), tf.constant(wb), grid, 10,
            library=library,
        )
    )()  # fmt: skip
    g = np.where(mask, wb, 0).astype(np.float64)
    assert float(out["sumsq"]) == pytest.approx(np.sum(g**2), rel=1e-6)
    assert int(out["zeros"]) == int(np.sum(g == 0))
    largest = np.argsort(-np.abs(g), axis=None, kind="stable")[:10]
    assert sorted(out["top_index"].numpy().tolist()) == sorted(largest.tolist())


def test_top_connections_put_nan_first_on_both_paths(library):
    """Catches the ranking of top connections by float |g|, under which TensorFlow's top_k
    (the native path) never picks a NaN gradient and XLA's always does."""
    wb = np.ones((600, 600), "float32")
    wb[5, 7], wb[300, 2] = np.nan, -np.inf
    grid = probes.grid_for(wb.shape)
    for summary in _summaries(library, wb, None, None, grid):
        index = summary["top_index"].tolist()
        assert index[:2] == [5 * 600 + 7, 300 * 600 + 2]
        assert np.isnan(summary["top_g"][0]) and summary["top_g"][1] == -np.inf


def test_native_summary_refuses_a_mask_of_another_shape(library):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected a mask shaped like wb"):
        library.maskmagic_block_summary(
            tf.zeros((4, 6)), tf.zeros((4, 5), tf.bool), tf.zeros((0,), tf.bool),
            bh=2, bw=2, has_mask=True, has_update=False,
        )  # fmt: skip


def _masked_net(n_in, units, seed):
    rng = np.random.default_rng(seed)
    x_in = keras.Input((n_in,))
    layer = MaskedDense(units, mask=rng.random((n_in, units)) < 0.4, impl="dense", name="big")
    model = keras.Model(x_in, layer(x_in))
    x = rng.normal(size=(8, n_in)).astype("float32")
    y = rng.normal(size=(8, units)).astype("float32")
    return model, x, y


def test_large_dense_layer_is_summarised_natively_without_xla(monkeypatch):
    """Catches the probe of a layer from NATIVE_MIN_ENTRIES entries on keeping XLA (or losing the
    native op), and a smaller one losing XLA; the inspector's figures equal those on XLA."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "native")
    model, x, y = _masked_net(600, 500, seed=1)
    layer = model.get_layer("big")
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 600 * 500)
    on_native = GradientInspector(model, x, y)
    probe = on_native._probes[0]
    assert probe._library is not None and not probe._summary._jit_compile
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 600 * 500 + 1)
    on_xla = GradientInspector(model, x, y)
    assert on_xla._probes[0]._library is None and on_xla._probes[0]._summary._jit_compile
    assert on_native.layers[0]["zero_share"] == on_xla.layers[0]["zero_share"]
    np.testing.assert_allclose(on_native.layers[0]["norm"], on_xla.layers[0]["norm"], rtol=1e-6)
    assert on_native.top == on_xla.top
    wb = on_native.would_be_gradients["big"]
    np.testing.assert_array_equal(wb, on_xla.would_be_gradients["big"])
    gradient = np.where(layer.get_mask(), wb, 0)
    largest = np.argsort(-np.abs(gradient), axis=None, kind="stable")[: len(on_native.top)]
    expected = {tuple(int(v) for v in np.unravel_index(f, gradient.shape)) for f in largest}
    assert {(row["i"], row["j"]) for row in on_native.top} == expected


def test_stock_mode_keeps_the_xla_summary(monkeypatch):
    """``MASKMAGIC_SPARSE_KERNEL=stock`` turns the native summary away, as every native op."""
    monkeypatch.setenv("MASKMAGIC_SPARSE_KERNEL", "stock")
    monkeypatch.setattr(mask_select, "NATIVE_MIN_ENTRIES", 0)
    model, x, y = _masked_net(600, 500, seed=2)
    probe = GradientInspector(model, x, y)._probes[0]
    assert probe._library is None and probe._summary._jit_compile
