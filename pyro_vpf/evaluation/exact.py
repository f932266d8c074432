r"""Exact :math:`\log p(x)` of the linear-Gaussian VPF: Kalman filtering over exact base steps.

With an identity latent flow (``num_flow_layers=0``) and ``observation="linear_gaussian"``
the VPF is a linear-Gaussian state-space model in the stacked state :math:`s` of its base
processes (:class:`~pyro_vpf.processes.JointStateSpace`; :math:`s = z - \mu` for the OU base):

.. math::

    s_0 \sim \mathcal N(m_0', P_0'), \quad
    s_k = A(\Delta_k)\, s_{k-1} + \mathcal N(0, Q(\Delta_k)), \quad
    z_k = \mu + H s_k, \quad
    x_k = C z_k + d + \mathcal N(0, \operatorname{diag} r^2),

with the exact transitions of the base for any spacing and :math:`(m_0', P_0')` the law of
the start state when :math:`z_0 \sim \mathcal N(m_0, \operatorname{diag} s_0^2)`
(:meth:`JointStateSpace.start <pyro_vpf.processes.JointStateSpace.start>`). Its marginal
likelihood is computed two ways: by Pyro's :class:`~pyro.distributions.GaussianHMM` (parallel
over time; heterogeneous transitions give irregular and per-sequence times) when every entry
is observed and every coordinate's state is one-dimensional, and by a Kalman filter written
here, which handles any base and masks (a missing channel contributes neither a residual nor
an update).
"""

import math

import torch
from pyro.distributions import GaussianHMM, MultivariateNormal, Normal

from pyro_vpf.processes import OU, JointStateSpace
from pyro_vpf.validation import check_sequences

__all__ = ["exact_log_likelihood", "gaussian_hmm", "kalman_log_likelihood",
           "kalman_observation_marginals", "kalman_smoother",
           "linear_gaussian_parameters"]


def linear_gaussian_parameters(model):
    r"""The state-space parameters of a linear-Gaussian VPF, as a dict.

    Keys ``init_loc``, ``init_scale``, ``mean`` (:math:`m_0, s_0, \mu`), ``base`` (the
    prior's base process), ``weight``, ``bias``, ``noise`` (:math:`C, d, r`) and, for the OU
    base, ``rate`` and ``scale``.

    Raises:
        ValueError: if the model has a latent flow or a non-Gaussian likelihood.
    """
    if getattr(model, "obs_linear", None) is None or len(model.prior.flow.couplings) != 0:
        raise ValueError(
            "the exact likelihood needs a linear-Gaussian VPF: "
            "VPF(..., num_flow_layers=0, observation='linear_gaussian')"
        )
    prior, obs = model.prior, model.obs_linear
    params = {"init_loc": prior.init_loc, "init_scale": prior.init_scale,
              "mean": prior.base_mean, "base": prior.base, "weight": obs.weight,
              "bias": obs.bias, "noise": obs.noise_scale}
    if isinstance(prior.base, OU):
        params.update(rate=prior.base.rate, scale=prior.base.scale)
    return params


def _state_space(params, times, batch):
    r"""The stacked state-space form (:class:`~pyro_vpf.processes.JointStateSpace`) as
    per-step ``(matrix, loc, cov)`` for steps ``0..K`` (step 0 draws :math:`s_0` from its
    law), ``(*batch, K+1, N, N)``, ``(*batch, K+1, N)``, ``(*batch, K+1, N, N)``, and the
    observation of the state, :math:`x = C H s + (C\mu + d) + \text{noise}`: ``(weight,
    bias)`` of shapes ``(Dx, N)`` and ``(Dx,)``, with the readout :math:`H` ``(Dz, N)``."""
    space = JointStateSpace(params["base"], params["init_loc"].shape[-1])
    A, Q = space.transition(times.diff(dim=-1))  # (..., K, N, N)
    A, Q = A.expand(batch + A.shape[-3:]), Q.expand(batch + Q.shape[-3:])
    m0, P0 = space.start(params["init_loc"] - params["mean"], params["init_scale"])
    N = A.shape[-1]
    matrix = torch.cat([torch.zeros_like(A[..., :1, :, :]), A], dim=-3)
    loc = torch.cat([m0.expand(batch + (1, N)), A.new_zeros(batch + A.shape[-3:-1])], dim=-2)
    cov = torch.cat([P0.expand(batch + (1, N, N)), Q], dim=-3)
    H = space.readout()
    weight = params["weight"] @ H
    bias = params["weight"] @ params["mean"] + params["bias"]
    return matrix, loc, cov, weight, bias, H


def gaussian_hmm(model, times, num_sequences):
    r"""The linear-Gaussian VPF as a Pyro :class:`~pyro.distributions.GaussianHMM`.

    Event shape ``(K+1, Dx)``, batch ``(B,)``. The hidden state is the stacked base state
    (:class:`~pyro_vpf.processes.JointStateSpace`; the latent :math:`z` itself for the OU
    base). The HMM's first transition has a zero matrix and the law of :math:`s_0` as its
    noise, so its first observation is :math:`x_0`. Pyro's HMM needs positive definite
    transition noise: a base with a noiseless block (an exactly periodic season) goes through
    :func:`kalman_log_likelihood` instead.
    """
    params = linear_gaussian_parameters(model)
    matrix, loc, cov, weight, bias, _ = _state_space(params, times, (num_sequences,))
    N = matrix.shape[-1]
    eye = torch.eye(N, dtype=matrix.dtype, device=matrix.device)
    return GaussianHMM(
        MultivariateNormal(loc.new_zeros(N), eye),  # s_{-1}: multiplied by zero, irrelevant
        matrix.transpose(-1, -2),  # rows "old", columns "new"
        MultivariateNormal(loc, cov),
        weight.T,
        MultivariateNormal(bias, torch.diag(params["noise"].square())),
        duration=times.shape[-1],
    )


def _kalman_filter(model, x, times, mask, keep):
    """The filter's recursion over the stacked base state; returns the log-likelihood
    ``(B,)``, with ``keep`` the predicted and filtered moments of every step, the transition
    matrices and the readout :math:`H`."""
    params = linear_gaussian_parameters(model)
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    matrix, loc, cov, C, d, H = _state_space(params, times, (B,))
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
        if keep:
            steps.append((predicted, (m, P)))
    return total, steps, matrix, H


def kalman_log_likelihood(model, x, times, mask=None):
    r"""Kalman filter :math:`\log p(x_{0:K})` per sequence, masks and irregular times allowed.

    Vectorised over sequences; the loop over time steps is the filter's recursion. A missing
    channel gets a zero row in :math:`C`, a zero residual and unit noise, so it neither
    updates the state nor changes the likelihood beyond the constant
    :math:`-\tfrac12\log 2\pi`, which is removed. Covariances use the Joseph form.

    Returns:
        torch.Tensor: ``(B,)``.
    """
    return _kalman_filter(model, x, times, mask, keep=False)[0]


def kalman_smoother(model, x, times, mask=None):
    r"""Exact posterior marginals :math:`p(z_k \mid x_{0:K})` of a linear-Gaussian VPF.

    The Kalman filter of :func:`kalman_log_likelihood` forward, then the
    Rauch--Tung--Striebel recursion backward: with :math:`A_{k+1}` the exact base transition
    of step :math:`k+1`,

    .. math::

        G_k = P_{k|k} A_{k+1}^\top P_{k+1|k}^{-1}, \quad
        m_{k|K} = m_{k|k} + G_k (m_{k+1|K} - m_{k+1|k}), \quad
        P_{k|K} = P_{k|k} + G_k (P_{k+1|K} - P_{k+1|k}) G_k^\top.

    Masks, irregular and per-sequence times as for the filter. The reference posterior for
    the guides (and the exact interpolator of the linear-Gaussian model).

    Returns:
        tuple: ``(loc, cov)``, ``(B, K+1, Dz)`` and ``(B, K+1, Dz, Dz)``.
    """
    _, steps, matrix, H = _kalman_filter(model, x, times, mask, keep=True)
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
    r"""Exact predictive marginals :math:`p(x_{k,d} \mid x_{\text{observed}})` of every entry.

    From the smoother's :math:`z_k \mid x \sim \mathcal N(m_{k|K}, P_{k|K})` and
    :math:`x_k = C z_k + d + \mathcal N(0, \operatorname{diag} r^2)`:

    .. math::

        x_{k,d} \mid x_{\text{observed}} \sim \mathcal N\big((C m_{k|K} + d)_d,\;
            (C P_{k|K} C^\top)_{dd} + r_d^2\big),

    for observed and hidden entries alike (so the exact interpolator of the
    linear-Gaussian VPF, the reference for every guide's :func:`interpolate`).

    Returns:
        torch.distributions.Normal: batch ``(B, K+1, Dx)``.
    """
    loc, cov = kalman_smoother(model, x, times, mask)
    params = linear_gaussian_parameters(model)
    weight, bias, noise = params["weight"], params["bias"], params["noise"]
    mean = loc @ weight.T + bias
    variance = torch.einsum("dz,bkzy,dy->bkd", weight, cov, weight) + noise.square()
    return Normal(mean, variance.sqrt())


def exact_log_likelihood(model, x, times, mask=None):
    r"""Exact :math:`\log p(x)` per sequence ``(B,)`` of a linear-Gaussian VPF.

    Uses :func:`gaussian_hmm` when every entry is observed and the base's states are
    one-dimensional (the OU), and :func:`kalman_log_likelihood` otherwise; ``times`` may be
    irregular and per sequence.

    Raises:
        ValueError: for a model that is not linear-Gaussian, or bad inputs.
    """
    params = linear_gaussian_parameters(model)
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    if (mask is None or bool(mask.all())) and JointStateSpace(
            params["base"], model.latent_dim).markov:
        return gaussian_hmm(model, times, B).log_prob(x)
    return kalman_log_likelihood(model, x, times, mask)
