r"""Earlier names of the likelihood layer, kept so that users' code keeps running.

Likelihoods now live in :mod:`pyro_vpf.models.likelihoods` and a model is a
:class:`~pyro_vpf.models.PathModel` of a prior and a likelihood.
"""

import warnings

from pyro_vpf.models.likelihoods import LinearGaussianLikelihood
from pyro_vpf.models.path_model import LikelihoodMixin, make_likelihood
from torch import nn

__all__ = ["LinearGaussianObservation", "ObservationModel"]

#: the earlier name of :class:`~pyro_vpf.models.likelihoods.LinearGaussianLikelihood`
LinearGaussianObservation = LinearGaussianLikelihood


class ObservationModel(LikelihoodMixin, nn.Module):
    """Deprecated base of the sequence models: build a
    :class:`~pyro_vpf.models.PathModel` from a prior and a likelihood instead."""

    def _init_observation(self, obs_dim, latent_dim, observation, num_obs_flow_layers,
                          hidden_dim, conditioner_layers):
        warnings.warn("ObservationModel is deprecated: compose a model as "
                      "PathModel(prior, likelihood) (pyro_vpf.models.likelihoods)",
                      DeprecationWarning, stacklevel=2)
        self.obs_dim, self.latent_dim = obs_dim, latent_dim
        self.likelihood = make_likelihood(observation, obs_dim, latent_dim,
                                          num_flow_layers=num_obs_flow_layers,
                                          hidden_dim=hidden_dim,
                                          conditioner_layers=conditioner_layers)
