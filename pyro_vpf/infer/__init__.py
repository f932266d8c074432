"""Inference: the SVI training loop, its checkpoints and SDE matching (latent search,
:func:`refine`, lives in :mod:`pyro_vpf.refine` and is re-exported here)."""

from pyro_vpf.infer.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from pyro_vpf.infer.core import FitHistory
from pyro_vpf.infer.exact import ExactEvidence, fit_exact
from pyro_vpf.infer.fit import fit
from pyro_vpf.infer.metrics import elbo_per_point
from pyro_vpf.infer.sde_matching import SDEMatchingELBO, posterior_drift
from pyro_vpf.refine import Refinement, refine

__all__ = [
    "ExactEvidence",
    "FitHistory",
    "Refinement",
    "SDEMatchingELBO",
    "elbo_per_point",
    "fit",
    "fit_exact",
    "load_checkpoint",
    "posterior_drift",
    "read_checkpoint",
    "refine",
    "save_checkpoint",
]
