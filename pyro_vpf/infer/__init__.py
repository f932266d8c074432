"""Inference: the SVI training loop, its checkpoints, latent search and SDE matching."""

from pyro_vpf.infer.fit import FitHistory, fit, load_checkpoint, save_checkpoint
from pyro_vpf.infer.metrics import elbo_per_point
from pyro_vpf.infer.refine import Refinement, refine
from pyro_vpf.infer.sde_matching import SDEMatchingELBO, posterior_drift

__all__ = [
    "FitHistory",
    "Refinement",
    "SDEMatchingELBO",
    "elbo_per_point",
    "fit",
    "load_checkpoint",
    "posterior_drift",
    "refine",
    "save_checkpoint",
]
