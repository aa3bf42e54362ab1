"""Jupyter widgets: the mask editor and the gradient inspector (anywidget, no CDN)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC", "widget_css"]

STATIC = Path(__file__).resolve().parent / "static"
"""The front ends' packaged files (JavaScript and CSS)."""


def widget_css(name: str) -> str:
    """A widget's stylesheet: the rules both widgets share (``common.css``), then its own."""
    return "\n".join((STATIC / file).read_text(encoding="utf-8") for file in ("common.css", name))
