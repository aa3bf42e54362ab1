"""Comparing two computations of one float value (as opposed to exact-by-construction results).

Two different computations of the same mathematical value (a compiled pass and an eager tape;
a SavedModel graph and the eager model) may round differently: TensorFlow's graph optimizer
fuses ops (MatMul + BiasAdd + activation under oneDNN), and oneDNN picks blocking and summation
orders by CPU (AVX2, AVX-512) and batch size. Such results agree to a few float32 units in the
last place of the largest value involved, never bit for bit on every x86 CPU. Results that are
exact by construction (a masked gradient is 0, frozen entries are untouched, the same op on the
same values) are still compared with ``assert_array_equal``.
"""

from __future__ import annotations

import numpy as np

# float32 machine epsilon: one unit in the last place of a value in [1, 2).
EPS32 = float(np.finfo(np.float32).eps)

# A reduction of n products re-associated differently moves the result by at most about
# log2(n) roundings of the largest partial sum; the layers compared in the tests reduce over
# at most a few hundred terms, so 16 ulps of the largest magnitude bounds the difference with
# room to spare (observed on AVX-512 oneDNN: up to 1.6e-7 on outputs of magnitude ~1, i.e.
# about 1.3 ulps), while any real error (a wrong mask, a stale weight) is far larger.
ULPS = 16


def assert_same_value(actual, expected, ulps: int = ULPS, err_msg: str = "") -> None:
    """Asserts two float32 computations of one value agree to ``ulps`` ulps of their scale.

    The scale is the largest magnitude in ``expected`` (so entries that cancel to nearly 0 are
    compared on the scale of the sums they came from); exact zeros in both stay allowed.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shapes {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    tolerance = ulps * EPS32 * max(scale, np.finfo(np.float32).tiny)
    np.testing.assert_allclose(actual, expected, rtol=ulps * EPS32, atol=tolerance, err_msg=err_msg)
