"""The gradient inspector widget: the gradient every connection receives."""

from maskmagic.widgets.inspector.widget import GradientInspector, from_magic

__all__ = ["GradientInspector", "from_magic"]
