"""Rich summaries of a built cell: tables of layers and train ops, and a drawing of the net.

:class:`NetSummary` is what ``%%masked_net`` displays. Jupyter shows its HTML (two tables and,
for nets of at most 64 units a layer, an inline SVG of the neurons and their connections, see
:mod:`maskmagic.display.svg`); terminals and plain-text front ends show :meth:`NetSummary.text`.
Everything is string building: no matplotlib, and masks of sparse layers are never densified
(their counts come from ``count_nonzero``), so summaries of huge layers stay cheap.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from maskmagic import lang
from maskmagic.display.svg import net_svg
from maskmagic.training import selectors

if TYPE_CHECKING:
    from maskmagic.builder import Built

__all__ = [
    "LayerInfo",
    "NetSummary",
    "OpInfo",
    "connected_parameters",
    "frozen_units",
    "layer_infos",
    "op_infos",
]

MAX_DRAWN_UNITS = 64
"""Nets whose layers (and inputs) are all at most this wide get a drawing."""


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table.

    Attributes:
        name: the input's or layer's name.
        kind: ``"Input"``, ``"MaskedDense"``, ``"Dropout"`` (the Keras class name otherwise).
        sources: the names it reads from (concatenated in order); ``()`` for an input.
        in_shape, out_shape: shapes without the batch axis (``in_shape`` is None for inputs).
        activation: the activation's name, or None.
        mask_shape: (inputs, units) of the connectivity mask, or None without one.
        mask_ones: connected kernel entries.
        bias_ones, bias_size: enabled biases and the bias length (None without a bias).
        impl: the MaskedDense implementation (``"dense"``, ``"sparse"``, ``"auto (dense)"``).
        connected: trainable parameters that can have an effect (mask ones + bias-mask ones).
        stored: trainable parameter entries the layer stores.
    """

    name: str
    kind: str
    sources: tuple[str, ...]
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...]
    activation: str | None = None
    mask_shape: tuple[int, int] | None = None
    mask_ones: int | None = None
    bias_ones: int | None = None
    bias_size: int | None = None
    impl: str | None = None
    connected: int = 0
    stored: int = 0

    @property
    def density(self) -> str:
        """``"12/16 (75%)"``, or ``""`` without a mask."""
        if self.mask_shape is None or self.mask_ones is None:
            return ""
        return _fraction(self.mask_ones, self.mask_shape[0] * self.mask_shape[1])


@dataclass(frozen=True)
class OpInfo:
    """One row of the train-op table.

    Attributes:
        name: the op's name.
        select: the selectors as written (``"*"`` for every trainable variable).
        freeze: the frozen units as written (``""`` for none).
        optimizer: the optimizer's class name and learning rate (``"SGD(lr=0.1)"``).
        may_change: parameter entries the op may change.
        total: connected trainable parameters of the whole net.
        variables: ``(label, may change, size)`` for each variable the op may change.
        hold: the held units, their reference inputs and tolerance (``""`` for no hold):
            ``"out[0] on 8 inputs, tol 1e-06"`` or ``"out[0] on each batch, tol 1e-06"``.
    """

    name: str
    select: str
    freeze: str
    optimizer: str
    may_change: int
    total: int
    variables: tuple[tuple[str, int, int], ...]
    hold: str = ""


def _count(mask: Any) -> int:
    """Number of ones of a dense or scipy.sparse mask, without densifying."""
    if hasattr(mask, "count_nonzero"):
        return int(mask.count_nonzero())
    return int(np.count_nonzero(mask))


def _fraction(part: int, whole: int) -> str:
    percent = 100.0 * part / whole if whole else 0.0
    shown = f"{percent:.0f}"
    if 0 < part < whole and percent < 1:
        shown = f"{percent:.2g}"
    elif 0 < part < whole and percent > 99:
        shown = f"{min(percent, 99.99):.2f}".rstrip("0").rstrip(".")
    return f"{part}/{whole} ({shown}%)"


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in tensor.shape[1:])


def _stored(layer: keras.layers.Layer) -> int:
    return int(sum(int(np.prod(v.shape)) for v in layer.trainable_variables))


def connected_parameters(layer: keras.layers.Layer) -> int:
    """Trainable parameters of ``layer`` that can have an effect.

    For a masked layer, the ones of its mask plus the ones of its bias mask; for any other
    layer, every trainable entry. A layer with ``trainable=False`` has none.
    """
    if not layer.trainable:
        return 0
    if not hasattr(layer, "get_mask"):
        return _stored(layer)
    count = _count(layer.get_mask())
    if getattr(layer, "use_bias", False):
        count += _count(layer.get_bias_mask())
    return count


def _label(item: Any) -> str:
    return getattr(item, "text", None) or getattr(item, "path", None) or str(item)


def _activation(layer: keras.layers.Layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or type(activation).__name__
    return None if name == "linear" else name


def _impl(layer: keras.layers.Layer, mask: Any) -> str:
    actual = "sparse" if hasattr(mask, "toarray") else "dense"
    impl = getattr(layer, "impl", actual)
    return f"auto ({actual})" if impl == "auto" else str(impl)


def layer_infos(built: Built) -> list[LayerInfo]:
    """The rows of the layer table of a :class:`~maskmagic.builder.Built`: inputs, then layers."""
    model = built.model
    rows = []
    for given in built.spec.inputs:
        rows.append(LayerInfo(given.name, "Input", (), None, tuple(given.shape)))
    for spec in built.spec.layers:
        layer = model.get_layer(spec.name)
        out_shape = _shape(layer.output)
        if not hasattr(layer, "get_mask"):
            source = getattr(layer, "input", None)
            in_shape = _shape(source) if hasattr(source, "shape") else None
            rows.append(
                LayerInfo(spec.name, type(layer).__name__, spec.sources, in_shape, out_shape)
            )
            continue
        if hasattr(layer, "get_channel_table"):
            rows.append(_conv_info(spec, layer, out_shape))
            continue
        mask = layer.get_mask()
        bias_ones = bias_size = None
        if layer.use_bias:
            bias_ones, bias_size = _count(layer.get_bias_mask()), int(layer.units)
        rows.append(
            LayerInfo(
                name=spec.name,
                kind=type(layer).__name__,
                sources=spec.sources,
                in_shape=(int(mask.shape[0]),),
                out_shape=out_shape,
                activation=_activation(layer),
                mask_shape=(int(mask.shape[0]), int(mask.shape[1])),
                mask_ones=_count(mask),
                bias_ones=bias_ones,
                bias_size=bias_size,
                impl=_impl(layer, mask),
                connected=connected_parameters(layer),
                stored=_stored(layer),
            )
        )
    return rows


def _conv_info(spec: Any, layer: keras.layers.Layer, out_shape: tuple[int, ...]) -> LayerInfo:
    """A MaskedConv1D/2D row: the mask column shows its (in_channels, filters) channel table."""
    table = layer.get_channel_table()
    bias_ones = bias_size = None
    if layer.use_bias:
        bias_ones, bias_size = _count(layer.get_bias_mask()), int(layer.filters)
    impl = f"auto ({layer.kernel_format})" if layer.impl == "auto" else str(layer.impl)
    if layer.kernel_format == "grouped":
        impl += f", {len(layer.blocks)} blocks"
    return LayerInfo(
        name=spec.name,
        kind=type(layer).__name__,
        sources=spec.sources,
        in_shape=_shape(layer.input),
        out_shape=out_shape,
        activation=_activation(layer),
        mask_shape=(int(table.shape[0]), int(table.shape[1])),
        mask_ones=_count(table),
        bias_ones=bias_ones,
        bias_size=bias_size,
        impl=impl,
        connected=connected_parameters(layer),
        stored=_stored(layer),
    )


def _learning_rate(optimizer: Any) -> str:
    try:
        rate = float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    except Exception:  # something stranger than a number or a schedule
        return "?"
    return f"{rate:.4g}"


def _variable_label(path: str) -> str:
    """``"hidden/kernel"`` -> ``"hidden.kernel"`` (the selector spelling)."""
    return ".".join(path.split("/")[-2:])


def op_infos(built: Built) -> list[OpInfo]:
    """The rows of the train-op table of a :class:`~maskmagic.builder.Built`."""
    total = sum(connected_parameters(layer) for layer in built.model.layers)
    rows = []
    for name, op in built.ops.items():
        variables = []
        for variable in op.var_list:
            allowed = int(np.count_nonzero(op.update_mask(variable)))
            variables.append(
                (_variable_label(variable.path), allowed, int(np.prod(variable.shape)))
            )
        optimizer = f"{type(op.optimizer).__name__}(lr={_learning_rate(op.optimizer)})"
        rows.append(
            OpInfo(
                name=name,
                select=", ".join(_label(s) for s in op.select) or "*",
                freeze=", ".join(_label(s) for s in op.freeze),
                optimizer=optimizer,
                may_change=sum(v[1] for v in variables),
                total=total,
                variables=tuple(variables),
                hold=_hold_text(op),
            )
        )
    return rows


def _hold_text(op: Any) -> str:
    held = getattr(op, "hold", None)
    if held is None:
        return ""
    spec = op.hold_spec if isinstance(op.hold_spec, (list, tuple)) else [op.hold_spec]
    where = "each batch" if held.reference is None else f"{int(held.reference.shape[0])} inputs"
    return f"{', '.join(_label(s) for s in spec)} on {where}, tol {held.tol:g}"


def frozen_units(built: Built) -> dict[str, dict[int, list[str]]]:
    """{layer name: {unit index: names of the ops that freeze it}} (``freeze=`` of every op)."""
    found: dict[str, dict[int, list[str]]] = {}
    for name, op in built.ops.items():
        for selector in op.freeze:
            for layer, vector in selectors.resolve_units(built.model, selector).items():
                for unit in np.flatnonzero(vector):
                    names = found.setdefault(layer, {}).setdefault(int(unit), [])
                    if name not in names:
                        names.append(name)
    return found


def _shape_text(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return ""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _layer_cells(row: LayerInfo) -> list[str]:
    shapes = _shape_text(row.out_shape)
    if row.in_shape is not None:
        shapes = f"{_shape_text(row.in_shape)} -> {shapes}"
    mask = "" if row.mask_shape is None else f"{row.mask_shape[0]}x{row.mask_shape[1]}"
    bias = "" if row.bias_ones is None else f"{row.bias_ones}/{row.bias_size}"
    if row.mask_shape is not None and row.bias_ones is None:
        bias = "no bias"
    shown = row.mask_shape is not None or row.stored > 0
    params = f"{row.connected} / {row.stored}" if shown else ""
    return [
        row.name,
        row.kind,
        ", ".join(row.sources),
        shapes,
        row.activation or "",
        mask,
        row.density,
        bias,
        row.impl or "",
        params,
    ]


_LAYER_HEAD = ["layer", "type", "from", "shape", "activation", "mask", "connections", "biases",
               "impl", "params (connected / stored)"]  # fmt: skip
_OP_HEAD = ["op", "selects", "freezes", "optimizer", "may change", "variables"]


def _op_head(rows: Sequence[OpInfo]) -> list[str]:
    """The op table's columns; ``holds`` only when some op has ``hold=``."""
    if any(row.hold for row in rows):
        return [*_OP_HEAD[:3], "holds", *_OP_HEAD[3:]]
    return list(_OP_HEAD)


def _op_cells(row: OpInfo, holds: bool = False) -> list[str]:
    variables = ", ".join(f"{label} {n}/{size}" for label, n, size in row.variables)
    cells = [row.name, row.select, row.freeze or "-", row.optimizer,
             _fraction(row.may_change, row.total), variables]  # fmt: skip
    return [*cells[:3], row.hold or "-", *cells[3:]] if holds else cells


def _op_rows(rows: Sequence[OpInfo]) -> tuple[list[str], list[list[str]]]:
    head = _op_head(rows)
    return head, [_op_cells(r, "holds" in head) for r in rows]


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_TABLE = 'style="border-collapse:collapse;font-size:12px;margin:4px 0 10px 0"'
_CELL = 'style="padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"'


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    def row(cells: Sequence[str], tag: str) -> str:
        inner = "".join(f"<{tag} {_CELL}>{html.escape(c)}</{tag}>" for c in cells)
        return f"<tr>{inner}</tr>"

    body = "".join(row(r, "td") for r in rows)
    return f'<table class="{cls}" {_TABLE}><thead>{row(head, "th")}</thead><tbody>{body}</tbody></table>'


class NetSummary:
    """The summary ``%%masked_net`` displays for a built cell.

    Args:
        built: a :class:`~maskmagic.builder.Built` (the spec, the Keras model and the ops).
        max_units: nets whose layers and inputs are all at most this wide get a drawing.

    Attributes:
        layers: the rows of the layer table (:class:`LayerInfo`).
        ops: the rows of the train-op table (:class:`OpInfo`).
        frozen: {layer: {unit: op names}} of the units that some op freezes.
    """

    def __init__(self, built: Built, max_units: int = MAX_DRAWN_UNITS) -> None:
        self.built = built
        self.max_units = max_units
        self.layers = layer_infos(built)
        self.ops = op_infos(built)
        self.frozen = frozen_units(built)

    @property
    def name(self) -> str:
        """The Keras model's name."""
        return str(self.built.model.name)

    def headline(self) -> str:
        """One line: the name, the layer count and the connected parameter count."""
        connected = sum(r.connected for r in self.layers)
        stored = sum(r.stored for r in self.layers)
        layers = len(self.layers) - len(self.built.spec.inputs)
        ops = f", {len(self.ops)} train op{'s' if len(self.ops) != 1 else ''}" if self.ops else ""
        return (
            f"{self.name}: {layers} layer{'s' if layers != 1 else ''}{ops}, "
            f"{connected} of {stored} trainable parameters connected"
        )

    def svg(self) -> str | None:
        """The drawing of the neurons, or None when a layer or input is too wide.

        Nets with convolution, pooling or flatten statements are not drawn (their units are
        feature maps; the layer table shows each conv's channel table instead).
        """
        feature_maps = (lang.ConvSpec, lang.PoolSpec, lang.FlattenSpec)
        if any(isinstance(spec, feature_maps) for spec in self.built.spec.layers):
            return None
        widths = [int(np.prod(r.out_shape)) for r in self.layers]
        if max(widths, default=0) > self.max_units:
            return None
        return net_svg(self.built, self.frozen)

    def text(self) -> str:
        """The summary as plain text (two aligned tables)."""
        parts = [
            self.headline(),
            "",
            _text_table(_LAYER_HEAD, [_layer_cells(r) for r in self.layers]),
        ]
        if self.ops:
            parts += ["", _text_table(*_op_rows(self.ops))]
        else:
            parts += ["", "no train ops (add `train NAME [SELECTOR ...]` lines)"]
        if self.frozen:
            parts += ["", "frozen units: " + _frozen_text(self.frozen)]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        parts = [f'<div class="maskmagic-summary"><p><b>{html.escape(self.headline())}</b></p>']
        parts.append(_html_table(_LAYER_HEAD, [_layer_cells(r) for r in self.layers], "mm-layers"))
        if self.ops:
            parts.append(_html_table(*_op_rows(self.ops), "mm-ops"))
        else:
            parts.append("<p><i>no train ops</i></p>")
        drawing = self.svg()
        if drawing is not None:
            parts.append(f'<div class="mm-drawing">{drawing}</div>')
        parts.append("</div>")
        return "".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self._repr_html_()}


def _frozen_text(frozen: dict[str, dict[int, list[str]]]) -> str:
    items = []
    for layer, units in frozen.items():
        for unit, ops in units.items():
            items.append(f"{layer}[{unit}] by {', '.join(ops)}")
    return "; ".join(items)
