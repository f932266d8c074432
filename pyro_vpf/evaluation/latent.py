r"""Diagnostics of a static model's latent space: active units (posterior collapse)."""

import math
import numbers
from typing import NamedTuple

import torch

from pyro_vpf.validation import check_integer

__all__ = ["ActiveUnits", "active_units", "posterior_mean"]


class ActiveUnits(NamedTuple):
    """``count`` active dimensions of ``len(variance)``; ``variance`` ``(Dz,)`` per dimension."""

    count: int
    variance: torch.Tensor


@torch.no_grad()
def posterior_mean(guide, x, num_samples=256):
    r""":math:`E_q[z \mid x]` ``(N, Dz)``: exact when the posterior has a closed-form mean
    (the mean-field Gaussian), else the average of ``num_samples`` draws."""
    num_samples = check_integer("num_samples", num_samples, 1)
    q = guide.posterior(x)
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((num_samples,)).mean(0)


def active_units(guide, x, threshold=1e-2, num_samples=256):
    r"""Number of latent dimensions the posterior uses.

    Dimension :math:`d` is active when its posterior mean varies across the data,

    .. math::

        A_d = \operatorname{Var}_{x}\big(E_{q}[z_d \mid x]\big) > \delta ,

    with :math:`\delta` = ``threshold`` (0.01, the usual choice; Burda et al., 2016). A
    collapsed dimension has :math:`q(z_d \mid x) \approx p(z_d)` for every :math:`x`, so its
    mean does not move.

    Args:
        guide: a static-model guide with ``posterior(x)``.
        x (torch.Tensor): ``(N, D)`` data, ``N >= 2``.
        threshold (float): :math:`\delta`.
        num_samples (int): draws per point when the mean has no closed form.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
        raise ValueError("x must be a tensor of shape (N, D) with N >= 2")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
            math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    variance = posterior_mean(guide, x, num_samples).var(0)
    return ActiveUnits(int((variance > threshold).sum()), variance)
