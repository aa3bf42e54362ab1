"""Writes the v1 (pre-Dense-subclass) MaskedDense files that tests/test_dense_compat.py loads.

Run once with the maskmagic version that wrote them (commit c0d649a); kept for the record.
Writes model.keras, model.weights.h5 and expected.npz (inputs, outputs, weights, masks).
"""

import pathlib

import keras
import numpy as np

from maskmagic.layers import MaskedDense

here = pathlib.Path(__file__).parent
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
mask_h = rng.random((5, 4)) < 0.5
mask_h[:, 0] = True
bias_mask_h = np.array([1, 0, 1, 1], bool)
mask_s = np.zeros((4, 3), bool)
mask_s[[0, 1, 3], [0, 2, 1]] = True
x = keras.Input((5,), name="x")
h = MaskedDense(4, mask=mask_h, bias_mask=bias_mask_h, activation="tanh", name="hidden")(x)
s = MaskedDense(3, mask=mask_s, impl="sparse", name="sparse")(h)
out = MaskedDense(2, use_bias=False, name="out")(s)
model = keras.Model(x, out, name="v1")
for layer in model.layers[1:]:
    for variable in (layer.kernel, layer.bias):
        if variable is not None:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
inputs = rng.normal(size=(6, 5)).astype("float32")
model.save(here / "model.keras")
model.save_weights(here / "model.weights.h5")
np.savez(
    here / "expected.npz",
    inputs=inputs,
    outputs=model.predict(inputs, verbose=0),
    hidden_kernel=model.get_layer("hidden").kernel.numpy(),
    hidden_bias=model.get_layer("hidden").bias.numpy(),
    hidden_mask=model.get_layer("hidden").get_mask(),
    hidden_bias_mask=model.get_layer("hidden").get_bias_mask(),
    sparse_kernel=model.get_layer("sparse").kernel.numpy(),
    sparse_mask=model.get_layer("sparse").get_mask().toarray(),
    out_kernel=model.get_layer("out").kernel.numpy(),
)
