r"""The linear-Gaussian VPF as a state-space model: its chain, and its exact evidence.

With an identity latent flow (``num_flow_layers=0``) and ``observation="linear_gaussian"``
the VPF is a linear-Gaussian state-space model in the stacked state :math:`s` of its base
processes (:class:`~pyro_vpf.processes.JointStateSpace`; :math:`s = z - \mu` for the OU
base):

.. math::

    s_0 \sim \mathcal N(m_0', P_0'), \quad
    s_k = A(\Delta_k)\, s_{k-1} + \mathcal N(0, Q(\Delta_k)), \quad
    z_k = \mu + H s_k, \quad
    x_k = C z_k + d + \mathcal N(0, \operatorname{diag} r^2).

This module builds that chain and the Gaussian potentials of the observations, which the
exact posterior (:class:`~pyro_vpf.guides.ExactPosterior`), the exact objective
(:func:`~pyro_vpf.infer.fit_exact`) and the exact evaluation (:mod:`pyro_vpf.evaluation`)
all condition on.
"""

import torch
from pyro.distributions import Normal

from pyro_vpf.distributions.gauss_markov import (
    gauss_markov_evidence,
    linear_gaussian_potentials,
)
from pyro_vpf.processes import JointStateSpace, psd_root
from pyro_vpf.validation import check_sequences

__all__ = ["conditioned_chain", "exact_log_evidence", "linear_gaussian_parameters",
           "noise_root", "stacked_state_space"]


def linear_gaussian_parameters(model):
    r"""The state-space parameters of a linear-Gaussian VPF, as a dict.

    Keys ``init_loc``, ``init_scale``, ``mean`` (:math:`m_0, s_0, \mu`), ``base`` (the
    prior's base process, whatever it is), ``weight``, ``bias``, ``noise`` (:math:`C, d, r`).

    Raises:
        ValueError: if the model has a latent flow or a non-Gaussian likelihood.
    """
    flow = getattr(getattr(model, "prior", None), "flow", None)  # none: e.g. a latent SDE
    if getattr(model, "obs_linear", None) is None or flow is None or len(flow.couplings) != 0:
        raise ValueError(
            "model: the exact likelihood needs a linear-Gaussian VPF: "
            "VPF(..., num_flow_layers=0, observation='linear_gaussian')"
        )
    prior, obs = model.prior, model.obs_linear
    params = {"init_loc": prior.init_loc, "init_scale": prior.init_scale,
              "mean": prior.base_mean, "base": prior.base, "weight": obs.weight,
              "bias": obs.bias, "noise": obs.noise_scale}
    return params


def stacked_state_space(params, times):
    r"""The stacked state-space form (:class:`~pyro_vpf.processes.JointStateSpace`): the
    exact transitions :math:`(A_k, Q_k)` of the steps ``1..K``, ``(..., K, N, N)`` with the
    batch of ``times``; the law :math:`(m_0', P_0')` of :math:`s_0`; the readout :math:`H`
    ``(Dz, N)``; and the observation of the state, :math:`x = C H s + (C\mu + d) +
    \text{noise}`: ``(weight, bias)`` of shapes ``(Dx, N)`` and ``(Dx,)``."""
    space = JointStateSpace(params["base"], params["init_loc"].shape[-1])
    A, Q = space.transition(times.diff(dim=-1))
    m0, P0 = space.start(params["init_loc"] - params["mean"], params["init_scale"])
    H = space.readout()
    weight = params["weight"] @ H
    bias = params["weight"] @ params["mean"] + params["bias"]
    return A, Q, m0, P0, H, weight, bias


def noise_root(cov):
    r"""Square roots :math:`R` (:math:`R R^\top` = ``cov``) of PSD noise covariances, with
    no jitter where none is needed.

    The Cholesky factor of the correlation matrix, rescaled, with a unit pivot in place of
    every zero-variance row (a noiseless block), which then gives an exactly zero row: no
    jitter, which would change the model by :math:`O(100\,\epsilon)` relative, a visible
    bias of the likelihood in single precision. Matrices that still do not factorise
    (several states driven by fewer noises) get :func:`~pyro_vpf.processes.psd_root`'s
    relative jitter.
    """
    finfo = torch.finfo(cov.dtype)
    variance = cov.diagonal(dim1=-2, dim2=-1)
    noisy = variance > finfo.tiny
    scale = torch.where(noisy, variance, 1.0).sqrt()
    corr = cov / (scale.unsqueeze(-1) * scale.unsqueeze(-2)) + torch.diag_embed(
        (~noisy).to(cov.dtype))
    factor, info = torch.linalg.cholesky_ex(corr)
    root = torch.where(noisy, scale, 0.0).unsqueeze(-1) * factor
    failed = info != 0
    if bool(failed.any()):
        root = torch.where(failed[..., None, None], psd_root(cov), root)
    return root


def conditioned_chain(model, x, times, mask):
    r"""The prior chain of the stacked state and the potentials of the observations, as
    :func:`~pyro_vpf.distributions.gauss_markov_posterior` takes them (noise
    roots by :func:`noise_root`), with the validated ``(x, mask)``, the observation ``(weight,
    bias, noise)`` of the state and the readout ``(H, mean)``."""
    params = linear_gaussian_parameters(model)
    x, times, mask, _ = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=params["init_loc"])
    A, Q, m0, P0, H, weight, bias = stacked_state_space(params, times)
    noise = params["noise"]
    precision, information = linear_gaussian_potentials(weight, bias, noise, x, mask)
    chain = (m0, noise_root(P0), A, A.new_zeros(A.shape[:-1]), noise_root(Q), precision,
             information)
    return chain, x, mask, (weight, bias, noise), (H, params["mean"])


def exact_log_evidence(model, x, times, mask=None):
    r"""Exact :math:`\log p(x_{0:K})` per sequence ``(B,)`` of a linear-Gaussian VPF (checked
    inputs; :func:`~pyro_vpf.evaluation.kalman_log_likelihood` documents the identity it
    evaluates): the potentials' log-density at the posterior mean path plus the noise
    penalty of :func:`~pyro_vpf.distributions.gauss_markov_evidence`."""
    chain, x, mask, (weight, bias, noise), _ = conditioned_chain(model, x, times, mask)
    loc, log_ratio = gauss_markov_evidence(*chain)
    log_lik = Normal(loc @ weight.T + bias, noise).log_prob(x)
    if mask is not None:
        log_lik = torch.where(mask, log_lik, 0.0)
    return log_lik.sum((-1, -2)) + log_ratio
