"""What a selector means: its rules, checked by the parser and by the run-time resolver alike.

The lexer reads a selector's syntax (``out``, ``out.kernel[2, 1]``, ``out[0:2]``). Whether it
names something is decided here, against a table of :class:`Addressable` layers: the parser
builds that table from the cell's own layers, :func:`maskmagic.training.selectors.resolve` from
a built model. So each rule (the layer exists, has the variable, takes that many indices, each in
range, the selection is not empty) and its message exist once. Every function raises
:class:`~maskmagic.errors.SelectorError`; the parser re-raises it as a CellError at the selector
(or at its ``[``). Pure: no numpy, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from maskmagic.errors import SelectorError
from maskmagic.lang.lexer import show, suggest
from maskmagic.lang.specs import SelectorSpec

__all__ = ["VARIABLES", "Addressable", "check_index", "check_units", "check_variable", "find"]

VARIABLES = ("kernel", "bias")
_TAPS = {1: ("k",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}


@dataclass(frozen=True)
class Addressable:
    """A layer a selector can name.

    Attributes:
        name: the layer's name.
        kernel: the kernel's shape, ``(inputs, units)`` or ``(taps..., in_channels, filters)``,
            with None for a size not known yet (a parse-time input width); None: no kernel.
        bias: whether the layer has a bias.
        units: its output units (filters of a convolution).
    """

    name: str
    kernel: tuple[int | None, ...] | None
    bias: bool
    units: int

    @property
    def conv(self) -> bool:
        """A convolution: its kernel has tap axes before (in_channels, filters)."""
        return self.kernel is not None and len(self.kernel) > 2

    def axes(self, variable: str | None) -> tuple[tuple[int | None, str], ...]:
        """(size, what it counts) per axis that an index of ``variable`` (None: units) walks."""
        if variable != "kernel" or self.kernel is None or len(self.kernel) == 1:
            return ((self.units, "filters" if self.conv else "units"),)
        if not self.conv:
            return ((self.kernel[0], "inputs (kernel rows)"), (self.units, "units"))
        taps = tuple((size, "kernel taps on that axis") for size in self.kernel[:-2])
        return (*taps, (self.kernel[-2], "input channels"), (self.units, "filters"))


def find(
    spec: SelectorSpec,
    layers: Mapping[str, Addressable],
    family: str,
    others: Mapping[str, str] | None = None,
) -> Addressable:
    """The layer ``spec`` names; ``family`` says which layers can be named, ``others`` gives the
    kind of each layer that cannot (``{"x": "input"}``), for the message."""
    layer = layers.get(spec.layer)
    if layer is not None:
        return layer
    kind = (others or {}).get(spec.layer)
    what = f"names the {kind} '{spec.layer}'" if kind else f"names no layer '{spec.layer}'"
    raise SelectorError(
        f"selector '{show(spec.text)}' {what}; expected one of the {family}: "
        f"{', '.join(layers) or 'none'}{suggest(spec.layer, layers)}"
    )


def check_variable(spec: SelectorSpec, layer: Addressable) -> None:
    """``out.kernel`` / ``out.bias``: the layer has that variable."""
    have = [name for name, ok in zip(VARIABLES, (layer.kernel is not None, layer.bias)) if ok]
    if spec.variable is None or spec.variable in have:
        return
    why = " (use_bias=false)" if spec.variable == "bias" else ""
    raise SelectorError(
        f"selector '{show(spec.text)}': layer '{layer.name}' has no {spec.variable}{why}; "
        f"expected one of its variables: {', '.join(have) or 'none'}"
    )


def check_units(spec: SelectorSpec, option: str) -> None:
    """A ``freeze=`` or ``hold=`` selector names units: ``out``, ``out[0]``, ``out[0:2]``."""
    if spec.variable is None and (spec.index is None or len(spec.index) == 1):
        return
    if spec.variable:
        why = f"it names .{spec.variable}; unit selectors name no variable"
    else:
        why = f"it has {len(spec.index or ())} indices; unit selectors take one"
    raise SelectorError(
        f"{option} expects units such as out[0], out[0:2] or a whole layer out (all its units), "
        f"found '{show(spec.text)}' in {option}= ({why})"
    )


def check_index(spec: SelectorSpec, layer: Addressable) -> None:
    """The index takes as many entries as the variable has axes, each in range, and selects
    something (axes of unknown size are not checked)."""
    if spec.index is None:
        return
    axes = layer.axes(spec.variable)
    text = show(spec.text)
    if not 1 <= len(spec.index) <= len(axes):
        raise SelectorError(
            f"expected {_arity(layer, len(axes))} for {_kind(spec, layer)} selector of "
            f"'{layer.name}', found {len(spec.index)} in '{text}'"
        )
    shape = ""
    if spec.variable == "kernel" and layer.kernel is not None:
        sizes = ", ".join("?" if size is None else str(size) for size in layer.kernel)
        shape = f"; {layer.name}.kernel has shape ({sizes})"
    for entry, (size, noun) in zip(spec.index, axes, strict=False):
        if size is None:
            continue
        if isinstance(entry, int) and not -size <= entry < size:
            raise SelectorError(
                f"index {entry} is out of range in '{text}': layer '{layer.name}' has {size} "
                f"{noun} (valid: {-size} to {size - 1}){shape}"
            )
        if isinstance(entry, slice) and not range(size)[entry]:
            raise SelectorError(
                f"selector '{text}' selects nothing: layer '{layer.name}' has {size} {noun} and "
                f"{_slice_text(entry)} picks none of them{shape}"
            )


def _arity(layer: Addressable, count: int) -> str:
    if count == 1:
        return "1 index"
    if not layer.conv or layer.kernel is None:
        return "1 or 2 indices"
    rank = len(layer.kernel) - 2
    names = _TAPS.get(rank, tuple(f"k{i}" for i in range(rank)))
    return f"at most {count} indices ({', '.join((*names, 'in_channels', 'filters'))})"


def _kind(spec: SelectorSpec, layer: Addressable) -> str:
    if spec.variable:
        return f"a .{spec.variable}"
    return "a filter" if layer.conv else "a unit"


def _slice_text(entry: slice) -> str:
    parts = [entry.start, entry.stop] + ([entry.step] if entry.step is not None else [])
    return ":".join("" if part is None else str(part) for part in parts)
