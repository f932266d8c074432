r"""The VPF latent path prior, sampled at any set of times in one parallel pass."""

import pyro
import torch
from pyro import poutine
from pyro.distributions import Normal, TransformedDistribution
from torch import nn

from pyro_vpf.distributions import OUPath, ProcessPath
from pyro_vpf.nn.constrained import ConstrainedParameters
from pyro_vpf.ops import inverse_softplus
from pyro_vpf.processes import OU
from pyro_vpf.processes.state_space import per_coordinate
from pyro_vpf.sites import Z0, Z
from pyro_vpf.transforms import TimeConditionedFlow
from pyro_vpf.validation import check_integer, check_positive, check_times

__all__ = ["LatentPathPrior", "PathPrior"]


_inverse_softplus = inverse_softplus  # the earlier private name


class PathPrior(ConstrainedParameters):
    r"""What every latent path prior of the collection shares.

    The start :math:`z_0 \sim \mathcal N(m_0, \operatorname{diag}(s_0^2))` is learned here:
    ``init_loc`` :math:`m_0`, whose dtype and device are the prior's, and ``init_scale``
    :math:`s_0 = \operatorname{softplus}(u) > 0`, starting at 1, with :math:`u` the parameter
    ``init_scale_unconstrained`` (:class:`~pyro_vpf.nn.ConstrainedParameters`). A subclass
    defines :meth:`path_distribution` :math:`p(z_{1:K} \mid z_0)` at given times, and this
    base turns both into the sample sites of a Pyro program and into plain samples.

    Args:
        latent_dim (int): :math:`D_z`.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = check_integer("latent_dim", latent_dim, 1)
        self.init_loc = nn.Parameter(torch.zeros(latent_dim))
        self.register_constrained("init_scale", torch.ones(latent_dim))

    def initial_distribution(self):
        r""":math:`p(z_0)`, event shape ``(Dz,)``."""
        return Normal(self.init_loc, self.init_scale).to_event(1)

    def path_distribution(self, z0, times):
        raise NotImplementedError

    def forecast(self, z, times, future_times):
        r"""Draws of :math:`z` at ``future_times`` given the paths ``z`` at ``times``.

        For a Markov prior only the last state matters:
        :math:`z_{future} \sim p(z_{future} \mid z(t_K))`; priors whose latent path is the
        readout of a larger state override this to use the whole path.

        Args:
            z (torch.Tensor): ``(..., K+1, Dz)`` paths (e.g. posterior draws).
            times (torch.Tensor): ``(K+1,)`` or ``(B, K+1)``.
            future_times (torch.Tensor): ``(F,)``, after ``times[..., -1]``.

        Returns:
            torch.Tensor: ``(..., F, Dz)``.
        """
        last = times[..., -1:]
        batch = torch.broadcast_shapes(last.shape[:-1], future_times.shape[:-1])
        grid = torch.cat([last.expand(batch + (1,)),
                          future_times.expand(batch + future_times.shape[-1:])], -1)
        path = self.path_distribution(z[..., -1, :], grid)
        return path.rsample() if path.has_rsample else path.sample()

    def pyro_sample(self, times, kl_weight=1.0):
        r"""Draw the path inside a Pyro program: sites ``"z0"`` then ``"z"`` given it.

        The building block of every sequence model of the collection (and of users' own): call
        it inside the plate over sequences with that subsample's ``times``; the sites carry the
        names and shapes the guides produce (:mod:`pyro_vpf.sites`) and are scaled by
        ``kl_weight`` (:math:`\beta`, ``poutine.scale``).

        Returns:
            torch.Tensor: the whole path :math:`z_{0:K}`, ``(..., K+1, Dz)``.
        """
        with poutine.scale(scale=kl_weight):
            z0 = pyro.sample(Z0, self.initial_distribution())
            z = pyro.sample(Z, self.path_distribution(z0, times))
        return torch.cat([z0.unsqueeze(-2), z], dim=-2)

    def sample(self, times, num_samples=1, **path_options):
        r"""Draw latent paths at ``times``: :math:`z_0 \sim p(z_0)`, then the path given it.

        Reparameterised where the path distribution is (the VPF's: one pass, no loop over
        time, no solver); wrap in ``torch.no_grad()`` when gradients are not needed.

        Args:
            times (torch.Tensor): strictly increasing, ``(K+1,)`` or per path ``(B, K+1)``,
                any length and spacing.
            num_samples (int): number of paths (per row of ``times``).
            path_options: passed to :meth:`path_distribution` (e.g. a latent SDE's solver
                options).

        Returns:
            torch.Tensor: ``z`` of shape ``(num_samples, K+1, Dz)`` or
            ``(num_samples, B, K+1, Dz)``.
        """
        check_times(times, self.init_loc)
        shape = (check_integer("num_samples", num_samples, 1),) + times.shape[:-1]
        z0 = self.initial_distribution().rsample(shape)
        if times.shape[-1] == 1:
            return z0.unsqueeze(-2)
        path = self.path_distribution(z0, times, **path_options)
        z = path.rsample() if path.has_rsample else path.sample()
        return torch.cat([z0.unsqueeze(-2), z], dim=-2)


class LatentPathPrior(PathPrior):
    r"""Prior over a latent path :math:`z_{0:K}` at arbitrary times :math:`t_{0:K}`.

    .. math::

        z_0 &\sim \mathcal N(m_0, \operatorname{diag}(s_0^2)), \qquad
        y_0 = f_{t_0}^{-1}(z_0), \\
        y_{1:K} \mid y_0 &\sim \text{base process at } t_{1:K}
            \quad(\text{exact transitions}), \qquad
        z_k = f_{t_k}(y_k),

    with :math:`f_t` a :class:`~pyro_vpf.transforms.TimeConditionedFlow`, so that

    .. math::

        \log p(z_{0:K}) = \log \mathcal N(z_0; m_0, s_0^2)
            + \log p_{\text{base}}(y_{1:K} \mid y_0)
            - \sum_{k=1}^K \log\left|\det \partial f_{t_k}/\partial y\,(y_k)\right|.

    Each coordinate of :math:`y` is :math:`\mu_d + H s_d` for its own state :math:`s_d` of the
    base process (:mod:`pyro_vpf.processes`); the path density is
    :class:`~pyro_vpf.distributions.OUPath` for the default OU base (exactly as before base
    processes existed) and :class:`~pyro_vpf.distributions.ProcessPath` otherwise, whose event
    is the readout: the latent sites ``"z0"`` and ``"z"`` keep their shapes
    (:mod:`pyro_vpf.sites`) whatever the base.

    All of :math:`m_0, s_0, \mu`, the base's parameters and the flow are learned. The default
    base is an OU per coordinate with :math:`\kappa = 1/T`, :math:`\sigma = \sqrt{2\kappa}`
    (unit stationary variance) for the time unit :math:`T` = ``time_scale``.

    Args:
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): conditioner width of the flow.
        num_flow_layers (int): coupling layers of :math:`f_t` (0: identity).
        time_embed_dim (int): size of the time embedding.
        time_scale (float): the data's time unit (e.g. its horizon :math:`t_K - t_0`).
        conditioner_layers (int): hidden layers of each coupling's conditioner.
        time_periods (tuple of float): known periods of the data (in its time units), given to
            the flow as exact Fourier features.
        base (LTIProcess or list): the base process: one for all coordinates (its parameters
            are repeated per coordinate and learned separately, unless they already have
            shape ``(Dz,)``), or a list of ``Dz`` processes (one per coordinate). Default:
            :class:`~pyro_vpf.processes.OU`.

    Raises:
        ValueError: if ``base`` is not a process, does not match ``latent_dim``, or puts no
            noise on its readout (an exactly periodic season alone).
    """

    def __init__(
        self, latent_dim, hidden_dim=128, num_flow_layers=6, time_embed_dim=16, time_scale=1.0,
        conditioner_layers=1, time_periods=(), base=None,
    ):
        super().__init__(latent_dim)
        check_integer("hidden_dim", hidden_dim, 1)
        check_integer("num_flow_layers", num_flow_layers, 0)
        time_scale = check_positive("time_scale", time_scale)
        if base is None:
            rate = 1.0 / time_scale
            base = OU(rate=rate, scale=(2 * rate) ** 0.5)
        self.base = per_coordinate(base, latent_dim)
        self.base_mean = nn.Parameter(torch.zeros(latent_dim))
        self.flow = TimeConditionedFlow(
            latent_dim, num_flow_layers, hidden_dim, time_embed_dim, time_scale,
            conditioner_layers=conditioner_layers, time_periods=time_periods,
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before base processes: the OU's parameters lived on the prior
        renames = {"ou_mean": "base_mean", "ou_rate_unconstrained": "base.rate_unconstrained",
                   "ou_scale_unconstrained": "base.scale_unconstrained"}
        for old, new in renames.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def ou_mean(self):
        r"""The long-run mean :math:`\mu` (the name it had when the base was always an OU)."""
        return self.base_mean

    @property
    def ou_rate(self):
        return self._ou().rate

    @property
    def ou_scale(self):
        return self._ou().scale

    @property
    def ou_rate_unconstrained(self):
        """The OU base's raw rate parameter (the name it had on the prior)."""
        return self._ou().rate_unconstrained

    @property
    def ou_scale_unconstrained(self):
        """The OU base's raw scale parameter (the name it had on the prior)."""
        return self._ou().scale_unconstrained

    def _ou(self):
        if not isinstance(self.base, OU):
            raise AttributeError(f"the base process is {type(self.base).__name__}, not OU")
        return self.base

    def base_path(self, y0, times):
        r"""The base path :math:`p(y_{1:K} \mid y_0)` at ``times``, event ``(K, Dz)``."""
        if isinstance(self.base, OU):
            return OUPath(y0, times, self.base_mean, self.base.rate, self.base.scale)
        return ProcessPath(self.base, y0, times, self.base_mean)

    def path_distribution(self, z0, times):
        r""":math:`p(z_{1:K} \mid z_0)` at ``times`` ``(..., K+1)``: a ``TransformedDistribution``
        of the base path (:meth:`base_path`), event shape ``(K, Dz)``.

        Args:
            z0 (torch.Tensor): ``(..., Dz)``, the state at ``times[..., 0]``.
            times (torch.Tensor): ``(K+1,)`` or ``(..., K+1)``, ``K >= 1``.
        """
        y0 = self.flow.condition(times[..., :1]).inv(z0.unsqueeze(-2)).squeeze(-2)
        return TransformedDistribution(self.base_path(y0, times),
                                       self.flow.condition(times[..., 1:]))

    def forecast(self, z, times, future_times):
        r"""Draws of :math:`z` at ``future_times`` given whole paths ``z`` ``(..., K+1, Dz)`` at
        ``times``: :math:`y = f_t^{-1}(z)`, the base state at :math:`t_K` given
        :math:`y_{0:K}` (the slope and phase the path implies), its exact transitions onwards,
        then :math:`f_t` (:meth:`ProcessPath.forecast
        <pyro_vpf.distributions.ProcessPath.forecast>`). For the OU base only :math:`z_K`
        matters, as in :meth:`PathPrior.forecast`.

        Returns:
            torch.Tensor: ``(..., F, Dz)``.
        """
        if isinstance(self.base, OU):
            return super().forecast(z, times, future_times)
        y = self.flow.condition(times).inv(z)
        path = ProcessPath(self.base, y[..., 0, :], times, self.base_mean)
        y_future = path.forecast(y[..., 1:, :], future_times)
        return self.flow.condition(future_times)(y_future)

    def log_prob(self, z, times):
        r""":math:`\log p(z_{0:K})` for ``z (..., K+1, Dz)`` at ``times (..., K+1)``."""
        check_times(times, self.init_loc)
        if z.shape[-2:] != (times.shape[-1], self.latent_dim):
            raise ValueError(
                f"z must have shape (..., {times.shape[-1]}, {self.latent_dim}) to match times, "
                f"got {tuple(z.shape)}"
            )
        log_p = self.initial_distribution().log_prob(z[..., 0, :])
        if times.shape[-1] > 1:
            log_p = log_p + self.path_distribution(z[..., 0, :], times).log_prob(z[..., 1:, :])
        return log_p
