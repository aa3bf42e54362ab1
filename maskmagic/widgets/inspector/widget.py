"""GradientInspector: the gradient every connection receives, and what a step changes.

The widget computes, for a batch, the gradient of the loss (or of one unit's output summed over
the batch) with respect to every connection of every layer with a 2-D kernel, in one compiled
forward and backward pass (:mod:`maskmagic.widgets.inspector.grad_pass`). The front end
(``static/inspector.js``) draws one heatmap per layer; large layers arrive pooled and zoom into
full resolution on request (:mod:`maskmagic.widgets.inspector.tiles`). Everything the front end
can do has a Python method, so tests need no browser.

Messages. Kernel to front end: the traits below (small JSON: per-layer numbers, the top
connections, losses, drift) and one ``{"type": "tile", ...}`` custom message per layer with
binary buffers (at most 256 x 256 cells, about 1.1 MB; never more than 8 MB). Front end to
kernel: ``{"type": "hello"}`` (a view rendered: send the tiles), ``{"type": "step"}``,
``{"type": "refresh"}``, ``{"type": "zoom", "layer": i, "row": r | null, "col": c}``,
``{"type": "window", "layer": l, "i": i, "j": j}`` (a click on a conv layer's cell: the kernel
answers with that pair's kernel window, at most 64 x 64 taps, and sends it again after each
refresh; see :mod:`maskmagic.widgets.inspector.windows`; a malformed one is refused with a
warning and changes nothing); target, view and scale travel as traits.

For an op with ``hold=`` every tile also carries ``prj``: the gradient projected onto the null
space of the held units' Jacobian, as the op's step projects it before its optimizer sees it
(:mod:`maskmagic.widgets.inspector.projected`); ``view="projected"`` shows it, and the front end
offers that view only when :attr:`GradientInspector.has_hold` is true.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import anywidget
import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
import traitlets

from maskmagic import _compat
from maskmagic.errors import MaskMagicError, first_line
from maskmagic.training import TrainOp
from maskmagic.widgets import STATIC, widget_css
from maskmagic.widgets import palette as palettes
from maskmagic.widgets.inspector import tiles, windows
from maskmagic.widgets.inspector.grad_pass import LOSS, GradientPass, PassResult
from maskmagic.widgets.inspector.hold_drift import HeldDrift
from maskmagic.widgets.inspector.inputs import (
    batch,
    check_model,
    check_targets,
    finite,
    model_loss,
    names,
    probes,
    resolve,
    shapes,
)
from maskmagic.widgets.inspector.projected import ProjectedLayer, Projection, check_projectable
from maskmagic.widgets.inspector.view import (
    LayerData,
    Static,
    layer_info,
    panels,
    static_state,
    tile_for,
    top_rows,
)
from maskmagic.widgets.png import PngFallback

__all__ = ["GradientInspector", "inspector_for"]

VIEWS = ("gradient", "would_be", "update", "projected")
SCALES = ("linear", "symlog")
TOP_ROWS = 12  # rows of the table of top connections


class GradientInspector(PngFallback, anywidget.AnyWidget):
    """The gradient of every connection of ``model`` on the batch ``(x, y)``.

    Args:
        model: a built Keras model; every layer with a 2-D kernel (``MaskedDense``, ``Dense``)
            gets a heatmap with rows = inputs and columns = units.
        x: the batch's inputs (an array, or a list of arrays for a model with several inputs).
        y: the batch's targets (an array, or a list for a model with several outputs).
        op: a :class:`~maskmagic.training.TrainOp` of ``model``: ``.step()`` runs it, and the
            connections outside its update set are outlined as frozen.
        target: ``"loss"`` or ``(layer, unit)`` (see :attr:`target`).
        loss: the loss to inspect; default: the op's loss, else the model's compiled loss,
            else mean squared error.

    Raises:
        MaskMagicError: the model is not built or has no layer with a 2-D kernel, ``x``/``y``
            do not fit the model, ``op`` is not a TrainOp of this model, or the target is bad.
    """

    _esm = STATIC / "inspector.js"
    _css = widget_css("inspector.css")

    palette = traitlets.Dict(
        default_value=palettes.INSPECTOR,
        help="the front end's colours by role (maskmagic.widgets.palette.INSPECTOR)",
    ).tag(sync=True)

    target = traitlets.Any(
        LOSS,
        help='"loss", or (layer, unit): the gradient of that unit\'s output summed over the batch',
    ).tag(sync=True)
    view = traitlets.Enum(
        VIEWS,
        "gradient",
        help="gradient (masked = 0) | would_be (what each connection would get if switched on)"
        " | update (the gradient restricted to the op's update set) | projected (for an op with"
        " hold=: that gradient projected onto the null space of the held units' Jacobian, what"
        " the op's optimizer sees)",
    ).tag(sync=True)
    has_hold = traitlets.Bool(
        False, help="whether the op has hold= (the projected view is offered)"
    ).tag(sync=True)
    scale = traitlets.Enum(SCALES, "linear", help="colour scale: linear | symlog").tag(sync=True)
    layers: traitlets.List[Any] = traitlets.List(
        help="per layer: {name, kind, inputs, units, grid, block, would_be, norm, zero_share, "
        "masked, masked_nonzero, frozen, bias, bias_norm, bias_masked_nonzero}"
    ).tag(sync=True)
    names = traitlets.Dict(help="{layer: {inputs: [names] | null, units: [names] | null}}").tag(
        sync=True
    )
    targets: traitlets.List[Any] = traitlets.List(
        help="[[layer, units], ...]: layers whose units can be the target"
    ).tag(sync=True)
    top: traitlets.List[Any] = traitlets.List(
        help="the connections of largest |gradient|: {layer, i, j, input, unit, gradient, weight}"
    ).tag(sync=True)
    loss = traitlets.Float(None, allow_none=True, help="the loss on the batch").tag(sync=True)
    objective = traitlets.Float(
        None, allow_none=True, help="the target's value: the loss, or the unit's summed output"
    ).tag(sync=True)
    step_info = traitlets.Dict(
        help="after a step: {steps, loss_before, loss_after, drift: {layer: [per unit]}, "
        "hold: {reference, fresh, references, rank, relative_drift, tol} for an op with hold=}"
    ).tag(sync=True)
    op_name = traitlets.Unicode(None, allow_none=True, help="the op's name, or null").tag(sync=True)
    revision = traitlets.Int(0, help="how many times the gradients were computed").tag(sync=True)
    error = traitlets.Unicode("", help="the last error of an action started in the front end").tag(
        sync=True
    )
    _tiles = traitlets.Dict(
        help="front end only: the latest tile of each layer, kept there in place so that a "
        "saved notebook shows the latest view; the kernel never sets it"
    ).tag(sync=True)

    def __init__(
        self,
        model: keras.Model,
        x: Any,
        y: Any,
        op: TrainOp | None = None,
        *,
        target: Any = LOSS,
        loss: Any = None,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        if op is not None and not isinstance(op, TrainOp):
            raise MaskMagicError(
                f"op must be a maskmagic TrainOp (or None); received {type(op).__name__}"
            )
        if op is not None and op.model is not model:
            raise MaskMagicError(
                f"op {op.name!r} trains model {op.model.name!r}, not {model.name!r}; expected a "
                "TrainOp made for the inspected model"
            )
        self._ready = False
        self._model, self._op = model, op
        self._probes = probes(model)
        self._x, self._y = batch(model, x, y)
        loss_fn = op.loss if op is not None else model_loss(model, loss)
        check_targets(model, self._y, loss_fn)
        self._pass = GradientPass(model, loss_fn, self._probes)
        self._static: Static | None = None
        self._shown: Static | None = None  # the static state of the shown result
        self._result: PassResult | None = None
        self._cache: dict = {}
        self._zoom: dict[int, tuple[int, int]] = {}
        self._window: tuple[int, int, int] | None = None  # (layer index, i, j) shown
        self._frontend = False
        self._drift: dict[str, np.ndarray] | None = None
        self._held = None if getattr(op, "hold", None) is None else HeldDrift(op, self._x)
        self._projection = None if self._held is None else Projection(op, self._pass, self._probes)
        self._shown_target: tuple[str, int] = (LOSS, 0)
        self.largest_message = 0
        super().__init__(**kwargs)  # opens the widget's comm: close it if the rest fails
        try:
            self.op_name = None if op is None else op.name
            self.has_hold = self._projection is not None
            self.targets = [[name, units] for name, units in self._target_layers()]
            self.names = {p.name: names(p.layer) for p in self._probes}
            self.on_msg(self._on_message)
            self.target = target
            self._ready = True
            self._first_refresh()
        except BaseException:
            if "layout" not in kwargs:  # the Layout widget DOMWidget made for this one
                self.layout.close()
            self.close()
            raise

    def _first_refresh(self) -> None:
        try:
            self.refresh()
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            if isinstance(exc, MaskMagicError):
                raise
            raise MaskMagicError(
                f"the model cannot compute its loss on this batch: {first_line(exc)}; expected "
                f"x and y shaped like the model's inputs and outputs (x: {shapes(self._x)}, "
                f"y: {shapes(self._y)})"
            ) from None

    # ------------------------------------------------------------------ target
    def _target_layers(self) -> list[tuple[str, int]]:
        found = list(self._pass.outputs)
        if _compat.functional_graph(self._model) is not None:
            known = {name for name, _ in found}
            found += [(p.name, p.shape[1]) for p in self._probes if p.name not in known]
        return found

    @traitlets.validate("target")
    def _check_target(self, proposal: dict) -> Any:
        value = proposal["value"]
        if isinstance(value, str) and value.strip() == LOSS:
            return LOSS
        if isinstance(value, str):
            match = re.fullmatch(r"\s*([\w.-]+)\s*\[\s*(-?\d+)\s*\]\s*", value)
            value = (match.group(1), int(match.group(2))) if match else value
        choices = dict(self._target_layers())
        options = ", ".join(f"({name!r}, 0..{n - 1})" for name, n in choices.items())
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or value[0] not in choices
            or isinstance(value[1], bool)
            or not isinstance(value[1], (int, np.integer))
            or not 0 <= value[1] < choices[value[0]]
        ):
            raise MaskMagicError(
                f'target must be "loss" or (layer, unit) with one of {options}; received {value!r}'
            )
        return (str(value[0]), int(value[1]))

    @traitlets.validate("view")
    def _check_view(self, proposal: dict) -> str:
        value = proposal["value"]
        if value == "projected":
            check_projectable(self._op)
        return value

    @traitlets.observe("target")
    def _target_changed(self, change: dict) -> None:
        if self._ready:
            self.refresh()

    # ------------------------------------------------------------------ computing
    def refresh(self) -> None:
        """Recomputes every gradient on the batch (one compiled pass) and updates the view."""
        key = tuple(p.version() for p in self._probes)
        if self._static is None or self._static.key != key:
            self._static = static_state(self._probes, self._op, key)
        layer, unit = (LOSS, 0) if self.target == LOSS else self.target
        result = self._pass.run(self._x, self._y, layer, unit, self._static.tensors)
        self._result, self._shown, self._cache = result, self._static, {}
        self._shown_target = (layer, unit)
        with self.hold_sync():
            self.layers = [layer_info(r, self._static, i) for i, r in enumerate(result.layers)]
            self.top = top_rows(result)[:TOP_ROWS]
            self.loss = result.loss
            self.objective = result.objective
            self.revision += 1
        if self._frontend:
            self._send_tiles()
            if self._window is not None:
                self._send_window()

    # ------------------------------------------------------------------ results
    def _layer_index(self, layer: Any) -> int:
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if 0 <= layer < len(self._probes):
                return int(layer)
        for index, probe in enumerate(self._probes):
            if probe.name == layer:
                return index
        known = ", ".join(p.name for p in self._probes)
        raise MaskMagicError(f"layer must be one of {known} (or its index); received {layer!r}")

    def _gradient(self, index: int) -> Any:
        key = ("g", index)
        if key not in self._cache:
            result, probe = self._shown_result().layers[index], self._probes[index]
            connected = self._shown_static().connected[index]
            if probe.kind == "sparse":
                rows, cols = probe.layer.connections()
                values = result.g_values.numpy()
                self._cache[key] = sp.csr_array((values, (rows, cols)), shape=probe.shape)
            else:
                self._cache[key] = probe.gradient_numpy(np.asarray(result.wb), connected)
        return self._cache[key]

    def kernel_window(self, layer: Any, i: int, j: int, view: str | None = None) -> np.ndarray:
        """The kernel window of pair (input channel ``i``, filter ``j``) of a conv layer.

        Args:
            layer: the conv layer's name (or index).
            i, j: input channel and filter.
            view: ``"gradient"`` (masked taps exactly 0), ``"would_be"`` (the gradient w.r.t.
                ``kernel * mask``: what each tap would get if switched on), ``"update"`` (the
                gradient restricted to the op's update set) or ``"projected"`` (an op with
                ``hold=``: that gradient projected by the hold); default: :attr:`view`.

        Returns:
            float32 array shaped like the layer's ``kernel_size`` ((kh, kw) for a
            ``MaskedConv2D``, (k,) for a ``MaskedConv1D``): the current target's gradient
            ``kernel[..., i, j]``.

        Raises:
            MaskMagicError: an unknown or non-conv layer, ``i``/``j`` out of range, an
                unknown view, or ``"projected"`` without an op with ``hold=``.
        """
        index = self._layer_index(layer)
        probe = self._probes[index]
        if not probe.keeps_kernel_gradient:
            raise MaskMagicError(
                f"kernel windows exist for conv layers only; layer {probe.name!r} is "
                f"{probe.kind} (expected one of "
                f"{[p.name for p in self._probes if p.keeps_kernel_gradient]})"
            )
        view = self.view if view is None else view
        if view not in VIEWS:
            raise MaskMagicError(f"view must be one of {', '.join(VIEWS)}; received {view!r}")
        if view == "projected":
            check_projectable(self._op)
        for key, value, size, what in (
            ("i", i, probe.shape[0], "input channel"),
            ("j", j, probe.shape[1], "filter"),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise MaskMagicError(f"{key} must be an int ({what}); received {value!r}")
            if not 0 <= value < size:
                raise MaskMagicError(
                    f"{key} must be in 0..{size - 1} ({what} of {probe.name!r}); received {value}"
                )
        arrays = windows.window_arrays(self._layer_data(index), int(i), int(j))
        return arrays[windows.VIEW_KEYS[view]].copy()

    def show_window(self, layer: Any, i: int, j: int) -> None:
        """Shows pair (i, j)'s kernel window under the conv layer's heatmap (as a click on
        that cell does); :attr:`window_shown` then names it."""
        self.kernel_window(layer, i, j)  # checks the arguments
        self._window = (self._layer_index(layer), int(i), int(j))
        if self._frontend:
            self._send_window()

    @property
    def window_shown(self) -> tuple[str, int, int] | None:
        """(layer name, i, j) of the kernel window shown, or None."""
        if self._window is None:
            return None
        index, i, j = self._window
        return (self._probes[index].name, i, j)

    def _send_window(self) -> None:
        if self._window is None:
            return
        index, i, j = self._window
        self._post(*windows.window_message(self._layer_data(index), i, j, self.revision))

    @property
    def gradients(self) -> dict[str, Any]:
        """{layer name: (inputs, units) gradient of the target w.r.t. the kernel}.

        numpy float arrays (masked connections exactly 0); for sparse layers a
        ``scipy.sparse.csr_array`` holding the gradient of each connection.
        """
        return {p.name: self._gradient(i) for i, p in enumerate(self._probes)}

    @property
    def would_be_gradients(self) -> dict[str, np.ndarray | None]:
        """{layer name: the gradient w.r.t. the effective kernel ``kernel * mask``}: what a
        masked connection would receive were it switched on (None for sparse layers)."""
        return {
            p.name: (np.asarray(r.wb) if r.wb is not None else None)
            for p, r in zip(self._probes, self._shown_result().layers)
        }

    @property
    def bias_gradients(self) -> dict[str, np.ndarray | None]:
        """{layer name: (units,) gradient w.r.t. the bias (masked biases 0), None without}."""
        return {p.name: r.bias_g for p, r in zip(self._probes, self._shown_result().layers)}

    def _projected(self) -> list[ProjectedLayer] | None:
        """Per layer, the projected gradient of the shown result (None without a hold);
        computed on first use after each refresh (one Jacobian of the held units)."""
        if self._projection is None:
            return None
        if "prj" not in self._cache:
            layer, unit = self._shown_target
            self._cache["prj"] = self._projection.compute(self._x, self._y, layer, unit)
        return self._cache["prj"]

    def _projected_or_raise(self) -> list[ProjectedLayer]:
        check_projectable(self._op)
        found = self._projected()
        if found is None:  # check_projectable passed: the op has a hold
            raise AssertionError("an op with hold= and no projection")
        return found

    @property
    def projected_gradients(self) -> dict[str, Any]:
        """{layer name: the target's gradient projected as the op's hold projects it}: what the
        op's optimizer sees for each kernel (its update set applied, then the component that
        moves a held unit on the reference inputs removed).

        Shaped like each kernel variable ((inputs, units) for dense layers, the kernel for conv
        layers; a ``scipy.sparse.csr_array`` for sparse layers); exactly 0 at masked
        connections and entries outside the op.

        Raises:
            MaskMagicError: the inspector's op has no ``hold=``.
        """
        found = {}
        for probe, layer in zip(self._probes, self._projected_or_raise()):
            if probe.kind == "sparse":
                rows, cols = probe.layer.connections()
                found[probe.name] = sp.csr_array((layer.kernel, (rows, cols)), shape=probe.shape)
            else:
                found[probe.name] = layer.kernel.copy()
        return found

    @property
    def projected_bias_gradients(self) -> dict[str, np.ndarray | None]:
        """{layer name: (units,) projected bias gradient, None without a bias} (see
        :attr:`projected_gradients`).

        Raises:
            MaskMagicError: the inspector's op has no ``hold=``.
        """
        return {
            p.name: None if layer.bias is None else layer.bias.copy()
            for p, layer in zip(self._probes, self._projected_or_raise())
        }

    @property
    def drift(self) -> dict[str, np.ndarray] | None:
        """After :meth:`step`: {output layer name: (units,) float32 array}, for each output unit
        the largest |change| of its value over the batch (0.0 exactly for a unit the op cannot
        move). None before the first step."""
        return self._drift

    # ------------------------------------------------------------------ step
    def step(self) -> dict:
        """Runs the op once on the batch, then refreshes.

        Returns:
            ``{"loss_before", "loss_after", "drift"}``; the losses are evaluated on the batch
            with ``training=False`` (the op's own step runs with ``training=True``).

        Raises:
            MaskMagicError: the inspector has no op.
        """
        if self._op is None:
            raise MaskMagicError(
                "this inspector has no op to step; expected GradientInspector(model, x, y, "
                "op=train_op) or %grad_inspector net x y --op train_op"
            )
        before, loss_before = self._pass.evaluate(self._x, self._y)
        if self._held is not None:
            self._held.before_step()
        self._op(self._x, self._y)
        after, loss_after = self._pass.evaluate(self._x, self._y)
        drift = {}
        for (name, _), old, new in zip(self._pass.outputs, before, after):
            change = np.abs(new.astype(np.float32) - old.astype(np.float32))
            drift[name] = change.reshape(-1, change.shape[-1]).max(axis=0)
        self._drift = drift
        info: dict[str, Any] = {
            "steps": int(self.step_info.get("steps", 0)) + 1,
            "loss_before": finite(loss_before),
            "loss_after": finite(loss_after),
            "drift": {name: [finite(v) for v in values] for name, values in drift.items()},
        }
        if self._held is not None:  # the held units on the reference and on fresh inputs
            info["hold"] = {
                k: finite(v) if isinstance(v, float) else v
                for k, v in self._held.after_step().items()
            }
        with self.hold_sync():
            self.step_info = info
            self.refresh()
        return {"loss_before": loss_before, "loss_after": loss_after, "drift": drift}

    # ------------------------------------------------------------------ front end
    def zoom(self, layer: Any, row: int | None = None, col: int | None = None) -> None:
        """Shows a full-resolution window of ``ZOOM x ZOOM`` connections around (row, col) of a
        pooled layer; ``row=None`` goes back to the pooled overview."""
        index = self._layer_index(layer)
        inputs, units = self._probes[index].shape
        if row is None:
            self._zoom.pop(index, None)
        else:
            r0 = int(np.clip(int(row) - tiles.ZOOM // 2, 0, max(inputs - tiles.ZOOM, 0)))
            c0 = int(np.clip(int(col or 0) - tiles.ZOOM // 2, 0, max(units - tiles.ZOOM, 0)))
            self._zoom[index] = (r0, c0)
        if self._frontend:
            self._send_tile(index)

    def _on_message(self, _: Any, content: dict, buffers: list) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "window":  # checked strictly: a malformed one changes nothing, not even error
            self._window_request(content)
            return
        try:
            if kind == "hello":
                self._frontend = True
                self._send_tiles()
            elif kind == "step":
                self.step()
            elif kind == "refresh":
                self.refresh()
            elif kind == "zoom":
                self.zoom(int(content["layer"]), content.get("row"), content.get("col"))
            else:
                return
            self.error = ""
        except Exception as exc:  # shown in the widget; the kernel keeps running
            self.error = f"{type(exc).__name__}: {exc}"

    def _window_request(self, content: dict) -> None:
        try:
            request = windows.parse_request(content, self._probes)
        except windows.WindowRequestError as exc:
            warnings.warn(
                f"GradientInspector refused a message from the front end: {exc}; nothing changed",
                stacklevel=2,
            )
            return
        self._window = request
        try:
            if self._frontend:
                self._send_window()
            self.error = ""
        except Exception as exc:  # shown in the widget; the kernel keeps running
            self.error = f"{type(exc).__name__}: {exc}"

    def _send_tiles(self) -> None:
        for index in range(len(self._probes)):
            self._send_tile(index)

    def _send_tile(self, index: int) -> None:
        header, buffers = tile_for(self._layer_data(index), self._zoom.get(index), self.revision)
        self._post(header, buffers)

    def _post(self, content: dict, buffers: list[bytes]) -> None:
        size = tiles.message_bytes({"method": "custom", "content": content}, buffers)
        if size > tiles.MAX_MESSAGE_BYTES:  # tiles are at most 256 x 256 cells: never by design
            raise MaskMagicError(
                f"the inspector's message for the front end would be {size} bytes, over its "
                f"limit of {tiles.MAX_MESSAGE_BYTES} bytes (tiles are at most 256 x 256 cells, "
                "about 1.1 MB); nothing was sent -- please report this as a maskmagic bug"
            )
        self.largest_message = max(self.largest_message, size)
        self.send(content, buffers)

    # ------------------------------------------------------------------ static image
    def png(self) -> bytes:
        """A PNG of the heatmaps as they are now (the static fallback of exported notebooks)."""
        layers = [self._layer_data(index) for index in range(len(self._probes))]
        return tiles.render_png(
            panels(layers, self.view), self.scale, overlay=self.view == "would_be"
        )

    def _layer_data(self, index: int) -> LayerData:
        """What layer ``index``'s tile is drawn from (the shown result, its static state and,
        for an op with ``hold=``, its projected gradient)."""
        projected = self._projected()
        return LayerData(
            self._probes[index],
            self._shown_result().layers[index],
            self._shown_static(),
            index,
            None if projected is None else projected[index],
        )

    def _shown_result(self) -> PassResult:
        if self._result is None:  # refresh() runs in __init__
            raise AssertionError("the inspector has no gradient pass to show yet")
        return self._result

    def _shown_static(self) -> Static:
        if self._shown is None:  # set with the first result
            raise AssertionError("the inspector has no gradient pass to show yet")
        return self._shown

    def _fallback_png(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        layers = ", ".join(f"{p.name} {p.shape[0]}x{p.shape[1]}" for p in self._probes)
        loss = "?" if self.loss is None else f"{self.loss:.6g}"
        name = self._model.name
        return f"<GradientInspector of {name}: {layers}; target {self.target!r}; loss {loss}>"


def inspector_for(
    net: str,
    x: str,
    y: str,
    namespace: dict[str, Any],
    op: str | None = None,
    target: str = "loss",
) -> GradientInspector:
    """``%grad_inspector net x y [--op OP] [--target out[1]]``: an inspector of a net on a batch.

    ``net``, ``x``, ``y`` and ``op`` are names in ``namespace`` (or Python expressions there,
    such as ``x[:32]``); ``target`` is ``loss`` or ``LAYER[UNIT]``.

    Raises:
        MaskMagicError: unknown names, or values of the wrong kind.
    """
    return GradientInspector(**resolve(net, x, y, op, namespace), target=target)
