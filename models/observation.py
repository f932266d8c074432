r"""The observation likelihood the sequence models of the collection share."""

import torch
from pyro.distributions import Normal, TransformedDistribution
from torch import nn

from pyro_vpf.transforms import ConditionalObservationFlow

__all__ = ["LinearGaussianObservation", "ObservationModel"]


class ObservationModel(nn.Module):
    r"""Base of the sequence models: :math:`p(x_k \mid z_k)` and decoding, one implementation.

    ``observation="flow"``: :math:`x_k = g(u_k; z_k)`, :math:`u_k \sim \mathcal N(0, I)`, with
    :math:`g` a :class:`~pyro_vpf.transforms.ConditionalObservationFlow` (attribute
    ``obs_flow``); ``observation="linear_gaussian"``: a
    :class:`LinearGaussianObservation` (attribute ``obs_linear``). Subclasses call
    :meth:`_init_observation` in their constructor and get :meth:`observation_distribution`
    and :meth:`decode`.
    """

    def _init_observation(self, obs_dim, latent_dim, observation, num_obs_flow_layers,
                          hidden_dim, conditioner_layers):
        if observation not in ("flow", "linear_gaussian"):
            raise ValueError(f"observation must be 'flow' or 'linear_gaussian', "
                             f"got {observation!r}")
        self.obs_dim, self.latent_dim, self.observation = obs_dim, latent_dim, observation
        self.obs_flow = self.obs_linear = None
        if observation == "flow":
            self.obs_flow = ConditionalObservationFlow(obs_dim, latent_dim, num_obs_flow_layers,
                                                       hidden_dim,
                                                       conditioner_layers=conditioner_layers)
        else:
            self.obs_linear = LinearGaussianObservation(obs_dim, latent_dim)

    def observation_distribution(self, z, mask=None):
        r""":math:`p(x_{0:K} \mid z_{0:K})`, event ``(K+1, Dx)``, for ``z (..., K+1, Dz)``.

        ``mask`` (``(..., K+1, Dx)`` bool, as :func:`~pyro_vpf.validation.check_sequences`
        returns it) drops unobserved entries from the log-density.
        """
        if self.obs_linear is not None:
            per_entry = self.obs_linear.distribution(z)  # batch (..., K+1, Dx)
            if mask is not None:
                per_entry = per_entry.mask(mask)
            return per_entry.to_event(2)
        base = Normal(z.new_zeros(()), z.new_ones(())).expand([self.obs_dim]).to_event(1)
        per_point = TransformedDistribution(base, self.obs_flow.condition(z))
        if mask is not None:
            per_point = per_point.mask(_point_mask(mask))
        return per_point.to_event(1)

    def decode(self, z, noise=None):
        r"""Observations :math:`x_k = g(u_k; z_k)` for latents ``z (..., Dz)``, differentiably.

        ``noise`` :math:`u` ``(..., Dx)`` defaults to zero: the observation flow's image of the
        base distribution's centre, a smooth summary of :math:`p(x_k \mid z_k)` to score
        paths with (the mean :math:`C z_k + d` for the linear-Gaussian likelihood).
        """
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.latent_dim,):
            raise ValueError(f"z must have shape (..., {self.latent_dim})")
        if noise is None:
            noise = z.new_zeros(z.shape[:-1] + (self.obs_dim,))
        elif noise.shape != z.shape[:-1] + (self.obs_dim,):
            raise ValueError(f"noise must have shape {tuple(z.shape[:-1]) + (self.obs_dim,)}, "
                             f"got {tuple(noise.shape)}")
        if self.obs_linear is not None:
            return self.obs_linear.distribution(z).loc + noise * self.obs_linear.noise_scale
        return self.obs_flow.condition(z)(noise)


class LinearGaussianObservation(nn.Module):
    r"""Linear-Gaussian likelihood :math:`x = C z + d + \mathcal N(0, \operatorname{diag}(r^2))`.

    :math:`C` ``(Dx, Dz)``, :math:`d` ``(Dx,)`` and :math:`r > 0` (softplus) are learned.
    """

    def __init__(self, obs_dim, latent_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(obs_dim, latent_dim) / latent_dim**0.5)
        self.bias = nn.Parameter(torch.zeros(obs_dim))
        self.noise_unconstrained = nn.Parameter(torch.full((obs_dim,), -1.0))

    @property
    def noise_scale(self):
        return nn.functional.softplus(self.noise_unconstrained)

    def distribution(self, z):
        """Independent Normals per entry, batch ``(..., K+1, Dx)``."""
        return Normal(nn.functional.linear(z, self.weight, self.bias), self.noise_scale)


def _point_mask(mask):
    """Reduce an entry mask ``(B, K+1, Dx)`` to observed time points ``(B, K+1)``."""
    observed = mask.all(-1)
    if bool((mask.any(-1) & ~observed).any()):
        raise ValueError(
            "mask marks some channels of a time point observed and others missing: the "
            "observation flow couples channels, so a subset of them has no tractable density. "
            "Mark whole time points missing (mask of shape (B, K+1))."
        )
    return observed
