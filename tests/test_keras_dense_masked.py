"""Keras' own Dense tests with a random 50% mask on every layer they make.

Catches: behaviour of a masked layer (weights, files, quantization, LoRA, training, export) that
differs from Dense's where the mask does not change the test's expectation. Tests whose
expectation is computed from the unmasked kernel are listed in ``CHANGED`` with the reason and
must fail with an AssertionError (strict xfail: if one passed, the mask would have been
ignored); their masked counterparts are in ``tests/test_dense_compat.py``.
"""

from __future__ import annotations

import pytest

from maskmagic import masks
from maskmagic.layers import MaskedDense
from tests.keras_dense.loader import WithMask, substituted_module

_module = substituted_module(WithMask(MaskedDense, masks.random(0.5, seed=0)), "tests._kd_half")

_OUTPUTS = "compares outputs with x @ kernel of the unmasked kernel"
_EXPORT = (
    "counts the exported SavedModel's variables: a masked (not full) quantized layer's graph "
    "also reads its 2 mask variables"
)
CHANGED: dict[str, str] = {
    "test_dense_correctness": _OUTPUTS,
    "test_dense_no_activation": _OUTPUTS,
    "test_dense_with_activation": _OUTPUTS,
    "test_dense_without_activation_set": _OUTPUTS,
    "test_dense_sparse": _OUTPUTS,
    "test_legacy_load_own_variables": (
        "expects random stored int8/int4 integers back; the masked entries hold the quantized zero"
    ),
    "test_quantize_float8": (
        "recomputes the kernel's float8 amax history from the unmasked kernel; the layer "
        "multiplies by (and records) the masked one. Not strict: equal whenever the largest "
        "kernel entry of the random kernel happens to be connected"
    ),
    "test_quantize_float8_fitting": _EXPORT,
    "test_quantize_lora_integration_int4": _EXPORT,
    "test_quantize_lora_integration_int8": _EXPORT,
}


class TestKerasDenseOnHalfMaskedDense(_module.DenseTest):
    """Every test of Keras' DenseTest, each layer with a random 50% mask."""


@pytest.fixture(autouse=True)
def _changed_expectation(request):
    reason = CHANGED.get(request.node.name)
    if reason:
        strict = "Not strict" not in reason  # see the reason: it may pass by chance
        request.node.add_marker(
            pytest.mark.xfail(reason=reason, raises=AssertionError, strict=strict)
        )
