r"""Amortised guides for static latent-variable models (:class:`~pyro_vpf.models.FlowVAE`)."""

import math
import numbers

import pyro
from pyro import poutine
from pyro.distributions import Normal, TransformedDistribution
from torch import nn

from pyro_vpf.nn import MLP
from pyro_vpf.params import register
from pyro_vpf.sites import DATA, Z
from pyro_vpf.transforms import ConditionalFlow
from pyro_vpf.validation import check_integer, check_vectors, program_checks_values

__all__ = ["ConditionalFlowGuide", "GaussianEncoderGuide"]


class GaussianEncoderGuide(nn.Module):
    r"""Mean-field Gaussian posterior :math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}
    s(x)^2)` from an MLP encoder.

    The guide program opens the model's plate ``"data"`` (same ``batch_size``, so the model
    replays its subsample) and draws ``"z"`` scaled by ``kl_weight``, the signature of
    :class:`~pyro_vpf.models.FlowVAE`: ``guide(x, *, batch_size=None, kl_weight=1.0)``.

    Args:
        data_dim (int): :math:`D`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): encoder width.
        encoder_layers (int): hidden layers of the encoder.
        min_scale (float): floor of :math:`s(x)`.
    """

    name = "gaussian_encoder_guide"

    def __init__(self, data_dim, latent_dim=2, hidden_dim=128, encoder_layers=2,
                 min_scale=1e-4):
        super().__init__()
        data_dim = check_integer("data_dim", data_dim, 1)
        latent_dim = check_integer("latent_dim", latent_dim, 1)
        check_integer("hidden_dim", hidden_dim, 1)
        check_integer("encoder_layers", encoder_layers, 1)
        if isinstance(min_scale, bool) or not isinstance(min_scale, numbers.Real) or not (
                math.isfinite(min_scale) and min_scale >= 0):
            raise ValueError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
        self.data_dim, self.latent_dim, self.min_scale = data_dim, latent_dim, min_scale
        self.encoder = MLP(data_dim, hidden_dim, 2 * latent_dim, encoder_layers)

    def encode(self, x):
        r""":math:`(\mu(x), s(x))`, each ``(..., Dz)``."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + self.min_scale

    def _base(self, x):
        loc, scale = self.encode(x)
        return Normal(loc, scale).to_event(1), loc

    def posterior(self, x):
        r""":math:`q(z \mid x)` for ``x (N, D)``: batch ``(N,)``, event ``(Dz,)``."""
        x = check_vectors(x, self.data_dim, self.encoder[0].weight,
                          values=program_checks_values())
        return self._distribution(x)

    def forward(self, x, *, num_data=None, batch_size=None, kl_weight=1.0):
        """The guide program: ``"z"`` for every point of the subsample."""
        if x is None:
            raise ValueError("the guide is amortised over data: x is required")
        N = check_vectors(x, self.data_dim, self.encoder[0].weight,
                          values=program_checks_values()).shape[0]
        register(self, self.name)
        with pyro.plate(DATA, N, subsample_size=batch_size, dim=-1) as idx:
            with poutine.scale(scale=kl_weight):
                return pyro.sample(Z, self._distribution(x[idx]))

    def _distribution(self, x):
        return self._base(x)[0]


class ConditionalFlowGuide(GaussianEncoderGuide):
    r"""Flow posterior: :math:`u \sim \mathcal N(\mu(x), s(x)^2)`, :math:`z = h(u; \mu(x))`.

    A :class:`~pyro_vpf.transforms.ConditionalFlow` conditioned on the encoder's
    deterministic mean moves the Gaussian sample, so the posterior can take the non-Gaussian,
    decoder-dependent shape of the true one instead of the axis-aligned ellipse of the
    mean-field guide (which, to cover it, tends to switch latent dimensions off: posterior
    collapse). The density is exact,

    .. math::

        \log q(z \mid x) = \log \mathcal N\big(h^{-1}(z; \mu); \mu, s^2\big)
            - \log\left|\det \frac{\partial h}{\partial u}\right| ,

    and with its couplings near the identity at initialisation the guide starts as the
    mean-field one.

    Args:
        data_dim, latent_dim, hidden_dim, encoder_layers, min_scale: as
            :class:`GaussianEncoderGuide`.
        num_flow_layers (int): couplings of :math:`h`.
        flow_hidden_dim (int): conditioner width (default ``hidden_dim``).
        log_scale_bound (float): soft bound of each coupling's log-scale.
    """

    name = "conditional_flow_guide"

    def __init__(self, data_dim, latent_dim=2, hidden_dim=128, num_flow_layers=4,
                 flow_hidden_dim=None, encoder_layers=2, min_scale=1e-4, log_scale_bound=3.0):
        super().__init__(data_dim, latent_dim, hidden_dim, encoder_layers, min_scale)
        self.flow = ConditionalFlow(latent_dim, latent_dim, num_flow_layers,
                                    flow_hidden_dim or hidden_dim,
                                    log_scale_bound=log_scale_bound)
        self.flow.context_name = "the encoder mean"

    def _distribution(self, x):
        base, loc = self._base(x)
        return TransformedDistribution(base, self.flow.condition(loc))

