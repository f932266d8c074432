r"""The conditional observation flow :math:`x = g(u; z)` of the VPF likelihood."""

import torch
from pyro.distributions.conditional import ConditionalTransformModule

from pyro_vpf.transforms.coupling import compose_couplings, coupling_stack

__all__ = ["ConditionalObservationFlow", "conditional_observation_flow"]


class ConditionalObservationFlow(ConditionalTransformModule):
    r"""Invertible map :math:`x = g(u; z)` from noise to observation, conditioned on a latent.

    A stack of :class:`~pyro_vpf.transforms.ContextAffineCoupling` layers over :math:`x`
    whose conditioners see :math:`z`, alternate layers transforming alternate halves. With
    :math:`u \sim \mathcal N(0, I)`,

    .. math::

        \log p(x \mid z) = \log \mathcal N\big(g^{-1}(x; z); 0, I\big)
            + \log\left|\det \frac{\partial g^{-1}}{\partial x}\right|,

    i.e. ``ConditionalTransformedDistribution(Normal(0, 1).expand([obs_dim]).to_event(1),
    [flow]).condition(z)``. The conditioned transform broadcasts ``z``'s batch shape into
    the distribution's batch shape. With ``obs_dim == 1`` each layer is an affine map whose
    shift and scale depend on :math:`z` (one layer is a heteroscedastic Gaussian).

    Args:
        obs_dim (int): observation size :math:`D_x`.
        latent_dim (int): latent size :math:`D_z`, the context.
        num_layers (int): number of coupling layers (>= 1).
        hidden_dim (int): conditioner width.
        event_dim (int): 1 for one observation ``(..., Dx)``; 2 for a whole sequence
            ``(..., K+1, Dx)`` conditioned on ``z (..., K+1, Dz)``.
        log_scale_bound (float): soft bound of each layer's log-scale.
        conditioner_layers (int): hidden layers of each conditioner MLP.
    """

    def __init__(
        self, obs_dim, latent_dim, num_layers=6, hidden_dim=128, event_dim=1, log_scale_bound=5.0,
        conditioner_layers=1,
    ):
        super().__init__()
        if obs_dim < 1 or latent_dim < 1 or num_layers < 1:
            raise ValueError(
                "need obs_dim, latent_dim and num_layers >= 1, "
                f"got {obs_dim}, {latent_dim}, {num_layers}"
            )
        self.obs_dim, self.latent_dim, self.event_dim = obs_dim, latent_dim, event_dim
        self.couplings = coupling_stack(
            obs_dim, latent_dim, num_layers, hidden_dim, event_dim, log_scale_bound,
            conditioner_layers,
        )

    def condition(self, z):
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.latent_dim,):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (..., {self.latent_dim}), got {shape}")
        return compose_couplings(self.couplings, z)


def conditional_observation_flow(obs_dim, latent_dim, num_layers=6, hidden_dim=128, **kwargs):
    """A :class:`ConditionalObservationFlow` with default settings."""
    return ConditionalObservationFlow(obs_dim, latent_dim, num_layers, hidden_dim, **kwargs)
