"""Shared fixtures: small Keras nets built with the Python API."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maskmagic.layers import MaskedDense  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _older_objects_left_out_of_garbage_collection():
    """Each test module starts with everything still alive moved out of the collector's sight.

    A long suite keeps millions of objects alive (Keras and TensorFlow caches); every full
    collection walks all of them, which made the object-heavy hypothesis oracle 12x slower late
    in a run than alone. ``gc.freeze`` leaves them out of later collections.
    """
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(autouse=True)
def _fresh_keras_state(request):
    """Each Keras test starts from a clean Keras session (layer names, seeds, dtype policy)."""
    if not hasattr(request.module, "keras"):
        yield
        return
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


def make_342(hidden_mask=None, out_mask=None, activation="sigmoid") -> keras.Model:
    """The 3-4-2 net of DESIGN.md's first question."""
    x = keras.Input((3,), name="x")
    h = MaskedDense(4, mask=hidden_mask, activation=activation, name="hidden")(x)
    out = MaskedDense(2, mask=out_mask, name="out")(h)
    return keras.Model(x, out, name="net")


@pytest.fixture
def net342() -> keras.Model:
    return make_342()


@pytest.fixture
def data342():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5 + 0.3], axis=1).astype("float32")
    return x, y
