"""Thin IPython glue: ``%%masked_net`` and the widget line magics.

Parse the arguments, build (in :mod:`maskmagic.builder`), bind the names, display. An error is
shown as one short message with the line and column, never a traceback, and leaves the
namespace as it was: nothing is bound until everything has been built.
"""

from __future__ import annotations

import argparse
import keyword
import shlex
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from maskmagic import lang
from maskmagic.errors import CellError, MaskMagicError

__all__ = ["MaskMagics", "load_ipython_extension", "short_message"]

USAGE = "%%masked_net NAME [--code] [--quiet] [--seed N]"
_RED, _RESET = "\x1b[31m", "\x1b[0m"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit the kernel
        raise MaskMagicError(f"{message}; expected {self.usage}")


def _arguments(usage: str) -> _Parser:
    return _Parser(prog="masked_net", usage=usage, add_help=False, exit_on_error=False)


_NET_ARGS = _arguments(USAGE)
_NET_ARGS.add_argument("name")
_NET_ARGS.add_argument("--code", action="store_true")
_NET_ARGS.add_argument("--quiet", action="store_true")
_NET_ARGS.add_argument("--seed", type=int, default=None)


def short_message(exc: MaskMagicError) -> list[str]:
    """The lines shown for an error: the message, then the cell line with a caret under it."""
    lines = [f"{_RED}{type(exc).__name__}{_RESET}: {exc}"]
    if isinstance(exc, CellError) and exc.source:
        lines += [f"    {exc.source}", "    " + " " * max(exc.column - 1, 0) + "^"]
    return lines


def _shown_short(exc: MaskMagicError) -> MaskMagicError:
    """Makes IPython show ``exc`` as a short message instead of a traceback."""
    exc._render_traceback_ = lambda: short_message(exc)  # type: ignore[attr-defined]
    return exc


def _parse_line(parser: _Parser, line: str) -> argparse.Namespace:
    try:
        return parser.parse_args(shlex.split(line))
    except MaskMagicError:
        raise
    except ValueError as exc:  # shlex: unbalanced quotes
        raise MaskMagicError(f"{exc}; expected {parser.usage}") from None
    except argparse.ArgumentError as exc:
        raise MaskMagicError(f"{exc}; expected {parser.usage}") from None


@magics_class
class MaskMagics(Magics):
    """The maskmagic magics; ``%load_ext maskmagic`` registers them."""

    @cell_magic
    def masked_net(self, line: str, cell: str) -> None:
        try:
            args = _parse_line(_NET_ARGS, line)
            if not args.name.isidentifier() or keyword.iskeyword(args.name):
                raise MaskMagicError(
                    f"NAME must be a Python identifier; received {args.name!r}; expected {USAGE}"
                )
            built = _build(cell, self.shell.user_ns, args)
            source = _source(built, args, f"%%masked_net {line}\n{cell}") if args.code else None
            summary = None if args.quiet else _summary(built)
        except MaskMagicError as exc:
            raise _shown_short(exc) from None
        # Everything that can fail has run: only now do the names reach the namespace.
        self.shell.push({args.name: built.model, **built.ops})
        if source is not None:
            print(source)
        if summary is not None:
            from IPython.display import display

            display(summary)

    @line_magic
    def mask_editor(self, line: str) -> Any:
        """``%mask_editor net.hidden``: a MaskEditor bound to a layer of a net."""
        try:
            from maskmagic.widgets.editor import from_magic

            return from_magic(line, self.shell.user_ns)
        except MaskMagicError as exc:
            raise _shown_short(exc) from None

    @line_magic
    def grad_inspector(self, line: str) -> Any:
        """``%grad_inspector net x y [--op OP]``: a GradientInspector of a net on a batch."""
        try:
            from maskmagic.widgets.inspector import from_magic

            return from_magic(line, self.shell.user_ns)
        except MaskMagicError as exc:
            raise _shown_short(exc) from None


def _build(cell: str, namespace: dict, args: argparse.Namespace):
    from maskmagic.builder import build_spec

    spec = lang.parse(cell)
    clash = next((op for op in spec.train if op.name == args.name), None)
    if clash is not None:
        raise CellError(
            f"train op {clash.name!r} has the same name as the net; expected a name other "
            f"than {args.name!r}",
            clash.loc.line,
            clash.loc.column,
            clash.loc.source,
        )
    return build_spec(spec, namespace, name=args.name, seed=args.seed)


def _source(built, args: argparse.Namespace, cell: str) -> str:
    from maskmagic.codegen import to_source

    base = built.spec.base
    if base is not None:
        raise CellError(
            f"--code cannot write source for a from_model cell: the model comes from "
            f"{base.expression!r}, whose own source maskmagic does not have; drop --code (use "
            "maskmagic.strip(NAME) for a plain-Keras copy of the trained model)",
            base.loc.line,
            base.loc.column,
            base.loc.source,
        )
    return to_source(built, args.name, cell=cell)


def _summary(built) -> Any:
    from maskmagic.display import NetSummary

    return NetSummary(built)


MaskMagics.masked_net.__doc__ = f"""Build a masked Keras network and its train ops from a cell.

Binds NAME to the Keras model and every train op to its TrainOp, then shows a summary.
  --code    also print equivalent plain TensorFlow/Keras source (needs only tensorflow, numpy)
  --quiet   show nothing
  --seed N  reproducible initial weights

{lang.HELP}"""


def load_ipython_extension(ipython: Any) -> None:
    """Registers the magics (``%load_ext maskmagic``)."""
    ipython.register_magics(MaskMagics)
