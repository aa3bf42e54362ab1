"""maskmagic: hand-wired TensorFlow/Keras networks from a Jupyter cell magic."""
