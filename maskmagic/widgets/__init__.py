"""Jupyter widgets: the mask editor and the gradient inspector (anywidget, no CDN)."""
