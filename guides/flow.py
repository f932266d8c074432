r"""The flow guide: the affine Gaussian posterior pushed through a conditional flow."""

import pyro
from pyro.distributions import Normal, TransformedDistribution
from pyro_vpf.guides.affine import AffineGuide
from pyro_vpf.guides.base import SequenceGuide

from pyro_vpf.sites import Z0, Z
from pyro_vpf.transforms import ConditionalFlow
from pyro_vpf.validation import check_integer

__all__ = ["FlowGuide"]


class FlowGuide(SequenceGuide):
    r"""Guide :math:`z_k = h(u_k; m_k)`, :math:`u_k \sim \mathcal N(m_k, s_k^2)`, independent
    across :math:`k`.

    :math:`m_k = m(t_k)` and :math:`s_k = s(t_k)` are the
    :class:`~pyro_vpf.guides.AffineGuide`'s time-adaptive mean and scale, and :math:`h` is a
    :class:`~pyro_vpf.transforms.ConditionalFlow` (affine couplings) whose conditioners see
    the deterministic mean :math:`m_k`. Conditioning on the mean lets the flow bend and
    tighten each marginal in a way that depends on where the posterior sits (for a
    decoder-dependent geometry) while keeping an exact density,

    .. math::

        \log q(z_k \mid x) = \log \mathcal N\big(h^{-1}(z_k; m_k);\; m_k, s_k^2\big)
            + \log\left|\det \frac{\partial h^{-1}(z_k; m_k)}{\partial z_k}\right|.

    The flow starts near the identity, so an untrained flow guide is close to the affine
    guide. Because :math:`m, s` are functions of continuous time,
    :meth:`~pyro_vpf.guides.SequenceGuide.marginal` gives :math:`q(z(t) \mid x)` at any time.

    Same call signature and sites as the other guides.

    Args:
        obs_dim, latent_dim, hidden_dim, window, min_scale: as for
            :class:`~pyro_vpf.guides.AffineGuide`.
        num_flow_layers (int): coupling layers of :math:`h`.
        flow_hidden_dim (int): width of their conditioners (default ``hidden_dim``).
        log_scale_bound (float): soft bound of each coupling's log-scale.
    """

    name = "flow_guide"
    continuous_time = True  # marginal() takes any time

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, window=8, num_flow_layers=4,
                 flow_hidden_dim=None, log_scale_bound=3.0, min_scale=1e-4):
        super().__init__(obs_dim, latent_dim)
        self.affine = AffineGuide(obs_dim, latent_dim, hidden_dim, window, min_scale)
        check_integer("num_flow_layers", num_flow_layers, 0)
        self.flow = ConditionalFlow(latent_dim, latent_dim, num_flow_layers,
                                    flow_hidden_dim or hidden_dim,
                                    log_scale_bound=log_scale_bound)

    def _distribution(self, loc, scale):
        """Batch ``loc.shape[:-1]``, event ``(Dz,)``."""
        return TransformedDistribution(Normal(loc, scale).to_event(1),
                                       [self.flow.condition(loc)])

    def marginal_distribution(self, x, times, query_times, mask):
        r"""The posterior marginal :math:`q(z(t) \mid x)` at ``query_times`` (``(Q,)`` or
        ``(B, Q)``, anywhere), batch shape ``(B, Q)``, event shape ``(Dz,)``."""
        return self._distribution(*self.affine.loc_scale(x, times, mask, query_times))

    def sample_sites(self, x, times, mask):
        loc, scale = self.affine.loc_scale(x, times, mask, times)
        pyro.sample(Z0, self._distribution(loc[:, 0], scale[:, 0]))
        pyro.sample(Z, self._distribution(loc[:, 1:], scale[:, 1:]).to_event(1))
