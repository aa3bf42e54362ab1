"""The ``%%masked_net`` cell language: ``parse(text) -> NetSpec``.

A pure parser: it imports only the standard library, :mod:`maskmagic.errors` and its ``lang_*``
helpers (never TensorFlow, numpy or IPython) and returns frozen dataclasses made of tuples. The
``mask=`` and ``bias_mask=`` values stay raw Python expression text, which :mod:`maskmagic.builder`
evaluates in the notebook namespace. The specs live in :mod:`maskmagic.lang.specs`, the lexer and
value conversion in :mod:`maskmagic.lang.lexer`, the statement rules in
:mod:`maskmagic.lang.parser`; this module is the public face.

Positions: a :class:`Location` has the 1-based ``line`` on which its statement starts and a
1-based ``column`` into ``source``, the logical line (the statement with its comment removed and
its continuation lines joined, each trailing ``\\`` or line break inside brackets becoming one
space); for a one-line statement that is the ordinary column. Errors raised by :func:`parse` are
more precise: a :class:`~maskmagic.errors.CellError` carries the physical line and column of the
offending character and that physical line as its ``source``.
"""

from __future__ import annotations

from maskmagic.errors import CellError, SelectorError
from maskmagic.lang import specs
from maskmagic.lang.lexer import Token, split_logical
from maskmagic.lang.lexer import parse_selector as _parse_selector_token
from maskmagic.lang.parser import Parser
from maskmagic.lang.specs import *  # noqa: F403  (the specs and option lists: specs.__all__)

__all__ = sorted(  # constants, then classes, then functions
    [*specs.__all__, "HELP", "parse", "parse_selector"],
    key=lambda name: (not name.isupper(), not name[0].isupper(), name),
)

HELP = """\
%%masked_net NAME [--code] [--quiet] [--seed N]   build a masked Keras network named NAME

One statement per line; `#` starts a comment; a line ending in `\\` continues on the next
(so does a line with an open bracket). Options are key=value with no spaces around `=`.

  input NAME SIZE              SIZE: 3 or a shape tuple such as (28, 28, 1)
  dense NAME UNITS [OPTIONS]   a MaskedDense layer
      from=a or from=a,b       sources, concatenated (default: the previous input or layer)
      activation=relu  use_bias=false  kernel_initializer=glorot_uniform  impl=<IMPLS>
      mask=EXPR  bias_mask=EXPR   a Python expression: A, [[0,1],[1,0]], random(0.1, seed=0),
                                  eye(10), banded(2), blocks(3), ones, from_csv("a.csv")
      also <PASSTHROUGH>
  conv2d NAME FILTERS kernel=K [OPTIONS]   a MaskedConv2D layer (input: height, width, channels)
      kernel=5 or kernel=(5, 3)  stride=1  padding=valid|same  impl=<CONV_IMPLS>
      mask=EXPR   a channel table (in_channels, filters) or a kernel-shaped mask
      also from=, activation=, bias_mask=, use_bias=, kernel_initializer= as for dense
  conv1d NAME FILTERS kernel=K [OPTIONS]   a MaskedConv1D layer (input: length, channels)
  maxpool NAME SIZE [from=SRC]  avgpool NAME SIZE [from=SRC]   pooling over each channel
  flatten NAME [from=SRC]      one vector per sample (dense flattens its input anyway)
  dropout NAME RATE [from=SRC]  RATE in [0, 1)
  from_model EXPR [masks=EXPR] [bias_masks=EXPR]   start from a built Keras model (its Dense
                               layers become MaskedDense with their weights; masks: {name: A})
  loss LOSS [OPTIONS]          mse, binary_crossentropy(from_logits=true), ...
  optimizer OPT [OPTIONS]      sgd learning_rate=0.1, adam(learning_rate=1e-3), ...
  train OPNAME [SELECTOR ...] [freeze=UNITS] [optimizer=OPT] [loss=LOSS]
        [hold=UNITS [hold_on=EXPR] [hold_tol=X]]

Selectors (what a train op may change):
  (none) or *          every trainable variable
  out                  all variables of layer out (dense or conv)
  out.kernel out.bias  one variable
  out[1] out[0:2]      unit(s): their incoming kernel column(s) and bias entries
  out.kernel[2, 1]     exactly those kernel entries (numpy indexing, e.g. out.kernel[:, 1])
  c3[5]  c3.kernel[:, :, 2, 5]   a conv's filter(s), or kernel entries (kh, kw, in, filter)
freeze=out[0],h[3] keeps those output units bit-identical: every parameter with a path to them
is left out of the op.
hold=out[0],h[3] lets every selected parameter train but projects and corrects each step so those
units keep their values on the reference inputs (hold_on=EXPR, a Python expression giving an
array of inputs; default: each batch) to a relative tolerance (hold_tol=, default 1e-6).
freeze is exact on every input; hold is to tolerance on the reference inputs.

Example:
  input x 3
  dense hidden 4 activation=sigmoid
  dense out 2 mask=[[1,0],[1,1],[0,1],[1,1]]
  loss mse
  optimizer sgd learning_rate=0.1
  train keep_first freeze=out[0]
  train refine out[1] hold=out[0]
"""
HELP = HELP.replace("<IMPLS>", "|".join(specs.IMPLS)).replace(
    "<CONV_IMPLS>", "|".join(specs.CONV_IMPLS)
)
HELP = HELP.replace(
    "<PASSTHROUGH>",
    "\n      ".join(
        " ".join(f"{key}=" for key in specs.PASSTHROUGH_OPTIONS[start : start + 5])
        for start in range(0, len(specs.PASSTHROUGH_OPTIONS), 5)
    ),
)


def parse(text: str) -> specs.NetSpec:
    """Parse the body of a ``%%masked_net`` cell.

    Args:
        text: the cell body (without the ``%%masked_net`` line).

    Returns:
        The NetSpec.

    Raises:
        CellError: anything wrong with the cell, with its line and column.
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() expects the cell text as a str, got {type(text).__name__}")
    lines = split_logical(text)
    if not lines:
        raise CellError(
            "the cell is empty; expected at least an `input` statement and a `dense` layer, "
            "for example `input x 3` then `dense out 2` (see %masked_net? for the language)",
            1,
            1,
            text.splitlines()[0] if text.splitlines() else "",
        )
    parser = Parser()
    for line in lines:
        parser.statement(line)
    return parser.finish(lines)


def parse_selector(text: str) -> specs.SelectorSpec:
    """Parse one selector given outside a cell, such as ``"out[1]"`` or ``"out.kernel[:, 1]"``.

    Raises:
        SelectorError: the text is not a selector; the message says which forms are accepted.
    """
    if not isinstance(text, str):
        raise SelectorError(f"expected a selector string such as 'out[1]', received {text!r}")
    try:
        lines = split_logical(text.strip())
        if len(lines) != 1:
            raise SelectorError(f"expected one selector such as 'out[1]', received {text!r}")
        line = lines[0]
        token = Token(line.text.strip(), line.start)
        layer, variable, index = _parse_selector_token(line, token)
    except CellError as exc:  # unbalanced brackets, bad index: no cell line or column here
        raise SelectorError(f"bad selector {text!r}: {exc.message}") from None
    return specs.SelectorSpec(
        token.text, layer, variable, index, specs.Location(1, line.start + 1, line.text)
    )
