"""The mask editor widget: paint a layer's connectivity matrix in the notebook."""

from maskmagic.widgets.editor.widget import MaskEditor, editor_for, mask_image

__all__ = ["MaskEditor", "editor_for", "mask_image"]
