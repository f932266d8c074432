r"""Sequential Kalman filter and Rauch--Tung--Striebel smoother of a linear-Gaussian VPF.

The reference for :mod:`pyro_vpf.evaluation.exact`, which computes the same quantities in
parallel over time: the textbook recursions, one step at a time, over the stacked base state
of :class:`~pyro_vpf.processes.JointStateSpace`. A missing channel gets a zero row in the
observation matrix, a zero residual and unit noise, so it neither updates the state nor
changes the likelihood beyond the constant :math:`-\tfrac12\log 2\pi`, which is removed.
Covariances use the Joseph form.
"""

import math

import torch
from pyro.distributions import MultivariateNormal, Normal

from pyro_vpf.evaluation import linear_gaussian_parameters
from pyro_vpf.processes import JointStateSpace
from pyro_vpf.validation import check_sequences


def _state_space(params, times, B):
    """Per-step ``(matrix, loc, cov)`` for steps ``0..K`` (step 0 draws s_0 from its law),
    the observation ``(weight, bias)`` of the state and the readout ``H``."""
    space = JointStateSpace(params["base"], params["init_loc"].shape[-1])
    A, Q = space.transition(times.diff(dim=-1))
    A, Q = A.expand((B,) + A.shape[-3:]), Q.expand((B,) + Q.shape[-3:])
    m0, P0 = space.start(params["init_loc"] - params["mean"], params["init_scale"])
    N = A.shape[-1]
    matrix = torch.cat([torch.zeros_like(A[:, :1]), A], dim=1)
    loc = torch.cat([m0.expand(B, 1, N), A.new_zeros(B, A.shape[1], N)], dim=1)
    cov = torch.cat([P0.expand(B, 1, N, N), Q], dim=1)
    H = space.readout()
    return matrix, loc, cov, params["weight"] @ H, params["weight"] @ params["mean"] + (
        params["bias"]), H


def kalman_filter(model, x, times, mask=None):
    """The log-likelihood ``(B,)`` and, per step, the predicted and filtered moments
    ``((m, P), (m, P))`` of the stacked state; with the transition matrices and ``H``."""
    params = linear_gaussian_parameters(model)
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    matrix, loc, cov, C, d, H = _state_space(params, times, B)
    r2 = params["noise"].square()
    N = C.shape[1]
    eye = torch.eye(N, dtype=x.dtype, device=x.device)
    observed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
    m = x.new_zeros(B, N)
    P = x.new_zeros(B, N, N)
    total = x.new_zeros(B)
    steps = []
    for k in range(x.shape[1]):
        a = matrix[:, k]
        m = loc[:, k] + (a @ m.unsqueeze(-1)).squeeze(-1)
        P = a @ P @ a.transpose(-1, -2) + cov[:, k]
        predicted = (m, P)
        o = observed[:, k].to(x.dtype)  # (B, Dx)
        Ck = C * o.unsqueeze(-1)
        residual = (x[:, k] - (m @ C.T + d)) * o
        S = Ck @ P @ Ck.transpose(-1, -2) + torch.diag_embed(o * r2 + (1 - o))
        L = torch.linalg.cholesky(S)
        total = total + MultivariateNormal(torch.zeros_like(residual), scale_tril=L).log_prob(
            residual) + 0.5 * math.log(2 * math.pi) * (1 - o).sum(-1)
        gain = torch.cholesky_solve(Ck @ P, L).transpose(-1, -2)  # P C^T S^{-1}
        m = m + (gain @ residual.unsqueeze(-1)).squeeze(-1)
        J = eye - gain @ Ck
        P = J @ P @ J.transpose(-1, -2) + gain @ torch.diag_embed(o * r2) @ gain.transpose(-1, -2)
        steps.append((predicted, (m, P)))
    return total, steps, matrix, H


def kalman_log_likelihood(model, x, times, mask=None):
    """Kalman filter log p(x_{0:K}) per sequence, ``(B,)``."""
    return kalman_filter(model, x, times, mask)[0]


def kalman_smoother(model, x, times, mask=None):
    """The filter forward, then the Rauch--Tung--Striebel recursion backward: the posterior
    marginals of z, ``(B, K+1, Dz)`` and ``(B, K+1, Dz, Dz)``."""
    _, steps, matrix, H = kalman_filter(model, x, times, mask)
    m, P = steps[-1][1]
    locs, covs = [m], [P]
    for k in range(len(steps) - 2, -1, -1):
        (m_pred, P_pred), (m_filt, P_filt) = steps[k + 1][0], steps[k][1]
        a = matrix[:, k + 1]
        G = torch.linalg.solve(P_pred, a @ P_filt).transpose(-1, -2)  # P A^T P_pred^-1
        m = m_filt + (G @ (m - m_pred).unsqueeze(-1)).squeeze(-1)
        P = P_filt + G @ (P - P_pred) @ G.transpose(-1, -2)
        P = 0.5 * (P + P.transpose(-1, -2))
        locs.append(m)
        covs.append(P)
    loc, cov = torch.stack(locs[::-1], 1), torch.stack(covs[::-1], 1)
    mean = linear_gaussian_parameters(model)["mean"]
    return loc @ H.T + mean, H @ cov @ H.T


def kalman_observation_marginals(model, x, times, mask=None):
    """The smoother's predictive marginals of every entry of x, batch ``(B, K+1, Dx)``."""
    loc, cov = kalman_smoother(model, x, times, mask)
    params = linear_gaussian_parameters(model)
    weight, bias, noise = params["weight"], params["bias"], params["noise"]
    predictive_cov = weight @ cov @ weight.T + torch.diag(noise.square())  # (B, K+1, Dx, Dx)
    mean = (weight @ loc.unsqueeze(-1)).squeeze(-1) + bias
    return Normal(mean, predictive_cov.diagonal(dim1=-2, dim2=-1).sqrt())
