r"""A latent neural SDE, the solver-based rival of the VPF, as a Pyro model program."""

import math

import torch
from pyro.distributions import constraints
from pyro_vpf.models.path_model import PathModel, make_likelihood
from torch import nn
from torch.distributions import transform_to

from pyro_vpf.distributions import (
    SDE_METHODS,
    PosteriorSDE,
    SDEPath,
)
from pyro_vpf.nn import MLP
from pyro_vpf.prior import PathPrior
from pyro_vpf.transforms import FourierTimeEmbedding
from pyro_vpf.validation import check_integer, check_positive

__all__ = ["LatentSDE", "LatentSDEPrior", "NeuralSDE", "PosteriorSDE"]

#: :math:`\operatorname{softplus}` and its inverse, the map of the diffusion's pre-activation
_SOFTPLUS = transform_to(constraints.softplus_positive)


class NeuralSDE(nn.Module):
    r"""Itô dynamics :math:`dz = f_\theta(z, t)\,dt + g_\theta(z, t) \odot dW` (diagonal noise).

    The drift is an MLP of :math:`[z, \phi(t)]` (:math:`\phi` a
    :class:`~pyro_vpf.transforms.FourierTimeEmbedding`; none with ``time_embed_dim=0`` and
    no periods: autonomous dynamics). The diffusion is positive,
    :math:`g = \operatorname{softplus}(a + b) + g_{\min}`, with a learned bias :math:`b`
    (``diffusion_bias``) and :math:`a` either a function of time only, :math:`a_i(t)`
    (``state_dependent_diffusion=False``, additive noise), or of the state, one small network
    per coordinate, :math:`a_i(z_i, t)`: each :math:`g_i` sees its own
    :math:`z_i` only, so :math:`\partial_{z_i} g_i^2` (which the posterior drift of SDE
    matching needs) is one autograd call, and the noise is commutative (Milstein and SRK
    apply).

    Follows ``torchsde``'s protocol (``noise_type``, ``sde_type``, ``f(t, z)``,
    ``g(t, z)``) and has the batched forms ``drift(z, t)`` / ``diffusion(z, t)`` for
    per-sample times.

    Args:
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): drift width.
        time_embed_dim (int): learned time features (even; 0 allowed).
        time_scale (float): the data's time unit; the diffusion starts at
            :math:`\sqrt{2/T}` (unit stationary variance of an OU process of rate :math:`1/T`).
        drift_layers (int): hidden layers of the drift.
        state_dependent_diffusion (bool): :math:`g_i(z_i, t)` instead of :math:`g_i(t)`.
        diffusion_hidden_dim (int): width of each coordinate's diffusion network.
        min_diffusion (float): :math:`g_{\min} > 0`.
        time_periods (tuple of float): known periods as exact Fourier features.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, latent_dim, hidden_dim=128, time_embed_dim=16, time_scale=1.0,
                 drift_layers=2, state_dependent_diffusion=False, diffusion_hidden_dim=16,
                 min_diffusion=1e-3, time_periods=()):
        super().__init__()
        check_integer("latent_dim", latent_dim, 1)
        check_integer("hidden_dim", hidden_dim, 1)
        time_scale = check_positive("time_scale", time_scale)
        if not min_diffusion > 0:
            raise ValueError(f"min_diffusion must be positive, got {min_diffusion}")
        self.latent_dim, self.min_diffusion = latent_dim, float(min_diffusion)
        self.diffusion_depends_on_state = bool(state_dependent_diffusion)
        self.time_embedding = None
        if time_embed_dim or time_periods:
            self.time_embedding = FourierTimeEmbedding(time_embed_dim, time_scale,
                                                       periods=time_periods)
        E = 0 if self.time_embedding is None else self.time_embedding.output_dim
        self.drift_net = MLP(latent_dim + E, hidden_dim, latent_dim, drift_layers)
        nn.init.zeros_(self.drift_net[-1].weight)  # start as a random walk
        nn.init.zeros_(self.drift_net[-1].bias)
        start = _SOFTPLUS.inv(torch.full((latent_dim,), math.sqrt(2.0 / time_scale)))
        H = diffusion_hidden_dim if state_dependent_diffusion else 0
        in_dim = E + (1 if state_dependent_diffusion else 0)
        if state_dependent_diffusion:  # per-coordinate networks, batched as einsums
            self.diffusion_in = nn.Parameter(torch.randn(latent_dim, in_dim, H) / in_dim**0.5)
            self.diffusion_in_bias = nn.Parameter(torch.zeros(latent_dim, H))
            self.diffusion_out = nn.Parameter(torch.zeros(latent_dim, H))
        elif E:
            self.diffusion_time = nn.Parameter(torch.zeros(latent_dim, E))
        self.diffusion_bias = nn.Parameter(start)

    def _time_features(self, t, batch_shape):
        if self.time_embedding is None:
            return None
        return self.time_embedding(t.expand(batch_shape))

    def drift(self, z, t):
        r""":math:`f_\theta(z, t)`, ``z (..., Dz)``, ``t`` broadcastable to ``z.shape[:-1]``."""
        phi = self._time_features(t, z.shape[:-1])
        return self.drift_net(z if phi is None else torch.cat([z, phi], dim=-1))

    def diffusion(self, z, t):
        r""":math:`g_\theta(z, t) > 0`, ``(..., Dz)``, the diagonal of the noise matrix."""
        phi = self._time_features(t, z.shape[:-1])
        if self.diffusion_depends_on_state:
            inputs = z.unsqueeze(-1)  # (..., Dz, 1): each coordinate its own input
            if phi is not None:
                inputs = torch.cat([inputs, phi.unsqueeze(-2).expand(z.shape + phi.shape[-1:])],
                                   -1)
            hidden = torch.einsum("...di,dih->...dh", inputs, self.diffusion_in)
            hidden = nn.functional.silu(hidden + self.diffusion_in_bias)
            raw = (hidden * self.diffusion_out).sum(-1)
        elif phi is None:
            raw = torch.zeros_like(z)
        else:
            raw = (phi @ self.diffusion_time.T).expand(z.shape)
        # the floor is added after the softplus: no constraint's transform is this map
        # (transform_to(greater_than(g_min)) is an exp and a shift)
        return _SOFTPLUS(raw + self.diffusion_bias) + self.min_diffusion

    def f(self, t, z):
        return self.drift(z, t)

    def g(self, t, z):
        return self.diffusion(z, t)


class LatentSDEPrior(PathPrior):
    r"""Prior over latent paths: :math:`z_0 \sim \mathcal N(m_0, s_0^2)`, then an SDE.

    :math:`z_{1:K} \mid z_0` is an :class:`~pyro_vpf.distributions.SDEPath` of ``sde`` at the
    path's times, sampled by a ``torchsde`` solver (no closed-form density).

    Args:
        latent_dim (int): :math:`D_z`.
        sde: the dynamics (a :class:`NeuralSDE`, or any module with its interface).
        method, dt, adaptive, rtol, atol: solver options
            (:func:`~pyro_vpf.distributions.solve_sde`).
    """

    def __init__(self, latent_dim, sde, *, method="euler", dt=None, adaptive=False, rtol=1e-3,
                 atol=1e-3):
        super().__init__(latent_dim)
        if method not in SDE_METHODS:
            raise ValueError(f"method must be one of {sorted(SDE_METHODS)}, got {method!r}")
        if dt is not None:
            dt = check_positive("dt", dt)
        sde_dim = getattr(sde, "latent_dim", latent_dim)
        if sde_dim != latent_dim:
            raise ValueError(f"latent_dim={latent_dim} but the sde evolves {sde_dim} "
                             "coordinates")
        self.sde = sde
        self.solver_options = {"method": method, "dt": dt, "adaptive": adaptive, "rtol": rtol,
                               "atol": atol}

    def path_distribution(self, z0, times, **solver_options):
        r""":math:`p(z_{1:K} \mid z_0)` at ``times (..., K+1)``: an
        :class:`~pyro_vpf.distributions.SDEPath`; ``solver_options`` override the prior's."""
        return SDEPath(z0, times, self.sde, **{**self.solver_options, **solver_options})

    def log_prob(self, z, times):
        raise NotImplementedError(
            "the latent SDE has no closed-form path density; compare it with the VPF by "
            "samples and forecasts (pyro_vpf.evaluation), not by log-likelihoods")


class LatentSDE(PathModel):
    r"""Latent neural SDE with the VPF's observation likelihood, as a Pyro model program.

    .. math::

        z_0 \sim \mathcal N(m_0, s_0^2), \qquad
        dz = f_\theta(z, t)\,dt + g_\theta(z, t) \odot dW, \qquad
        x_k = g(u_k; z(t_k)), \quad u_k \sim \mathcal N(0, I),

    with :math:`f_\theta, g_\theta` a :class:`NeuralSDE` (or ``sde=``, any module with its
    interface) and the same observation model as :class:`~pyro_vpf.models.VPF`
    (a :class:`~pyro_vpf.models.PathModel` of a :class:`LatentSDEPrior` and the conditional
    observation flow or the linear-Gaussian likelihood). Sites ``"z0"``, ``"z"`` (an
    :class:`~pyro_vpf.distributions.SDEPath`, event ``(K, Dz)``) and ``"x"`` inside the plate
    ``"sequences"``: the names and shapes of the VPF, so every sequence guide runs against it
    and :mod:`pyro_vpf.evaluation`'s predictive functions apply unchanged.

    The path has no density, so ``Trace_ELBO`` does not apply: train with
    :class:`~pyro_vpf.infer.SDEMatchingELBO` and the :class:`~pyro_vpf.guides.AffineGuide`
    (simulation-free: no solver during training). Sampling (:meth:`sample_prior`, the model
    program with ``x=None``, forecasts) runs a ``torchsde`` solver.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): width of the drift and of the observation flow's conditioners.
        num_obs_flow_layers (int): couplings of the observation flow.
        time_embed_dim (int): time features of the drift and diffusion.
        time_scale (float): the data's time unit.
        drift_layers (int): hidden layers of the drift.
        state_dependent_diffusion (bool): :math:`g(z, t)` instead of :math:`g(t)`.
        conditioner_layers (int): hidden layers of the observation flow's conditioners.
        observation (str): ``"flow"`` or ``"linear_gaussian"``.
        time_periods (tuple of float): known periods of the data.
        method (str): solver, ``"euler"``, ``"milstein"`` or ``"srk"``; ``dt`` its largest
            step (default a hundredth of the sampled span); ``adaptive`` adaptive steps.
        sde: replaces the :class:`NeuralSDE` (e.g. known dynamics).
    """

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, num_obs_flow_layers=6,
                 time_embed_dim=16, time_scale=1.0, drift_layers=2,
                 state_dependent_diffusion=False, conditioner_layers=1, observation="flow",
                 time_periods=(), method="euler", dt=None, adaptive=False, sde=None):
        if sde is None:
            sde = NeuralSDE(latent_dim, hidden_dim, time_embed_dim, time_scale, drift_layers,
                            state_dependent_diffusion, time_periods=time_periods)
        prior = LatentSDEPrior(latent_dim, sde, method=method, dt=dt, adaptive=adaptive)
        likelihood = make_likelihood(observation, obs_dim, latent_dim,
                                     num_flow_layers=num_obs_flow_layers, hidden_dim=hidden_dim,
                                     conditioner_layers=conditioner_layers)
        super().__init__(prior, likelihood, name="latent_sde")

    @property
    def sde(self):
        """The prior dynamics (drift, diffusion)."""
        return self.prior.sde

    @torch.no_grad()
    def sample_prior(self, times, num_samples=1, **solver_options):
        r"""Latent paths and observations at increasing ``times`` ``(K+1,)`` by the SDE solver.

        ``solver_options`` (``method``, ``dt``, ``adaptive``, ``rtol``, ``atol``) override the
        model's for this call.

        Returns:
            tuple: ``(z, x)`` of shapes ``(num_samples, K+1, Dz)`` and
            ``(num_samples, K+1, Dx)``.
        """
        return super().sample_prior(times, num_samples, **solver_options)

    def sample_posterior(self, guide, x, times, query_times, mask=None, num_samples=1,
                         **solver_options):
        """Deprecated alias of :func:`pyro_vpf.evaluation.sample_posterior_sde`
        ``(model, guide, ...)``: posterior paths are an evaluation of a trained model."""
        import warnings

        from pyro_vpf.evaluation.predictive import sample_posterior_sde

        warnings.warn("LatentSDE.sample_posterior is deprecated; use "
                      "pyro_vpf.evaluation.sample_posterior_sde(model, guide, ...)",
                      DeprecationWarning, stacklevel=2)
        return sample_posterior_sde(self, guide, x, times, query_times, mask,
                                    num_samples=num_samples, **solver_options)
