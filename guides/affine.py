r"""The affine guide: a time-adaptive Gaussian posterior over the latent path."""

import math
from functools import partial

import pyro
import torch
from pyro.distributions import Normal
from pyro_vpf.guides.base import SequenceGuide
from torch import nn

from pyro_vpf.distributions import GaussianMarginals
from pyro_vpf.nn import GRUEncoder, LocalTimeAttention, normalised_time
from pyro_vpf.sites import Z0, Z
from pyro_vpf.times import last_observed

__all__ = ["AffineGuide"]


class AffineGuide(SequenceGuide):
    r"""Guide :math:`q(z_k \mid x) = \mathcal N(m(t_k), s(t_k)^2)`, independent across :math:`k`.

    An encoder (:class:`~pyro_vpf.nn.GRUEncoder`) reads the masked sequence and returns a
    summary :math:`g` and per-step contexts :math:`c_j`; for a query time :math:`t`, a
    :class:`~pyro_vpf.nn.LocalTimeAttention` pools the contexts near
    :math:`\tau(t)`, and an MLP on :math:`[g + \text{pooled}(\tau(t)),\; \tau(t)]` gives
    :math:`m(t)` and :math:`s(t)`. Time is normalised to each sequence's own
    :math:`[t_0, t_K]`, for the grid and the query alike. Since :math:`m, s` are functions of
    continuous :math:`t`, :meth:`posterior` gives the marginal at unobserved times too.

    Call signature and sites are the model's: ``guide(x, times, mask=None)`` samples
    ``"z0"`` (event ``(Dz,)``) and ``"z"`` (event ``(K, Dz)``) inside the plate over
    sequences. The ``"z"`` site is a :class:`~pyro_vpf.distributions.GaussianMarginals`: it
    carries :math:`t \mapsto (m(t), s(t))` for the whole interval, which is what
    :class:`~pyro_vpf.infer.SDEMatchingELBO` needs to train a latent SDE with this guide.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): encoder and head width.
        window (int): grid points the attention pools over for each query.
        min_scale (float): floor of :math:`s(t)`.
    """

    name = "affine_guide"
    continuous_time = True  # marginal() takes any time

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, window=8, min_scale=1e-4):
        super().__init__(obs_dim, latent_dim)
        if not (math.isfinite(min_scale) and min_scale >= 0):
            raise ValueError(f"min_scale must be finite and >= 0, got {min_scale}")
        self.min_scale = min_scale
        self.encoder = GRUEncoder(obs_dim, hidden_dim)
        self.attention = LocalTimeAttention(window)
        self.head = nn.Sequential(
            nn.Linear(hidden_dim + 1, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2 * latent_dim)
        )

    def _encode(self, x, times, mask):
        """Encoder outputs a query needs: ``(steps, summary, grid, present)``."""
        steps, summary = self.encoder(x, times, mask)
        present = None if mask is None else mask.any(-1)
        return steps, summary, times, present

    def _head(self, encoded, query):
        """:math:`(m(t), s(t))` at ``query (B, Q)`` from :meth:`_encode`'s outputs."""
        steps, summary, times, present = encoded
        B = steps.shape[0]
        last = None if present is None else last_observed(present, present.shape[-1])
        grid, tau = normalised_time(times, query, last)
        grid, tau = grid.expand(B, -1), tau.expand(B, -1)
        pooled = self.attention(grid, steps, present, tau)
        features = torch.cat([summary.unsqueeze(1) + pooled, tau.unsqueeze(-1)], dim=-1)
        loc, raw_scale = self.head(features).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + self.min_scale

    def loc_scale(self, x, times, mask, query):
        """:math:`(m(t), s(t))`, each ``(B, Q, Dz)``, at ``query`` for checked sequences (no
        validation: :meth:`posterior` is the checked entry point)."""
        return self._head(self._encode(x, times, mask), query)

    def posterior(self, x, times, query_times, mask=None):
        r"""Posterior mean and scale of :math:`z(t)` at any query times.

        Args:
            x: ``(B, K+1, Dx)``; times: ``(K+1,)`` or ``(B, K+1)``; mask as for the model.
            query_times: ``(Q,)`` or ``(B, Q)``, anywhere (inside the grid: interpolation;
                beyond it: extrapolation).

        Returns:
            tuple: ``(loc, scale)``, each ``(B, Q, Dz)``.
        """
        x, times, query_times, mask = self.checked_query(x, times, query_times, mask)
        return self.loc_scale(x, times, mask, query_times)

    def marginal_distribution(self, x, times, query_times, mask):
        r"""The posterior marginal :math:`q(z(t) \mid x)` at ``query_times`` as a distribution
        with batch shape ``(B, Q)`` and event shape ``(Dz,)``; see :meth:`posterior`."""
        return Normal(*self.loc_scale(x, times, mask, query_times)).to_event(1)

    def sample_sites(self, x, times, mask):
        encoded = self._encode(x, times, mask)
        loc, scale = self._head(encoded, times)
        pyro.sample(Z0, Normal(loc[:, 0], scale[:, 0]).to_event(1))
        pyro.sample(Z, GaussianMarginals(loc[:, 1:], scale[:, 1:], partial(self._head, encoded)))
