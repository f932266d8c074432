r"""One long series into training windows, a history and a held-out future (forecasting)."""

import math
import numbers
from typing import NamedTuple

import torch

from pyro_vpf.data.sequences import SequenceData, channel_statistics
from pyro_vpf.validation import check_integer

__all__ = ["SeriesSplit", "split_series"]


class SeriesSplit(NamedTuple):
    """A long series split by time (see :func:`split_series`).

    Attributes:
        train (SequenceData): ``(N, window, Dx)`` windows of the history, times
            ``(N, window)``.
        history (SequenceData): the whole history as one sequence ``(1, T_h, Dx)``, times
            ``(T_h,)``.
        test (SequenceData): the held-out end as one sequence ``(1, T_test, Dx)``, times
            ``(T_test,)``.
        loc (torch.Tensor or None): ``(Dx,)`` mean of the observed history per channel.
        scale (torch.Tensor or None): ``(Dx,)`` its standard deviation per channel.
    """

    train: SequenceData
    history: SequenceData
    test: SequenceData
    loc: torch.Tensor | None
    scale: torch.Tensor | None


def split_series(times, values, *, holdout, window, stride=None, standardise=True, dtype=None,
                 device=None):
    r"""Split one long series into standardised training windows, its history and the
    held-out final stretch, for forecasting.

    **Split by time**: the points with :math:`t > t_{last} - h` (``holdout`` :math:`h`, in
    the series' time units) form ``test``; the earlier ones form ``history``.
    **Missing values** are NaN in ``values``: they are masked (``False``) and hold the
    placeholder 0, never interpolated or dropped. **Standardisation**: per channel,
    :math:`x = (v - \mu) / \sigma` with the mean and sample standard deviation of the
    *observed history* only (the test part never enters them); ``loc``/``scale`` are kept in
    every :class:`SequenceData`, so ``unstandardise`` maps back. **Windows**: ``window``
    consecutive points starting at points :math:`0, s, 2s, \dots` (:math:`s` = ``stride``,
    default ``window // 2``) while a whole window fits in the history, each with its own
    times; windows with no observed value are dropped. Masks are ``(…, T)`` for one channel
    and ``(…, T, Dx)`` for several.

    Args:
        times (torch.Tensor): ``(T,)`` strictly increasing, finite (computed in float64).
        values (torch.Tensor): ``(T,)`` or ``(T, Dx)``, NaN where missing.
        holdout (float): :math:`h > 0`, the length of the held-out end in time units.
        window (int): points per training window (at least 2, at most the history's).
        stride (int): points between the starts of consecutive windows.
        standardise (bool): standardise with the history's statistics.
        dtype, device: of every returned tensor (default: torch's default dtype, the CPU).

    Returns:
        SeriesSplit: ``(train, history, test, loc, scale)``.
    """
    if not isinstance(times, torch.Tensor) or times.dim() != 1 or times.numel() < 2:
        raise ValueError("times must be a 1-D tensor of at least two times")
    times = times.to(torch.float64)
    if not bool(torch.isfinite(times).all()) or not bool((times.diff() > 0).all()):
        raise ValueError("times must be finite and strictly increasing")
    if not isinstance(values, torch.Tensor) or values.dim() not in (1, 2) \
            or values.shape[0] != times.shape[0]:
        raise ValueError(f"values must have shape ({times.shape[0]},) or ({times.shape[0]}, Dx)"
                         f", got {tuple(getattr(values, 'shape', ()))}")
    single = values.dim() == 1
    values = values.to(torch.float64).reshape(times.shape[0], -1)  # (T, Dx)
    if bool(torch.isinf(values).any()):
        raise ValueError("values must be finite or NaN (missing)")
    window = check_integer("window", window, 2)
    stride = max(1, window // 2) if stride is None else check_integer("stride", stride, 1)
    if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) \
            or not math.isfinite(holdout) or holdout <= 0:
        raise ValueError(f"holdout must be a finite number > 0, got {holdout!r}")
    if not isinstance(standardise, bool):
        raise ValueError(f"standardise must be a bool, got {standardise!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    observed = ~values.isnan()

    in_test = times > times[-1] - float(holdout)
    num_history = int((~in_test).sum())
    if num_history < window:
        raise ValueError(f"holdout={holdout!r} leaves {num_history} points of history, fewer "
                         f"than window={window}; shorten holdout or window")
    seen = observed[:num_history]
    if bool((seen.sum(0) < 2).any()):
        raise ValueError(f"holdout={holdout!r} leaves a channel with fewer than two observed "
                         "values in the history")

    loc = scale = None
    if standardise:
        loc, scale = channel_statistics(values[:num_history], seen)
        values = (values - loc) / scale
    values = torch.where(observed, values, torch.zeros_like(values))

    def finish(tensor):
        if tensor is None:
            return None
        return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)

    def mask_of(m):  # (..., T, Dx) -> (..., T) for one channel
        return m[..., 0] if single else m

    loc, scale = finish(loc), finish(scale)

    def part(rows):
        x, m = values[rows].unsqueeze(0), observed[rows].unsqueeze(0)
        return SequenceData(finish(x), finish(times[rows]), finish(mask_of(m)), loc, scale)

    history, test = part(slice(0, num_history)), part(slice(num_history, None))
    win_x = values[:num_history].unfold(0, window, stride).transpose(-1, -2)  # (N, W, Dx)
    win_t = times[:num_history].unfold(0, window, stride)
    win_m = observed[:num_history].unfold(0, window, stride).transpose(-1, -2)
    keep = win_m.flatten(1).any(-1)
    train = SequenceData(finish(win_x[keep]), finish(win_t[keep]), finish(mask_of(win_m[keep])),
                         loc, scale)
    return SeriesSplit(train, history, test, loc, scale)
