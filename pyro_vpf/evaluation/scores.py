r"""Scores of a sample forecast against observations: point errors, CRPS and interval coverage.

:func:`forecast_scores` summarises how well predictive draws ``samples`` ``(S, ...)`` forecast
observations ``y`` ``(...)`` over the entries selected by a boolean mask: the squared error of
the predictive mean, the absolute error of the predictive median, the ensemble CRPS
(:func:`~pyro_vpf.evaluation.crps_ensemble`) and, for each central interval level,
the share of observations inside the interval and its mean width.
"""

import numbers
from typing import NamedTuple

import torch
from pyro.ops.stats import pi, quantile

from pyro_vpf.evaluation.distances import crps_ensemble

__all__ = ["ForecastScores", "forecast_scores"]


class ForecastScores(NamedTuple):
    r"""Scores of a sample forecast over the scored entries (see :func:`forecast_scores`).

    Attributes:
        mse (float): mean squared error of the predictive mean.
        mae (float): mean absolute error of the predictive median.
        crps (float): mean ensemble CRPS (fair estimator).
        coverage (dict): ``{level: share of observations inside the central interval}``.
        interval_width (dict): ``{level: mean width of the central interval}``.
        count (int): number of scored entries.
    """

    mse: float
    mae: float
    crps: float
    coverage: dict
    interval_width: dict
    count: int


def check_levels(levels):
    try:
        levels = tuple(levels)
    except TypeError:
        raise ValueError(f"levels must be a sequence of numbers in (0, 1), got {levels!r}") \
            from None
    for level in levels:
        if (isinstance(level, bool) or not isinstance(level, numbers.Real)
                or not 0 < float(level) < 1):
            raise ValueError(f"levels must hold numbers in (0, 1), got {level!r}")
    return levels


def forecast_scores(samples, y, mask=None, levels=(0.5, 0.9)):
    r"""Point, probabilistic and interval scores of predictive samples against observations.

    Over the scored entries :math:`i = 1, \dots, n` (where ``mask`` is True), with members
    :math:`x_{1i}, \dots, x_{Si}` and observation :math:`y_i`:

    .. math::

        \mathrm{MSE} = \frac1n \sum_i (\bar{x}_i - y_i)^2, \qquad
        \mathrm{MAE} = \frac1n \sum_i \lvert \tilde{x}_i - y_i\rvert, \qquad
        \mathrm{CRPS} = \frac1n \sum_i \widehat{\mathrm{CRPS}}_i,

    where :math:`\bar{x}_i` is the predictive **mean** (the point forecast that minimises the
    expected squared error), :math:`\tilde{x}_i` the predictive **median** (the point forecast
    that minimises the expected absolute error) and :math:`\widehat{\mathrm{CRPS}}_i` the fair
    ensemble CRPS of :func:`~pyro_vpf.evaluation.crps_ensemble`. For each level
    :math:`\alpha`, the central interval is :math:`[q_{(1-\alpha)/2}, q_{(1+\alpha)/2}]`, with
    :math:`q_p` the sample quantiles of the members (``pyro.ops.stats.quantile`` and ``pi``:
    linear interpolation between order statistics, as :func:`torch.quantile`; the median is
    :math:`q_{1/2}`): ``coverage`` is the
    share of scored observations inside it (ends included) and ``interval_width`` its mean
    width :math:`\frac1n \sum_i (q_{(1+\alpha)/2, i} - q_{(1-\alpha)/2, i})`. A calibrated
    forecast covers a share close to :math:`\alpha`.

    Entries with ``mask`` False are ignored entirely: their observations and members may hold
    anything, NaN included, and change no score.

    Args:
        samples (torch.Tensor): ``(S, ...)`` predictive draws, ``S >= 2`` along dim 0, finite
            at the scored entries.
        y (torch.Tensor): ``(...)`` observations, the shape of one draw, on the device of
            ``samples``, finite at the scored entries (with another floating dtype, both are
            scored in the wider one).
        mask (torch.Tensor): boolean tensor broadcastable to ``y.shape``, True where an entry
            is scored; ``None`` scores every entry. At least one entry must be scored.
        levels (sequence of float): central interval probabilities, each in ``(0, 1)``.

    Returns:
        ForecastScores: ``mse``, ``mae``, ``crps`` (floats), ``coverage`` and
        ``interval_width`` (dicts keyed by level, floats) and ``count`` (int, the number of
        scored entries).
    """
    levels = check_levels(levels)
    draws, truth, count = scored_entries(samples, y, mask)

    with torch.no_grad():
        mean = draws.mean(0)
        median = quantile(draws, 0.5)
        mse = float((mean - truth).square().mean())
        mae = float((median - truth).abs().mean())
        crps = float(crps_ensemble(draws, truth).mean())
        coverage, width = interval_scores(draws, truth, levels)
    return ForecastScores(mse=mse, mae=mae, crps=crps, coverage=coverage,
                          interval_width=width, count=count)


def scored_entries(samples, y, mask=None, names=("samples", "y", "mask")):
    """The checked draws ``(S, n)`` and observations ``(n,)`` of the scored entries, and
    ``n``: what :func:`forecast_scores` scores (``names`` are the arguments' names in the
    messages of a ``ValueError``)."""
    samples_name, y_name, mask_name = names
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise ValueError(f"{samples_name} must be a floating-point tensor")
    if samples.dim() < 1 or samples.shape[0] < 2:
        raise ValueError(f"{samples_name} must have shape (S, ...) with S >= 2 draws, got "
                         f"{tuple(samples.shape)}")
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise ValueError(f"{y_name} must be a floating-point tensor")
    if y.shape != samples.shape[1:]:
        raise ValueError(f"{y_name} must have shape {tuple(samples.shape[1:])} (one draw), "
                         f"got {tuple(y.shape)}")
    if y.device != samples.device:
        raise ValueError(f"{y_name} is on {y.device}; expected {samples.device} (as "
                         f"{samples_name})")
    if y.dtype != samples.dtype:  # float32 forecasts against float64 data: score in the wider
        common = torch.promote_types(y.dtype, samples.dtype)
        samples, y = samples.to(common), y.to(common)
    if mask is None:
        mask = torch.ones(y.shape, dtype=torch.bool, device=y.device)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"{mask_name} must be a boolean tensor")
        try:
            mask = mask.to(y.device).expand(y.shape)
        except RuntimeError:
            raise ValueError(f"{mask_name} of shape {tuple(mask.shape)} does not broadcast to "
                             f"{y_name}'s shape {tuple(y.shape)}") from None
    count = int(mask.sum())
    if count == 0:
        raise ValueError(f"{mask_name} selects no entry to score")

    draws = samples[:, mask]  # (S, n)
    truth = y[mask]  # (n,)
    if not bool(torch.isfinite(draws).all()):
        raise ValueError(f"{samples_name} contains NaN or infinite values at scored entries")
    if not bool(torch.isfinite(truth).all()):
        raise ValueError(f"{y_name} contains NaN or infinite values at scored entries")

    return draws, truth, count


def interval_scores(draws, truth, levels):
    """Coverage and mean width of the central intervals at each level (dicts by level) of
    draws ``(S, n)`` against ``truth`` ``(n,)``."""
    coverage, width = {}, {}
    for level in levels:
        low, high = pi(draws, float(level))
        coverage[level] = float(((truth >= low) & (truth <= high)).to(draws.dtype).mean())
        width[level] = float((high - low).mean())
    return coverage, width
