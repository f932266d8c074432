"""Distributions of pyro_vpf: exact path densities of latent processes, SDE paths."""

from pyro_vpf.distributions.gauss_markov import (
    GaussMarkovPath,
    gauss_markov_evidence,
    gauss_markov_marginals,
    gauss_markov_posterior,
    linear_gaussian_potentials,
)
from pyro_vpf.distributions.gaussian_marginals import GaussianMarginals
from pyro_vpf.distributions.ou_path import OUPath, ou_transition, strictly_increasing
from pyro_vpf.distributions.posterior_sde import PosteriorSDE, posterior_drift
from pyro_vpf.distributions.readout_path import (
    GaussMarkovReadoutPath,
    ProcessPath,
    condition_on_readout,
)
from pyro_vpf.distributions.sde_path import SDE_METHODS, SDEPath, solve_sde

__all__ = [
    "SDE_METHODS", "GaussMarkovPath", "GaussMarkovReadoutPath", "GaussianMarginals", "OUPath",
    "PosteriorSDE", "ProcessPath", "SDEPath", "condition_on_readout", "gauss_markov_evidence",
    "gauss_markov_marginals", "gauss_markov_posterior", "linear_gaussian_potentials",
    "ou_transition", "posterior_drift", "solve_sde", "strictly_increasing",
]
