r"""A sequence model as the composition of a latent path prior and a likelihood."""

import pyro
from pyro_vpf.models.likelihoods import FlowLikelihood, Likelihood, LinearGaussianLikelihood
from torch import nn

from pyro_vpf.params import register
from pyro_vpf.plates import sequence_plate
from pyro_vpf.prior import PathPrior
from pyro_vpf.sites import X
from pyro_vpf.validation import (
    check_sequences,
    check_support,
    check_times,
    program_checks_values,
)

__all__ = ["LikelihoodMixin", "PathModel", "make_likelihood"]

#: likelihoods by name (``VPF(observation=...)``, ``LatentSDE(observation=...)``)
LIKELIHOODS = ("flow", "linear_gaussian")


def make_likelihood(observation, obs_dim, latent_dim, *, num_flow_layers=6, hidden_dim=128,
                    conditioner_layers=1):
    """The likelihood called ``observation``: ``"flow"`` (a
    :class:`~pyro_vpf.models.likelihoods.FlowLikelihood`) or ``"linear_gaussian"`` (a
    :class:`~pyro_vpf.models.likelihoods.LinearGaussianLikelihood`)."""
    if observation == "flow":
        return FlowLikelihood(obs_dim, latent_dim, num_flow_layers, hidden_dim,
                              conditioner_layers)
    if observation == "linear_gaussian":
        return LinearGaussianLikelihood(obs_dim, latent_dim)
    raise ValueError(f"observation must be one of {list(LIKELIHOODS)}, got {observation!r}")


class LikelihoodMixin:
    r"""What a model with a ``likelihood`` attribute exposes of it: the observation law, the
    decoder, and the attribute names of the earlier layout (``obs_flow``, ``obs_linear``,
    ``observation``; checkpoints that stored the likelihood under them load)."""

    def observation_distribution(self, z, mask=None):
        r""":math:`p(x_{0:K} \mid z_{0:K})`, event ``(K+1, Dx)`` (the likelihood's
        :meth:`~pyro_vpf.models.likelihoods.Likelihood.distribution`)."""
        return self.likelihood.distribution(z, mask)

    def decode(self, z, noise=None):
        r"""A smooth summary of :math:`p(x_k \mid z_k)` for latents ``z (..., Dz)``
        (the likelihood's :meth:`~pyro_vpf.models.likelihoods.Likelihood.decode`)."""
        return self.likelihood.decode(z, noise)

    @property
    def observation(self):
        """``"flow"``, ``"linear_gaussian"``, or the likelihood's class name."""
        if isinstance(self.likelihood, FlowLikelihood):
            return "flow"
        if type(self.likelihood) is LinearGaussianLikelihood:
            return "linear_gaussian"
        return type(self.likelihood).__name__

    @property
    def obs_flow(self):
        """The observation flow of a
        :class:`~pyro_vpf.models.likelihoods.FlowLikelihood` (else ``None``)."""
        return self.likelihood.flow if isinstance(self.likelihood, FlowLikelihood) else None

    @property
    def obs_linear(self):
        """The :class:`~pyro_vpf.models.likelihoods.LinearGaussianLikelihood` (else ``None``)."""
        return self.likelihood if type(self.likelihood) is LinearGaussianLikelihood else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of the earlier layout kept the likelihood in obs_flow / obs_linear
        for old, new in (("obs_flow.", "likelihood.flow."), ("obs_linear.", "likelihood.")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PathModel(LikelihoodMixin, nn.Module):
    r"""A sequence model :math:`p(z_{0:K})\,\prod_k p(x_k \mid z_k)`: a prior over latent
    paths and an observation likelihood, as one Pyro program.

    .. math::

        z_0 \sim p(z_0), \qquad z_{1:K} \mid z_0 \sim p(z_{1:K} \mid z_0)
        \ \text{(the prior, at the sequence's times)}, \qquad
        x_{0:K} \mid z_{0:K} \sim \prod_k p(x_k \mid z_k)\ \text{(the likelihood)}.

    The program (:meth:`forward`) is the same for every model of the collection: it checks the
    sequences, registers the parameters (``pyro.module(name, self)``), opens the plate
    ``"sequences"`` (subsampled with ``batch_size``, which rescales the likelihood), lets the
    prior write the sites ``"z0"`` (event ``(Dz,)``) and ``"z"`` (event ``(K, Dz)``), and
    observes ``"x"`` (event ``(K+1, Dx)``; masked entries contribute nothing and are never
    read). So every guide, :func:`~pyro_vpf.infer.fit`, the estimators and the predictive
    functions apply to any pair.

    Args:
        prior (PathPrior): e.g. :class:`~pyro_vpf.prior.LatentPathPrior` (the VPF's, with a
            base process of :mod:`pyro_vpf.processes`) or
            :class:`~pyro_vpf.models.LatentSDEPrior`.
        likelihood (Likelihood): one of :mod:`pyro_vpf.models.likelihoods` or a subclass of
            :class:`~pyro_vpf.models.likelihoods.Likelihood`.
        name (str): the name of the parameters in Pyro's param store.

    Example::

        model = PathModel(LatentPathPrior(2, 32, num_flow_layers=2, base=Matern(1.5)),
                          PoissonLikelihood(obs_dim=3, latent_dim=2))
    """

    def __init__(self, prior, likelihood, *, name="path_model"):
        super().__init__()
        if not isinstance(prior, PathPrior):
            raise ValueError(f"prior must be a PathPrior, got {type(prior).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise ValueError(f"likelihood must be a Likelihood, got {type(likelihood).__name__}")
        if likelihood.latent_dim != prior.latent_dim:
            raise ValueError(f"likelihood.latent_dim ({likelihood.latent_dim}) must equal the "
                             f"prior's latent_dim ({prior.latent_dim})")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.prior, self.likelihood, self.name = prior, likelihood, name
        self.obs_dim, self.latent_dim = likelihood.obs_dim, prior.latent_dim

    # -- the program -----------------------------------------------------------------------
    def forward(self, x, times, mask=None, *, batch_size=None, num_sequences=None,
                kl_weight=1.0):
        """The model program (see the class docstring). Returns ``z_{0:K}``.

        Args:
            x: ``(B, K+1, Dx)`` or ``None``.
            times: ``(K+1,)`` or ``(B, K+1)``, strictly increasing.
            mask: ``None``, ``(B, K+1)`` or ``(B, K+1, Dx)`` bool (``True`` = observed).
            batch_size: subsample this many sequences (the plate rescales the likelihood).
            num_sequences: ``B`` when sampling (``x=None``) with shared times.
            kl_weight: :math:`\\beta` scaling the latent sites (KL annealing).
        """
        values = program_checks_values()
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim,
                                            like=self.prior.init_loc,
                                            num_sequences=num_sequences, values=values)
        if values:
            check_support(self, x, mask)
        register(self, self.name)
        with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
            z = self.prior.pyro_sample(tb, kl_weight)
            pyro.sample(X, self.observation_distribution(z, mb), obs=xb)
        return z

    def sample_prior(self, times, num_samples=1, **path_options):
        r"""Latent paths and observations at increasing ``times`` ``(K+1,)``.

        The paths are reparameterised where the prior's are (wrap in ``torch.no_grad()``
        when gradients are not needed); the observations are draws.

        ``path_options`` go to the prior's path distribution (e.g. a latent SDE's solver
        options ``method``, ``dt``, ``adaptive``, ``rtol``, ``atol``).

        Returns:
            tuple: ``(z, x)`` of shapes ``(num_samples, K+1, Dz)`` and
            ``(num_samples, K+1, Dx)``.
        """
        check_times(times, self.prior.init_loc)
        if times.dim() != 1:
            raise ValueError(f"times must be 1-D (K+1,), got {tuple(times.shape)}")
        z = self.prior.sample(times, num_samples, **path_options)
        return z, self.observation_distribution(z).sample()
