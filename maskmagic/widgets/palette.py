"""The widgets' colours, defined once: the Python PNG fallbacks use them and each widget sends
its palette to its front end (the ``palette`` trait), whose JavaScript and CSS define none.

Colours are ``[r, g, b]`` lists of 0-255 ints (JSON-ready).
"""

from __future__ import annotations

__all__ = ["EDITOR", "GRID_ALPHA", "INSPECTOR"]

EDITOR: dict[str, list[int]] = {
    "on": [37, 99, 235],  # a connected cell, an edge that is on
    "off": [241, 243, 246],  # a cell that is off
    "edge_off": [203, 213, 225],  # an edge that is off (graph view)
    "hover": [249, 115, 22],  # the cell or edge under the pointer, a selection's outline
    "grid": [15, 23, 42],  # grid lines between cells of 6 px or more, at GRID_ALPHA over them
}
GRID_ALPHA = 0.10

INSPECTOR: dict[str, list] = {
    # Diverging colour map, from -1 to 1: negative blue, zero light grey-white, positive red.
    "diverging": [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]],
    "masked": [226, 226, 226],  # a masked cell ...
    "hatch": [140, 140, 140],  # ... with hatching lines
    "hatch_over": [90, 90, 90],  # hatching over the value (the would-be view)
    "frozen": [30, 30, 30],  # the outline of a cell the op cannot change
    "some_frozen": [110, 110, 110],  # the outline of a block with some such cells
}
