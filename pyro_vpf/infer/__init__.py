"""Inference: the SVI training loop and its checkpoints."""

from pyro_vpf.infer.fit import FitHistory, fit, load_checkpoint, save_checkpoint
from pyro_vpf.infer.metrics import elbo_per_point

__all__ = ["FitHistory", "elbo_per_point", "fit", "load_checkpoint", "save_checkpoint"]
