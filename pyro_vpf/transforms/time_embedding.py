r"""Learned Fourier features of time."""

import math

import torch
from torch import nn

__all__ = ["FourierTimeEmbedding"]


class FourierTimeEmbedding(nn.Module):
    r"""Learned Fourier features :math:`\phi(t) = [\sin(\omega\tau + b), \cos(\omega\tau + b)]`.

    Time is first normalised, :math:`\tau = t / \text{time\_scale}`, so that the same
    initialisation serves horizons from milliseconds to years; the frequencies
    :math:`\omega` (initialised log-spaced from a quarter of a cycle to 16 cycles per
    ``time_scale``) and phases :math:`b` are learned.

    Known periods (a year in weekly data, a day in hourly data) can be given exactly:
    ``periods`` :math:`(p_1, \dots)` append the fixed features
    :math:`[\sin(2\pi t / p_j), \cos(2\pi t / p_j)]`, in the data's own time units, which
    extrapolate without drift beyond the training times (a learned frequency a few percent
    off would be out of phase after a few dozen cycles).

    With ``embed_dim=0`` and known periods the embedding is exactly periodic: a flow conditioned
    on it is defined the same way at any time, however far beyond the training times (what a
    long forecast needs; learned features take phases never seen in training there).

    Args:
        embed_dim (int): number of learned features, even (0 allowed with ``periods``).
        time_scale (float): the time unit of the data (e.g. the training horizon).
        learnable (bool): learn frequencies and phases (default) or keep them fixed.
        periods (tuple of float): known periods, each > 0.

    Shapes: ``times (...)`` -> ``(..., output_dim)``, ``output_dim = embed_dim + 2 len(periods)``.
    """

    def __init__(self, embed_dim=16, time_scale=1.0, learnable=True, periods=()):
        super().__init__()
        periods = tuple(float(p) for p in periods)
        if not all(p > 0 for p in periods):
            raise ValueError(f"periods must all be positive, got {periods}")
        if embed_dim < (0 if periods else 2) or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even integer >= 2 (>= 0 with known periods), "
                             f"got {embed_dim}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.embed_dim = embed_dim
        self.output_dim = embed_dim + 2 * len(periods)
        self.time_scale = float(time_scale)
        self.register_buffer("periods", torch.tensor(periods))
        n = embed_dim // 2
        cycles = torch.logspace(math.log10(0.25), math.log10(16.0), n)
        frequency = 2 * math.pi * cycles
        phase = torch.zeros(n)
        if learnable and n:
            self.frequency = nn.Parameter(frequency)
            self.phase = nn.Parameter(phase)
        else:
            self.register_buffer("frequency", frequency)
            self.register_buffer("phase", phase)

    def forward(self, times):
        if not isinstance(times, torch.Tensor) or times.dtype != self.frequency.dtype:
            dtype = times.dtype if isinstance(times, torch.Tensor) else type(times).__name__
            raise ValueError(
                f"times must be a tensor of dtype {self.frequency.dtype} (the module's), "
                f"got {dtype}"
            )
        if times.device != self.frequency.device:
            raise ValueError(
                f"times is on {times.device} but the module is on {self.frequency.device}"
            )
        angle = (times / self.time_scale).unsqueeze(-1) * self.frequency + self.phase
        if self.periods.numel():
            known = times.unsqueeze(-1) * (2 * math.pi / self.periods.to(times.dtype))
            angle = torch.cat([angle, known], dim=-1)
        return torch.cat([angle.sin(), angle.cos()], dim=-1)

    def extra_repr(self):
        periods = f", periods={tuple(self.periods.tolist())}" if self.periods.numel() else ""
        return f"embed_dim={self.embed_dim}, time_scale={self.time_scale}{periods}"
