"""The widget line magics, ``%mask_editor`` and ``%grad_inspector`` (called by maskmagic.magic)."""

from __future__ import annotations

from typing import Any

__all__ = ["grad_inspector", "mask_editor"]


def mask_editor(line: str, namespace: dict[str, Any]) -> Any:
    """``%mask_editor net.hidden``: see :func:`maskmagic.widgets.editor.from_magic`."""
    from maskmagic.widgets.editor import from_magic

    return from_magic(line, namespace)


def grad_inspector(line: str, namespace: dict[str, Any]) -> Any:
    """``%grad_inspector net x y [--op OP]``: see :func:`maskmagic.widgets.inspector.from_magic`."""
    from maskmagic.widgets.inspector import from_magic

    return from_magic(line, namespace)
