"""The compiled forward + backward pass of the gradient inspector (no widget code).

:class:`GradientPass` runs one ``tf.function`` per target layer: the model under a
``keras.StatelessScope`` (see :mod:`maskmagic.widgets.inspector.probes`), the objective (the loss, or one
unit's output summed over the batch), one ``tape.gradient`` for every probed layer's kernel and
bias, and each probe's summary. The unit index and the op's update sets are inputs, so changing
the unit never re-traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import _compat
from maskmagic.errors import MaskMagicError
from maskmagic.widgets.inspector.probes import Probe

__all__ = ["GradientPass", "LayerResult", "PassResult", "output_layers"]

LOSS = "loss"


def output_layers(model: keras.Model) -> list[tuple[str, int]]:
    """(layer name, units) of each model output, in the order the model returns them."""
    try:
        outputs = list(model.outputs)
    except (AttributeError, ValueError):
        outputs = []
    found: list[Any] = []
    for tensor in outputs:
        layer = _compat.producing_layer(tensor)
        name = layer.name if layer is not None else f"output_{len(found)}"
        found.append((name, int(tensor.shape[-1] or 1)))
    if not found and model.layers:
        last = model.layers[-1]
        found.append((last.name, int(getattr(last, "units", 1))))
    return found


@dataclass
class LayerResult:
    """The pass's result for one layer: small numpy arrays, plus the full gradient tensors.

    ``kernel_wb`` (conv layers) is the would-be gradient shaped like the kernel (a tensor; the
    kernel windows of :mod:`~maskmagic.widgets.inspector.windows` are sliced from it).
    ``wb`` (dense layers) is the (inputs, units) would-be gradient: a TensorFlow tensor for a
    pooled layer (the widget turns it into numpy only when asked: ``.gradients``, zoom), a
    numpy array for a small one; ``g_values`` (sparse layers) is the (nnz,) gradient of the
    stored connections.
    """

    probe: Probe
    wb: Any = None
    g_values: Any = None
    g_pool: np.ndarray | None = None
    wb_pool: np.ndarray | None = None
    upd_pool: np.ndarray | None = None
    norm: float = 0.0
    zeros: int = 0
    masked_nonzero: int = 0
    top: list[tuple[int, int, float, float]] = field(default_factory=list)
    bias_g: np.ndarray | None = None
    bias_wb: np.ndarray | None = None
    weights: np.ndarray | None = None  # the kernel, for layers shown at full resolution
    kernel_wb: Any = None  # probes that keep it (conv): the kernel-shaped would-be gradient


@dataclass
class PassResult:
    """What one :meth:`GradientPass.run` returns: the batch's loss, the differentiated
    objective (the loss itself, or the chosen unit's output summed over the batch) and one
    :class:`LayerResult` per probe, in the probes' order."""

    loss: float
    objective: float
    layers: list[LayerResult]


class GradientPass:
    """One compiled forward + backward pass over ``model`` for the given probes.

    Args:
        model: a built Keras model.
        loss: a Keras loss object ``loss(y_true, y_pred)``.
        probes: one :class:`~maskmagic.widgets.inspector.probes.Probe` per inspected layer.
    """

    def __init__(self, model: keras.Model, loss: Any, probes: list[Probe]) -> None:
        self.model = model
        self.loss = loss
        self.probes = probes
        self.outputs = output_layers(model)
        self._functions: dict[str, Any] = {}  # target -> tf.function
        self._concrete: dict[tuple, Any] = {}  # (target, argument signature) -> its trace
        self._aux: dict[str, keras.Model] = {}
        self._units: dict[int, Any] = {}  # unit index -> int32 tensor
        self._evaluate = tf.function(self._outputs_and_loss, reduce_retracing=True)
        self.trace_count = 0

    # ------------------------------------------------------------------ targets
    def target_units(self, layer: str) -> int:
        """Units of a target layer (an output layer, or any layer of a functional model)."""
        for name, units in self.outputs:
            if name == layer:
                return units
        self._aux_model(layer)
        return int(self._aux[layer].outputs[-1].shape[-1])

    def _aux_model(self, layer: str) -> keras.Model:
        if layer in self._aux:
            return self._aux[layer]
        names = [name for name, _ in self.outputs]
        try:
            tensor = self.model.get_layer(layer).output
            aux = keras.Model(self.model.inputs, [*self.model.outputs, tensor])
        except (ValueError, AttributeError) as exc:
            raise MaskMagicError(
                f"target layer {layer!r} cannot be inspected ({exc}); expected an output layer "
                f"({', '.join(names)}) or a layer of a functional model"
            ) from None
        self._aux[layer] = aux
        return aux

    def _call(self, x: Any, target: str) -> tuple[Any, Any]:
        """(prediction as the model returns it, the target layer's output or None)."""
        names = [name for name, _ in self.outputs]
        if target == LOSS or target in names:
            prediction = self.model(x, training=False)
            if target == LOSS:
                return prediction, None
            flat = tf.nest.flatten(prediction)
            return prediction, flat[names.index(target)]
        results = self._aux_model(target)(x, training=False)
        prediction = results[0] if len(results) == 2 else list(results[:-1])
        return prediction, results[-1]

    def _loss_of(self, y: Any, prediction: Any) -> Any:
        if isinstance(prediction, (list, tuple)):
            value = tf.add_n([self.loss(t, p) for t, p in zip(y, prediction)])
        else:
            value = self.loss(y, prediction)
        extra = self.model.losses
        return value + tf.add_n(extra) if extra else value

    # ------------------------------------------------------------------ the pass
    def run(self, x: Any, y: Any, target: str, unit: int, updates: list) -> PassResult:
        """Runs the compiled pass.

        Args:
            x, y: the batch (tensors).
            target: ``"loss"`` or the name of the layer whose unit ``unit`` is the objective.
            unit: unit index (ignored for the loss).
            updates: per probe, a bool tensor of the op's update set over the kernel, or None.
        """
        index = self._units.get(unit)
        if index is None:
            index = self._units[unit] = tf.constant(unit, tf.int32)
        args = (x, y, index, tuple(updates))
        flat = [a for a in tf.nest.flatten(args) if a is not None]
        raw = _compat.call_concrete(self._compiled(target, args), flat)
        return self._collect(raw, updates)

    def _loss_and_objective(self, x: Any, y: Any, target: str, unit: Any) -> tuple[Any, Any]:
        """The batch's loss and the objective: the loss, or the sum of ``unit`` of ``target``."""
        prediction, chosen = self._call(x, target)
        loss = self._loss_of(y, prediction)
        if chosen is None:
            return loss, loss
        return loss, tf.reduce_sum(tf.gather(chosen, unit, axis=-1))

    def _compiled(self, target: str, args: tuple) -> Any:
        """The pass's concrete function for ``target`` and these argument shapes (cached).

        Calling it directly skips ``tf.function``'s per-call signature matching, most of the
        fixed cost of a refresh on a small net.
        """
        signature = tuple(
            None if a is None else (tuple(a.shape), a.dtype) for a in tf.nest.flatten(args)
        )
        key = (target, signature)
        found = self._concrete.get(key)
        if found is None:
            function = self._functions.get(target)
            if function is None:
                function = tf.function(
                    lambda x, y, unit, updates: self._pass(x, y, unit, updates, target),
                    reduce_retracing=True,
                )
                self._functions[target] = function
            found = self._concrete[key] = function.get_concrete_function(*args)
        return found

    def _pass(self, x: Any, y: Any, unit: Any, updates: tuple, target: str) -> dict:
        self.trace_count += 1
        mapping, kernels, biases = [], [], []
        for probe in self.probes:
            pairs, kernel, bias = probe.sources()
            mapping += pairs
            kernels.append(kernel)
            biases.append(bias)
        sources = [s for s in kernels + biases if s is not None]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(sources)
            with keras.StatelessScope(state_mapping=mapping):
                loss, objective = self._loss_and_objective(x, y, target, unit)
        grads = tape.gradient(objective, sources, unconnected_gradients="zero")
        by_source = dict(zip([id(s) for s in sources], grads))
        layers = []
        for probe, kernel, bias, update in zip(self.probes, kernels, biases, updates):
            wb = probe.overview(by_source[id(kernel)])
            summary = probe.summary(wb, update)
            if probe.has_would_be and (probe.grid.pooled or wb.dtype != tf.float32):
                summary["wb"] = wb  # small float32 layers: the cells hold it exactly
            if probe.keeps_kernel_gradient:  # conv: clicking a pair shows its kernel window
                summary["kernel_wb"] = by_source[id(kernel)]
            if bias is not None:
                summary.update(probe.bias_summary(by_source[id(bias)]))
            layers.append(_pack(summary))
        return {"numbers": _numbers(loss, objective, layers), "layers": layers}

    def _collect(self, raw: dict, updates: list) -> PassResult:
        numbers = raw["numbers"].numpy()  # see _numbers: one fetch for every layer's figures
        loss, objective, at = numbers[0], numbers[1], 2
        layers = []
        for probe, out, update in zip(self.probes, raw["layers"], updates):
            units = probe.shape[1]
            k = int(numbers[at])
            sumsq, zeros, masked_nonzero = numbers[at + 1 : at + 4]
            index, top_g, top_w = numbers[at + 4 : at + 4 + 3 * k].reshape(3, k)
            at += 4 + 3 * k
            top = [
                (int(i) // units, int(i) % units, float(g), float(w))
                for i, g, w in zip(index, top_g, top_w)
            ]
            bias = _numpy(out.get("bias"))
            cells = out["cells"].numpy()
            wb = out.get("wb")
            if wb is None and probe.has_would_be:
                wb = cells[1]
            layers.append(
                LayerResult(
                    probe=probe,
                    wb=wb,
                    g_values=out.get("g_values"),
                    g_pool=cells[0],
                    wb_pool=cells[1] if probe.has_would_be else None,
                    upd_pool=None if update is None else cells[2],
                    norm=float(np.sqrt(sumsq)),
                    zeros=int(zeros),
                    masked_nonzero=int(masked_nonzero),
                    top=top,
                    bias_g=None if bias is None else bias[0],
                    bias_wb=None if bias is None else bias[1],
                    weights=cells[3] if len(cells) > 3 else None,
                    kernel_wb=out.get("kernel_wb"),
                )
            )
        return PassResult(float(loss), float(objective), layers)

    def variable_gradients(
        self, x: Any, y: Any, target: str, unit: int, variables: list
    ) -> list[tf.Tensor]:
        """The objective's gradient with respect to ``variables`` themselves (eager tape, the
        model run as it always runs: a masked kernel's gradient is 0 at masked entries).

        Args:
            x, y: the batch.
            target: ``"loss"`` or the name of the target layer.
            unit: the target unit (ignored for the loss).
            variables: Keras variables of the model.

        Returns:
            One dense tensor per variable, shaped like it (zeros where unconnected).
        """
        with tf.GradientTape() as tape:
            objective = self._loss_and_objective(x, y, target, unit)[1]
        grads = tape.gradient(objective, variables, unconnected_gradients="zero")
        return [tf.convert_to_tensor(g) for g in grads]

    # ------------------------------------------------------------------ evaluation
    def _outputs_and_loss(self, x: Any, y: Any) -> tuple[list, Any]:
        prediction = self.model(x, training=False)
        return tf.nest.flatten(prediction), self._loss_of(y, prediction)

    def evaluate(self, x: Any, y: Any) -> tuple[list[np.ndarray], float]:
        """(each model output as numpy, the loss) on the batch, with ``training=False``."""
        outputs, loss = self._evaluate(x, y)
        return [o.numpy() for o in outputs], float(loss)


def _numbers(loss: Any, objective: Any, layers: list) -> Any:
    """One float64 vector for the pass's scalars and every layer's ``stats`` and ``top``
    (removed from ``layers``): each output of a tf.function costs on every call, and so does
    each fetch. Layout: loss, objective, then per layer k, sumsq, zeros, masked_nonzero and
    the (3, k) top rows, flattened (float64 holds all of them exactly: see :func:`_pack`)."""
    parts = [tf.cast(tf.stack([loss, objective]), tf.float64)]
    for packed in layers:
        top = packed.pop("top")
        k = tf.cast(tf.shape(top)[1:], tf.float64)
        parts += [k, packed.pop("stats"), tf.reshape(top, [-1])]
    return tf.concat(parts, axis=0)


def _pack(summary: dict) -> dict:
    """Fewer, larger outputs (each output of a tf.function costs on every call).

    ``cells``: (3 or 4, rows, cols) float32 -- the gradient, would-be and update views of the
    overview (the gradient standing in for views a layer lacks), then the kernel when it is
    shown at full resolution; ``stats``: float64 (sumsq, zeros, masked_nonzero); ``top``:
    (3, k) float64 (flat int64 index ``row * units + col``, gradient, weight; float64 holds
    such indices exactly below 2**53 cells, far beyond any layer); :func:`_numbers` then
    moves ``stats`` and ``top`` into one vector for the whole pass;
    ``bias``: (2, units) (gradient, would-be).
    """
    packed = dict(summary)
    g = packed.pop("g_pool")
    views = [g, packed.pop("wb_pool", g), packed.pop("upd_pool", g)]
    if "w" in packed:
        views.append(packed.pop("w"))
    packed["cells"] = tf.stack([tf.cast(v, tf.float32) for v in views])
    as64 = lambda v: tf.cast(v, tf.float64)  # noqa: E731
    packed["stats"] = tf.stack([as64(packed.pop(k)) for k in ("sumsq", "zeros", "masked_nonzero")])
    packed["top"] = tf.stack([as64(packed.pop(k)) for k in ("top_index", "top_g", "top_w")])
    if "bias_g" in packed:
        packed["bias"] = tf.stack([packed.pop("bias_g"), packed.pop("bias_wb")])
    return packed


def _numpy(value: Any) -> np.ndarray | None:
    return None if value is None else value.numpy()
