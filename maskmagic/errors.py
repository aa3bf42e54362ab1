"""The exception types maskmagic raises about a user's input.

Every problem with what the user wrote (a cell, a mask, a selector, a file) is a
:class:`MaskMagicError`, a :class:`ValueError`, so ``except ValueError`` keeps working.
Only :mod:`maskmagic.magic` turns these into the short one-line notebook message.
"""

from __future__ import annotations

__all__ = ["CellError", "MaskError", "MaskMagicError", "SelectorError", "first_line"]


class MaskMagicError(ValueError):
    """Base class of every error about the user's input."""


class MaskError(MaskMagicError):
    """A mask, bias mask or mask file is malformed (shape, values, format, missing file)."""


class SelectorError(MaskMagicError):
    """A train-op selector or freeze names something the model does not have."""


class CellError(MaskMagicError):
    """A ``%%masked_net`` cell is malformed; knows the 1-based line and column.

    Args:
        message: what was expected and what was found.
        line: 1-based line number in the cell (0 if unknown).
        column: 1-based column number (0 if unknown).
        source: the text of the offending line, shown under the message.
    """

    def __init__(self, message: str, line: int = 0, column: int = 0, source: str = "") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(self.short())

    def short(self) -> str:
        """One-line message: ``line L, column C: message``."""
        if self.line:
            return f"line {self.line}, column {self.column}: {self.message}"
        return self.message


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (its type name if the
    message is empty): how a foreign exception is quoted inside a maskmagic message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
