"""Scalar summaries of a fit."""

import torch
from pyro.infer import Trace_ELBO

__all__ = ["elbo_per_point"]


def elbo_per_point(model, guide, x, times, mask=None, num_particles=16, batch_size=None,
                   elbo=None):
    r"""The ELBO per observed time point (nats), averaged over ``num_particles`` draws.

    :math:`\frac{1}{N_{obs}} E_q[\log p(x, z) - \log q(z \mid x)]`, with Pyro's
    ``Trace_ELBO`` (vectorised particles), evaluated in chunks of ``batch_size`` sequences
    without gradients. ``elbo`` replaces ``Trace_ELBO`` (e.g. a
    :class:`~pyro_vpf.infer.SDEMatchingELBO` for a latent SDE, with its own particles).
    """
    B = x.shape[0]
    step = batch_size or B
    if elbo is None:
        elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True,
                          max_plate_nesting=1)
    total = 0.0
    with torch.no_grad():
        for i in range(0, B, step):
            rows = slice(i, i + step)
            t = times[rows] if times.dim() == 2 else times
            m = None if mask is None else mask[rows]
            total -= elbo.loss(model, guide, x[rows], t, m)
    points = B * x.shape[1] if mask is None else int(
        (mask if mask.dim() == 2 else mask.all(-1)).sum())
    return total / points
