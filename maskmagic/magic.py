"""Thin IPython glue: ``%%masked_net`` and the widget line magics.

Every magic declares its arguments with IPython's ``magic_arguments`` (which also writes its
``%magic?`` help); :func:`_arguments` reads a line with them. Build (in
:mod:`maskmagic.builder`), bind the names, display. An error in the cell is shown as one short
message with the line and column, never a traceback. Any other exception is a bug in maskmagic:
it is shown with its traceback under a one-line header that says so and what to report. Either
way the namespace stays as it was: nothing is bound until everything has been built.
"""

from __future__ import annotations

import argparse
import shlex
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments

from maskmagic import lang
from maskmagic.errors import CellError, MaskMagicError
from maskmagic.lang.lexer import is_name, name_hint

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from maskmagic.builder import Built

__all__ = ["MaskMagics", "load_ipython_extension", "short_message"]

USAGE = "%%masked_net NAME [--code] [--quiet] [--seed N]"
EDITOR_USAGE = "%mask_editor NET.LAYER (or the name of a MaskedDense layer or of a 0/1 matrix)"
INSPECTOR_USAGE = "%grad_inspector NET X Y [--op OP] [--target loss|LAYER[UNIT]]"
_RED, _RESET = "\x1b[31m", "\x1b[0m"


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


BUG_HEADER = (
    "maskmagic bug: {kind} raised inside maskmagic, not by your cell; nothing was bound (the "
    "namespace is unchanged). Please report it to {url} with the cell, this traceback and "
    "your versions (maskmagic {version}, keras {keras}, tensorflow {tensorflow})."
)
ISSUES_URL = "the maskmagic issue tracker"


def bug_header(exc: BaseException) -> str:
    """The one line shown above the traceback of an exception from maskmagic's own code."""
    import keras
    import tensorflow as tf

    from maskmagic._version import __version__

    return BUG_HEADER.format(
        kind=type(exc).__name__,
        url=ISSUES_URL,
        version=__version__,
        keras=keras.__version__,
        tensorflow=tf.__version__,
    )


def _shown_as_bug(exc: Exception) -> Exception:
    """Makes IPython show ``exc`` as a maskmagic bug: the header, then the full traceback."""
    header = f"{_RED}{bug_header(exc)}{_RESET}"
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    exc._render_traceback_ = lambda: [header, *"".join(lines).splitlines()]  # type: ignore[attr-defined]
    return exc


def _arguments(magic: Callable[..., Any], line: str, usage: str) -> argparse.Namespace:
    """``line`` read with the ``magic_arguments`` parser of ``magic``.

    The words are split the POSIX way (quotes removed), so that a quoted expression such as
    ``'[x[i] for i in range(8)]'`` reaches the magic without its quotes; IPython's own
    ``parse_argstring`` keeps them.

    Raises:
        MaskMagicError: unbalanced quotes, unknown or missing arguments, a bad value; the
            message ends with ``usage``.
    """
    try:
        return magic.parser.parse_args(shlex.split(line))  # type: ignore[attr-defined]
    except (UsageError, ValueError) as exc:  # the parser's errors; shlex: unbalanced quotes
        raise MaskMagicError(f"{exc}; expected {usage}") from None


def _identifier(text: str) -> str:
    """The ``NAME`` of ``%%masked_net``: a Python identifier that is not a keyword."""
    if not is_name(text):
        raise argparse.ArgumentTypeError(
            f"NAME must be a Python identifier; received {text!r}{name_hint(text)}"
        )
    return text


def _layer_target(text: str) -> tuple[str, str]:
    """``NAME`` or ``NAME.LAYER`` (the target of ``%mask_editor``) as ``(name, layer)``."""
    name, dot, layer = text.partition(".")
    if not name.isidentifier() or (dot and not layer):
        raise argparse.ArgumentTypeError(f"expected NAME or NAME.LAYER; received {text!r}")
    return name, layer


@magics_class
class MaskMagics(Magics):
    """The maskmagic magics; ``%load_ext maskmagic`` registers them."""

    def _shell(self) -> InteractiveShell:
        if self.shell is None:  # registered magics always have their shell
            raise AssertionError("maskmagic's magics were called without an IPython shell")
        return self.shell

    def _namespace(self) -> dict[str, Any]:
        return self._shell().user_ns

    @magic_arguments()
    @kwds(epilog=lang.HELP)
    @argument("name", type=_identifier, metavar="NAME", help="the name the Keras model is bound to")
    @argument("--code", action="store_true", help="also print equivalent plain Keras source")
    @argument("--quiet", action="store_true", help="show nothing")
    @argument("--seed", type=int, default=None, metavar="N", help="reproducible initial weights")
    @cell_magic
    def masked_net(self, line: str, cell: str) -> None:
        """Build a masked Keras network and its train ops from a cell.

        Binds NAME to the Keras model and every train op to its TrainOp, then shows a summary.
        ``--code`` prints source that needs only tensorflow and numpy.
        """
        try:
            args = _arguments(MaskMagics.masked_net, line, USAGE)
            built = _build(cell, self._namespace(), args)
            source = _source(built, args, f"%%masked_net {line}\n{cell}") if args.code else None
            summary = None if args.quiet else _summary(built)
        except MaskMagicError as exc:
            raise _shown_short(exc) from None
        except Exception as exc:  # not the cell's fault: a bug, shown with its traceback
            _shown_as_bug(exc)
            raise
        # Everything that can fail has run: only now do the names reach the namespace.
        self._shell().push({args.name: built.model, **built.ops})
        if source is not None:
            print(source)
        if summary is not None:
            from IPython.display import display

            display(summary)

    @magic_arguments()
    @argument(
        "target",
        type=_layer_target,
        metavar="TARGET",
        help="NET.LAYER, or the name of a net with one masked layer, of a MaskedDense layer "
        "or of a 0/1 matrix",
    )
    @line_magic
    def mask_editor(self, line: str) -> Any:
        """A MaskEditor bound to a layer of a net (``%mask_editor net.hidden``)."""
        try:
            args = _arguments(MaskMagics.mask_editor, line, EDITOR_USAGE)
            from maskmagic.widgets.editor import editor_for

            name, layer = args.target
            return editor_for(name, layer, self._namespace())
        except MaskMagicError as exc:
            raise _shown_short(exc) from None
        except Exception as exc:  # a bug, shown with its traceback
            _shown_as_bug(exc)
            raise

    @magic_arguments()
    @argument("net", metavar="NET", help="a Keras model (a name or an expression without spaces)")
    @argument("x", metavar="X", help="the batch's inputs (a name or an expression)")
    @argument("y", metavar="Y", help="the batch's targets (a name or an expression)")
    @argument("--op", default=None, help="a TrainOp that .step() runs")
    @argument(
        "--target", default="loss", metavar="T", help="loss, or LAYER[UNIT] for one output unit"
    )
    @line_magic
    def grad_inspector(self, line: str) -> Any:
        """A GradientInspector of a net on a batch (``%grad_inspector net x y --op train_op2``)."""
        try:
            args = _arguments(MaskMagics.grad_inspector, line, INSPECTOR_USAGE)
            from maskmagic.widgets.inspector import inspector_for

            return inspector_for(
                args.net, args.x, args.y, self._namespace(), op=args.op, target=args.target
            )
        except MaskMagicError as exc:
            raise _shown_short(exc) from None
        except Exception as exc:  # a bug, shown with its traceback
            _shown_as_bug(exc)
            raise


def _build(cell: str, namespace: dict[str, Any], args: argparse.Namespace) -> Built:
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


def _source(built: Built, args: argparse.Namespace, cell: str) -> str:
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


def _summary(built: Built) -> Any:
    from maskmagic.display import NetSummary

    return NetSummary(built)


def load_ipython_extension(ipython: Any) -> None:
    """Registers the magics (``%load_ext maskmagic``)."""
    ipython.register_magics(MaskMagics)
