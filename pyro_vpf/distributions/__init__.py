"""Distributions of pyro_vpf: exact path densities of latent processes."""

from pyro_vpf.distributions.gauss_markov import GaussMarkovPath
from pyro_vpf.distributions.ou_path import OUPath, ou_transition, strictly_increasing

__all__ = ["GaussMarkovPath", "OUPath", "ou_transition", "strictly_increasing"]
