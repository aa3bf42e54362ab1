"""Keras' own Dense test file, with ``Dense`` replaced by :class:`MaskedDense` (no mask).

Catches every place where a fully connected MaskedDense differs from ``keras.layers.Dense``:
weights, weight files, input spec, quantization (int8, int4, float8, GPTQ, AWQ, the quantized
dtype policies), LoRA, serialization, training.
"""

from __future__ import annotations

from maskmagic.layers import MaskedDense
from tests.keras_dense.loader import substituted_module

_module = substituted_module(MaskedDense, "tests._keras_dense_test_masked")


class TestKerasDenseOnMaskedDense(_module.DenseTest):
    """Every test of ``keras/src/layers/core/dense_test.py::DenseTest``."""
