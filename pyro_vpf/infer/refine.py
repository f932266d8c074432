r"""Latent search lives in :mod:`pyro_vpf.refine` (a tool on densities, not on training);
this module keeps the ``pyro_vpf.infer.refine`` import path."""

from pyro_vpf.refine import Refinement, refine

__all__ = ["Refinement", "refine"]
