r"""A Gauss--Markov path with full (or diagonal) transition and noise matrices."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_vpf.ops import matrix_linear_recurrence

__all__ = ["GaussMarkovPath", "gauss_markov_marginals"]


class GaussMarkovPath(TorchDistribution):
    r"""Gauss--Markov path :math:`z_{1:K}` given :math:`z_0`.

    :math:`z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k` with
    :math:`\varepsilon_k \sim \mathcal N(0, I)` and :math:`L_k` lower-triangular with a
    positive diagonal, so

    .. math::

        \log p(z_{1:K} \mid z_0) = \sum_{k=1}^K
            \log \mathcal N\big(z_k;\; A_k z_{k-1} + b_k,\; L_k L_k^\top\big),

    evaluated for all :math:`k` at once. :meth:`rsample` runs the recurrence as a parallel
    scan (:func:`~pyro_vpf.ops.matrix_linear_recurrence`): no loop over time. The family
    holds the exact posterior of a linear-Gaussian state-space model given its observations
    (a Markov chain run backwards-conditioned: each :math:`z_k \mid z_{k-1}, x` is Gaussian
    with a mean affine in :math:`z_{k-1}`).

    Args:
        z0 (torch.Tensor): ``(..., D)``.
        transition (torch.Tensor): :math:`A_k`, ``(..., K, D, D)``.
        shift (torch.Tensor): :math:`b_k`, ``(..., K, D)``.
        scale_tril (torch.Tensor): :math:`L_k`, ``(..., K, D, D)`` lower-triangular with a
            positive diagonal.

    ``event_shape == (K, D)``; the batch shape is the broadcast of the arguments' batches.
    """

    arg_constraints = {
        "z0": constraints.independent(constraints.real, 1),
        "transition": constraints.independent(constraints.real, 3),
        "shift": constraints.independent(constraints.real, 2),
        "scale_tril": constraints.independent(constraints.lower_cholesky, 1),
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, z0, transition, shift, scale_tril, validate_args=None):
        if shift.dim() < 2 or z0.shape[-1:] != shift.shape[-1:]:
            raise ValueError(f"shift must be (..., K, D) with D = z0's {z0.shape[-1:]}, "
                             f"got {tuple(shift.shape)}")
        K, D = shift.shape[-2:]
        for name, value in (("transition", transition), ("scale_tril", scale_tril)):
            if value.dim() < 3 or value.shape[-3:] != (K, D, D):
                raise ValueError(f"{name} must be (..., {K}, {D}, {D}), got {tuple(value.shape)}")
        try:
            batch_shape = torch.broadcast_shapes(z0.shape[:-1], transition.shape[:-3],
                                                 shift.shape[:-2], scale_tril.shape[:-3])
        except RuntimeError as err:
            raise ValueError("batch dimensions of z0, transition, shift, scale_tril do not "
                             "broadcast") from err
        self.z0, self.transition, self.shift, self.scale_tril = z0, transition, shift, scale_tril
        super().__init__(batch_shape, torch.Size((K, D)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GaussMarkovPath, _instance)
        batch_shape = torch.Size(batch_shape)
        K, D = self.event_shape
        new.z0 = self.z0.expand(batch_shape + (D,))
        new.transition = self.transition.expand(batch_shape + (K, D, D))
        new.shift = self.shift.expand(batch_shape + (K, D))
        new.scale_tril = self.scale_tril.expand(batch_shape + (K, D, D))
        super(GaussMarkovPath, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.shift.dtype, device=self.shift.device)
        noise = (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        increments = self.shift + noise
        start = (self.transition[..., 0, :, :] @ self.z0.unsqueeze(-1)).squeeze(-1)
        increments = torch.cat([increments[..., :1, :] + start.unsqueeze(-2),
                                increments[..., 1:, :]], dim=-2)
        return matrix_linear_recurrence(self.transition, increments, dim=-2)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z0 = self.z0.unsqueeze(-2).expand(value.shape[:-2] + (1, value.shape[-1]))
        previous = torch.cat([z0, value[..., :-1, :]], dim=-2)
        predicted = (self.transition @ previous.unsqueeze(-1)).squeeze(-1) + self.shift
        residual = torch.linalg.solve_triangular(
            self.scale_tril, (value - predicted).unsqueeze(-1), upper=False
        ).squeeze(-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        D = value.shape[-1]
        per_step = -0.5 * residual.square().sum(-1) - log_det - 0.5 * D * math.log(2 * math.pi)
        return per_step.sum(-1)


def gauss_markov_marginals(loc0, cov0, transition, shift, scale_tril):
    r"""Marginal means and covariances of a Gauss--Markov path with a Gaussian start.

    For :math:`z_0 \sim \mathcal N(\mu_0, P_0)` and
    :math:`z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k`,

    .. math::

        \mu_k = A_k \mu_{k-1} + b_k, \qquad
        P_k = A_k P_{k-1} A_k^\top + L_k L_k^\top,

    both linear recurrences, evaluated by the parallel scan
    (:func:`~pyro_vpf.ops.matrix_linear_recurrence`); the covariance one acts on
    :math:`\mathrm{vec}(P_k)` through :math:`A_k \otimes A_k` (:math:`D^2 \times D^2`
    blocks, fine for the latent sizes of the collection).

    Args:
        loc0: ``(..., D)``; cov0: ``(..., D, D)``; transition, shift, scale_tril: as for
            :class:`GaussMarkovPath`.

    Returns:
        tuple: ``(loc, cov)`` of :math:`z_{0:K}`, ``(..., K+1, D)`` and ``(..., K+1, D, D)``.
    """
    K, D = shift.shape[-2:]
    start = (transition[..., :1, :, :] @ loc0.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)
    loc = matrix_linear_recurrence(
        transition, torch.cat([shift[..., :1, :] + start, shift[..., 1:, :]], -2), dim=-2)
    kron = torch.einsum("...ij,...kl->...ikjl", transition, transition).reshape(
        transition.shape[:-2] + (D * D, D * D))
    noise = (scale_tril @ scale_tril.transpose(-1, -2)).flatten(-2)
    start = (kron[..., :1, :, :] @ cov0.flatten(-2).unsqueeze(-2).unsqueeze(-1)).squeeze(-1)
    cov = matrix_linear_recurrence(
        kron, torch.cat([noise[..., :1, :] + start, noise[..., 1:, :]], -2), dim=-2)
    cov = cov.unflatten(-1, (D, D))
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    batch = loc.shape[:-2]
    loc0 = loc0.expand(batch + (D,))
    cov0 = cov0.expand(batch + (D, D))
    return (torch.cat([loc0.unsqueeze(-2), loc], -2), torch.cat([cov0.unsqueeze(-3), cov], -3))
