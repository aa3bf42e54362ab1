"""Inline SVG drawings: the neurons of a small net, and the picture of one mask matrix.

Pure string building (no matplotlib). Every name is escaped with :func:`html.escape`. In the
net drawing each connection whose mask entry is 1 is one ``<line class="conn">`` (blue for a
positive effective weight, red for a negative one, grey for zero; opacity and width grow with
the magnitude); masked-out connections are absent; dropout layers are drawn as pass-through
(dashed ``<line class="pass">``); units frozen by a train op carry a ring in that op's colour,
explained in the legend.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from maskmagic.masks.check import dense_bool

if TYPE_CHECKING:
    from maskmagic.builder import Built

__all__ = ["mask_svg", "net_svg"]

POSITIVE, NEGATIVE, ZERO = "#2563eb", "#dc2626", "#9ca3af"
RING_COLOURS = ("#f59e0b", "#7c3aed", "#059669", "#db2777", "#0891b2", "#65a30d")
COLUMN_WIDTH = 150
MARGIN = 30
LABEL_HEIGHT = 18
GROUP_GAP = 16
_HALO = 'paint-order="stroke" stroke="#ffffff" stroke-width="3"'  # labels stay readable over lines
TITLED_LINES = 256  # layers with at most this many connections get a tooltip per line


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class _Group:
    """One input or layer drawn as a column of ``width`` circles."""

    name: str
    kind: str  # "input", "dense" or "dropout"
    width: int
    sources: tuple[str, ...]
    x: float = 0.0
    y0: float = 0.0


def _groups(built: Built) -> dict[str, _Group]:
    groups = {}
    for given in built.spec.inputs:
        groups[given.name] = _Group(given.name, "input", int(np.prod(given.shape)), ())
    for spec in built.spec.layers:
        layer = built.model.get_layer(spec.name)
        kind = "dense" if hasattr(layer, "get_mask") else "dropout"
        width = int(np.prod(layer.output.shape[1:]))
        groups[spec.name] = _Group(spec.name, kind, width, tuple(spec.sources))
    return groups


def _layout(groups: dict[str, _Group]) -> tuple[float, float, float]:
    """Places every group; returns (node spacing, width, height of the node area)."""
    depth: dict[str, int] = {}
    for name, group in groups.items():
        depth[name] = 1 + max((depth[s] for s in group.sources), default=-1)
    columns: dict[int, list[_Group]] = {}
    for name, group in groups.items():
        columns.setdefault(depth[name], []).append(group)
    tallest = max(sum(g.width for g in col) for col in columns.values())
    dy = min(22.0, max(9.0, 440.0 / max(tallest, 1)))

    def height(col: list[_Group]) -> float:
        return sum((g.width - 1) * dy + LABEL_HEIGHT for g in col) + GROUP_GAP * (len(col) - 1)

    total = max(height(col) for col in columns.values())
    for index, col in sorted(columns.items()):
        y = MARGIN + (total - height(col)) / 2 + LABEL_HEIGHT
        for group in col:
            group.x = MARGIN + 40 + index * COLUMN_WIDTH
            group.y0 = y
            y += (group.width - 1) * dy + LABEL_HEIGHT + GROUP_GAP
    width = 2 * (MARGIN + 40) + (len(columns) - 1) * COLUMN_WIDTH
    return dy, width, total + 2 * MARGIN


def _rows(group: _Group, groups: dict[str, _Group]) -> list[tuple[_Group, int]]:
    """The (source group, unit) behind each input row of ``group`` (concatenation order)."""
    return [(groups[s], i) for s in group.sources for i in range(groups[s].width)]


def _connections(group: _Group, groups: dict, layer: Any, dy: float, radius: float) -> list[str]:
    mask = dense_bool(layer.get_mask())
    try:
        weights = _dense_float(layer.effective_kernel())
    except Exception:  # no weights to show: grey lines
        weights = np.zeros(mask.shape)
    rows = _rows(group, groups)
    scale = float(np.abs(weights[mask]).max()) if mask.any() else 0.0
    titled = int(mask.sum()) <= TITLED_LINES
    lines = []
    for i, j in zip(*np.nonzero(mask)):
        source, k = rows[i]
        w = float(weights[i, j])
        strength = abs(w) / scale if scale > 0 else 0.0
        colour = POSITIVE if w > 0 else NEGATIVE if w < 0 else ZERO
        title = (
            f"<title>{_e(source.name)}[{k}] → {_e(group.name)}[{j}]: {w:.4g}</title>"
            if titled
            else ""
        )
        lines.append(
            f'<line class="conn" x1="{source.x + radius:.1f}" y1="{source.y0 + k * dy:.1f}" '
            f'x2="{group.x - radius:.1f}" y2="{group.y0 + j * dy:.1f}" stroke="{colour}" '
            f'stroke-opacity="{0.15 + 0.85 * strength:.2f}" '
            f'stroke-width="{0.6 + 2.2 * strength:.2f}">{title}</line>'
        )
    return lines


def _dense_float(value: Any) -> np.ndarray:
    return np.asarray(value.toarray() if hasattr(value, "toarray") else value, dtype=float)


def _passes(group: _Group, groups: dict, dy: float, radius: float) -> list[str]:
    return [
        f'<line class="pass" x1="{source.x + radius:.1f}" y1="{source.y0 + k * dy:.1f}" '
        f'x2="{group.x - radius:.1f}" y2="{group.y0 + j * dy:.1f}" stroke="{ZERO}" '
        'stroke-dasharray="3,3" stroke-width="1"/>'
        for j, (source, k) in enumerate(_rows(group, groups))
    ]


def _unit_names(layer: Any, group: _Group) -> list[str] | None:
    names = getattr(layer, "unit_names", None) if layer is not None else None
    return list(names) if names and len(names) == group.width else None


def _nodes(
    group: _Group, layer: Any, frozen: dict, colours: dict, dy: float, r: float
) -> list[str]:
    out = [
        f'<text class="label" x="{group.x:.1f}" y="{group.y0 - r - 6:.1f}" text-anchor="middle" '
        f'font-weight="bold" {_HALO}>{_e(group.name)}</text>'
    ]
    names = _unit_names(layer, group)
    bias = dense_bool(layer.get_bias_mask()) if getattr(layer, "use_bias", False) else None
    fill = {"input": "#e5e7eb", "dense": "#ffffff", "dropout": "#f9fafb"}[group.kind]
    dash = ' stroke-dasharray="2,2"' if group.kind == "dropout" else ""
    for j in range(group.width):
        y = group.y0 + j * dy
        label = f"{group.name}[{j}]" + (f" ({names[j]})" if names else "")
        ops = frozen.get(group.name, {}).get(j, [])
        notes = [f"frozen by {', '.join(ops)}"] if ops else []
        if bias is not None and not bias[j]:
            notes.append("bias masked out")
        title = _e(label + ("; " + "; ".join(notes) if notes else ""))
        out.append(
            f'<circle class="unit" cx="{group.x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" '
            f'stroke="#374151" stroke-width="1.2"{dash}><title>{title}</title></circle>'
        )
        for n, op in enumerate(ops):
            out.append(
                f'<circle class="frozen" data-op="{_e(op)}" cx="{group.x:.1f}" cy="{y:.1f}" '
                f'r="{r + 3 + 3 * n:.1f}" fill="none" stroke="{colours[op]}" '
                f'stroke-width="2"><title>{title}</title></circle>'
            )
    return out


def _legend(y: float, colours: dict, built: Built, has_dropout: bool) -> list[str]:
    items = [
        (f'<line x1="0" y1="0" x2="18" y2="0" stroke="{POSITIVE}" stroke-width="2"/>', "positive weight"),
        (f'<line x1="0" y1="0" x2="18" y2="0" stroke="{NEGATIVE}" stroke-width="2"/>', "negative weight"),
    ]  # fmt: skip
    if has_dropout:
        dashed = f'<line x1="0" y1="0" x2="18" y2="0" stroke="{ZERO}" stroke-dasharray="3,3"/>'
        items.append((dashed, "dropout (pass-through)"))
    for op, colour in colours.items():
        frozen = ", ".join(getattr(s, "text", None) or str(s) for s in built.ops[op].freeze)
        ring = f'<circle cx="9" cy="0" r="6" fill="none" stroke="{colour}" stroke-width="2"/>'
        items.append((ring, f"frozen by {op} ({frozen})"))
    out = []
    for n, (glyph, text) in enumerate(items):
        out.append(
            f'<g class="legend" transform="translate({MARGIN},{y + 16 * n:.1f})">{glyph}'
            f'<text x="26" y="4">{_e(text)}</text></g>'
        )
    return out


def net_svg(built: Built, frozen: dict[str, dict[int, list[str]]] | None = None) -> str:
    """Draws the neurons of a built cell as circles in columns, inputs left, outputs right.

    Args:
        built: a :class:`~maskmagic.builder.Built`; draw only small nets (every layer is dense).
        frozen: {layer: {unit: op names}} of units to mark (see ``display.frozen_units``).

    Returns:
        An ``<svg>`` element as a string.
    """
    frozen = frozen or {}
    groups = _groups(built)
    dy, width, height = _layout(groups)
    radius = min(7.0, dy * 0.36)
    colours: dict[str, str] = {}
    for units in frozen.values():
        for ops in units.values():
            for op in ops:
                colours.setdefault(op, RING_COLOURS[len(colours) % len(RING_COLOURS)])
    layers = {name: built.model.get_layer(name) for name in built.spec.layer_names()}
    lines, nodes = [], []
    for group in groups.values():
        layer = layers.get(group.name)
        if group.kind == "dense":
            lines += _connections(group, groups, layer, dy, radius)
        elif group.kind == "dropout":
            lines += _passes(group, groups, dy, radius)
        nodes += _nodes(group, layer, frozen, colours, dy, radius)
    has_dropout = any(g.kind == "dropout" for g in groups.values())
    legend = _legend(height + 4, colours, built, has_dropout)
    total = height + 16 * len(legend) + 12
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="maskmagic-net" width="{width:.0f}" '
        f'height="{total:.0f}" viewBox="0 0 {width:.0f} {total:.0f}" '
        'font-family="sans-serif" font-size="11">' + "".join(lines + nodes + legend) + "</svg>"
    )


def _coordinates(mask: Any) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    if hasattr(mask, "matrix"):  # a NamedMask
        mask = mask.matrix
    if hasattr(mask, "tocoo"):
        coo = mask.tocoo()
        keep = coo.data != 0
        return tuple(coo.shape), np.asarray(coo.row)[keep], np.asarray(coo.col)[keep]
    array = np.asarray(mask)
    if array.ndim == 1:
        array = array[None, :]
    rows, cols = np.nonzero(array)
    return (int(array.shape[0]), int(array.shape[1])), rows, cols


def mask_svg(mask: Any, max_cells: int = 4096, size: int = 320, title: str | None = None) -> str:
    """A picture of a mask matrix as an inline SVG: a dark cell for each 1.

    Masks with more than ``max_cells`` entries are drawn in blocks shaded by the fraction of
    ones they hold; scipy.sparse masks are never densified.

    Args:
        mask: a 2-D (or 1-D) numpy array, nested lists, scipy.sparse matrix or NamedMask.
        max_cells: the most cells drawn.
        size: the longer side of the picture in pixels.
        title: a tooltip; by default the shape and density.

    Returns:
        An ``<svg>`` element as a string.
    """
    (n_rows, n_cols), rows, cols = _coordinates(mask)
    cells = max(n_rows * n_cols, 1)
    scale = min(1.0, math.sqrt(max_cells / cells))
    grid_r = max(1, min(n_rows, round(n_rows * scale)))
    grid_c = max(1, min(n_cols, round(n_cols * scale)))
    bin_r = np.arange(n_rows + 1) * grid_r // max(n_rows, 1)
    bin_c = np.arange(n_cols + 1) * grid_c // max(n_cols, 1)
    counts = np.zeros((grid_r, grid_c))
    np.add.at(counts, (bin_r[rows], bin_c[cols]), 1)
    per_r = np.bincount(bin_r[:n_rows], minlength=grid_r)
    per_c = np.bincount(bin_c[:n_cols], minlength=grid_c)
    shade = counts / np.maximum(np.outer(per_r, per_c), 1)
    cell = max(1.0, min(14.0, size / max(grid_r, grid_c)))
    width, height = grid_c * cell, grid_r * cell
    ones = len(rows)
    if title is None:
        title = f"{n_rows} x {n_cols} mask, {ones} of {n_rows * n_cols} connected"
        if grid_r * grid_c < cells:
            title += " (blocks shaded by density)"
    rects = [
        f'<rect x="{c * cell:.1f}" y="{r * cell:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
        f'fill-opacity="{shade[r, c]:.2f}"/>'
        for r, c in zip(*np.nonzero(shade))
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="maskmagic-mask" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"><title>{_e(title)}</title>'
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff" stroke="#d1d5db"/>'
        f'<g fill="#111827" shape-rendering="crispEdges">{"".join(rects)}</g></svg>'
    )
