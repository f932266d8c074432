r"""The Gauss--Markov guide: a structured posterior over the whole latent path."""

import pyro
import torch
from pyro import poutine
from pyro.distributions import MultivariateNormal
from torch import nn

from pyro_vpf.distributions import GaussMarkovPath, gauss_markov_marginals
from pyro_vpf.nn import GRUEncoder
from pyro_vpf.plates import sequence_plate
from pyro_vpf.sites import Z0, Z
from pyro_vpf.validation import check_query_times, check_sequences

__all__ = ["MarkovGuide"]


def _local_window(x, mask):
    """``[x, mask]`` at steps ``k-1, k, k+1`` (zeros beyond the ends), ``(B, K+1, 6 Dx)``."""
    observed = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    here = torch.cat([x * observed, observed], -1)
    pad = torch.zeros_like(here[:, :1])
    before = torch.cat([pad, here[:, :-1]], 1)
    after = torch.cat([here[:, 1:], pad], 1)
    return torch.cat([before, here, after], -1)


class MarkovGuide(nn.Module):
    r"""Guide :math:`q(z_0)\prod_k q(z_k \mid z_{k-1})` with Gaussian, affine transitions.

    .. math::

        z_0 \sim \mathcal N(m_0, L_0 L_0^\top), \qquad
        z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k,

    with :math:`A_k, b_k, L_k` computed from a bidirectional GRU over the whole sequence
    (so :math:`q` sees the future), from the contexts of steps :math:`k-1` and :math:`k`
    and the log of the time step :math:`t_k - t_{k-1}`. The means :math:`m_0` and
    :math:`b_k` also get a linear term in the (masked) observations at
    :math:`t_{k-1}, t_k, t_{k+1}`: for a linear-Gaussian model the exact posterior mean is
    linear in the data and dominated by the nearby observations, and a linear path
    represents it precisely where a saturating recurrent encoder only approximates it.
    The path is a :class:`~pyro_vpf.distributions.GaussMarkovPath`
    (parallel-scan sampling, exact log-density). With full :math:`A_k, L_k` (the default)
    the family contains the exact posterior of the linear-Gaussian VPF.

    Same call signature and sites as :class:`~pyro_vpf.guides.AffineGuide`.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): encoder and head width.
        full_transition (bool): full :math:`A_k` (else diagonal).
        full_scale (bool): lower-triangular :math:`L_k` (else diagonal).
        min_scale (float): floor of the diagonal of :math:`L_k`.
    """

    continuous_time = False  # marginal() takes grid times only

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, full_transition=True,
                 full_scale=True, min_scale=1e-4):
        super().__init__()
        self.obs_dim, self.latent_dim = obs_dim, latent_dim
        self.full_transition, self.full_scale, self.min_scale = (
            full_transition, full_scale, min_scale)
        D = latent_dim
        self._n_transition = D * D if full_transition else D
        self._n_scale = D * (D + 1) // 2 if full_scale else D
        self.encoder = GRUEncoder(obs_dim, hidden_dim)
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
        D = self.latent_dim
        if not self.full_scale:
            return torch.diag_embed(nn.functional.softplus(raw) + self.min_scale)
        L = raw.new_zeros(raw.shape[:-1] + (D, D))
        L[..., self._tril[0], self._tril[1]] = raw
        diagonal = nn.functional.softplus(L.diagonal(dim1=-2, dim2=-1)) + self.min_scale
        return L.tril(-1) + torch.diag_embed(diagonal)

    def parameters_of(self, x, times, mask=None):
        """``(m0, L0, A, b, L)`` of :math:`q` for the sequences ``x`` (no validation)."""
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

    def marginal(self, x, times, query_times, mask=None):
        r"""The posterior marginal :math:`q(z(t) \mid x)` at ``query_times``, batch shape
        ``(B, Q)``, event shape ``(Dz,)`` (a ``MultivariateNormal``).

        The guide is defined on the grid only, so every query time must be one of the
        sequence's own times (an off-grid time raises ``ValueError``); the marginals of all
        grid points come from :func:`~pyro_vpf.distributions.gauss_markov_marginals`.
        """
        like = self.step_head[0].weight
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim, like=like)
        check_query_times(query_times, B, like)
        grid = times.expand(B, -1)
        query = query_times.expand(B, -1)
        index = (grid.unsqueeze(1) - query.unsqueeze(-1)).abs().argmin(-1)  # (B, Q)
        if not torch.isclose(grid.gather(-1, index), query).all():
            raise ValueError("query_times must be times of the grid: the Markov guide "
                             "defines q(z | x) at the observation times only")
        m0, L0, A, b, L = self.parameters_of(x, times, mask)
        loc, cov = gauss_markov_marginals(m0, L0 @ L0.transpose(-1, -2), A, b, L)
        D = self.latent_dim
        loc = loc.gather(1, index.unsqueeze(-1).expand(-1, -1, D))
        cov = cov.gather(1, index[..., None, None].expand(-1, -1, D, D))
        return MultivariateNormal(loc, cov)

    def forward(self, x, times, mask=None, *, batch_size=None, kl_weight=1.0):
        """The guide program: sites ``"z0"`` and ``"z"`` in the plate over sequences."""
        x, times, mask, B = check_sequences(
            x, times, mask, obs_dim=self.obs_dim, like=self.step_head[0].weight
        )
        pyro.module("markov_guide", self)
        with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
            m0, L0, A, b, L = self.parameters_of(xb, tb, mb)
            with poutine.scale(scale=kl_weight):
                z0 = pyro.sample(Z0, MultivariateNormal(m0, scale_tril=L0))
                pyro.sample(Z, GaussMarkovPath(z0, A, b, L))
