"""Training a chosen part of a model: TrainOp, selectors, reachability, losses and optimizers."""

from maskmagic.training.objectives import make_loss, make_optimizer
from maskmagic.training.ops import TrainOp

__all__ = ["TrainOp", "make_loss", "make_optimizer"]
