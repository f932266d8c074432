r"""Per-sequence ELBO and importance-weighted log-likelihood for any model/guide pair."""

import math
from typing import NamedTuple

import pyro
import torch
from pyro import poutine

from pyro_vpf.validation import check_integer, check_program_data, inputs_checked

__all__ = ["SequenceScores", "elbo", "importance_log_likelihood", "log_weights"]


class SequenceScores(NamedTuple):
    """A score per sequence (nats) and the same divided by its observed time points."""

    per_sequence: torch.Tensor
    per_point: torch.Tensor


@torch.no_grad()
def log_weights(model, guide, x, times=None, mask=None, num_particles=100):
    r"""Importance log-weights :math:`\log p(x, z_i) - \log q(z_i \mid x)`, shape ``(P, B)``.

    The guide draws ``num_particles`` latents per sequence (or data point, for a static model
    called without ``times``) at once, in an outer plate at dim -2, and the model is replayed
    on them; every site's log-density is kept per sequence.
    """
    num_particles = check_integer("num_particles", num_particles, 1)
    args, B, _ = check_program_data(model, x, times, mask)
    return _log_weights(model, guide, args, B, num_particles)


@torch.no_grad()
def _log_weights(model, guide, args, B, num_particles):
    """:func:`log_weights` for checked program arguments ``args`` of ``B`` sequences."""
    with pyro.plate("particles", num_particles, dim=-2), inputs_checked():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    log_p = _expand(model_trace, num_particles, B)
    log_q = _expand(guide_trace, num_particles, B)
    return log_p - log_q


def _expand(trace, P, B):
    """Sum of every sample site's log-density, ``(P, B)`` (plates' own sites add zero)."""
    total = None
    for site in trace.nodes.values():
        if site["type"] == "sample":
            value = site["log_prob"].expand(P, B)
            total = value if total is None else total + value
    return total


def elbo(model, guide, x, times=None, mask=None, num_particles=100, chunk_size=100):
    r"""ELBO per sequence, :math:`E_q[\log p(x, z) - \log q(z \mid x)]`, by Monte Carlo.

    Returns:
        SequenceScores: ``(B,)`` per sequence and per observed time point (NaN for a
        sequence with no observed point, whose per-point score is undefined).
    """
    chunks = _chunks(num_particles, chunk_size)
    args, B, points = check_program_data(model, x, times, mask)
    total = 0.0
    for n in chunks:
        total = total + _log_weights(model, guide, args, B, n).sum(0)
    per_sequence = total / num_particles
    points = points.to(per_sequence)
    # a sequence with no observed point has no per-point score: NaN, not -inf
    per_point = torch.where(points > 0, per_sequence / points.clamp_min(1),
                            torch.full_like(per_sequence, math.nan))
    return SequenceScores(per_sequence, per_point)


def importance_log_likelihood(model, guide, x, times=None, mask=None, num_particles=1000,
                              chunk_size=100):
    r"""Importance-weighted estimate of :math:`\log p(x)` per sequence, ``(B,)``.

    .. math::

        \log \frac{1}{N} \sum_{i=1}^N \frac{p(x, z_i)}{q(z_i \mid x)}, \qquad z_i \sim q(z \mid x),

    with the guide as proposal, drawn in chunks of ``chunk_size`` particles. A lower bound in
    expectation, tighter than the ELBO, tending to :math:`\log p(x)` as :math:`N` grows.
    """
    chunks = _chunks(num_particles, chunk_size)
    args, B, _ = check_program_data(model, x, times, mask)
    pieces = [_log_weights(model, guide, args, B, n) for n in chunks]
    return torch.logsumexp(torch.cat(pieces, 0), dim=0) - math.log(num_particles)


def _chunks(total, size):
    total = check_integer("num_particles", total, 1)
    size = check_integer("chunk_size", size, 1)
    full, rest = divmod(total, size)
    return [size] * full + ([rest] if rest else [])
