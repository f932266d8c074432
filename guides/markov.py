r"""The Gauss--Markov guide: a structured posterior over the whole latent path."""

import copy
import math

import pyro
import torch
from pyro.distributions import MultivariateNormal, constraints
from pyro_vpf.guides.base import SequenceGuide, chain_marginals, grid_index, readout_sites
from torch import nn
from torch.distributions import transform_to

from pyro_vpf.distributions import (
    GaussMarkovPath,
    gauss_markov_posterior,
    ou_transition,
)
from pyro_vpf.nn import ConstrainedParameters, GRUEncoder
from pyro_vpf.processes import JointStateSpace, per_coordinate, psd_root
from pyro_vpf.sites import Z0, Z

__all__ = ["MarkovGuide"]

#: softplus, and the lower-triangular matrices with a softplus of the diagonal: the maps from
#: the heads' outputs to the positive scales of ``"direct"``
_SOFTPLUS = transform_to(constraints.softplus_positive)
_SOFTPLUS_CHOLESKY = transform_to(constraints.softplus_lower_cholesky)


def _local_window(x, mask):
    """``[x, mask]`` at steps ``k-1, k, k+1`` (zeros beyond the ends), ``(B, K+1, 6 Dx)``."""
    observed = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    here = torch.cat([x * observed, observed], -1)
    pad = torch.zeros_like(here[:, :1])
    before = torch.cat([pad, here[:, :-1]], 1)
    after = torch.cat([here[:, 1:], pad], 1)
    return torch.cat([before, here, after], -1)


class MarkovGuide(ConstrainedParameters, SequenceGuide):
    r"""Guide :math:`q(z_0)\prod_k q(z_k \mid z_{k-1})` with Gaussian, affine transitions.

    .. math::

        z_0 \sim \mathcal N(m_0, L_0 L_0^\top), \qquad
        z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k,

    a :class:`~pyro_vpf.distributions.GaussMarkovPath` (parallel-scan sampling, exact
    log-density of the whole path, start included). :math:`(m_0, L_0, A_k, b_k, L_k)` come
    from a bidirectional GRU over the whole sequence, so :math:`q` sees the future, in one
    of two parametrisations:

    ``"smoother"`` (default): the guide holds its own reference process, a diagonal OU
    :math:`r(z)` (learned start, mean, rates and scales; exact transitions at the sequence's
    times), and the encoder emits a Gaussian potential per time step,

    .. math::

        q(z_{0:K} \mid x) \propto r(z_{0:K}) \prod_{k=0}^K
            \exp\big(-\tfrac12 z_k^\top J_k z_k + h_k^\top z_k\big), \qquad
        J_k = \sum_i m_{ki}\, u_{ki} u_{ki}^\top, \quad
        h_k = \sum_i m_{ki}\, u_{ki} (a_{ki} x_{ki} + o_{ki}) + e_k,

    one rank-one term per observed channel :math:`i` (:math:`m` the mask), with
    :math:`u_{ki} = u_i + \delta u_{ki}`, :math:`a_{ki} = a_i + \delta a_{ki}`,
    :math:`o_{ki} = o_i + \delta o_{ki}` and :math:`e_k`: learned per-channel constants plus
    corrections from the GRU's context at step :math:`k` and its summary of the sequence
    (which start near zero). The product is conditioned exactly by the backward information filter
    (:func:`~pyro_vpf.distributions.gauss_markov_posterior`), which gives the transitions.
    For a linear-Gaussian VPF (:math:`x_k = C z_k + d + \mathcal N(0, \operatorname{diag}
    r^2)`, OU latent) the exact posterior is the member :math:`r = p`,
    :math:`u_i = c_i / r_i`, :math:`a_i = 1/r_i`, :math:`o_i = -d_i/r_i` with zero
    corrections, for every sequence, irregular times and missing entries included: the
    amortisation has nothing to approximate there. ``full_transition`` and ``full_scale``
    are both ``True`` (full :math:`J_k`, hence full :math:`A_k, L_k`) or both ``False``
    (diagonal :math:`J_k`: independent coordinates). The conditioning is a parallel scan of
    :math:`\lceil\log_2 K\rceil` levels, like sampling and scoring: no loop over time.

    ``"direct"``: heads map the contexts of steps :math:`k-1, k` and
    :math:`\log(t_k - t_{k-1})` to :math:`A_k, b_k, L_k` (any combination of full or
    diagonal :math:`A_k`, :math:`L_k`), with a linear term in the observations at
    :math:`t_{k-1}, t_k, t_{k+1}` added to :math:`m_0, b_k`. The family is the same and a step
    is cheaper, but the encoder only approximates the exact posterior of the
    linear-Gaussian VPF (its ELBO stays about 1.5 % short of :math:`\log p(x)` after
    training in ``benchmarks/bench_guides.py``, against 0.14 % for the same family fitted
    per sequence).

    ``base=`` (``"smoother"`` only): the reference is a structured base process instead of
    the OU -- normally the model's own, ``MarkovGuide(..., base=model.prior.base)``, whose
    current parameters are copied and then learned with the guide. The chain is then over
    the stacked base state :math:`s` (:class:`~pyro_vpf.processes.JointStateSpace`, e.g. level,
    slope and cycle of every coordinate), :math:`z_k = \mu + H s_k`, and the potentials act
    on :math:`z_k` (:math:`H^\top J_k H`, :math:`H^\top(h_k - J_k \mu)`). The sites carry
    the readout: ``"z0"`` is :math:`\mathcal N(H m_0 + \mu, H P_0 H^\top)` and ``"z"`` the
    readout path given it (:class:`~pyro_vpf.distributions.GaussMarkovReadoutPath`, exact
    density by a parallel scan). For a linear-Gaussian VPF with that base the exact posterior
    is again a member: reference equal to the prior (:math:`z_0 \sim \mathcal N(m_0,
    \operatorname{diag} s_0^2)` read into the state by :meth:`JointStateSpace.start
    <pyro_vpf.processes.JointStateSpace.start>`), potentials equal to the likelihood.

    Same call signature and sites as :class:`~pyro_vpf.guides.AffineGuide`.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): encoder and head width.
        full_transition (bool): full :math:`A_k` (else diagonal).
        full_scale (bool): lower-triangular :math:`L_k` (else diagonal).
        min_scale (float): floor of the diagonal of :math:`L_k` (``"direct"``).
        parametrization (str): ``"smoother"`` or ``"direct"``.
        base (LTIProcess or list, optional): the reference process of ``"smoother"``
            (default: a diagonal OU); a copy is taken.
    """

    name = "markov_guide"
    continuous_time = False  # marginal() takes grid times only

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, full_transition=True,
                 full_scale=True, min_scale=1e-4, parametrization="smoother", base=None):
        super().__init__(obs_dim, latent_dim)
        if not (math.isfinite(min_scale) and min_scale >= 0):
            raise ValueError(f"min_scale must be finite and >= 0, got {min_scale}")
        if parametrization not in ("smoother", "direct"):
            raise ValueError(f"parametrization must be 'smoother' or 'direct', got "
                             f"{parametrization!r}")
        if parametrization == "smoother" and full_transition != full_scale:
            raise ValueError("parametrization='smoother' gives full A_k and L_k together "
                             "(full_transition=full_scale=True) or diagonal ones together "
                             "(both False); use parametrization='direct' to mix them")
        if base is not None and parametrization != "smoother":
            raise ValueError("base= gives the reference process of parametrization='smoother'; "
                             f"parametrization={parametrization!r} has none")
        self.full_transition, self.full_scale, self.min_scale = (
            full_transition, full_scale, min_scale)
        self.parametrization = parametrization
        self.encoder = GRUEncoder(obs_dim, hidden_dim)
        self.reference = None
        if base is not None:  # the guide's own copy, learned with it (even of a frozen model)
            self.reference = copy.deepcopy(per_coordinate(base, latent_dim, "base"))
            self.reference.requires_grad_(True)
        if parametrization == "smoother":
            self._build_smoother(obs_dim, latent_dim, hidden_dim)
        else:
            self._build_direct(obs_dim, latent_dim, hidden_dim)

    def _build_smoother(self, obs_dim, latent_dim, hidden_dim):
        D = latent_dim
        # the reference process r: a diagonal OU started at N(loc, scale^2), unit variance;
        # its positive parameters are softplus(<name>_unconstrained)
        self.reference_init_loc = nn.Parameter(torch.zeros(D))
        self.register_constrained("reference_init_scale", torch.ones(D))
        self.reference_mean = nn.Parameter(torch.zeros(D))
        if self.reference is None:
            self.register_constrained("reference_rate", torch.ones(D))
            self.register_constrained("reference_scale", torch.full((D,), 2.0).sqrt())
        # per-channel potentials and their context-dependent corrections (zero at the start)
        self.channel_direction = nn.Parameter(torch.randn(obs_dim, D) / D**0.5)
        self.channel_gain = nn.Parameter(torch.ones(obs_dim))
        self.channel_offset = nn.Parameter(torch.zeros(obs_dim))
        self.potential_head = nn.Sequential(  # [step context, sequence summary] -> corrections
            nn.Linear(2 * hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, obs_dim * D + 2 * obs_dim + D))
        with torch.no_grad():  # corrections start near zero: the per-channel terms lead
            self.potential_head[-1].weight.mul_(0.01)
            self.potential_head[-1].bias.zero_()

    def _build_direct(self, obs_dim, latent_dim, hidden_dim):
        D = latent_dim
        self._n_transition = D * D if self.full_transition else D
        self._n_scale = D * (D + 1) // 2 if self.full_scale else D
        self.initial_head = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, D + self._n_scale))
        self.step_head = nn.Sequential(
            nn.Linear(2 * hidden_dim + 1, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, self._n_transition + D + self._n_scale))
        self.skip = nn.Linear(6 * obs_dim, D)  # [x, mask] at t_{k-1}, t_k, t_{k+1} -> b_k
        with torch.no_grad():  # start small: the GRU heads give the first guesses
            self.skip.weight.mul_(0.1)
            self.skip.bias.zero_()
        self.register_buffer("_tril", torch.tril_indices(D, D), persistent=False)

    def _scale_tril(self, raw):
        r"""The scale :math:`L` of ``"direct"`` from a head's output: the diagonal
        :math:`\operatorname{softplus}(r) + \ell_{\min}` (``full_scale=False``, ``raw``
        ``(..., Dz)``), or a lower-triangular :math:`L` whose strict lower triangle is the raw
        entries and whose diagonal is :math:`\operatorname{softplus}(r_{ii}) + \ell_{\min}`
        (``raw`` the :math:`D_z(D_z+1)/2` entries of the triangle, row by row)."""
        D = self.latent_dim
        # The floor l_min = min_scale is added after the transform: softplus followed by a
        # shift is not the transform of any constraint (transform_to(greater_than(l_min)) is
        # an exp and a shift), and the sum is exactly the earlier softplus(r) + l_min.
        if not self.full_scale:
            return torch.diag_embed(_SOFTPLUS(raw) + self.min_scale)
        L = raw.new_zeros(raw.shape[:-1] + (D, D))
        L[..., self._tril[0], self._tril[1]] = raw
        floor = torch.eye(D, dtype=raw.dtype, device=raw.device) * self.min_scale
        return _SOFTPLUS_CHOLESKY(L) + floor

    def parameters_of(self, x, times, mask=None):
        """``(m0, L0, A, b, L)`` of :math:`q` for the sequences ``x`` (no validation); with a
        ``base``, of the chain over the stacked base state (:meth:`readout` reads it)."""
        if self.parametrization == "smoother":
            return self._smoother_parameters(x, times, mask)
        return self._direct_parameters(x, times, mask)

    def potentials(self, x, times, mask=None):
        r"""The per-step potentials ``(J, h)`` of the ``"smoother"`` parametrisation,
        ``(B, K+1, Dz, Dz)`` and ``(B, K+1, Dz)`` (no validation)."""
        B, K1, Dx = x.shape
        D = self.latent_dim
        steps, summary = self.encoder(x, times, mask)
        context = torch.cat([steps, summary.unsqueeze(1).expand(-1, K1, -1)], -1)
        delta_u, delta_a, delta_o, extra = self.potential_head(context).split(
            [Dx * D, Dx, Dx, D], dim=-1)
        direction = self.channel_direction + delta_u.unflatten(-1, (Dx, D))  # (B, K+1, Dx, D)
        observed = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        weighted = direction * observed.unsqueeze(-1)  # m_ki u_ki
        value = (self.channel_gain + delta_a) * x + self.channel_offset + delta_o
        information = (weighted.transpose(-1, -2) @ value.unsqueeze(-1)).squeeze(-1) + extra
        if self.full_transition:
            precision = weighted.transpose(-1, -2) @ direction
        else:
            precision = torch.diag_embed((weighted * direction).sum(-2))
        return precision, information

    def readout(self):
        r""":math:`H`, ``(Dz, N)``, of the stacked reference state (``base=`` only)."""
        return JointStateSpace(self.reference, self.latent_dim).readout()

    def _smoother_parameters(self, x, times, mask):
        precision, information = self.potentials(x, times, mask)
        # times shared by the batch stay (K+1,): the reference's transitions are then computed
        # once for every sequence, not once per sequence
        return self._conditioned(times, precision, information)

    def _conditioned(self, times, precision, information):
        """``(m0, L0, A, b, L)``: the reference conditioned on the potentials, ``times``
        ``(K+1,)`` (shared) or ``(B, K+1)``."""
        if self.reference is not None:
            return self._state_parameters(times, precision, information)
        decay, variance = ou_transition(times, self.reference_rate, self.reference_scale)
        return gauss_markov_posterior(
            self.reference_init_loc, torch.diag_embed(self.reference_init_scale), decay,
            (1 - decay) * self.reference_mean, variance.sqrt(), precision, information,
            diagonal=True)

    def _state_parameters(self, times, precision, information):
        """The posterior chain over the stacked state of a structured reference."""
        space = JointStateSpace(self.reference, self.latent_dim)
        H, mean = space.readout(), self.reference_mean
        A, Q = space.transition(times.diff(dim=-1))  # (B, K, N, N)
        m0, P0 = space.start(self.reference_init_loc - mean, self.reference_init_scale)
        state_information = (information - (precision @ mean.unsqueeze(-1)).squeeze(-1)) @ H
        return gauss_markov_posterior(m0, psd_root(P0), A, A.new_zeros(A.shape[:-1]),
                                      psd_root(Q), H.T @ precision @ H, state_information)

    def _sites(self, m0, L0, A, b, L):
        """``"z0"`` and ``"z"`` of the chain ``(m0, L0, A, b, L)``: the chain itself, or
        with a structured reference its readout."""
        if self.reference is None:
            z0 = pyro.sample(Z0, MultivariateNormal(m0, scale_tril=L0))
            return pyro.sample(Z, GaussMarkovPath(z0, A, b, L))
        return readout_sites(m0, L0, A, b, L, self.readout(), self.reference_mean)

    def _direct_parameters(self, x, times, mask):
        D = self.latent_dim
        steps, summary = self.encoder(x, times, mask)
        local = self.skip(_local_window(x, mask))  # (B, K+1, D)
        initial = self.initial_head(torch.cat([steps[:, 0], summary], -1))
        m0, L0 = initial[..., :D] + local[:, 0], self._scale_tril(initial[..., D:])
        # log of the time step: the posterior transition varies with the step over orders of
        # magnitude (e.g. A_k ~ 1 / (1 + c dt) for small steps), which a log spreads out
        log_dt = times.diff(dim=-1).log().expand(x.shape[0], -1).unsqueeze(-1)
        out = self.step_head(torch.cat([steps[:, :-1], steps[:, 1:], log_dt], -1))
        raw_A, b, raw_L = out.split([self._n_transition, D, self._n_scale], dim=-1)
        A = raw_A.unflatten(-1, (D, D)) if self.full_transition else torch.diag_embed(raw_A)
        return m0, L0, A, b + local[:, 1:], self._scale_tril(raw_L)

    def marginal_distribution(self, x, times, query_times, mask):
        r"""The posterior marginal :math:`q(z(t) \mid x)` at ``query_times``, batch shape
        ``(B, Q)``, event shape ``(Dz,)`` (a ``MultivariateNormal``).

        The guide is defined on the grid only, so every query time must be one of the
        sequence's own times (an off-grid time raises ``ValueError``): a query matches a grid
        time when it lies within :math:`10^{-6}` of the sequence's smallest spacing of it
        (relative to the spacing, not to the times' magnitude, so no off-grid time is ever
        snapped to a neighbour). The marginals of all grid points come from
        :func:`~pyro_vpf.distributions.gauss_markov_marginals`.
        """
        index = grid_index(times, query_times, x.shape[0])
        chain = self.parameters_of(x, times, mask)
        if self.reference is None:
            return chain_marginals(chain, index)
        return chain_marginals(chain, index, self.readout(), self.reference_mean)

    def sample_sites(self, x, times, mask):
        self._sites(*self.parameters_of(x, times, mask))
