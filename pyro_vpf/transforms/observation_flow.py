r"""The conditional observation flow :math:`x = g(u; z)` of the VPF likelihood."""

from pyro_vpf.transforms.conditional_flow import ConditionalFlow

__all__ = ["ConditionalObservationFlow", "conditional_observation_flow"]


class ConditionalObservationFlow(ConditionalFlow):
    r"""Invertible map :math:`x = g(u; z)` from noise to observation, conditioned on a latent.

    A :class:`~pyro_vpf.transforms.ConditionalFlow` over :math:`x` with context :math:`z`.
    With :math:`u \sim \mathcal N(0, I)`,

    .. math::

        \log p(x \mid z) = \log \mathcal N\big(g^{-1}(x; z); 0, I\big)
            + \log\left|\det \frac{\partial g^{-1}}{\partial x}\right|,

    i.e. ``ConditionalTransformedDistribution(Normal(0, 1).expand([obs_dim]).to_event(1),
    [flow]).condition(z)``. With ``obs_dim == 1`` each layer is an affine map whose shift
    and scale depend on :math:`z` (one layer is a heteroscedastic Gaussian).

    Args:
        obs_dim (int): observation size :math:`D_x`.
        latent_dim (int): latent size :math:`D_z`, the context.
        num_layers, hidden_dim, event_dim, log_scale_bound, conditioner_layers: as for
            :class:`~pyro_vpf.transforms.ConditionalFlow`.
    """

    context_name = "z"

    def __init__(
        self, obs_dim, latent_dim, num_layers=6, hidden_dim=128, event_dim=1, log_scale_bound=5.0,
        conditioner_layers=1,
    ):
        if obs_dim < 1 or latent_dim < 1 or num_layers < 1:
            raise ValueError(
                "need obs_dim, latent_dim and num_layers >= 1, "
                f"got {obs_dim}, {latent_dim}, {num_layers}"
            )
        super().__init__(obs_dim, latent_dim, num_layers, hidden_dim, event_dim,
                         log_scale_bound, conditioner_layers)
        self.obs_dim, self.latent_dim = obs_dim, latent_dim


def conditional_observation_flow(obs_dim, latent_dim, num_layers=6, hidden_dim=128, **kwargs):
    """A :class:`ConditionalObservationFlow` with default settings."""
    return ConditionalObservationFlow(obs_dim, latent_dim, num_layers, hidden_dim, **kwargs)
