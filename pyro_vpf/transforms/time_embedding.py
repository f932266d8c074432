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

    **Beyond the training times.** Learned features at times never seen in training take
    phases the flow never learned (a forecast through them can explode). By default
    (``extrapolation="clamp"``) the module records the range of times it sees while it
    trains (in training mode with gradients enabled: a loss being optimised), in the buffers
    ``time_min`` and ``time_max``, and evaluates the learned features at
    :math:`\operatorname{clamp}(t, t_{\min}, t_{\max})`: after the training range the flow
    stays the one learned at its end, and the known periods keep their exact phase. Nothing
    is clamped before the first training step. ``extrapolation="none"`` evaluates the
    features at :math:`t` everywhere.

    Args:
        embed_dim (int): number of learned features, even (0 allowed with ``periods``).
        time_scale (float): the time unit of the data (e.g. the training horizon).
        learnable (bool): learn frequencies and phases (default) or keep them fixed.
        periods (tuple of float): known periods, each > 0.
        extrapolation (str): ``"clamp"`` (default) or ``"none"``.

    Shapes: ``times (...)`` -> ``(..., output_dim)``, ``output_dim = embed_dim + 2 len(periods)``.
    """

    def __init__(self, embed_dim=16, time_scale=1.0, learnable=True, periods=(),
                 extrapolation="clamp"):
        super().__init__()
        if extrapolation not in ("clamp", "none"):
            raise ValueError(f"extrapolation must be 'clamp' or 'none', got {extrapolation!r}")
        self.extrapolation = extrapolation
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
        # the training range of times (empty: +inf, -inf), kept in checkpoints
        self.register_buffer("time_min", torch.tensor(math.inf))
        self.register_buffer("time_max", torch.tensor(-math.inf))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, empty in (("time_min", math.inf), ("time_max", -math.inf)):
            if prefix + name not in state_dict:  # written before the range was recorded
                state_dict[prefix + name] = torch.tensor(empty, dtype=self.time_min.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _learned_times(self, times):
        """``times`` as the learned features see them (module docstring)."""
        if self.extrapolation == "none" or not self.embed_dim:
            return times
        if self.training and torch.is_grad_enabled() and times.numel():
            with torch.no_grad():
                self.time_min.copy_(torch.minimum(self.time_min, times.min().to(self.time_min)))
                self.time_max.copy_(torch.maximum(self.time_max, times.max().to(self.time_max)))
        low, high = self.time_min.to(times.dtype), self.time_max.to(times.dtype)
        # no host synchronisation: an empty range (nothing trained yet) leaves times as they are
        return torch.where(low <= high, torch.maximum(torch.minimum(times, high), low), times)

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
        learned = self._learned_times(times)
        angle = (learned / self.time_scale).unsqueeze(-1) * self.frequency + self.phase
        if self.periods.numel():
            known = times.unsqueeze(-1) * (2 * math.pi / self.periods.to(times.dtype))
            angle = torch.cat([angle, known], dim=-1)
        return torch.cat([angle.sin(), angle.cos()], dim=-1)

    def extra_repr(self):
        periods = f", periods={tuple(self.periods.tolist())}" if self.periods.numel() else ""
        return (f"embed_dim={self.embed_dim}, time_scale={self.time_scale}{periods}, "
                f"extrapolation={self.extrapolation!r}")
