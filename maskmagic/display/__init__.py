"""Rich summaries of a built cell: tables of layers and train ops, and SVG drawings."""

from maskmagic.display import summary
from maskmagic.display.summary import *  # noqa: F403  (the tables and their data: summary.__all__)
from maskmagic.display.svg import mask_svg, net_svg

__all__ = [*summary.__all__, "mask_svg", "net_svg"]
