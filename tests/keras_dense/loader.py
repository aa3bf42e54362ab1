"""Keras' own Dense tests, run against MaskedDense: the installed keras wheel's
``keras/src/layers/core/dense_test.py``, imported from its source with ``layers.Dense``
replaced by a MaskedDense class and nothing else changed.

``substituted_module(cls)`` executes that file's source as a new module whose ``layers`` is a
view of ``keras.src.layers`` in which ``Dense`` is ``cls`` (every other name is Keras' own).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import keras

SOURCE = Path(keras.__file__).parent / "src" / "layers" / "core" / "dense_test.py"


class _Layers(types.ModuleType):
    """``keras.src.layers`` with ``Dense`` replaced."""

    def __init__(self, dense: type) -> None:
        super().__init__("keras_src_layers_with_masked_dense")
        self._dense = dense

    def __getattr__(self, name: str):
        if name == "Dense":
            return self._dense
        return getattr(keras.layers, name)


def substituted_module(dense: type, name: str) -> types.ModuleType:
    """The Keras Dense test module with ``layers.Dense`` = ``dense``, registered as ``name``."""
    if not SOURCE.exists():  # the wheel always ships it; a missing file is a broken install
        raise FileNotFoundError(f"keras ships no {SOURCE}; the keras install is incomplete")
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(SOURCE)
    sys.modules[name] = module
    code = compile(SOURCE.read_text(encoding="utf-8"), str(SOURCE), "exec")
    module.__dict__["__builtins__"] = __builtins__
    exec(code, module.__dict__)  # noqa: S102 - Keras' own test file, from the installed wheel
    module.layers = _Layers(dense)  # after the imports: the test bodies look it up at call time
    return module


class WithMask:
    """Stands for a MaskedDense class whose layers get ``mask`` by default (a mask constructor).

    Calling it makes a MaskedDense with that mask; ``from_config`` and the other class
    attributes are MaskedDense's, and a ``class MyDense(WithMask(...))`` statement subclasses
    MaskedDense itself (``__mro_entries__``).
    """

    def __init__(self, cls: type, mask) -> None:
        self._cls, self._mask = cls, mask

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("mask", self._mask)
        return self._cls(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._cls, name)

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (self._cls,)

    def __instancecheck__(self, instance) -> bool:
        return isinstance(instance, self._cls)
