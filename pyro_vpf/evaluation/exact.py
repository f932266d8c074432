r"""Exact :math:`\log p(x)` of the linear-Gaussian VPF: Kalman filtering over exact OU steps.

With an identity latent flow (``num_flow_layers=0``) and ``observation="linear_gaussian"``
the VPF is a linear-Gaussian state-space model:

.. math::

    z_0 \sim \mathcal N(m_0, \operatorname{diag} s_0^2), \quad
    z_k = \mu + A_k (z_{k-1} - \mu) + \mathcal N(0, \operatorname{diag} Q_k), \quad
    x_k = C z_k + d + \mathcal N(0, \operatorname{diag} r^2),

with the exact OU coefficients :math:`A_k, Q_k` of :func:`~pyro_vpf.distributions.ou_transition`
for any spacing. Its marginal likelihood is computed two ways: by Pyro's
:class:`~pyro.distributions.GaussianHMM` (parallel over time; heterogeneous transitions give
irregular and per-sequence times) when every entry is observed, and by a Kalman filter
written here, which also handles masks (a missing channel contributes neither a residual nor
an update).
"""

import math

import torch
from pyro.distributions import GaussianHMM, MultivariateNormal, Normal

from pyro_vpf.distributions import ou_transition
from pyro_vpf.validation import check_sequences

__all__ = ["exact_log_likelihood", "gaussian_hmm", "kalman_log_likelihood",
           "kalman_observation_marginals", "kalman_smoother",
           "linear_gaussian_parameters"]


def linear_gaussian_parameters(model):
    """The state-space parameters of a linear-Gaussian VPF, as a dict of tensors.

    Raises:
        ValueError: if the model has a latent flow or a non-Gaussian likelihood.
    """
    if getattr(model, "obs_linear", None) is None or len(model.prior.flow.couplings) != 0:
        raise ValueError(
            "the exact likelihood needs a linear-Gaussian VPF: "
            "VPF(..., num_flow_layers=0, observation='linear_gaussian')"
        )
    prior, obs = model.prior, model.obs_linear
    return {"init_loc": prior.init_loc, "init_scale": prior.init_scale, "mean": prior.ou_mean,
            "rate": prior.ou_rate, "scale": prior.ou_scale, "weight": obs.weight,
            "bias": obs.bias, "noise": obs.noise_scale}


def _transitions(params, times, batch):
    """Per-step (matrix, loc, variance) for steps 0..K; step 0 draws z_0 from its prior."""
    A, Q = ou_transition(times, params["rate"], params["scale"])  # (..., K, Dz)
    A, Q = A.expand(batch + A.shape[-2:]), Q.expand(batch + Q.shape[-2:])
    mean = params["mean"]
    zero = torch.zeros_like(A[..., :1, :])
    matrix = torch.cat([zero, A], dim=-2)
    loc = torch.cat([params["init_loc"].expand(batch + (1, A.shape[-1])),
                     mean * (1 - A)], dim=-2)
    variance = torch.cat([params["init_scale"].square().expand(batch + (1, A.shape[-1])), Q],
                         dim=-2)
    return matrix, loc, variance


def gaussian_hmm(model, times, num_sequences):
    r"""The linear-Gaussian VPF as a Pyro :class:`~pyro.distributions.GaussianHMM`.

    Event shape ``(K+1, Dx)``, batch ``(B,)``. The HMM's first transition has a zero matrix
    and the prior of :math:`z_0` as its noise, so its first observation is :math:`x_0`.
    """
    params = linear_gaussian_parameters(model)
    batch = (num_sequences,)
    matrix, loc, variance = _transitions(params, times, batch)
    Dz = matrix.shape[-1]
    eye = torch.eye(Dz, dtype=matrix.dtype, device=matrix.device)
    return GaussianHMM(
        MultivariateNormal(loc.new_zeros(Dz), eye),  # z_{-1}: multiplied by zero, irrelevant
        matrix.unsqueeze(-1) * eye,  # diagonal A_k, rows "old", columns "new"
        MultivariateNormal(loc, variance.unsqueeze(-1) * eye),
        params["weight"].T,
        MultivariateNormal(params["bias"], torch.diag(params["noise"].square())),
        duration=times.shape[-1],
    )


def _kalman_filter(model, x, times, mask, keep):
    """The filter's recursion; returns the log-likelihood ``(B,)`` and, with ``keep``, the
    filtered and predicted moments and the transition diagonals of every step."""
    params = linear_gaussian_parameters(model)
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    matrix, loc, variance = _transitions(params, times, (B,))
    C, d, r2 = params["weight"], params["bias"], params["noise"].square()
    Dz = C.shape[1]
    eye = torch.eye(Dz, dtype=x.dtype, device=x.device)
    observed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
    m = x.new_zeros(B, Dz)
    P = x.new_zeros(B, Dz, Dz)
    total = x.new_zeros(B)
    steps = []
    for k in range(x.shape[1]):
        a = matrix[:, k]
        m = loc[:, k] + a * m
        P = a.unsqueeze(-1) * P * a.unsqueeze(-2) + torch.diag_embed(variance[:, k])
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
    return total, steps, matrix


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
    Rauch--Tung--Striebel recursion backward: with :math:`A_{k+1}` the exact OU transition
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
    _, steps, matrix = _kalman_filter(model, x, times, mask, keep=True)
    m, P = steps[-1][1]
    locs, covs = [m], [P]
    for k in range(len(steps) - 2, -1, -1):
        (m_pred, P_pred), (m_filt, P_filt) = steps[k + 1][0], steps[k][1]
        a = matrix[:, k + 1]
        G = torch.linalg.solve(P_pred, a.unsqueeze(-1) * P_filt).transpose(-1, -2)  # P A^T S^-1
        m = m_filt + (G @ (m - m_pred).unsqueeze(-1)).squeeze(-1)
        P = P_filt + G @ (P - P_pred) @ G.transpose(-1, -2)
        P = 0.5 * (P + P.transpose(-1, -2))
        locs.append(m)
        covs.append(P)
    return torch.stack(locs[::-1], 1), torch.stack(covs[::-1], 1)


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

    Uses :func:`gaussian_hmm` when every entry is observed and :func:`kalman_log_likelihood`
    otherwise; ``times`` may be irregular and per sequence.

    Raises:
        ValueError: for a model that is not linear-Gaussian, or bad inputs.
    """
    params = linear_gaussian_parameters(model)
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    if mask is None or bool(mask.all()):
        return gaussian_hmm(model, times, B).log_prob(x)
    return kalman_log_likelihood(model, x, times, mask)
