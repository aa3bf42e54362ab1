"""TrainOp: a compiled train step that updates only a chosen part of a model.

Zeroing gradients is not enough to keep parameters fixed: momentum, Adam's moments and weight
decay still move entries whose gradient is zero. A TrainOp therefore (1) hands the optimizer
only the variables it may change, (2) zeroes the gradient of entries it may not change, and
(3) after the optimizer's update writes back the previous values of those entries and of their
optimizer slots (momentum, moments, accumulators). Entries outside the op are bit-identical
after any number of steps, with any Keras optimizer, even one shared with other ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import reach, selectors
from maskmagic.errors import MaskMagicError, SelectorError

__all__ = ["TrainOp", "make_loss", "make_optimizer"]

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
    try:
        return keras.losses.get({"class_name": _camel(str(loss)), "config": options})
    except (ValueError, TypeError):
        pass
    try:
        found = keras.losses.get(loss) if not options else None
    except (ValueError, TypeError):
        found = None
    if found is None:
        raise MaskMagicError(
            f"unknown loss {loss!r} or bad options {options}; expected a Keras loss name such "
            "as mse, mae, binary_crossentropy, categorical_crossentropy, huber"
        )
    return found if isinstance(found, keras.losses.Loss) else _FunctionLoss(found, str(loss))


def make_optimizer(optimizer: Any = "sgd", **options: Any) -> keras.optimizers.Optimizer:
    """A Keras optimizer from a name (``"sgd"``, ``"adam"``) and its arguments."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    try:
        return keras.optimizers.get({"class_name": str(optimizer).lower(), "config": options})
    except (ValueError, TypeError) as exc:
        detail = "" if "Could not interpret" in str(exc) else f" ({exc})"
        raise MaskMagicError(
            f"unknown optimizer {optimizer!r} or bad arguments {options}; expected a Keras "
            f"optimizer name such as sgd, adam, adamw, rmsprop, adagrad, lion{detail}"
        ) from None


def _slots(optimizer: keras.optimizers.Optimizer, variable) -> list:
    """The optimizer variables shaped like ``variable`` that belong to it (momentum, ...)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    tracked = optimizer._trainable_variables
    index = optimizer._get_variable_index(variable)
    found = []
    for attr, value in vars(optimizer).items():
        if attr == "_trainable_variables" or not isinstance(value, list):
            continue
        if len(value) != len(tracked):
            continue
        slot = value[index]
        if slot is not None and hasattr(slot, "assign"):
            if tuple(slot.shape) == tuple(variable.shape):
                found.append(slot)
    return found


def _labels(items: list) -> str:
    """Selectors as the user wrote them: ``"out[1], h.bias"``."""
    return ", ".join(
        getattr(item, "text", None) or getattr(item, "path", None) or str(item) for item in items
    )


def _is_star(selector: Any) -> bool:
    return isinstance(selector, str) and selector.strip() == "*"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class TrainOp:
    """One train step that updates only the selected parameters of ``model``.

    Args:
        model: any built Keras model; selectors address layers with a kernel/bias.
        loss: a Keras loss name or object.
        optimizer: a Keras optimizer name or instance (ops given one instance share it).
        select: a selector string (``"out[1]"``, ``"out.kernel[:, 1]"``), a variable, a list
            of them, or None for every trainable variable.
        freeze: a unit selector (``"out[0]"``) or a list of them: every parameter with a path
            to those units is left out, so they stay bit-identical on every input.
        name: the op's name (shown in summaries).

    Raises:
        SelectorError: a selector names something the model does not have, or the op is left
            with nothing to train.
    """

    def __init__(
        self,
        model: keras.Model,
        loss: Any = "mse",
        optimizer: Any = "sgd",
        select: Any = None,
        freeze: Any = None,
        name: str | None = None,
    ) -> None:
        if not model.built:
            raise MaskMagicError(
                f"model {model.name!r} is not built; call it once or build it with an input "
                "shape before making a TrainOp"
            )
        self.model = model
        self.name = name or "train_op"
        self.loss = make_loss(loss)
        self.optimizer = make_optimizer(optimizer)
        self.select = _as_list(select)
        self.freeze = _as_list(freeze)
        self.trace_count = 0
        self._variables = {v.path: v for v in model.trainable_variables}
        self._selection = self._resolve_selection()
        self._freeze_units: dict[str, np.ndarray] = {}
        for unit_selector in self.freeze:
            for layer, vector in selectors.resolve_units(model, unit_selector).items():
                old = self._freeze_units.get(layer)
                self._freeze_units[layer] = vector if old is None else old | vector
        self._masked_layers = self._find_masked_layers()
        masks = self._compute_update_masks()
        if not any(m.any() for m in masks.values()):
            raise SelectorError(self._nothing_left_message())
        # Every selected variable takes part in the step, so that a later mask change that
        # opens or closes paths only changes the update masks, never the traced step.
        self._step_variables = [self._variables[p] for p in masks]
        self._mask_vars = {
            path: tf.Variable(masks[path], trainable=False, name=f"update_mask_{i}")
            for i, path in enumerate(masks)
            if not self._is_static_full(path)
        }
        self._versions = self._mask_versions()
        self._ensure_optimizer_built()
        self._step = self._make_step()

    # ------------------------------------------------------------------ selection
    def _resolve_selection(self) -> selectors.Selection:
        if not self.select or (len(self.select) == 1 and _is_star(self.select[0])):
            return {
                path: np.ones(tuple(v.shape), dtype=bool) for path, v in self._variables.items()
            }
        chosen = selectors.merge([selectors.resolve(self.model, s) for s in self.select])
        return {p: m for p, m in chosen.items() if p in self._variables}

    def _find_masked_layers(self) -> dict[str, tuple[Any, str]]:
        """{variable path: (layer, "kernel" | "bias")} for variables behind a mask."""
        found = {}
        for layer in selectors.parameter_layers(self.model).values():
            if hasattr(layer, "get_mask"):
                found[layer.kernel.path] = (layer, "kernel")
                if getattr(layer, "bias", None) is not None:
                    found[layer.bias.path] = (layer, "bias")
        return found

    def _is_static_full(self, path: str) -> bool:
        return (
            not self._freeze_units
            and path not in self._masked_layers
            and bool(self._selection[path].all())
        )

    def _mask_versions(self) -> tuple:
        return tuple(layer.mask_version for layer, _ in self._masked_layers.values())

    def _compute_update_masks(self) -> dict[str, np.ndarray]:
        frozen = reach.influencers(self.model, self._freeze_units) if self._freeze_units else {}
        masks = {}
        for path, chosen in self._selection.items():
            allowed = chosen.copy()
            if path in frozen:
                allowed &= ~frozen[path]
            if path in self._masked_layers:
                layer, kind = self._masked_layers[path]
                connected = layer.get_mask() if kind == "kernel" else layer.get_bias_mask()
                allowed &= reach.dense_bool(connected)
            masks[path] = allowed
        return masks

    def _nothing_left_message(self) -> str:
        picked = _labels(self.select) or "every trainable variable"
        if self.freeze:
            frozen = _labels(self.freeze)
            return (
                f"train op {self.name!r}: freeze={frozen} leaves nothing trainable: every "
                f"parameter selected ({picked}) has a path to the frozen units; expected a "
                "selection with at least one parameter that cannot reach them"
            )
        return (
            f"train op {self.name!r}: the selection ({picked}) contains only masked-out "
            "connections; expected at least one connection whose mask is 1"
        )

    def _refresh_masks(self) -> None:
        """Recomputes the update masks after a layer mask changed (no re-trace)."""
        versions = self._mask_versions()
        if versions == self._versions:
            return
        masks = self._compute_update_masks()
        for path, variable in self._mask_vars.items():
            variable.assign(masks[path])
        self._versions = versions

    # ------------------------------------------------------------------ step
    def _ensure_optimizer_built(self) -> None:
        optimizer = self.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
            return
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        known = {id(v) for v in inner._trainable_variables}
        missing = [v.path for v in self._step_variables if id(v) not in known]
        if missing:
            raise MaskMagicError(
                f"train op {self.name!r}: the optimizer instance was built for other variables "
                f"and does not track {', '.join(missing)}; expected an optimizer that is new or "
                "was built with this model's trainable variables"
            )

    def _make_step(self):
        model, loss_fn, optimizer = self.model, self.loss, self.optimizer
        variables = list(self._step_variables)
        guarded = [
            (v, self._mask_vars[v.path], _slots(optimizer, v))
            for v in variables
            if v.path in self._mask_vars
        ]
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        others = []
        if inner.use_ema and inner.ema_overwrite_frequency:
            chosen = {id(v) for v in variables}
            others = [v for v in model.trainable_variables if id(v) not in chosen]

        @tf.function(reduce_retracing=True)
        def step(x, y):
            self.trace_count += 1
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                loss = _total_loss(loss_fn, y, prediction) + sum(model.losses)
            grads = tape.gradient(loss, variables)
            grads = [
                tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(grads, variables)
            ]
            masks = {id(v): m for v, m, _ in guarded}
            grads = [
                tf.where(masks[id(v)], g, tf.zeros_like(g)) if id(v) in masks else g
                for g, v in zip(grads, variables)
            ]
            saved = [
                (tf.identity(v.value), [tf.identity(s.value) for s in slots])
                for v, _, slots in guarded
            ]
            saved_others = [tf.identity(v.value) for v in others]
            optimizer.apply(grads, variables)
            for (variable, mask, slots), (old, old_slots) in zip(guarded, saved):
                variable.assign(tf.where(mask, variable.value, old))
                for slot, old_slot in zip(slots, old_slots):
                    slot.assign(tf.where(mask, slot.value, old_slot))
            for variable, old in zip(others, saved_others):
                variable.assign(old)
            return loss

        return step

    def __call__(self, x: Any, y: Any) -> float:
        """Runs one step on ``(x, y)`` and returns the loss (before the update) as a float."""
        self._refresh_masks()
        return float(self._step(_as_tensors(x), _as_tensors(y)))

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = 0,
        verbose: bool = True,
    ) -> list[float]:
        """Runs the op over ``(x, y)`` in mini-batches, with a progress bar.

        Returns:
            The mean loss of each epoch.
        """
        from tqdm.auto import tqdm

        count = _length(x)
        if _length(y) != count:
            raise MaskMagicError(
                f"x and y must have the same number of samples; received {count} and {_length(y)}"
            )
        rng = np.random.default_rng(seed)
        history = []
        steps = -(-count // batch_size)
        for epoch in range(epochs):
            order = rng.permutation(count) if shuffle else np.arange(count)
            losses = []
            bar = tqdm(
                total=steps, desc=f"{self.name} epoch {epoch + 1}/{epochs}", disable=not verbose
            )
            for start in range(0, count, batch_size):
                batch = order[start : start + batch_size]
                losses.append(self(_take(x, batch), _take(y, batch)))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
            bar.close()
            history.append(float(np.mean(losses)))
        return history

    # ------------------------------------------------------------------ inspection
    def update_mask(self, variable: Any) -> np.ndarray:
        """Numpy bool array of the entries of ``variable`` (or its path) this op may change."""
        path = variable if isinstance(variable, str) else variable.path
        if path not in self._variables:
            raise SelectorError(
                f"{path!r} is not a trainable variable of model {self.model.name!r}; expected "
                f"one of: {', '.join(self._variables)}"
            )
        shape = tuple(self._variables[path].shape)
        if path not in {v.path for v in self._step_variables}:
            return np.zeros(shape, dtype=bool)
        if path in self._mask_vars:
            self._refresh_masks()
            return self._mask_vars[path].numpy().astype(bool)
        return np.ones(shape, dtype=bool)

    @property
    def var_list(self) -> list:
        """The variables this op may change now (at least one entry of each)."""
        return [v for v in self._step_variables if self.update_mask(v).any()]

    def parameter_count(self) -> int:
        """How many parameter entries this op may change now."""
        return int(sum(self.update_mask(v).sum() for v in self.var_list))

    def __repr__(self) -> str:
        picked = _labels(self.select) or "*"
        frozen = f" freeze={_labels(self.freeze)}" if self.freeze else ""
        return (
            f"<TrainOp {self.name}: {picked}{frozen}, {self.parameter_count()} parameters, "
            f"{type(self.optimizer).__name__}>"
        )


def _total_loss(loss_fn, y, prediction):
    if isinstance(prediction, (list, tuple)):
        return tf.add_n([loss_fn(t, p) for t, p in zip(y, prediction)])
    if isinstance(prediction, dict):
        return tf.add_n([loss_fn(y[k], p) for k, p in prediction.items()])
    return loss_fn(y, prediction)


def _as_tensors(data: Any) -> Any:
    return tf.nest.map_structure(
        lambda a: tf.convert_to_tensor(np.asarray(a) if isinstance(a, list) else a),
        _lists_to_tuples(data),
    )


def _lists_to_tuples(data: Any) -> Any:
    if isinstance(data, list) and data and not np.isscalar(data[0]) and np.ndim(data[0]) >= 2:
        return tuple(data)
    if isinstance(data, dict):
        return {k: _lists_to_tuples(v) for k, v in data.items()}
    return data


def _first(data: Any) -> Any:
    if isinstance(data, dict):
        return next(iter(data.values()))
    if isinstance(data, (list, tuple)) and np.ndim(data[0]) >= 2:
        return data[0]
    return data


def _length(data: Any) -> int:
    return len(_first(data))


def _take(data: Any, index: np.ndarray) -> Any:
    if isinstance(data, dict):
        return {k: np.asarray(v)[index] for k, v in data.items()}
    if isinstance(data, (list, tuple)) and np.ndim(data[0]) >= 2:
        return [np.asarray(v)[index] for v in data]
    return np.asarray(data)[index]


def describe_selection(op: TrainOp) -> Sequence[tuple[str, int, int]]:
    """(variable path, entries the op may change, total entries) for each variable of the op."""
    return [(v.path, int(op.update_mask(v).sum()), int(np.prod(v.shape))) for v in op.var_list]
