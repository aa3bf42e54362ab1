"""maskmagic: hand-wired TensorFlow/Keras networks from a Jupyter cell magic.

The public API is imported lazily, so ``import maskmagic`` and ``%load_ext maskmagic`` stay
cheap until a name that needs TensorFlow is used.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from maskmagic import _quiet
from maskmagic._version import __version__ as __version__

# TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines) drowns notebook output:
# its INFO and WARNING lines are off, and its start-up banners, which print before that setting
# applies, are filtered out of the first `import tensorflow` (maskmagic/_quiet.py). Users who
# want everything back set TF_CPP_MIN_LOG_LEVEL=0 before importing maskmagic.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_quiet.install()

__all__ = [
    "GradientInspector",
    "MaskEditor",
    "MaskMagicError",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedDense",
    "TrainOp",
    "build",
    "deploy",
    "load_ipython_extension",
    "masked",
    "masks",
    "strip",
]

_LAZY = {
    "GradientInspector": "maskmagic.widgets.inspector",
    "MaskEditor": "maskmagic.widgets.editor",
    "MaskMagicError": "maskmagic.errors",
    "MaskedConv1D": "maskmagic.layers",
    "MaskedConv2D": "maskmagic.layers",
    "MaskedDense": "maskmagic.layers",
    "TrainOp": "maskmagic.training",
    "build": "maskmagic.builder",
    "masked": "maskmagic.deploy",
    "strip": "maskmagic.deploy",
}


def __getattr__(name: str) -> Any:
    if name in ("masks", "deploy"):
        return importlib.import_module(f"maskmagic.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'maskmagic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext maskmagic``: registers ``%%masked_net``, ``%mask_editor``, ``%grad_inspector``."""
    from maskmagic.magic import load_ipython_extension as load

    load(ipython)
