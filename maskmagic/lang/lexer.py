"""Lexing, tokenizing and value conversion for the cell language (helpers of :mod:`maskmagic.lang`).

Pure: imports only the standard library and :mod:`maskmagic.errors`. Every problem is raised as a
:class:`~maskmagic.errors.CellError` that points at the physical line and column of the offending
character, with that physical line as its ``source``.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import NamedTuple

from maskmagic.errors import CellError

__all__ = [
    "INT_RE",
    "MAX_SIZE",
    "Logical",
    "Token",
    "as_python_reads",
    "convert",
    "is_name",
    "name_hint",
    "parse_call",
    "parse_index",
    "parse_selector",
    "show",
    "split_logical",
    "split_top",
    "strip_token",
    "suggest",
    "to_int",
    "tokenize",
]

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {close: open_ for open_, close in _OPEN.items()}
INT_RE = re.compile(r"[+-]?[0-9]+")
# The largest size of an input, a layer (units, filters) or a kernel: far beyond any layer
# that fits in memory, and within the int32 TensorFlow uses for many shape computations.
MAX_SIZE = 2**31 - 1
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CONSTANTS = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "none": None,
    "None": None,
}
_MAX_NESTING = 16
_SELECTOR_FORMS = "out, out.kernel, out.bias, out[1], out[0:2] or out.kernel[:, 1]"


class Token(NamedTuple):
    """A piece of a logical line: its text and its 0-based offset in that line."""

    text: str
    offset: int


@dataclass(frozen=True)
class Logical:
    """One logical line: a statement with comments removed and continuation lines joined.

    Attributes:
        text: the joined text; a trailing ``\\`` and a line break inside brackets each become one
            space, so offsets on the first physical line equal its columns minus one.
        pos: the physical ``(line, column)`` (1-based) of every character of ``text``.
        raw: every physical line of the cell, for error messages.
    """

    text: str
    pos: tuple[tuple[int, int], ...]
    raw: tuple[str, ...]

    @property
    def start(self) -> int:
        """Offset of the first non-blank character (the statement keyword)."""
        return len(self.text) - len(self.text.lstrip())

    @property
    def line(self) -> int:
        """1-based physical line on which the statement starts."""
        return self.pos[self.start][0]

    def error(self, message: str, offset: int) -> CellError:
        """A CellError at ``offset`` (``len(text)`` means just past the end of the line)."""
        if offset < len(self.pos):
            line, column = self.pos[max(offset, 0)]
        else:
            line, column = self.pos[-1][0], self.pos[-1][1] + 1
        return CellError(message, line, column, self.raw[line - 1])


def show(text: str, limit: int = 40) -> str:
    """``text`` shortened for an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(word: str, choices) -> str:
    """`` (did you mean 'out'?)`` when one of ``choices`` is close to ``word``, else ``""``."""
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def is_name(text: str) -> bool:
    """Whether ``text`` is a Python identifier that is not a keyword, spelled as Python reads
    it (NFKC: Python reads the ligature in ``ﬁrst`` as ``first``, so a name bound as ``ﬁrst``
    could never be reached)."""
    return text.isidentifier() and not keyword.iskeyword(text) and as_python_reads(text) == text


def as_python_reads(text: str) -> str:
    """``text`` in the normal form (NFKC) Python gives identifiers when it reads code."""
    return unicodedata.normalize("NFKC", text)


def name_hint(text: str) -> str:
    """`` (Python reads it as 'first'; write that)`` for an identifier not in NFKC, else ``""``."""
    normal = as_python_reads(text)
    if normal != text and normal.isidentifier():
        return f" (Python reads it as '{normal}'; write that)"
    return ""


def split_logical(text: str) -> list[Logical]:
    """Split a cell into its non-blank logical lines.

    Raises:
        CellError: an unterminated string, or an unmatched or unclosed bracket.
    """
    raw = tuple(text.splitlines())
    out: list[Logical] = []
    chars: list[str] = []
    pos: list[tuple[int, int]] = []
    stack: list[tuple[str, int, int]] = []
    for number, line in enumerate(raw, 1):
        quote, quote_col, end, i = "", 0, len(line), 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote, quote_col = c, i + 1
            elif c == "#":
                end = i
                break
            elif c in _OPEN:
                stack.append((c, number, i + 1))
            elif c in _CLOSE:
                if not stack:
                    raise CellError(
                        f"unmatched '{c}': no bracket is open here", number, i + 1, line
                    )
                if stack[-1][0] != _CLOSE[c]:
                    opener, at_line, at_col = stack[-1]
                    raise CellError(
                        f"expected '{_OPEN[opener]}' to close the '{opener}' opened at line "
                        f"{at_line}, column {at_col}, found '{c}'",
                        number,
                        i + 1,
                        line,
                    )
                stack.pop()
            i += 1
        if quote:
            raise CellError(
                f"unterminated string: the {quote} at column {quote_col} is never closed",
                number,
                quote_col,
                line,
            )
        code = line[:end].rstrip()
        continued = code.endswith("\\")
        if continued:
            code = code[:-1] + " "
        chars.extend(code)
        pos.extend((number, k + 1) for k in range(len(code)))
        if continued or stack:
            if not continued:
                chars.append(" ")
                pos.append((number, len(code) + 1))
            continue
        _flush(chars, pos, raw, out)
    if stack:
        opener, at_line, at_col = stack[-1]
        raise CellError(
            f"'{opener}' is never closed; expected '{_OPEN[opener]}' before the end of the cell",
            at_line,
            at_col,
            raw[at_line - 1],
        )
    _flush(chars, pos, raw, out)
    return out


def _flush(chars: list[str], pos: list[tuple[int, int]], raw: tuple[str, ...], out: list) -> None:
    text = "".join(chars).rstrip()
    if text:
        out.append(Logical(text, tuple(pos[: len(text)]), raw))
    chars.clear()
    pos.clear()


def _scan(text: str, sep: str, maxsplit: int = -1) -> list[Token]:
    """Split ``text`` at ``sep`` (``" "`` = any whitespace) outside quotes and brackets."""
    parts: list[Token] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif depth == 0 and maxsplit != 0 and (c.isspace() if sep == " " else c == sep):
            parts.append(Token(text[start:i], start))
            start, maxsplit = i + 1, maxsplit - 1
        elif c in "'\"":
            quote = c
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        i += 1
    parts.append(Token(text[start:], start))
    return parts


def split_top(text: str, sep: str, maxsplit: int = -1) -> list[Token]:
    """Split ``text`` at the character ``sep`` where it is outside quotes and brackets."""
    return _scan(text, sep, maxsplit)


def tokenize(line: Logical) -> list[Token]:
    """The whitespace-separated tokens of a logical line (brackets and quotes kept whole)."""
    return [tok for tok in _scan(line.text, " ") if tok.text]


def strip_token(tok: Token, base: int = 0) -> Token:
    """``tok`` without surrounding whitespace, its offset moved by ``base``."""
    lead = len(tok.text) - len(tok.text.lstrip())
    return Token(tok.text.strip(), base + tok.offset + lead)


def to_int(line: Logical, tok: Token) -> int:
    """``int(tok.text)``, as a CellError when the number is too long for Python."""
    try:
        return int(tok.text)
    except ValueError:
        raise line.error(f"the number '{show(tok.text)}' is too long", tok.offset) from None


def convert(line: Logical, tok: Token, what: str, depth: int = 0) -> object:
    """Convert an option value: number, bool, none, quoted string, bare name or tuple.

    Args:
        line: the logical line, for errors.
        tok: the value and its offset.
        what: the option, for messages (``"dtype="``).
        depth: tuple nesting depth (internal).

    Returns:
        int, float, bool, None, str or a tuple of those.
    """
    text = tok.text
    if text in _CONSTANTS:
        return _CONSTANTS[text]
    if INT_RE.fullmatch(text):
        return to_int(line, tok)
    if _FLOAT_RE.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
        raise line.error(f"expected a finite number for {what}, found '{show(text)}'", tok.offset)
    if text[:1] in ("'", '"'):
        try:
            literal = ast.literal_eval(text)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            literal = None
        if isinstance(literal, str):
            return literal
        raise line.error(f"expected one quoted string for {what}, found {show(text)}", tok.offset)
    if text[:1] in ("(", "[") and text[-1:] == _OPEN[text[0]] and len(text) > 1:
        if depth >= _MAX_NESTING:
            raise line.error(f"tuples nested too deeply in {what}", tok.offset)
        if not text[1:-1].strip():
            return ()
        parts = split_top(text[1:-1], ",")
        if len(parts) > 1 and not parts[-1].text.strip():
            parts.pop()
        return tuple(convert(line, strip_token(p, tok.offset + 1), what, depth + 1) for p in parts)
    if is_name(text):
        return text
    raise line.error(
        f"expected a number, true/false, none, a quoted string, a name or a tuple for {what}, "
        f"found '{show(text)}'",
        tok.offset,
    )


def parse_call(line: Logical, tok: Token, what: str) -> tuple[str, tuple[tuple[str, object], ...]]:
    """Parse ``name`` or ``name(key=value, ...)`` (a loss or optimizer with its arguments).

    Args:
        line: the logical line, for errors.
        tok: the text and its offset.
        what: what is expected, for messages (``"an optimizer name such as adam"``).

    Returns:
        The name and the converted ``(key, value)`` arguments in the order written.
    """
    text = tok.text
    paren = text.find("(")
    name = text if paren < 0 else text[:paren]
    if not is_name(name):
        raise line.error(f"expected {what}, found '{show(text)}'", tok.offset)
    if paren < 0:
        return name, ()
    if not text.endswith(")"):
        raise line.error(f"expected ')' at the end of '{show(text)}'", tok.offset + len(text))
    args: dict[str, object] = {}
    parts = split_top(text[paren + 1 : -1], ",")
    if len(parts) > 1 and not parts[-1].text.strip():
        parts.pop()
    for part in parts:
        item = strip_token(part, tok.offset + paren + 1)
        if not item.text and len(parts) == 1:
            break
        key, value = _key_value(item)
        if not is_name(key.text) or not value.text:
            raise line.error(
                f"expected key=value arguments inside '{name}(...)', found '{show(item.text)}'",
                item.offset,
            )
        if key.text in args:
            raise line.error(f"argument '{key.text}=' is given twice in '{name}(...)'", key.offset)
        args[key.text] = convert(line, value, f"{key.text}=")
    return name, tuple(args.items())


def _key_value(item: Token) -> tuple[Token, Token]:
    parts = split_top(item.text, "=", 1)
    if len(parts) == 1:
        return item, Token("", item.offset + len(item.text))
    return strip_token(parts[0], item.offset), strip_token(parts[1], item.offset)


def parse_index(line: Logical, tok: Token) -> tuple[int | slice, ...]:
    """Parse the inside of a numpy-style index: ``1``, ``-1``, ``0:2``, ``::2``, ``:, 1``."""
    if not tok.text.strip():
        raise line.error(
            "expected an index such as [1], [0:2] or [:, 1] inside the brackets, found nothing",
            tok.offset,
        )
    entries: list[int | slice] = []
    for part in split_top(tok.text, ","):
        item = strip_token(part, tok.offset)
        fields = item.text.split(":")
        if len(fields) > 3 or not all(INT_RE.fullmatch(f.strip()) for f in fields if f.strip()):
            raise line.error(
                "expected an integer or a slice such as 0:2 or ::-1 in the index, "
                f"found '{show(item.text)}'",
                item.offset,
            )
        values = [
            to_int(line, Token(f.strip(), item.offset)) if f.strip() else None for f in fields
        ]
        if len(values) == 1:
            if values[0] is None:
                raise line.error(
                    "expected an integer or a slice in the index, found nothing", item.offset
                )
            entries.append(values[0])
        elif len(values) == 3 and values[2] == 0:
            raise line.error(f"slice step cannot be zero, found '{item.text}'", item.offset)
        else:
            entries.append(slice(*values))
    return tuple(entries)


def parse_selector(line: Logical, tok: Token) -> tuple[str, str | None, tuple | None]:
    """Parse ``layer``, ``layer.kernel``, ``layer.bias`` and each with a ``[index]``.

    Returns:
        ``(layer, variable, index)``; ``variable`` and ``index`` are None when absent.
    """
    text = tok.text
    cut = min((i for i in (text.find("."), text.find("[")) if i >= 0), default=len(text))
    layer = text[:cut]
    if not is_name(layer):
        raise line.error(
            f"expected a selector such as {_SELECTOR_FORMS}, found '{show(text)}'", tok.offset
        )
    rest, offset = text[cut:], tok.offset + cut
    variable = None
    if rest.startswith("."):
        end = rest.find("[") if "[" in rest else len(rest)
        variable = rest[1:end]
        if variable not in ("kernel", "bias"):
            raise line.error(
                f"expected .kernel or .bias after '{layer}', found '.{show(variable)}'", offset
            )
        rest, offset = rest[end:], offset + end
    if not rest:
        return layer, variable, None
    if not (rest.startswith("[") and rest.endswith("]")):
        raise line.error(
            f"expected a selector such as {_SELECTOR_FORMS}, found '{show(text)}'", offset
        )
    return layer, variable, parse_index(line, Token(rest[1:-1], offset + 1))
