"""The statement parser behind :func:`maskmagic.lang.parse`: logical lines -> NetSpec.

Pure: imports only the standard library and other ``maskmagic.lang*`` modules. Every problem is a
:class:`~maskmagic.errors.CellError` at the physical line and column of the offending token.
"""

from __future__ import annotations

import ast

from maskmagic.errors import CellError, SelectorError
from maskmagic.lang import selectors as rules
from maskmagic.lang.lexer import (
    INT_RE,
    MAX_SIZE,
    Logical,
    Token,
    convert,
    is_name,
    name_hint,
    parse_call,
    parse_selector,
    show,
    split_top,
    suggest,
    to_int,
    tokenize,
)
from maskmagic.lang.specs import (
    CONV_IMPLS,
    CONV_OPTIONS,
    DENSE_OPTIONS,
    IMPLS,
    KEYWORDS,
    PASSTHROUGH_OPTIONS,
    ConvSpec,
    DenseSpec,
    DropoutSpec,
    FlattenSpec,
    InputSpec,
    Location,
    LossSpec,
    ModelSpec,
    NetSpec,
    OptimizerSpec,
    PoolSpec,
    SelectorSpec,
    TrainSpec,
)

__all__ = ["Parser"]

_LOSS = "a loss name such as mse or binary_crossentropy"


def _choices(names: tuple[str, ...]) -> str:
    """``"auto, dense or sparse"``: the names an option accepts, for its error message."""
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _named_value(value: object) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


_CHECKED_VALUES = {  # option: (default, check, what is expected)
    "activation": (None, _named_value, "an activation name such as relu, or none"),
    "use_bias": (True, lambda value: isinstance(value, bool), "true or false"),
    "kernel_initializer": (None, _named_value, "an initializer name such as glorot_uniform"),
}
_DENSE_VALUES = {**_CHECKED_VALUES, "impl": ("auto", lambda value: value in IMPLS, _choices(IMPLS))}
_OPTIMIZER = "an optimizer name such as sgd or adam"
_TRAIN_KEYS = ("freeze", "hold", "hold_on", "hold_tol", "optimizer", "loss")
_CONV_VALUES = {
    **_CHECKED_VALUES,
    "impl": ("auto", lambda value: value in CONV_IMPLS, _choices(CONV_IMPLS)),
    "padding": ("valid", lambda value: value in ("valid", "same"), "valid or same"),
}


def _loc(line: Logical, offset: int) -> Location:
    """Where ``offset`` of a logical line was written: its physical line and column (a
    statement continued over several lines reports the line the offset is on)."""
    if offset < len(line.pos):
        row, column = line.pos[max(offset, 0)]
    else:
        row, column = line.pos[-1][0], line.pos[-1][1] + 1
    return Location(row, column, line.raw[row - 1])


def _converted(line: Logical, tok: Token, what: str) -> object:
    """The value of ``tok``, or None when it is no value at all (the caller says what it wants)."""
    try:
        return convert(line, tok, what)
    except CellError:
        return None


_Options = dict[str, tuple[Token, Token]]


class Parser:
    """Statement by statement state; one instance per parse()."""

    def __init__(self) -> None:
        self.inputs: list[InputSpec] = []
        self.layers: list[DenseSpec | ConvSpec | PoolSpec | FlattenSpec | DropoutSpec] = []
        self.defined: dict[str, tuple[str, int]] = {}  # input/layer name -> (keyword, line)
        self.width: dict[str, int | None] = {}  # output width of 1-D inputs and layers
        self.addressable: dict[str, rules.Addressable] = {}  # what selectors can name
        self.loss: LossSpec | None = None
        self.optimizer: OptimizerSpec | None = None
        self.train: list[TrainSpec] = []
        self.selectors: list[tuple[Logical, Token, SelectorSpec]] = []
        self.base: ModelSpec | None = None
        self.structure: tuple[Logical, Token] | None = None  # the first input/dense/dropout

    def statement(self, line: Logical) -> None:
        keyword, *rest = tokenize(line)
        if keyword.text.startswith("from_model="):  # `from_model=EXPR`: same as `from_model EXPR`
            expression = keyword.text[len("from_model=") :]
            start = keyword.offset + len("from_model=")
            keyword, rest = Token("from_model", keyword.offset), [Token(expression, start), *rest]
        if keyword.text not in KEYWORDS:
            hint = suggest(keyword.text, KEYWORDS)
            if keyword.text.startswith("%"):
                hint = "; the `%%masked_net NAME` line is not part of the cell body"
            raise line.error(
                f"unknown statement '{show(keyword.text)}'; expected one of: "
                f"{', '.join(KEYWORDS)}{hint}",
                keyword.offset,
            )
        positional, options = [], {}
        for tok in rest:
            parts = split_top(tok.text, "=", 1)
            if len(parts) == 1:
                positional.append(tok)
                continue
            key, value = parts[0].text, Token(parts[1].text, tok.offset + parts[1].offset)
            if not key.isidentifier():
                raise line.error(
                    f"expected an option name before '=' (key=value, no spaces around '='), "
                    f"found '{show(key)}'",
                    tok.offset,
                )
            if not value.text:
                raise line.error(
                    f"expected a value after '{key}=', found nothing; "
                    "write options without spaces around '='",
                    value.offset,
                )
            if key in options:
                raise line.error(
                    f"option '{key}=' is given twice in this statement; expected each option once",
                    tok.offset,
                )
            options[key] = (Token(key, tok.offset), value)
        if keyword.text not in ("loss", "optimizer", "train"):  # inputs and layers
            self._one_source_of_layers(line, keyword)
        getattr(self, "_" + keyword.text)(line, keyword, positional, options)

    def _one_source_of_layers(self, line: Logical, keyword: Token) -> None:
        """A cell either defines its layers or takes them from_model, not both."""
        if keyword.text == "from_model" and self.base is not None:
            raise line.error(
                f"a second `from_model` statement; the model is already set on line "
                f"{self.base.loc.line}",
                keyword.offset,
            )
        first = self.structure
        if keyword.text == "from_model" and first is not None:
            raise line.error(
                f"`from_model` takes the inputs and layers from the model, but line "
                f"{first[0].line} already has `{first[1].text}`; expected either from_model or "
                "input and layer statements",
                keyword.offset,
            )
        if keyword.text != "from_model" and self.base is not None:
            raise line.error(
                f"`{keyword.text}` in a from_model cell (line {self.base.loc.line}); the layers "
                "come from the model: expected only loss, optimizer and train statements after "
                "from_model",
                keyword.offset,
            )
        if keyword.text != "from_model" and first is None:
            self.structure = (line, keyword)

    def _from_model(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        what = "a Python expression giving a Keras model after 'from_model'"
        tok = self._arg(line, positional, 0, what)
        self._extra(line, positional, 1, "from_model EXPR [masks=EXPR] [bias_masks=EXPR]")
        self._keys(line, keyword, options, ("masks", "bias_masks"))
        expression = self._expression(line, {"model": (tok, tok)}, "model")
        if expression is None:  # the option is given just above
            raise AssertionError("from_model without its expression")
        self.base = ModelSpec(
            expression,
            self._expression(line, options, "masks"),
            self._expression(line, options, "bias_masks"),
            _loc(line, keyword.offset),
        )

    # -- helpers -----------------------------------------------------------------------------

    def _arg(self, line: Logical, positional: list[Token], i: int, what: str) -> Token:
        if i < len(positional):
            return positional[i]
        raise line.error(f"expected {what}, found nothing", len(line.text))

    def _extra(self, line: Logical, positional: list[Token], n: int, usage: str) -> None:
        if len(positional) > n:
            tok = positional[n]
            hint = "; wrap a mask expression with spaces in parentheses" if "mask" in usage else ""
            raise line.error(
                f"unexpected '{show(tok.text)}'; expected `{usage}` with options written "
                f"key=value{hint}",
                tok.offset,
            )

    def _keys(self, line: Logical, keyword: Token, options: _Options, valid) -> None:
        for key, (tok, _) in options.items():
            if key in valid:
                continue
            if key == "name":
                message = f"'name=' is not an option: the name is the word after `{keyword.text}`"
            elif not valid:
                message = f"`{keyword.text}` takes no options, found '{key}='"
            else:
                message = (
                    f"unknown option '{key}=' for `{keyword.text}`; expected one of: "
                    f"{', '.join(valid)}{suggest(key, valid)}"
                )
            raise line.error(message, tok.offset)

    def _name(self, line: Logical, keyword: Token, positional: list[Token], what: str) -> Token:
        tok = self._arg(line, positional, 0, f"{what} after '{keyword.text}'")
        if not is_name(tok.text):
            raise line.error(
                f"expected {what} (a Python identifier) after '{keyword.text}', "
                f"found '{show(tok.text)}'{name_hint(tok.text)}",
                tok.offset,
            )
        if tok.text in self.defined and keyword.text != "train":
            kind, at = self.defined[tok.text]
            raise line.error(
                f"'{tok.text}' is already defined on line {at} ({kind} {tok.text}); "
                "every input and layer needs its own name",
                tok.offset,
            )
        return tok

    def _sources(self, line: Logical, keyword: Token, name: Token, options: _Options):
        if "from" not in options:
            if not self.defined:
                raise line.error(
                    f"'{keyword.text} {name.text}' has no input: no input or layer comes before "
                    "it; add an `input NAME SIZE` statement first or give from=NAME",
                    keyword.offset,
                )
            return (list(self.defined)[-1],)
        value = options["from"][1]
        sources = []
        for part in split_top(value.text, ","):
            offset = value.offset + part.offset
            if not is_name(part.text):
                raise line.error(
                    "expected from=NAME or from=NAME,NAME (no spaces), "
                    f"found {repr(show(part.text)) if part.text else 'nothing'}",
                    offset,
                )
            if part.text not in self.defined:
                why = "a layer cannot read its own output" if part.text == name.text else ""
                known = ", ".join(self.defined) or "none"
                raise line.error(
                    f"from={part.text}: '{part.text}' is not an input or layer defined above "
                    f"this line{'; ' + why if why else ''}; known so far: {known}"
                    f"{suggest(part.text, self.defined)}",
                    offset,
                )
            sources.append(part.text)
        return tuple(sources)

    def _register(self, line: Logical, spec, width: int | None) -> None:
        self.defined[spec.name] = (line.text.split()[0], line.line)
        self.width[spec.name] = width

    def _in_width(self, sources: tuple[str, ...]) -> int | None:
        widths = [self.width[s] for s in sources]
        return None if None in widths else sum(w for w in widths if w is not None)

    def _value(self, line: Logical, options: _Options, key: str, default, check, what: str):
        if key not in options:
            return default
        tok = options[key][1]
        value = convert(line, tok, f"{key}=")
        if not check(value):
            raise line.error(f"expected {what} for {key}=, found '{show(tok.text)}'", tok.offset)
        return value

    # -- statements --------------------------------------------------------------------------

    def _input(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "an input name")
        what = "a size (a positive integer, or a shape tuple such as (28, 28, 1))"
        what = f"{what} after 'input {name.text}'"
        tok = self._arg(line, positional, 1, what)
        value = _converted(line, tok, "the size")
        shape = value if isinstance(value, tuple) else (value,)
        if any(type(v) is int and v > MAX_SIZE for v in shape):
            raise line.error(
                f"expected sizes of at most {MAX_SIZE}, found {show(tok.text)}", tok.offset
            )
        if not shape or not all(type(v) is int and v > 0 for v in shape):
            raise line.error(f"expected {what}, found '{show(tok.text)}'", tok.offset)
        self._extra(line, positional, 2, "input NAME SIZE")
        self._keys(line, keyword, options, ())
        spec = InputSpec(name.text, shape, _loc(line, keyword.offset))
        self.inputs.append(spec)
        self._register(line, spec, shape[0] if len(shape) == 1 else None)

    def _dense(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "a layer name")
        units = self._count(line, keyword, name, positional, "units")
        self._extra(line, positional, 2, "dense NAME UNITS [mask=... key=value ...]")
        self._keys(line, keyword, options, DENSE_OPTIONS + PASSTHROUGH_OPTIONS)
        fields = self._layer_options(line, keyword, name, options, _DENSE_VALUES)
        spec = DenseSpec(name.text, units, **fields)
        self._add_layer(line, spec, (self._in_width(spec.sources), units), units, units)

    def _count(self, line: Logical, keyword: Token, name: Token, positional, noun: str) -> int:
        """The positive number of units (filters) after ``dense NAME`` (``conv2d NAME``)."""
        what = f"a positive integer number of {noun} after '{keyword.text} {name.text}'"
        tok = self._arg(line, positional, 1, what)
        count = to_int(line, tok) if INT_RE.fullmatch(tok.text) and tok.text[0] not in "+-" else 0
        if count > MAX_SIZE:
            raise line.error(
                f"expected at most {MAX_SIZE} {noun}, found {show(tok.text)}", tok.offset
            )
        if count <= 0:
            raise line.error(f"expected {what}, found '{show(tok.text)}'", tok.offset)
        return count

    def _layer_options(
        self, line: Logical, keyword: Token, name: Token, options: _Options, values: dict
    ) -> dict:
        """The :class:`LayerOptions` fields of a dense or conv statement; ``values``: the rules
        of its checked options."""
        return dict(
            sources=self._sources(line, keyword, name, options),
            **{key: self._value(line, options, key, *rule) for key, rule in values.items()},
            mask=self._expression(line, options, "mask"),
            bias_mask=self._expression(line, options, "bias_mask"),
            options=tuple(
                (key, convert(line, value, f"{key}="))
                for key, (_, value) in options.items()
                if key in PASSTHROUGH_OPTIONS
            ),
            loc=_loc(line, keyword.offset),
            option_locs=tuple((key, _loc(line, val.offset)) for key, (_, val) in options.items()),
        )

    def _add_layer(self, line: Logical, spec, kernel: tuple, units: int, width: int | None):
        """Records a dense or conv layer; ``kernel``: its shape as far as known here."""
        self.layers.append(spec)
        self.addressable[spec.name] = rules.Addressable(spec.name, kernel, spec.use_bias, units)
        self._register(line, spec, width)

    def _expression(self, line: Logical, options: _Options, key: str) -> str | None:
        if key not in options:
            return None
        tok = options[key][1]
        try:
            ast.parse(tok.text, mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as exc:
            offset = getattr(exc, "offset", None)
            offset = offset if isinstance(offset, int) and offset >= 1 else len(tok.text) + 1
            reason = getattr(exc, "msg", None) or str(exc)
            raise line.error(
                f"expected a Python expression for {key}=, found '{show(tok.text)}' ({reason})",
                tok.offset + min(max(offset - 1, 0), len(tok.text)),
            ) from None
        return tok.text

    def _sizes(self, line: Logical, tok: Token, rank: int | None, what: str) -> tuple[int, ...]:
        """A positive int, or a tuple of ``rank`` positive ints (any length if rank is None)."""
        try:
            value = convert(line, tok, what)
        except CellError:
            value = None
        values = value if isinstance(value, tuple) else (value,)
        if any(type(v) is int and v > MAX_SIZE for v in values):
            raise line.error(
                f"expected {what} of at most {MAX_SIZE}, found {show(tok.text)}", tok.offset
            )
        ok = values and all(type(v) is int and v > 0 for v in values)
        if not ok or (isinstance(value, tuple) and rank is not None and len(values) != rank):
            shape = "an int" if rank is None else f"an int or a tuple of {rank} ints"
            raise line.error(
                f"expected a positive size for {what} ({shape}), found '{show(tok.text)}'",
                tok.offset,
            )
        return tuple(values)

    def _conv(self, line: Logical, keyword: Token, positional, options: _Options, rank: int):
        name = self._name(line, keyword, positional, "a layer name")
        filters = self._count(line, keyword, name, positional, "filters")
        usage = f"{keyword.text} NAME FILTERS kernel=K [mask=... key=value ...]"
        self._extra(line, positional, 2, usage)
        self._keys(line, keyword, options, CONV_OPTIONS + PASSTHROUGH_OPTIONS)
        if "kernel" not in options:
            raise line.error(
                f"`{keyword.text} {name.text}` needs kernel=K (the kernel size, such as kernel=5 "
                f"or kernel={(3,) * rank if rank > 1 else 3}); found no kernel=",
                len(line.text),
            )
        kernel = self._sizes(line, options["kernel"][1], rank, "kernel=")
        strides: tuple[int, ...] = (1,)
        if "stride" in options:
            strides = self._sizes(line, options["stride"][1], rank, "stride=")
        fields = self._layer_options(line, keyword, name, options, _CONV_VALUES)
        spec = ConvSpec(
            name=name.text,
            rank=rank,
            filters=filters,
            kernel=kernel * rank if len(kernel) == 1 else kernel,
            strides=strides * rank if len(strides) == 1 else strides,
            **fields,
        )
        self._add_layer(line, spec, (*spec.kernel, None, filters), filters, None)  # channels: ?

    def _conv1d(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        self._conv(line, keyword, positional, options, 1)

    def _conv2d(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        self._conv(line, keyword, positional, options, 2)

    def _pool(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "a layer name")
        what = f"a pool size after '{keyword.text} {name.text}'"
        tok = self._arg(line, positional, 1, what)
        size = self._sizes(line, tok, None, "the pool size")
        self._extra(line, positional, 2, f"{keyword.text} NAME SIZE [from=SRC]")
        self._keys(line, keyword, options, ("from",))
        sources = self._sources(line, keyword, name, options)
        kind = "max" if keyword.text == "maxpool" else "avg"
        spec = PoolSpec(name.text, kind, size, sources, _loc(line, keyword.offset))
        self.layers.append(spec)
        self._register(line, spec, None)

    _maxpool = _pool
    _avgpool = _pool

    def _flatten(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "a layer name")
        self._extra(line, positional, 1, "flatten NAME [from=SRC]")
        self._keys(line, keyword, options, ("from",))
        sources = self._sources(line, keyword, name, options)
        spec = FlattenSpec(name.text, sources, _loc(line, keyword.offset))
        self.layers.append(spec)
        self._register(line, spec, None)

    def _dropout(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "a layer name")
        what = f"a dropout rate in [0, 1) after 'dropout {name.text}'"
        tok = self._arg(line, positional, 1, what)
        rate = _converted(line, tok, "the rate")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
            raise line.error(f"expected {what}, found '{show(tok.text)}'", tok.offset)
        self._extra(line, positional, 2, "dropout NAME RATE [from=SRC]")
        self._keys(line, keyword, options, ("from",))
        sources = self._sources(line, keyword, name, options)
        spec = DropoutSpec(name.text, float(rate), sources, _loc(line, keyword.offset))
        self.layers.append(spec)
        self._register(line, spec, self._in_width(sources))

    def _named(self, line: Logical, keyword: Token, positional, options: _Options, what: str):
        if getattr(self, keyword.text) is not None:
            raise line.error(
                f"a second `{keyword.text}` statement; the {keyword.text} is already set on "
                f"line {getattr(self, keyword.text).loc.line}",
                keyword.offset,
            )
        tok = self._arg(line, positional, 0, f"{what} after '{keyword.text}'")
        name, args = parse_call(line, tok, what)
        self._extra(line, positional, 1, f"{keyword.text} NAME [key=value ...]")
        merged = dict(args)
        for key, (key_tok, value) in options.items():
            if key in merged:
                raise line.error(
                    f"option '{key}=' is given twice in this statement; expected each option once",
                    key_tok.offset,
                )
            merged[key] = convert(line, value, f"{key}=")
        return name, tuple(merged.items()), _loc(line, keyword.offset)

    def _loss(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        self.loss = LossSpec(*self._named(line, keyword, positional, options, _LOSS))

    def _optimizer(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        self.optimizer = OptimizerSpec(*self._named(line, keyword, positional, options, _OPTIMIZER))

    def _train(self, line: Logical, keyword: Token, positional, options: _Options) -> None:
        name = self._name(line, keyword, positional, "a train op name")
        for other in self.train:
            if other.name == name.text:
                raise line.error(
                    f"train op '{name.text}' is already defined on line {other.loc.line}; "
                    "every train op needs its own name",
                    name.offset,
                )
        self._keys(line, keyword, options, _TRAIN_KEYS)
        chosen = positional[1:]
        stars = [tok for tok in chosen if tok.text == "*"]
        if stars and len(chosen) > 1:
            tok = next(t for t in chosen if t is not stars[0])
            raise line.error(
                f"'*' already selects every trainable variable; it cannot be combined with "
                f"'{show(tok.text)}'",
                tok.offset,
            )
        select = () if stars else tuple(self._selector(line, tok, "") for tok in chosen)
        freeze, hold = (self._units(line, options, key) for key in ("freeze", "hold"))
        hold_on, hold_tol = self._hold_options(line, options, hold)
        optimizer = None
        extra: tuple[tuple[str, object], ...] = ()
        if "optimizer" in options:
            value = options["optimizer"][1]
            optimizer = OptimizerSpec(
                *parse_call(line, value, _OPTIMIZER), _loc(line, value.offset)
            )
        if "loss" in options:
            value = options["loss"][1]
            extra = (("loss", LossSpec(*parse_call(line, value, _LOSS), _loc(line, value.offset))),)
        self.train.append(
            TrainSpec(
                name.text,
                select,
                freeze,
                optimizer,
                extra,
                _loc(line, keyword.offset),
                hold=hold,
                hold_on=hold_on,
                hold_tol=hold_tol,
                option_locs=tuple((k, _loc(line, v.offset)) for k, (_, v) in options.items()),
            )
        )

    def _units(self, line: Logical, options: _Options, key: str) -> tuple[SelectorSpec, ...]:
        """The unit selectors of ``freeze=`` or ``hold=`` (``out[0],h[3]``)."""
        if key not in options:
            return ()
        value = options[key][1]
        return tuple(
            self._selector(line, Token(part.text, value.offset + part.offset), key)
            for part in split_top(value.text, ",")
        )

    def _hold_options(self, line: Logical, options: _Options, hold) -> tuple:
        """``hold_on=`` (an expression) and ``hold_tol=`` (a number in (0, 1)), with hold=."""
        for key in ("hold_on", "hold_tol"):
            if key in options and not hold:
                raise line.error(
                    f"{key}= needs hold=; expected hold=UNITS (such as hold=out[0]) in this "
                    "statement",
                    options[key][0].offset,
                )
        tol = None
        if "hold_tol" in options:
            tok = options["hold_tol"][1]
            tol = convert(line, tok, "hold_tol=")
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 < tol < 1:
                raise line.error(
                    f"expected a number between 0 and 1 (exclusive) such as 1e-7 for hold_tol=, "
                    f"found '{show(tok.text)}'",
                    tok.offset,
                )
            tol = float(tol)
        return self._expression(line, options, "hold_on"), tol

    def _selector(self, line: Logical, tok: Token, units: str) -> SelectorSpec:
        """One selector; ``units`` names the option (``"freeze"``, ``"hold"``) of unit selectors."""
        if not tok.text:
            raise line.error(
                f"expected a unit selector such as out[0] after ',' (no spaces in {units}=), "
                "found nothing",
                tok.offset,
            )
        layer, variable, index = parse_selector(line, tok)
        spec = SelectorSpec(tok.text, layer, variable, index, _loc(line, tok.offset))
        if units:
            try:
                rules.check_units(spec, units)
            except SelectorError as exc:
                raise line.error(str(exc), tok.offset) from None
        self.selectors.append((line, tok, spec))
        return spec

    def _check_selector(self, line: Logical, tok: Token, spec: SelectorSpec) -> None:
        """What ``spec`` means against the cell's layers (the rules of :mod:`.selectors`)."""
        others = {name: kind for name, (kind, _) in self.defined.items()}
        try:
            layer = rules.find(spec, self.addressable, "dense or conv layers", others)
            rules.check_variable(spec, layer)
        except SelectorError as exc:
            raise line.error(str(exc), tok.offset) from None
        try:
            rules.check_index(spec, layer)
        except SelectorError as exc:
            raise line.error(str(exc), tok.offset + tok.text.find("[")) from None

    def finish(self, lines: list[Logical]) -> NetSpec:
        if self.base is not None:  # selectors are checked against the model when it is built
            return NetSpec((), (), self.loss, self.optimizer, tuple(self.train), self.base)
        if not self.inputs:
            raise lines[0].error(
                "the cell has no `input` statement; expected `input NAME SIZE` (for example "
                "`input x 3`) before the layers",
                lines[0].start,
            )
        if not self.layers:
            last = lines[-1]
            raise last.error(
                "the cell defines no layers; expected at least one `dense NAME UNITS` (or "
                "`conv2d NAME FILTERS kernel=K`) statement after the inputs",
                len(last.text),
            )
        for args in self.selectors:
            self._check_selector(*args)
        return NetSpec(
            tuple(self.inputs), tuple(self.layers), self.loss, self.optimizer, tuple(self.train)
        )
