"""The frozen specs that :func:`maskmagic.lang.parse` returns; re-exported by :mod:`maskmagic.lang`.

Pure data: tuples and frozen dataclasses only, so a NetSpec can be shared and never mutated.
Positions: a :class:`Location` has the 1-based ``line`` on which its statement starts and a
1-based ``column`` into ``source``, the logical line (the statement with its comment removed and
its continuation lines joined, each trailing ``\\`` or line break inside brackets becoming one
space); for a one-line statement that is the ordinary column.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "KEYWORDS",
    "IMPLS",
    "CONV_IMPLS",
    "PASSTHROUGH_OPTIONS",
    "CHECKED_OPTIONS",
    "DENSE_OPTIONS",
    "CONV_OPTIONS",
    "KERAS_OPTIONS",
    "ConvSpec",
    "FlattenSpec",
    "PoolSpec",
    "DenseSpec",
    "DropoutSpec",
    "InputSpec",
    "LayerOptions",
    "Location",
    "LossSpec",
    "ModelSpec",
    "NetSpec",
    "OptimizerSpec",
    "SelectorSpec",
    "TrainSpec",
]

IMPLS = ("auto", "dense", "sparse")
"""The kernel implementations of a MaskedDense (``impl=``); the cell language and the layer
share this one list."""
CONV_IMPLS = ("auto", "dense", "grouped")
"""The kernel implementations of a MaskedConv1D/2D (``impl=``), likewise shared."""
KEYWORDS = (
    "input",
    "dense",
    "conv1d",
    "conv2d",
    "maxpool",
    "avgpool",
    "flatten",
    "dropout",
    "from_model",
    "loss",
    "optimizer",
    "train",
)
"""The statement keywords, in the order the help lists them."""
PASSTHROUGH_OPTIONS = (
    "activity_regularizer",
    "bias_constraint",
    "bias_initializer",
    "bias_regularizer",
    "dtype",
    "kernel_constraint",
    "kernel_regularizer",
    "trainable",
)
"""``dense`` options passed unchanged to the Keras layer (in :attr:`DenseSpec.options`)."""
CHECKED_OPTIONS = ("activation", "use_bias", "kernel_initializer")
"""Keras layer options the parser checks and keeps as fields of DenseSpec and ConvSpec."""
DENSE_OPTIONS = (
    "from",
    "activation",
    "mask",
    "bias_mask",
    "use_bias",
    "kernel_initializer",
    "impl",
)
"""The options of a ``dense`` statement besides PASSTHROUGH_OPTIONS, in the order errors list them."""
CONV_OPTIONS = ("kernel", "stride", "padding", *DENSE_OPTIONS)
"""The options of ``conv1d``/``conv2d`` besides PASSTHROUGH_OPTIONS: the dense ones apply too."""
KERAS_OPTIONS = tuple(
    key for key in (*CHECKED_OPTIONS, *PASSTHROUGH_OPTIONS) if key not in ("dtype", "trainable")
)
"""The options of a Keras Dense/ConvND layer a masked layer shares (beyond its size and the base
Layer's name, dtype, trainable): what ``deploy.strip`` copies onto the plain layer."""


@dataclass(frozen=True)
class Location:
    """Where something was written: 1-based ``line`` and ``column``, and ``source``, that
    physical line as written (what an error shows, with a caret under the column)."""

    line: int
    column: int
    source: str


@dataclass(frozen=True)
class InputSpec:
    """``input NAME SIZE``: a model input of the given shape (without the batch axis)."""

    name: str
    shape: tuple[int, ...]
    loc: Location


class _Located:
    """``loc_of``: where a statement's option was written (its ``option_locs``)."""

    loc: Location
    option_locs: tuple[tuple[str, Location], ...]

    def loc_of(self, key: str) -> Location:
        """The Location of option ``key``'s value (``"mask"``), else of the statement."""
        return dict(self.option_locs).get(key, self.loc)


@dataclass(frozen=True, kw_only=True)
class LayerOptions(_Located):
    """What a ``dense`` and a ``conv1d``/``conv2d`` statement share (keyword-only fields).

    Attributes:
        sources: layer or input names whose outputs are concatenated (in order) as the input.
        mask, bias_mask: the raw Python expression text, or None.
        impl: one of IMPLS (dense) or CONV_IMPLS (conv).
        options: other keyword arguments for the Keras layer (see PASSTHROUGH_OPTIONS).
        option_locs: the Location of each option's value, for the builder's error messages.
    """

    sources: tuple[str, ...]
    activation: str | None = None
    mask: str | None = None
    bias_mask: str | None = None
    use_bias: bool = True
    kernel_initializer: str | None = None
    impl: str = "auto"
    options: tuple[tuple[str, object], ...] = ()
    loc: Location
    option_locs: tuple[tuple[str, Location], ...] = ()


@dataclass(frozen=True)
class DenseSpec(LayerOptions):
    """``dense NAME UNITS [OPTIONS]``: one MaskedDense layer (its options: LayerOptions)."""

    name: str
    units: int


@dataclass(frozen=True)
class ConvSpec(LayerOptions):
    """``conv1d|conv2d NAME FILTERS kernel=K [OPTIONS]``: one MaskedConv1D/MaskedConv2D layer.

    Attributes:
        rank: 1 for ``conv1d``, 2 for ``conv2d``.
        kernel, strides: one int per spatial axis.
        padding: ``"valid"`` or ``"same"``.
    """

    name: str
    rank: int
    filters: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str


@dataclass(frozen=True)
class PoolSpec:
    """``maxpool|avgpool NAME SIZE [from=SRC]``: pooling over each channel (1-D or 2-D by input)."""

    name: str
    kind: str  # "max" or "avg"
    size: tuple[int, ...]  # one int (every spatial axis) or one per spatial axis
    sources: tuple[str, ...]
    loc: Location


@dataclass(frozen=True)
class FlattenSpec:
    """``flatten NAME [from=SRC]``: one vector per sample (channels last)."""

    name: str
    sources: tuple[str, ...]
    loc: Location


@dataclass(frozen=True)
class DropoutSpec:
    """``dropout NAME RATE [from=SRC]``."""

    name: str
    rate: float
    sources: tuple[str, ...]
    loc: Location


@dataclass(frozen=True)
class LossSpec:
    """``loss NAME [OPTIONS]``: a Keras loss name and its keyword arguments."""

    name: str
    options: tuple[tuple[str, object], ...]
    loc: Location


@dataclass(frozen=True)
class OptimizerSpec:
    """``optimizer NAME [OPTIONS]``: a Keras optimizer name and its keyword arguments."""

    name: str
    options: tuple[tuple[str, object], ...]
    loc: Location


@dataclass(frozen=True)
class SelectorSpec:
    """One selector of a train op: ``out``, ``out.kernel``, ``out[1]``, ``out.kernel[:, 1]``.

    ``index`` is None or a tuple of ints and slices (numpy indexing). Slices are unhashable
    before Python 3.12, so specs holding them are too.
    """

    text: str
    layer: str
    variable: str | None
    index: tuple | None
    loc: Location


@dataclass(frozen=True)
class TrainSpec(_Located):
    """``train OPNAME [SELECTOR ...] [freeze=UNITS] [hold=UNITS [hold_on=EXPR] [hold_tol=X]]
    [optimizer=OPT] [loss=LOSS]``.

    Attributes:
        select: the selectors; ``()`` means every trainable variable.
        freeze: unit selectors (``out[0]``, or ``out`` for all its units) to keep fixed.
        optimizer: this op's optimizer, or None for the net's.
        options: ``(("loss", LossSpec),)`` when ``loss=`` is given, else ``()``.
        hold: unit selectors whose values each step keeps on the reference inputs.
        hold_on: the reference inputs as a raw Python expression, or None (each batch).
        hold_tol: the relative tolerance of the hold, or None (the default, 1e-6).
        option_locs: the Location of each option's value, for the builder's error messages.
    """

    name: str
    select: tuple[SelectorSpec, ...]
    freeze: tuple[SelectorSpec, ...]
    optimizer: OptimizerSpec | None
    options: tuple[tuple[str, object], ...]
    loc: Location
    hold: tuple[SelectorSpec, ...] = ()
    hold_on: str | None = None
    hold_tol: float | None = None
    option_locs: tuple[tuple[str, Location], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """``from_model EXPR [masks=EXPR] [bias_masks=EXPR]``: start from an existing Keras model.

    Attributes:
        expression: Python expression text giving a built functional or Sequential model.
        masks, bias_masks: Python expression text giving ``{layer name: mask}``, or None.
    """

    expression: str
    masks: str | None
    bias_masks: str | None
    loc: Location


@dataclass(frozen=True)
class NetSpec:
    """A parsed cell: inputs, layers (in statement order), loss, optimizer and train ops."""

    inputs: tuple[InputSpec, ...]
    layers: tuple[DenseSpec | ConvSpec | PoolSpec | FlattenSpec | DropoutSpec, ...]
    loss: LossSpec | None
    optimizer: OptimizerSpec | None
    train: tuple[TrainSpec, ...]
    base: ModelSpec | None = None
    """The model a ``from_model`` cell starts from (then ``inputs`` and ``layers`` are empty)."""

    def layer_names(self) -> tuple[str, ...]:
        """Names of the layers (not the inputs), in order."""
        return tuple(layer.name for layer in self.layers)

    def helper_names(self) -> dict[tuple[str, str], str]:
        """Names of the layers a build adds: ``(layer, source)`` -> the Flatten of a dense
        layer's source, ``(layer, "")`` -> the Concatenate of its sources.

        Each is ``LAYER_SOURCE_flatten`` / ``LAYER_concat``, or that with ``_1``, ``_2``...
        appended when an input, a layer or an earlier helper already has the name.
        """
        taken = {spec.name for spec in (*self.inputs, *self.layers)}
        names: dict[tuple[str, str], str] = {}

        def free(base: str) -> str:
            name, count = base, 0
            while name in taken:
                count += 1
                name = f"{base}_{count}"
            taken.add(name)
            return name

        for layer in self.layers:
            if isinstance(layer, DenseSpec):
                for source in layer.sources:
                    names[layer.name, source] = free(f"{layer.name}_{source}_flatten")
            if len(layer.sources) > 1:
                names[layer.name, ""] = free(f"{layer.name}_concat")
        return names

    @property
    def outputs(self) -> tuple[str, ...]:
        """The layers that no other layer consumes, in order: the model's outputs."""
        used = {source for layer in self.layers for source in layer.sources}
        return tuple(layer.name for layer in self.layers if layer.name not in used)

    def find(
        self, name: str
    ) -> InputSpec | DenseSpec | ConvSpec | PoolSpec | FlattenSpec | DropoutSpec:
        """The input or layer called ``name``; raises KeyError if there is none."""
        for spec in (*self.inputs, *self.layers):
            if spec.name == name:
                return spec
        raise KeyError(name)
