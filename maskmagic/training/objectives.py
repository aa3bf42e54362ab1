"""Keras loss and optimizer objects from the names a user writes (``mse``, ``adam``...)."""

from __future__ import annotations

from typing import Any

import keras

from maskmagic.errors import MaskMagicError

__all__ = ["make_loss", "make_optimizer"]

_LOSS_ALIASES = {
    "mse": "MeanSquaredError",
    "mae": "MeanAbsoluteError",
    "mape": "MeanAbsolutePercentageError",
    "msle": "MeanSquaredLogarithmicError",
}


def _camel(name: str) -> str:
    return _LOSS_ALIASES.get(name.lower()) or "".join(p.capitalize() for p in name.split("_"))


class _FunctionLoss(keras.losses.Loss):
    """Wraps a plain ``loss(y_true, y_pred)`` function as a Keras Loss (mean over the batch)."""

    def __init__(self, fn: Any, name: str | None = None) -> None:
        super().__init__(name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.fn(y_true, y_pred)


def make_loss(loss: Any = "mse", **options: Any) -> keras.losses.Loss:
    """A Keras loss object from a name (``"mse"``, ``"binary_crossentropy"``) and options."""
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss) and not isinstance(loss, str):
        return _FunctionLoss(loss)
    reason = ""
    try:
        found = keras.losses.get({"class_name": _camel(str(loss)), "config": options})
    except (ValueError, TypeError, KeyError) as exc:
        found, reason = None, f" ({exc})" if options else ""
    if found is None:
        try:
            found = keras.losses.get(loss) if not options else None
        except (ValueError, TypeError, KeyError):
            found = None
    if found is None or type(found) is keras.losses.Loss:  # unknown, or the abstract base
        raise MaskMagicError(
            f"unknown loss {loss!r} or bad options {options}; expected a Keras loss name such "
            f"as mse, mae, binary_crossentropy, categorical_crossentropy, huber{reason}"
        )
    return found if isinstance(found, keras.losses.Loss) else _FunctionLoss(found, str(loss))


def make_optimizer(optimizer: Any = "sgd", **options: Any) -> keras.optimizers.Optimizer:
    """A Keras optimizer from a name (``"sgd"``, ``"adam"``) and its arguments."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    try:  # KeyError: a required argument missing (loss_scale_optimizer's inner_optimizer)
        return keras.optimizers.get({"class_name": str(optimizer).lower(), "config": options})
    except (ValueError, TypeError, KeyError) as exc:
        detail = "" if "Could not interpret" in str(exc) else f" ({exc})"
        known = _known_optimizer(str(optimizer)) if options else None
        if known is not None:
            raise MaskMagicError(
                f"optimizer {optimizer!r} refused the arguments {options}{detail}; expected "
                f"arguments that keras.optimizers.{type(known).__name__} accepts"
            ) from None
        raise MaskMagicError(
            f"unknown optimizer {optimizer!r} or bad arguments {options}; expected a Keras "
            f"optimizer name such as sgd, adam, adamw, rmsprop, adagrad, lion{detail}"
        ) from None


def _known_optimizer(name: str) -> keras.optimizers.Optimizer | None:
    """The optimizer ``name`` with its default arguments, or None if Keras has no such name."""
    try:
        return keras.optimizers.get({"class_name": name.lower(), "config": {}})
    except (ValueError, TypeError, KeyError):
        return None
