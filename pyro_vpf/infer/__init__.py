"""Inference: the SVI training loop, its checkpoints, and latent search."""

from pyro_vpf.infer.fit import FitHistory, fit, load_checkpoint, save_checkpoint
from pyro_vpf.infer.metrics import elbo_per_point
from pyro_vpf.infer.refine import Refinement, refine

__all__ = [
    "FitHistory",
    "Refinement",
    "elbo_per_point",
    "fit",
    "load_checkpoint",
    "refine",
    "save_checkpoint",
]
