"""Distributions of pyro_vpf: exact path densities of latent processes."""

from pyro_vpf.distributions.gauss_markov import GaussMarkovPath, gauss_markov_marginals
from pyro_vpf.distributions.ou_path import OUPath, ou_transition, strictly_increasing

__all__ = ["GaussMarkovPath", "OUPath", "gauss_markov_marginals", "ou_transition",
           "strictly_increasing"]
