"""MaskEditor: paint a layer's connectivity matrix in the notebook; every edit reaches the layer.

Rows are inputs and columns are units, as in the kernel. The front end (``static/editor.js``)
holds the mask while the user paints and sends one message per finished gesture; the kernel
applies it, calls ``layer.set_mask`` (no re-trace of a compiled train step) and tells every
front end what changed.

Message protocol (ipywidgets custom messages; cells are flat row-major indices ``i*units + j``,
runs are little-endian uint32 ``(start, length)`` pairs, sorted and not overlapping):

front end -> kernel
    ``{"type": "edit", "client", "id", "shape", "op": "set"|"flip"|"replace", "value"}`` with
    one buffer (runs, or the packed bitmap of ``replace``); ``{"type": "undo"}``,
    ``{"type": "redo"}``, ``{"type": "sync"}`` (send me everything) and
    ``{"type": "weight", "i", "j"}`` (hover readout).
kernel -> front end
    ``{"type": "change", "version", "client", "id", "op": "flip"|"replace", "count"}`` with the
    flipped runs or the new bitmap (``client``/``id`` name the edit it answers, or are None);
    ``{"type": "reset", "version", "acked": {client: id}, "count"}`` with the bitmap;
    ``{"type": "reject", "client", "id", "reason"}``; ``{"type": "weight", "i", "j", "value"}``.

The ``bits`` trait (bit-packed, :func:`maskmagic.masks.check.pack_bits`) always holds the current mask for
views opened later; it is not re-sent on each change, since the change messages carry it.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import anywidget
import numpy as np
import scipy.sparse as sp
import traitlets

from maskmagic import masks
from maskmagic.errors import MaskError, MaskMagicError, SelectorError
from maskmagic.masks.check import pack_bits
from maskmagic.widgets import STATIC, widget_css
from maskmagic.widgets import palette as palettes
from maskmagic.widgets.editor import state
from maskmagic.widgets.editor.source import (
    check_cells,
    check_index,
    fit_names,
    is_net,
    layer_matrix,
    mask_image,
    masked_layers,
    open_source,
    set_layer_matrix,
)
from maskmagic.widgets.png import PngFallback

__all__ = ["MaskEditor", "editor_for", "mask_image"]

GRAPH_LIMIT = 32  # the graph view is offered up to GRAPH_LIMIT x GRAPH_LIMIT


def _either(given: Any, default: Any) -> Any:
    return default if given is None else given


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class MaskEditor(PngFallback, anywidget.AnyWidget):
    """A widget to paint the (inputs x units) connectivity mask of a layer or of a matrix.

    Args:
        layer_or_array: a built :class:`~maskmagic.layers.MaskedDense` (each committed edit then
            calls its ``set_mask``) or a 2-D 0/1 matrix (numpy, nested lists, ``scipy.sparse``,
            :class:`~maskmagic.masks.NamedMask`); the editor keeps its own copy of a matrix.
        input_names: names of the rows (default: the layer's or NamedMask's, else indices).
        unit_names: names of the columns, likewise.
        graph: show the neuron graph view (default: when the mask is at most 32 x 32).
        **kwargs: passed on to ``anywidget.AnyWidget`` (``layout=...``).

    Raises:
        MaskMagicError: not a MaskedDense or a 2-D 0/1 matrix, an unbuilt layer, or a mask of
            more than ``MAX_CELLS`` cells.
    """

    _esm = STATIC / "editor.js"
    _css = widget_css("editor.css")

    palette = traitlets.Dict(
        default_value=palettes.EDITOR,
        help="the front end's colours, [r, g, b] by role (maskmagic.widgets.palette.EDITOR)",
    ).tag(sync=True)
    grid_alpha = traitlets.Float(
        palettes.GRID_ALPHA, help="the opacity of the grid lines drawn over the cells"
    ).tag(sync=True)

    shape = traitlets.Tuple(
        traitlets.Int(), traitlets.Int(), default_value=(1, 1),
        help="(inputs, units): the rows and columns of the mask; fixed",
    ).tag(sync=True)  # fmt: skip
    bits = traitlets.Bytes(help="the mask, bit-packed row-major (masks.check.pack_bits)").tag(
        sync=True
    )
    version = traitlets.Int(0, help="number of changes published so far").tag(sync=True)
    input_names = traitlets.List(traitlets.Unicode(), help="row names ([] = indices)").tag(
        sync=True
    )
    unit_names = traitlets.List(traitlets.Unicode(), help="column names ([] = indices)").tag(
        sync=True
    )
    title = traitlets.Unicode("", help="the layer's name, shown above the grid").tag(sync=True)
    input_label = traitlets.Unicode("input", help="what the rows are called").tag(sync=True)
    unit_label = traitlets.Unicode("unit", help="what the columns are called").tag(sync=True)
    bound = traitlets.Bool(False, help="edits go to a layer, hover shows weights").tag(sync=True)
    graph = traitlets.Bool(False, help="show the neuron graph (masks up to 32 x 32)").tag(sync=True)
    random_density = traitlets.Float(0.1, help="density of the 'random' button").tag(sync=True)
    undo_depth = traitlets.Int(0, help="changes that undo() can take back").tag(sync=True)
    redo_depth = traitlets.Int(0, help="undone changes that redo() can apply").tag(sync=True)
    _editor_id = traitlets.Unicode(help="identifies this editor's model in the front end").tag(
        sync=True
    )
    mask = traitlets.Any(help="the mask: a read-only numpy bool array (inputs, units); settable")

    _ready = False

    def __init__(
        self,
        layer_or_array: Any,
        *,
        input_names: Iterable[str] | None = None,
        unit_names: Iterable[str] | None = None,
        graph: bool | None = None,
        **kwargs: Any,
    ) -> None:
        source = open_source(layer_or_array)
        layer, matrix = source.layer, source.matrix
        rows, cols = matrix.shape
        self._layer = layer
        self._sparse_layer = source.sparse
        self._layer_version = getattr(layer, "mask_version", 0)
        self._history = state.History(rows * cols)
        self._acked: dict[str, int] = {}
        self._origin: state.Edit | None = None  # the front-end edit being applied
        self._recording = True
        self._quiet = False
        super().__init__(
            shape=(rows, cols),
            bits=pack_bits(matrix),
            input_names=fit_names(_either(input_names, source.names[0]), rows, "input_names"),
            unit_names=fit_names(_either(unit_names, source.names[1]), cols, "unit_names"),
            title=source.title,
            input_label=source.input_label,
            unit_label=source.unit_label,
            bound=layer is not None,
            graph=max(rows, cols) <= GRAPH_LIMIT if graph is None else bool(graph),
            _editor_id=uuid.uuid4().hex,
            **kwargs,
        )
        self.set_trait("mask", matrix)
        self._ready = True
        self.on_msg(self._on_front_message)

    @traitlets.validate("mask")
    def _valid_mask(self, proposal: dict) -> np.ndarray:
        checked = masks.validate(proposal["value"], tuple(self.shape))
        dense = checked.toarray() if sp.issparse(checked) else checked
        layer = getattr(self, "_layer", None)
        if layer is not None and hasattr(layer, "check_channel_table"):
            layer.check_channel_table(dense)  # a grouped conv refuses edits across its blocks
        return _frozen(np.array(dense, dtype=bool))

    @traitlets.validate("shape")
    def _valid_shape(self, proposal: dict) -> tuple[int, int]:
        if self._ready and tuple(proposal["value"]) != tuple(self.shape):
            raise MaskMagicError(f"the editor's shape is fixed at {tuple(self.shape)}")
        return proposal["value"]

    @traitlets.validate("random_density")
    def _valid_density(self, proposal: dict) -> float:
        value = proposal["value"]
        if not 0.0 <= value <= 1.0:
            raise MaskMagicError(f"random_density must be between 0 and 1; received {value!r}")
        return value

    @traitlets.validate("graph")
    def _valid_graph(self, proposal: dict) -> bool:
        rows, cols = self.shape
        if proposal["value"] and max(rows, cols) > GRAPH_LIMIT:
            raise MaskMagicError(
                f"the graph view is for masks up to {GRAPH_LIMIT} x {GRAPH_LIMIT}; "
                f"this one is {rows} x {cols}"
            )
        return proposal["value"]

    # ------------------------------------------------------------------ public API
    @property
    def layer(self) -> Any:
        """The bound MaskedDense layer, or None for an editor of a plain matrix."""
        return self._layer

    @property
    def count(self) -> int:
        """Number of connections (cells that are 1)."""
        return int(np.count_nonzero(self.mask))

    @property
    def density(self) -> float:
        """Fraction of cells that are 1."""
        return self.count / self.mask.size

    def toggle(self, i: int, j: int) -> bool:
        """Flips the connection from input ``i`` to unit ``j``; returns its new value."""
        i, j = check_index(i, j, tuple(self.shape))
        self._sync_from_layer()
        new = self.mask.copy()
        new[i, j] = not new[i, j]
        self._commit(new)
        return bool(new[i, j])

    def paint(self, cells: Iterable[tuple[int, int]] | np.ndarray, value: bool = True) -> int:
        """Sets the ``(i, j)`` cells to ``value`` as one undoable change; returns how many changed.

        Raises:
            MaskError: ``cells`` is not a sequence of in-range ``(i, j)`` pairs, or ``value``
                is not 0/1.
        """
        if value not in (0, 1):
            raise MaskError(f"paint: value must be 0/1 or a bool; received {value!r}")
        index = check_cells(cells, tuple(self.shape))
        if not len(index):
            return 0
        self._sync_from_layer()
        new = self.mask.copy()
        new[index[:, 0], index[:, 1]] = bool(value)
        changed = int(np.count_nonzero(new != self.mask))
        self._commit(new)
        return changed

    def fill(self, value: bool) -> None:
        """Sets every cell to ``value`` (the 'all' and 'none' buttons)."""
        self._sync_from_layer()
        self._commit(np.full(tuple(self.shape), bool(value)))

    def invert(self) -> None:
        """Flips every cell."""
        self._sync_from_layer()
        self._commit(~self.mask)

    def identity(self) -> None:
        """Input i to unit i only (``masks.eye``)."""
        self._sync_from_layer()
        self._commit(np.asarray(masks.eye(tuple(self.shape))))

    def randomize(self, density: float | None = None, seed: int | None = None) -> None:
        """Each cell on with probability ``density`` (default: :attr:`random_density`)."""
        density = self.random_density if density is None else density
        self._sync_from_layer()
        self._commit(np.asarray(masks.random(density, tuple(self.shape), seed=seed)))

    def undo(self) -> bool:
        """Takes back the last change; returns False when there is nothing to undo."""
        return self._replay(self._history.undo)

    def redo(self) -> bool:
        """Applies the last undone change again; returns False when there is nothing to redo."""
        return self._replay(self._history.redo)

    def refresh(self) -> None:
        """Reloads the mask from the bound layer (after ``layer.set_mask`` elsewhere)."""
        self._sync_from_layer(force=True)

    def to_png(self) -> bytes:
        """A PNG image of the mask (what an exported notebook shows without a kernel)."""
        return mask_image(self.mask)

    def _fallback_png(self) -> bytes:
        return self.to_png()

    def __repr__(self) -> str:
        rows, cols = self.shape
        what = f"{self.title}: " if self.title else ""
        return f"MaskEditor({what}{rows} x {cols}, {self.count} of {rows * cols} on)"

    # ------------------------------------------------------------------ committing
    @contextlib.contextmanager
    def _applying(self, origin: state.Edit | None, recording: bool) -> Iterator[None]:
        saved = self._origin, self._recording
        self._origin, self._recording = origin, recording
        try:
            yield
        finally:
            self._origin, self._recording = saved

    def _commit(
        self, new: np.ndarray, origin: state.Edit | None = None, recording: bool = True
    ) -> None:
        with self._applying(origin, recording):
            if np.array_equal(new, self.mask):
                if origin is not None:  # the front end still waits for an answer
                    self._publish(np.zeros(0, dtype=np.int64))
                return
            self.mask = new

    def _replay(self, pop: Any) -> bool:
        self._sync_from_layer()
        flipped = pop()
        if flipped is None:
            return False
        new = self.mask.ravel().copy()
        new[flipped] = ~new[flipped]
        self._commit(new.reshape(self.shape), recording=False)
        return True

    @traitlets.observe("mask")
    def _on_mask(self, change: dict) -> None:
        """Runs first on every change of ``mask``: history, layer, front ends."""
        if not self._ready:
            return
        flipped = np.flatnonzero(change["old"].ravel() != change["new"].ravel())
        if flipped.size == 0 and self._origin is None:
            return
        if self._recording and flipped.size:
            self._history.record(flipped)
        if self._layer is not None and flipped.size:
            new = change["new"]
            set_layer_matrix(self._layer, sp.csr_array(new) if self._sparse_layer else new)
            self._layer_version = getattr(self._layer, "mask_version", 0)
        self._publish(flipped)

    def _publish(self, flipped: np.ndarray) -> None:
        """Updates the synced traits and sends the change to every front end."""
        origin = self._origin
        flat = self.mask.ravel()
        if origin is not None:
            self._acked[origin.client] = origin.id
        with self.hold_sync():
            self._quiet = True
            try:
                self.bits = pack_bits(flat)
                self.version += 1
            finally:
                self._quiet = False
            self._set_depths()
        op, payload = state.encode_change(flipped, flat)
        content = {
            "type": "change",
            "version": self.version,
            "client": origin.client if origin else None,
            "id": origin.id if origin else None,
            "op": op,
            "count": self.count,
        }
        self.send(content, [payload])

    def _set_depths(self) -> None:
        self.undo_depth = self._history.undo_depth
        self.redo_depth = self._history.redo_depth

    def _should_send_property(self, key: str, value: Any) -> bool:
        if self._quiet and key in ("bits", "version"):
            return False  # the change message carries it
        return super()._should_send_property(key, value)

    def _sync_from_layer(self, force: bool = False) -> None:
        """Takes over a mask set on the layer by someone else (and forgets the history)."""
        layer = self._layer
        version = getattr(layer, "mask_version", 0)
        if layer is None or (not force and version == self._layer_version):
            return
        current = layer_matrix(layer)
        current = np.asarray(current.toarray() if sp.issparse(current) else current, dtype=bool)
        self._layer_version = version
        if not np.array_equal(current, self.mask):
            self._history.clear()
            self._commit(current, recording=False)

    # ------------------------------------------------------------------ front-end messages
    def _on_front_message(self, _widget: Any, content: Any, buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "edit":
                self._front_edit(content, buffers)
            elif kind in ("undo", "redo"):
                (self.undo if kind == "undo" else self.redo)()
            elif kind == "sync":
                self._send_reset()
            elif kind == "weight":
                self._send_weight(*state.parse_index(content, tuple(self.shape)))
            else:
                raise state.MessageError(f"unknown message type {kind!r}")
        except state.MessageError as exc:
            warnings.warn(
                f"MaskEditor refused a message from the front end: {exc}; the mask is unchanged",
                stacklevel=2,
            )
            if kind == "edit" and isinstance(content.get("client"), str):
                reject = {"type": "reject", "client": content["client"], "reason": str(exc)}
                self.send({**reject, "id": content.get("id")})

    def _front_edit(self, content: dict, buffers: Any) -> None:
        edit = state.parse_edit(content, buffers, tuple(self.shape))
        self._sync_from_layer()
        new = state.apply_edit(self.mask.ravel(), edit).reshape(self.shape)
        self._commit(new, origin=edit)

    def _send_reset(self) -> None:
        content = {
            "type": "reset",
            "version": self.version,
            "acked": dict(self._acked),
            "count": self.count,
        }
        self.send(content, [pack_bits(self.mask)])

    def _send_weight(self, i: int, j: int) -> None:
        value = None
        kernel = getattr(self._layer, "kernel", None)
        if kernel is not None and tuple(kernel.shape) == tuple(self.shape):
            import keras

            value = float(keras.ops.convert_to_numpy(kernel[i, j]))
        self.send({"type": "weight", "i": i, "j": j, "value": value})


def editor_for(name: str, layer: str, namespace: dict[str, Any]) -> MaskEditor:
    """The editor ``%mask_editor NAME.LAYER`` opens: layer ``layer`` of the net bound to ``name``.

    Without ``layer``, the net's only masked layer, or the MaskedDense layer or 0/1 matrix bound
    to ``name``.

    Raises:
        MaskMagicError: an unknown name (listing the nets there are), or a layer asked of
            something that is not a net.
        SelectorError: a layer the net does not have (listing its masked layers).
    """
    if name not in namespace:
        nets = sorted(k for k, v in namespace.items() if is_net(v) and not k.startswith("_"))
        known = f"nets defined: {', '.join(nets)}" if nets else "no nets are defined yet"
        raise MaskMagicError(f"%mask_editor: no variable {name!r} in the notebook; {known}")
    obj = namespace[name]
    if not is_net(obj):
        if layer:
            raise MaskMagicError(
                f"%mask_editor: {name!r} is a {type(obj).__name__}, not a Keras model, so it "
                f"has no layer {layer!r}"
            )
        return MaskEditor(obj)
    layers = masked_layers(obj)
    if not layer:
        if len(layers) == 1:
            return MaskEditor(next(iter(layers.values())))
        raise SelectorError(
            f"%mask_editor: net {name!r} has {len(layers)} masked layers; name one: "
            + ", ".join(f"{name}.{k}" for k in layers)
        )
    if layer not in layers:
        known = ", ".join(layers) or "(none)"
        raise SelectorError(
            f"%mask_editor: net {name!r} has no masked layer {layer!r}; its masked "
            f"layers are: {known}"
        )
    return MaskEditor(layers[layer])
