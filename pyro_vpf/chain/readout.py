r"""Filtering a chain through a noiseless readout: the exact density of a projected path.

For the chain :math:`s_k = A_k s_{k-1} + b_k + w_k`, :math:`w_k \sim \mathcal N(0, Q_k)`,
started from :math:`s_0 \sim \mathcal N(m_0, P_0)`, and the readout :math:`y_k = H s_k`
(no noise), the density of :math:`y_{1:K}` is the prediction-error decomposition

.. math::

    \log p(y_{1:K}) = \sum_{k=1}^K \log \mathcal N\big(y_k - H(A_k m_{k-1} + b_k);\;
        0,\; V_k\big), \qquad V_k = H P^-_k H^\top, \quad
        P^-_k = A_k P_{k-1} A_k^\top + Q_k,

with the filtered moments :math:`m_k = E[s_k \mid y_{1:k}]`, :math:`P_k = \mathrm{Cov}[s_k
\mid y_{1:k}]`. The work splits in two passes:

1. **Covariances** (:func:`filtered_covariances`): :math:`P_k`, :math:`V_k` and the gains
   :math:`G_k = P^-_k H^\top V_k^{-1}` do not depend on the values, so they keep the batch of
   the matrices (one per coordinate for paths drawn at shared times, not one per path).
   Sequentially: predict, then :math:`P_k = (I - G_k H) P^-_k (I - G_k H)^\top` (Joseph's
   form, symmetric and PSD by construction). In parallel: the covariance part
   :math:`(A, C, J)` of the parallel Kalman filter's elements
   (:func:`~pyro_vpf.chain.elements.gaussian_combine`) scanned by the library's one scan.
2. **Means**: :math:`m_k = (I - G_k H)(A_k m_{k-1} + b_k) + G_k y_k`, an affine recurrence
   whose matrices every path shares (:func:`~pyro_vpf.ops.matrix_linear_recurrence`), then
   every innovation at once.

Neither pass loops over time in the parallel execution; the sequential execution loops over
the covariance pass only, on the matrices' own (small) batch.
"""

import math

import torch

from pyro_vpf.chain.associative import choose_execution, parallel_scan
from pyro_vpf.chain.elements import gaussian_covariance_combine

__all__ = ["RESOLUTION", "check_resolution", "filtered_covariances", "innovation_log_density",
           "readout_gain"]


def readout_gain(cov, readout):
    r"""The gain of a noiseless readout of :math:`\mathcal N(\cdot, P)`:
    ``(V, G, projection)`` with :math:`V = H P H^\top`, :math:`G = P H^\top V^{-1}` and
    :math:`I - G H`, for ``cov`` ``(..., S, S)`` and ``readout`` ``(..., R, S)``."""
    HP = readout @ cov
    V = HP @ readout.transpose(-1, -2)
    V = 0.5 * (V + V.transpose(-1, -2))
    if V.shape[-1] == 1:  # one readout: a division, not a solve
        gain = HP.transpose(-1, -2) / V
    else:
        gain = torch.linalg.solve(V, HP).transpose(-1, -2)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return V, gain, eye - gain @ readout


def _updated(predicted, readout):
    """The covariance after a noiseless readout, in Joseph's form."""
    _, _, projection = readout_gain(predicted, readout)
    return projection @ predicted @ projection.transpose(-1, -2)


def filtered_covariances(cov0, transition, noise_cov, readout, execution="auto"):
    r"""The value-independent pass of the readout filter (module docstring).

    It runs in the arguments' precision, and again in float64 when that lost the innovation
    variances: :math:`V_k = H P^-_k H^\top` is computed from entries of the size of
    :math:`P^-_k`, so a smooth process at a fine grid (a readout variance of order
    :math:`\Delta^{2p+1}` under state variances of order one) leaves it with no correct
    digit in float32, even negative. The pass is redone in float64 (and its results rounded
    back) where any :math:`V_k` is below :math:`10^3\,\epsilon` times the largest diagonal
    entry of :math:`H P^-_k H^\top`'s terms, i.e. has fewer than about three correct digits;
    this pass has the matrices' own batch only (no path dimension), so the float64 work is
    small. On a device without float64 the pass stays in its precision and
    :func:`check_resolution` refuses what it cannot hold.

    Args:
        cov0 (torch.Tensor): :math:`P_0`, ``(..., S, S)``, the start's covariance (already
            conditioned on :math:`y_0` where the start is).
        transition (torch.Tensor): :math:`A_k`, ``(..., K, S, S)``.
        noise_cov (torch.Tensor): :math:`Q_k`, ``(..., K, S, S)``.
        readout (torch.Tensor): :math:`H`, ``(..., R, S)``, with :math:`H Q_k H^\top \succ 0`.
        execution (str): ``"auto"``, ``"parallel"`` or ``"sequential"``
            (:func:`~pyro_vpf.chain.associative.choose_execution`).

    Returns:
        tuple: ``(P, V, G, projection)``: the filtered covariances :math:`P_{0:K}`
        ``(..., K+1, S, S)``, and per step :math:`k = 1..K` the innovation covariances
        :math:`V_k` ``(..., K, R, R)``, gains :math:`G_k` ``(..., K, S, R)`` and
        :math:`I - G_k H` ``(..., K, S, S)``; the batch is that of the arguments (no path
        dimension).
    """
    *out, predicted = _covariance_pass(cov0, transition, noise_cov, readout, execution)
    dtype = transition.dtype
    if dtype == torch.float64 or transition.device.type == "mps":
        return tuple(out)
    with torch.no_grad():
        H = readout.unsqueeze(-3).abs()
        terms = (H @ predicted.abs() @ H.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1)
        lost = bool((out[1].diagonal(dim1=-2, dim2=-1)
                     <= 1e3 * torch.finfo(dtype).eps * terms).any())
    if not lost:
        return tuple(out)
    wide = _covariance_pass(*(t.double() for t in (cov0, transition, noise_cov, readout)),
                            execution)
    return tuple(t.to(dtype) for t in wide[:-1])


def _covariance_pass(cov0, transition, noise_cov, readout, execution):
    """:func:`filtered_covariances` in the arguments' precision, with the predicted
    covariances :math:`P^-_k` last."""
    K, S = transition.shape[-3], transition.shape[-1]
    batch = torch.broadcast_shapes(cov0.shape[:-2], transition.shape[:-3],
                                   noise_cov.shape[:-3], readout.shape[:-2])
    work = batch.numel() * S ** 3
    chosen = choose_execution(K, S, transition.device, execution, work=work)
    H = readout.unsqueeze(-3)  # (..., 1, R, S)
    if chosen == "sequential":
        P, covs = cov0, [cov0.expand(batch + (S, S))]
        for A, Q in zip(transition.unbind(-3), noise_cov.unbind(-3), strict=True):
            P = _updated(A @ P @ A.transpose(-1, -2) + Q, readout)
            covs.append(P.expand(batch + (S, S)))
        covs = torch.stack(covs, -3)
    else:
        # element k: s_k | s_{k-1}, y_k (A, C) and what y_k says about s_{k-1} (J); the first
        # starts from P_0 itself (A = 0, J = 0)
        innovation, _, projection = readout_gain(noise_cov, H)
        A_el = projection @ transition
        C_el = projection @ noise_cov @ projection.transpose(-1, -2)
        HA = H @ transition
        J = HA.transpose(-1, -2) @ torch.linalg.solve(innovation, HA)
        first = _updated(transition[..., :1, :, :] @ cov0.unsqueeze(-3) @ transition[
            ..., :1, :, :].transpose(-1, -2) + noise_cov[..., :1, :, :], H)
        zeros = torch.zeros_like(first)
        elements = [torch.cat([zeros.expand(batch + (1, S, S)),
                               A_el.expand(batch + (K, S, S))[..., 1:, :, :]], -3),
                    torch.cat([first.expand(batch + (1, S, S)),
                               C_el.expand(batch + (K, S, S))[..., 1:, :, :]], -3),
                    torch.cat([zeros.expand(batch + (1, S, S)),
                               J.expand(batch + (K, S, S))[..., 1:, :, :]], -3)]
        _, covs, _ = (t.movedim(0, -3) for t in parallel_scan(
            gaussian_covariance_combine, [t.movedim(-3, 0) for t in elements]))
        covs = torch.cat([cov0.unsqueeze(-3).expand(batch + (1, S, S)), covs], -3)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    predicted = transition @ covs[..., :-1, :, :] @ transition.transpose(-1, -2) + noise_cov
    V, gain, projection = readout_gain(predicted, H)
    return covs, V, gain, projection, predicted


def innovation_log_density(error, innovation_cov):
    r""":math:`\sum_k \log \mathcal N(e_k; 0, V_k)` for errors ``(..., K, R)`` and covariances
    ``(..., K, R, R)`` (broadcast), summed over ``K``."""
    R = error.shape[-1]
    if R == 1:
        variance = innovation_cov[..., 0, 0]
        return (-0.5 * (error[..., 0].square() / variance + variance.log()
                        + math.log(2 * math.pi))).sum(-1)
    chol = torch.linalg.cholesky(innovation_cov)
    white = torch.linalg.solve_triangular(chol, error.unsqueeze(-1), upper=False).squeeze(-1)
    return (-0.5 * white.square().sum(-1) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            - 0.5 * R * math.log(2 * math.pi)).sum(-1)


#: how many times the rounding of the values the smallest innovation standard deviation must
#: exceed. Measured in float32 against float64 on the same rounded path, relative error of
#: the log-density per point: 5e-6 at a ratio of 86 (Matern 3/2, 10 001 points on [0, 1]),
#: 1e-4 at 15.6 (Matern 5/2, 1 001 points), 4e-3 at 3.7 (Matern 3/2, 100 001 points)
RESOLUTION = 16


def check_resolution(innovation_cov, magnitude, dtype, name="value"):
    r"""Refuse a path whose innovations are below the rounding of its values.

    A path held in ``dtype`` carries each value to a relative precision :math:`\epsilon`;
    the density of a smooth path at a fine grid depends on innovations (what the past does
    not predict) whose standard deviation :math:`\sqrt{V_k}` can be far smaller than the
    values themselves (of order :math:`\Delta^{p+1/2}` for a Matérn :math:`p + 1/2` path).
    Where :math:`\sqrt{V_k} <` :data:`RESOLUTION` :math:`\cdot\,\epsilon\,(1 + m)` (``m``
    the largest absolute value), rounding decides the density: a ``ValueError`` says so
    rather than a wrong number. float64 is never refused.

    Args:
        innovation_cov (torch.Tensor): :math:`V_k`, ``(..., K, R, R)``.
        magnitude (torch.Tensor or float): the values' largest absolute value.
        dtype (torch.dtype): the values' dtype.
        name (str): what the values are, for the message.
    """
    if dtype == torch.float64:
        return
    eps = torch.finfo(dtype).eps
    with torch.no_grad():
        smallest = float(innovation_cov.diagonal(dim1=-2, dim2=-1).min().clamp_min(0).sqrt())
        rounding = eps * (1.0 + float(magnitude))
    if smallest < RESOLUTION * rounding:
        raise ValueError(
            f"{name}: {dtype} cannot hold this path's density: the smallest innovation "
            f"standard deviation is {smallest:.3g}, below {RESOLUTION} times the rounding of "
            f"the values ({rounding:.3g}); the grid is too fine for a path this smooth in "
            f"{dtype}. Use float64 (e.g. model.double() and double data) or a coarser grid")

