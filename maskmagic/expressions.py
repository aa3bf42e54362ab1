"""Evaluating the user's own Python expressions (``mask=`` values, ``%grad_inspector`` batches)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

__all__ = ["evaluate"]


def evaluate(
    text: str, namespace: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> Any:
    """``text`` evaluated with the notebook's names, and ``extra`` names over them.

    One globals dict (no separate locals), so comprehensions, generator expressions and lambdas
    in the expression see every name too. Exceptions propagate unchanged: the caller knows what
    the expression was for and says so.
    """
    scope = {"__builtins__": builtins, **namespace, **(extra or {})}
    return eval(text, scope)  # noqa: S307 - the user's own notebook expression
