"""Scalar summaries of a fit."""

import torch
from pyro.infer import Trace_ELBO

from pyro_vpf.times import select_times
from pyro_vpf.validation import check_integer, check_program_data, inputs_checked

__all__ = ["elbo_per_point"]


def elbo_per_point(model, guide, x, times=None, mask=None, num_particles=16, batch_size=None,
                   elbo=None):
    r"""The ELBO per observed time point (nats), averaged over ``num_particles`` draws.

    :math:`\frac{1}{N_{obs}} E_q[\log p(x, z) - \log q(z \mid x)]`, with Pyro's
    ``Trace_ELBO`` (vectorised particles), evaluated in chunks of ``batch_size`` sequences
    without gradients. ``elbo`` replaces ``Trace_ELBO`` (e.g. a
    :class:`~pyro_vpf.infer.SDEMatchingELBO` for a latent SDE, with its own particles).
    """
    num_particles = check_integer("num_particles", num_particles, 1)
    if batch_size is not None:
        batch_size = check_integer("batch_size", batch_size, 1)
    args, B, points = check_program_data(model, x, times, mask)
    if not bool(points.sum() > 0):
        raise ValueError("mask marks no entry observed: the ELBO per observed point is "
                         "undefined")
    step = batch_size or B
    if elbo is None:
        elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True,
                          max_plate_nesting=1)
    total = 0.0
    with torch.no_grad(), inputs_checked():
        for i in range(0, B, step):
            rows = slice(i, i + step)
            if len(args) == 1:  # a static model's data points
                chunk = (args[0][rows],)
            else:
                x, times, mask = args
                chunk = (x[rows], select_times(times, rows), None if mask is None else mask[rows])
            total -= elbo.loss(model, guide, *chunk)
    return total / float(points.sum())
