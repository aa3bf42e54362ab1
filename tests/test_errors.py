"""maskmagic.errors: the error types and how a foreign exception is quoted."""

from __future__ import annotations

from maskmagic.errors import CellError, MaskMagicError, first_line


def test_first_line_quotes_one_short_line():
    # Catches a multi-line TensorFlow message pasted whole into a one-line user error.
    assert first_line(ValueError("shapes differ\n  at node foo\n  traceback")) == "shapes differ"
    assert first_line(ValueError("x" * 500), 200) == "x" * 200
    assert first_line(KeyError()) == "KeyError"  # an empty message names the type


def test_cell_error_names_line_and_column_and_is_a_value_error():
    exc = CellError("expected a name", 3, 7, "dense 3")
    assert str(exc) == "line 3, column 7: expected a name"
    assert isinstance(exc, MaskMagicError) and isinstance(exc, ValueError)
