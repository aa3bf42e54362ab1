"""The mask editor widget: paint a layer's connectivity matrix in the notebook."""

from maskmagic.widgets.editor.widget import MaskEditor, from_magic, mask_image

__all__ = ["MaskEditor", "from_magic", "mask_image"]
