r"""Sequence encoders and time-local attention for guides."""

import math

import torch
from torch import nn

from pyro_vpf.times import last_observed

__all__ = ["GRUEncoder", "LocalTimeAttention", "normalised_time"]


def normalised_time(times, query=None, last=None):
    r"""Map times to each sequence's own unit interval, :math:`\tau = (t - t_0)/(t_L - t_0)`.

    :math:`t_L` is the last time point, or with ``last`` each sequence's last *observed* one,
    so the trailing padding of a ragged panel does not squeeze the real points
    (:func:`~pyro_vpf.times.last_observed`; the padding then maps beyond 1).

    Args:
        times: ``(K+1,)`` or ``(B, K+1)``, the sequence's grid.
        query: optional ``(Q,)`` or ``(B, Q)`` times to map with the same affine map (the
            grid and the query must share one normalisation).
        last: optional ``(B,)`` index of each sequence's last observed point (a span of zero,
            nothing observed after :math:`t_0`, falls back to the whole grid).

    Returns:
        ``tau`` of the grid, and of the query if given.
    """
    t0, span = times[..., :1], times[..., -1:] - times[..., :1]
    if last is not None:
        grid = times.expand(last.shape + times.shape[-1:])
        observed_span = grid.gather(-1, last.unsqueeze(-1)) - t0
        span = torch.where(observed_span > 0, observed_span, span)
    tau = (times - t0) / span
    if query is None:
        return tau
    return tau, (query - t0) / span


class GRUEncoder(nn.Module):
    r"""Bidirectional GRU over a masked sequence: per-step and global contexts.

    Each direction has ``hidden_dim // 2`` units; their concatenation is projected to the
    per-step contexts, their final states to the summary.

    The input at step :math:`k` is :math:`[m_k \odot x_k,\; m_k,\; \tau_k,\; \Delta\tau_k]`
    (``m`` the mask, :math:`\tau` time normalised to the sequence's own :math:`[t_0, t_K]`):
    missing entries are carried as zeros with an explicit mask channel, never as data.

    Shapes: ``x (B, K+1, Dx)``, ``times (K+1,)`` or ``(B, K+1)``, ``mask (B, K+1, Dx)`` or
    ``None`` -> ``steps (B, K+1, H)``, ``summary (B, H)``.
    """

    def __init__(self, obs_dim, hidden_dim=128):
        super().__init__()
        if hidden_dim < 2 or hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even and >= 2, got {hidden_dim}")
        self.obs_dim, self.hidden_dim = obs_dim, hidden_dim
        # hidden_dim // 2 per direction: the two directions together are hidden_dim wide.
        self.gru = nn.GRU(2 * obs_dim + 2, hidden_dim // 2, batch_first=True,
                          bidirectional=True)
        self.step_proj = nn.Linear(hidden_dim, hidden_dim)
        self.summary_proj = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x, times, mask=None):
        B, K1, _ = x.shape
        tau = normalised_time(times, last=last_observed(mask, K1)).expand(B, K1)
        dtau = torch.cat([torch.zeros_like(tau[:, :1]), tau.diff(dim=-1)], dim=-1)
        m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        inputs = torch.cat([x * m, m, tau.unsqueeze(-1), dtau.unsqueeze(-1)], dim=-1)
        out, last = self.gru(inputs)
        summary = self.summary_proj(torch.cat([last[0], last[1]], dim=-1))
        return self.step_proj(out), summary


class LocalTimeAttention(nn.Module):
    r"""Pool per-step contexts around a query time with a learned Gaussian kernel.

    .. math::

        \text{pooled}(\tau) = \sum_{j \in N_W(\tau)} w_j c_j, \qquad
        w = \operatorname{softmax}_j\!\left(-(L(\tau_j - \tau))^2\right),

    over :math:`N_W(\tau)`, the ``window`` grid points nearest to :math:`\tau` (found by
    binary search on the sorted grid), each weight multiplied by a taper that falls smoothly
    to zero at the window's edge (renormalised), so that the pooled context is continuous in
    :math:`\tau`, with a bounded derivative, as the window slides along the grid. Each query
    costs :math:`O(W H)`, so all :math:`K+1` queries cost :math:`O(K W H)`, linear in
    :math:`K` — never a :math:`K \times K \times H` tensor. Grid points that are entirely
    unobserved are down-weighted by :math:`e^{-30}` (kept only when a window holds nothing
    else). The sharpness :math:`L` is learned, in units of the sequence's normalised time.

    Shapes: ``grid (B, K+1)`` sorted, ``contexts (B, K+1, H)``, ``present (B, K+1)`` bool or
    ``None``, ``query (B, Q)`` -> ``(B, Q, H)``.
    """

    def __init__(self, window=8, init_sharpness=20.0):
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(init_sharpness)))

    #: Up to this many grid points the banded weights are applied as a dense (Q, K+1)
    #: matrix: at such sizes one batched matmul beats gathering the windows, and the cost
    #: stays bounded; beyond it the windows are gathered, O(Q W H).
    dense_max_points = 128

    def forward(self, grid, contexts, present, query):
        B, K1, H = contexts.shape
        W = min(self.window, K1)
        index, taper = _window(grid, query, W)
        neighbours = torch.gather(grid, 1, index.flatten(1)).view(index.shape)
        logits = -(self.log_sharpness.exp() * (neighbours - query.unsqueeze(-1))).square()
        if present is not None:
            absent = ~torch.gather(present, 1, index.flatten(1)).view(index.shape)
            logits = logits - 30.0 * absent.to(logits.dtype)
        if taper is None:
            weights = torch.softmax(logits, dim=-1)
        else:  # softmax of the logits, times the taper, renormalised
            top = logits.masked_fill(taper == 0, -math.inf).amax(-1, keepdim=True).detach()
            weights = taper * torch.exp(logits - top)
            weights = weights / weights.sum(-1, keepdim=True)
        if K1 <= self.dense_max_points:
            banded = weights.new_zeros(index.shape[:2] + (K1,)).scatter_add(2, index, weights)
            return banded @ contexts
        windows = torch.gather(contexts, 1, index.flatten(1).unsqueeze(-1).expand(-1, -1, H))
        return (weights.unsqueeze(-1) * windows.view(index.shape + (H,))).sum(-2)


def _window(grid, query, W):
    r"""The ``W`` grid indices around each query and their taper (``None``: no taper).

    With :math:`p` the query's fractional grid position (linear between grid times, clamped to
    :math:`[0, K]`), the window holds every index :math:`i` with :math:`|i - p| < W/2`, and the
    taper :math:`h = \cos^2(\pi (i - p) / W)` vanishes, with its slope, where an index enters or
    leaves it. The pooled context is then continuous in the query time, with a bounded
    derivative (which kinks at grid times, where :math:`p` changes slope): what a posterior
    drift :math:`\dot m(t)` needs. Without a taper: a window covering the
    whole grid (never moves), or ``W = 1`` (the nearest point).
    """
    B, K1 = grid.shape
    if W == K1:
        index = torch.arange(K1, device=grid.device).expand(query.shape + (K1,))
        return index, None
    position = torch.searchsorted(grid.contiguous(), query.contiguous())
    if W == 1:
        nearest = position.clamp(1, K1 - 1)
        left = torch.gather(grid, 1, nearest - 1)
        right = torch.gather(grid, 1, nearest)
        nearest = torch.where(query - left <= right - query, nearest - 1, nearest)
        return nearest.unsqueeze(-1), None
    upper = position.clamp(1, K1 - 1)
    lo, hi = torch.gather(grid, 1, upper - 1), torch.gather(grid, 1, upper)
    p = (upper - 1) + ((query - lo) / (hi - lo)).clamp(0, 1)
    start = (torch.floor(p - W / 2).long() + 1).clamp(0, K1 - W)
    index = start.unsqueeze(-1) + torch.arange(W, device=grid.device)  # (B, Q, W)
    offset = index.to(p.dtype) - p.unsqueeze(-1)
    taper = torch.where(offset.abs() < W / 2, torch.cos(math.pi * offset / W).square(),
                        torch.zeros_like(offset))
    return index, taper
