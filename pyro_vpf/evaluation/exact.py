r"""Exact :math:`\log p(x)`, smoother and predictive marginals of the linear-Gaussian VPF,
parallel in time.

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
(:meth:`JointStateSpace.start <pyro_vpf.processes.JointStateSpace.start>`). The observed
entries of :math:`x_k` are Gaussian potentials on :math:`s_k`
(:func:`~pyro_vpf.distributions.linear_gaussian_potentials`; a missing entry
has zero precision), and the prior chain conditioned on them
(:func:`~pyro_vpf.distributions.gauss_markov_posterior`) is the exact posterior
as a Gauss--Markov chain: its marginals are the smoother's
(:func:`~pyro_vpf.distributions.gauss_markov_marginals`) and, with its mean
path, it gives :math:`\log p(x)`
(:func:`~pyro_vpf.distributions.gauss_markov_evidence`). Every step is a
parallel scan or batched over time, for any base (multi-dimensional states, noiseless
blocks), masks, and irregular or per-sequence times. Pyro's
:class:`~pyro.distributions.GaussianHMM` (:func:`gaussian_hmm`) gives the same likelihood
where every entry is observed and the transition noise is positive definite.
"""

import torch
from pyro.distributions import GaussianHMM, MultivariateNormal, Normal

from pyro_vpf.distributions.gauss_markov import gauss_markov_marginals, gauss_markov_posterior
from pyro_vpf.distributions.linear_gaussian import (
    conditioned_chain,
    exact_log_evidence,
    linear_gaussian_parameters,
    stacked_state_space,
)
from pyro_vpf.validation import check_integer, check_times

__all__ = ["exact_log_likelihood", "gaussian_hmm", "kalman_log_likelihood",
           "kalman_observation_marginals", "kalman_smoother",
           "linear_gaussian_parameters"]


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
    num_sequences = check_integer("num_sequences", num_sequences, 1)
    check_times(times, params["init_loc"])
    if times.shape[-1] < 2:
        raise ValueError(f"times must hold at least two points, got {tuple(times.shape)}")
    if times.dim() == 2 and times.shape[0] != num_sequences:
        raise ValueError(f"times has {times.shape[0]} rows but num_sequences={num_sequences}")
    A, Q, m0, P0, _, weight, bias = stacked_state_space(params, times)
    batch = (num_sequences,)
    A, Q = A.expand(batch + A.shape[-3:]), Q.expand(batch + Q.shape[-3:])
    N = A.shape[-1]
    # step 0 draws s_0 from its law
    matrix = torch.cat([torch.zeros_like(A[..., :1, :, :]), A], dim=-3)
    loc = torch.cat([m0.expand(batch + (1, N)), A.new_zeros(batch + A.shape[-3:-1])], dim=-2)
    cov = torch.cat([P0.expand(batch + (1, N, N)), Q], dim=-3)
    eye = torch.eye(N, dtype=matrix.dtype, device=matrix.device)
    return GaussianHMM(
        MultivariateNormal(loc.new_zeros(N), eye),  # s_{-1}: multiplied by zero, irrelevant
        matrix.transpose(-1, -2),  # rows "old", columns "new"
        MultivariateNormal(loc, cov),
        weight.T,
        MultivariateNormal(bias, torch.diag(params["noise"].square())),
        duration=times.shape[-1],
    )


def kalman_log_likelihood(model, x, times, mask=None):
    r"""Exact :math:`\log p(x_{0:K})` per sequence, masks and irregular times allowed.

    The observations are Gaussian potentials on the stacked state
    (:func:`~pyro_vpf.distributions.linear_gaussian_potentials`, with
    :math:`W = C H` and :math:`C\mu + d` as the offset; a missing channel has zero precision
    and contributes nothing), and the prior chain conditioned on them gives the posterior
    mean path :math:`\hat s` and, in the chain's noise coordinates, the rest of

    .. math::

        \log p(x) = \log p(x \mid \hat s) + \log p(\hat s) - \log p(\hat s \mid x)
        = \sum_{k=0}^K \sum_{d\ \text{observed}} \log \mathcal N\big(x_{k,d};\;
            (C(\mu + H \hat s_k) + d)_d,\; r_d^2\big)
          - \tfrac12 \sum_{k=0}^K \big(\lVert \hat\nu_k \rVert^2 + \log\det G_k\big),

    an identity that holds at any path and is evaluated at the posterior mean
    (:func:`~pyro_vpf.distributions.gauss_markov_evidence`, which defines
    :math:`\hat\nu_k` and :math:`G_k \succeq I`; the noise coordinates keep it finite for a
    base with a noiseless block, whose state path has no density). No loop over time: the
    backward information is a parallel suffix scan and the mean path a parallel linear
    recurrence; the likelihood term is in residual form, so it loses no digits to
    cancellation.

    Returns:
        torch.Tensor: ``(B,)``.
    """
    return exact_log_evidence(model, x, times, mask)


def kalman_smoother(model, x, times, mask=None):
    r"""Exact posterior marginals :math:`p(z_k \mid x_{0:K})` of a linear-Gaussian VPF.

    The prior chain of the stacked state conditioned on the observations' potentials (as in
    :func:`kalman_log_likelihood`) is again a Gauss--Markov chain,
    :math:`s_k \mid s_{k-1}, x \sim \mathcal N(A_k s_{k-1} + b_k, L_k L_k^\top)`
    (:func:`~pyro_vpf.distributions.gauss_markov_posterior`), whose marginals
    follow the linear recurrences

    .. math::

        m_{k|K} = A_k m_{k-1|K} + b_k, \qquad
        P_{k|K} = A_k P_{k-1|K} A_k^\top + L_k L_k^\top

    (:func:`~pyro_vpf.distributions.gauss_markov_marginals`, parallel
    scans), read out as :math:`z_k \mid x \sim \mathcal N(\mu + H m_{k|K},
    H P_{k|K} H^\top)`: the Rauch--Tung--Striebel marginals without a loop over time.
    Masks, irregular and per-sequence times as for :func:`kalman_log_likelihood`. The
    reference posterior for the guides (and the exact interpolator of the linear-Gaussian
    model).

    Returns:
        tuple: ``(loc, cov)``, ``(B, K+1, Dz)`` and ``(B, K+1, Dz, Dz)``.
    """
    chain, _, _, _, (H, mean) = conditioned_chain(model, x, times, mask)
    m0, L0, A, b, L = gauss_markov_posterior(*chain)
    loc, cov = gauss_markov_marginals(m0, L0 @ L0.transpose(-1, -2), A, b, L)
    cov = H @ cov @ H.T
    return loc @ H.T + mean, 0.5 * (cov + cov.transpose(-1, -2))


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

    :func:`kalman_log_likelihood`: any base, masks, irregular and per-sequence ``times``.

    Raises:
        ValueError: for a model that is not linear-Gaussian, or bad inputs.
    """
    return kalman_log_likelihood(model, x, times, mask)
