"""Masked Keras 3 layers: masked connections contribute nothing and get a zero gradient.

Importing this package registers the layers with Keras (``"maskmagic>MaskedDense"``), so
``keras.models.load_model`` can read files that hold them.
"""

from maskmagic.layers.dense import IMPLS, MaskedDense

__all__ = ["IMPLS", "MaskedDense"]
