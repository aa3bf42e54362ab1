"""Checking what a GradientInspector is given, and resolving what ``%grad_inspector`` names."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic.errors import MaskMagicError
from maskmagic.expressions import evaluate
from maskmagic.training import TrainOp, make_loss, selectors
from maskmagic.widgets.inspector.probes import Probe, probe_for

__all__ = [
    "MAX_NAMES",
    "batch",
    "check_model",
    "check_targets",
    "finite",
    "model_loss",
    "name_of",
    "names",
    "probes",
    "resolve",
    "shapes",
]

MAX_NAMES = 1 << 16  # input/unit names are sent for layers up to this many inputs/units
_WHAT = ("a Keras model", "the batch's inputs", "the batch's targets")


def check_model(model: Any) -> None:
    """Checks that ``model`` is a built Keras model.

    Raises:
        MaskMagicError: not a ``keras.Model``, or not built yet.
    """
    if not isinstance(model, keras.Model):
        raise MaskMagicError(
            f"model must be a Keras model (such as the net a %%masked_net cell makes); "
            f"received {type(model).__name__}"
        )
    if not model.built:
        raise MaskMagicError(
            f"model {model.name!r} is not built; call it once or build it with an input shape"
        )


def probes(model: keras.Model) -> list[Probe]:
    """The gradient probe of each layer of ``model`` with a 2-D kernel, in layer order.

    Raises:
        MaskMagicError: the model has no such layer (nothing to inspect).
    """
    candidates = [probe_for(layer) for layer in selectors.parameter_layers(model).values()]
    found = [p for p in candidates if p is not None]
    if not found:
        raise MaskMagicError(
            f"model {model.name!r} has no layer with a 2-D kernel (MaskedDense or Dense); "
            "expected at least one, nothing to inspect"
        )
    return found


def model_loss(model: keras.Model, loss: Any) -> Any:
    """The loss to inspect: ``loss`` if given, else the model's compiled loss, else MSE.

    Raises:
        MaskMagicError: ``loss`` (or the compiled loss) is not a loss maskmagic knows.
    """
    if loss is not None:
        return make_loss(loss)
    compiled = getattr(model, "loss", None)
    if isinstance(compiled, (str, keras.losses.Loss)) or callable(compiled):
        return make_loss(compiled)
    return make_loss("mse")


def _as_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise MaskMagicError(
            f"{what} must be an array; received {type(value).__name__} ({exc})"
        ) from None
    if array.dtype == object or array.ndim == 0:
        raise MaskMagicError(
            f"{what} must be a numeric array with a batch axis; received {type(value).__name__}"
            f" of shape {array.shape}"
        )
    return array


def batch(model: keras.Model, x: Any, y: Any) -> tuple[Any, Any]:
    """x and y as tensors, checked against the model's inputs and each other."""
    inputs = list(getattr(model, "inputs", None) or [])
    xs = list(x) if isinstance(x, (list, tuple)) and len(inputs) > 1 else [x]
    if inputs and len(xs) != len(inputs):
        raise MaskMagicError(
            f"x must hold {len(inputs)} arrays, one per input of model {model.name!r}; "
            f"received {len(xs)}"
        )
    arrays = [_as_array(a, "x") for a in xs]
    for array, spec in zip(arrays, inputs):
        want = tuple(spec.shape[1:])
        got = array.shape[1:]
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = ", ".join("?" if w is None else str(w) for w in want)
            raise MaskMagicError(
                f"x has shape {array.shape}, expected (batch, {shown}) for input "
                f"{spec.name!r} of model {model.name!r}"
            )
    ys = (
        list(y)
        if isinstance(y, (list, tuple))
        and np.ndim(y[0]) >= 1
        and len(getattr(model, "outputs", None) or [0]) > 1
        else [y]
    )
    targets = [_as_array(a, "y") for a in ys]
    batch = arrays[0].shape[0]
    for array in [*arrays, *targets]:
        if array.shape[0] != batch:
            raise MaskMagicError(
                f"x and y must have the same batch size; received {batch} and {array.shape[0]}"
            )
    if batch == 0:
        raise MaskMagicError("the batch is empty; expected at least one sample in x and y")
    dtype = keras.backend.floatx()
    convert = lambda a: tf.convert_to_tensor(a.astype(dtype) if a.dtype.kind in "fc" else a)  # noqa: E731
    tx = [convert(a) for a in arrays]
    ty = [convert(a) for a in targets]
    return (tx[0] if len(tx) == 1 else tx), (ty[0] if len(ty) == 1 else ty)


def check_targets(model: keras.Model, y: Any, loss: Any) -> None:
    """y must be shaped like the output of a single-output model (sparse losses excepted)."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) != 1 or isinstance(y, (list, tuple)) or "sparse" in type(loss).__name__.lower():
        return
    want = tuple(outputs[0].shape[1:])
    got = tuple(y.shape[1:])
    if len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got)):
        return
    shown = ", ".join("?" if w is None else str(w) for w in want)
    raise MaskMagicError(
        f"y has shape {tuple(y.shape)}, expected (batch, {shown}) like the output of "
        f"model {model.name!r}"
    )


def names(layer: Any) -> dict:
    """``{"inputs": [...] | None, "units": [...] | None}``: a layer's input and unit names.

    None where the layer has no names, or more than :data:`MAX_NAMES` of them (too many to
    send to the front end).
    """

    def fit(names: Any) -> list | None:
        return list(names) if names and len(names) <= MAX_NAMES else None

    return {
        "inputs": fit(getattr(layer, "input_names", None)),
        "units": fit(getattr(layer, "unit_names", None)),
    }


def name_of(names: list | None, index: int) -> str | None:
    """The name at ``index`` of a list from :func:`names`, or None (no names, out of range)."""
    return names[index] if names and index < len(names) else None


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is inf or nan (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def shapes(value: Any) -> str:
    """The shape of a tensor, or the shapes of a list of them, for error messages."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(tuple(v.shape)) for v in value)
    return str(tuple(value.shape))


def resolve(net: str, x: str, y: str, op: str | None, namespace: dict[str, Any]) -> dict[str, Any]:
    """The values ``%grad_inspector NET X Y [--op OP]`` names: ``{"model", "x", "y", "op"}``.

    Each is a name in ``namespace`` or a Python expression evaluated there.

    Raises:
        MaskMagicError: unknown names, expressions that fail, or values of the wrong kind.
    """
    model, xs, ys = (_lookup(text, namespace, what) for text, what in zip((net, x, y), _WHAT))
    if not isinstance(model, keras.Model):
        raise MaskMagicError(
            f"%grad_inspector: NET {net!r} is a {type(model).__name__}; expected a "
            "Keras model such as the net a %%masked_net cell defines"
        )
    train_op = None
    if op is not None:
        train_op = _lookup(op, namespace, "a train op")
        if not isinstance(train_op, TrainOp):
            raise MaskMagicError(
                f"%grad_inspector: --op {op!r} is a {type(train_op).__name__}; expected a "
                "TrainOp such as one a `train` line of a %%masked_net cell defines"
            )
    return {"model": model, "x": xs, "y": ys, "op": train_op}


def _lookup(text: str, namespace: dict[str, Any], what: str) -> Any:
    if text.isidentifier():
        if text not in namespace:
            raise MaskMagicError(
                f"%grad_inspector: name {text!r} is not defined in the notebook; expected {what}"
            )
        return namespace[text]
    try:
        return evaluate(text, namespace)
    except Exception as exc:  # the user's own expression: whatever it raises is its failure
        raise MaskMagicError(
            f"%grad_inspector: cannot evaluate {text!r} ({type(exc).__name__}: {exc}); "
            f"expected {what}"
        ) from None
