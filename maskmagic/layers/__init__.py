"""Masked Keras 3 layers: masked connections contribute nothing and get a zero gradient.

Importing this package registers the layers with Keras (``"maskmagic>MaskedDense"``,
``"maskmagic>MaskedConv1D"``, ``"maskmagic>MaskedConv2D"``), so
``keras.models.load_model`` can read files that hold them.
"""

from maskmagic.layers.conv import CONV_IMPLS, MaskedConv1D, MaskedConv2D
from maskmagic.layers.dense import IMPLS, MaskedDense

__all__ = ["CONV_IMPLS", "IMPLS", "MaskedConv1D", "MaskedConv2D", "MaskedDense"]
