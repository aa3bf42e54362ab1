"""The gradient inspector widget: the gradient every connection receives."""

from maskmagic.widgets.inspector.widget import GradientInspector, inspector_for

__all__ = ["GradientInspector", "inspector_for"]
