r"""Superpositions of base processes: structural time-series models."""

import torch
from torch import nn

from pyro_vpf.processes.base import LTIProcess

__all__ = ["Sum"]


def block_diagonal(matrices):
    """Block-diagonal matrix of ``(..., s_i, s_i)`` blocks with broadcastable batches."""
    batch = torch.broadcast_shapes(*(m.shape[:-2] for m in matrices))
    total = sum(m.shape[-1] for m in matrices)
    rows, offset = [], 0
    for m in matrices:
        s = m.shape[-1]
        m = m.expand(batch + m.shape[-2:])
        rows.append(torch.cat([m.new_zeros(batch + (s, offset)), m,
                               m.new_zeros(batch + (s, total - offset - s))], -1))
        offset += s
    return torch.cat(rows, -2)


class Sum(LTIProcess):
    r"""The sum of independent processes: :math:`y = \sum_i H_i s_i`.

    The state is the concatenation of the parts' states, so :math:`F`, :math:`L L^\top`,
    :math:`P_0`, :math:`A(\Delta)` and :math:`Q(\Delta)` are block-diagonal and
    :math:`H = [H_1, H_2, \dots]`; each block keeps its closed form. Trend + cycle + noise in
    one latent coordinate, as in a structural time-series model:

    >>> base = Sum(LocalLinearTrend(), Oscillator(1.0, periodic=True), OU(rate=4.0))

    Args:
        *processes (LTIProcess): the parts (at least two), with broadcastable batch shapes.
    """

    def __init__(self, *processes):
        super().__init__()
        if len(processes) < 2 or not all(isinstance(p, LTIProcess) for p in processes):
            raise ValueError("Sum takes two or more LTIProcess instances, got "
                             f"{[type(p).__name__ for p in processes]}")
        self.parts = nn.ModuleList(processes)
        self.state_dim = sum(p.state_dim for p in processes)
        self.deterministic = all(p.deterministic for p in processes)
        try:
            _ = self.batch_shape
        except RuntimeError as err:
            raise ValueError("the parts' batch shapes do not broadcast: "
                             f"{[tuple(p.batch_shape) for p in processes]}") from err

    @property
    def batch_shape(self):
        return torch.broadcast_shapes(*(p.batch_shape for p in self.parts))

    def expand(self, batch_shape):
        return Sum(*(p.expand(batch_shape) for p in self.parts))

    @property
    def _like(self):
        return self.parts[0]._like

    def _combine(self, method, *args):
        return block_diagonal([getattr(p, method)(*args) for p in self.parts])

    def drift(self):
        return self._combine("drift")

    def diffusion(self):
        return self._combine("diffusion")

    def initial_covariance(self):
        return self._combine("initial_covariance")

    def readout(self):
        parts = [p.readout() for p in self.parts]
        batch = torch.broadcast_shapes(*(h.shape[:-1] for h in parts))
        return torch.cat([h.expand(batch + h.shape[-1:]) for h in parts], -1)

    def transition(self, dt):
        pairs = [p.transition(dt) for p in self.parts]
        return block_diagonal([a for a, _ in pairs]), block_diagonal([q for _, q in pairs])

    def extra_repr(self):
        return ""
