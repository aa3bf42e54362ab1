"""Rich summaries of a built cell: tables of layers and train ops, and SVG drawings."""

from maskmagic.display.summary import (
    LayerInfo,
    NetSummary,
    OpInfo,
    connected_parameters,
    frozen_units,
    layer_infos,
    op_infos,
)
from maskmagic.display.svg import mask_svg, net_svg

__all__ = [
    "LayerInfo",
    "NetSummary",
    "OpInfo",
    "connected_parameters",
    "frozen_units",
    "layer_infos",
    "mask_svg",
    "net_svg",
    "op_infos",
]
