"""One call that scores a fitted model/guide on held-out sequences."""

import numbers

import torch

from pyro_vpf.evaluation.estimators import elbo, importance_log_likelihood
from pyro_vpf.evaluation.predictive import forecast, posterior_predictive, predictive_coverage
from pyro_vpf.times import expand_times, select_times
from pyro_vpf.validation import check_integer, check_program_data

__all__ = ["evaluate_sequences"]


def evaluate_sequences(model, guide, x, times, mask=None, *, num_particles=100,
                       num_samples=200, hide_fraction=0.2, forecast_points=10, seed=0):
    r"""ELBO, IW log-likelihood, interpolation coverage and forecast error on ``x``.

    * ``elbo_per_point`` and ``iw_per_point``: nats per observed time point;
    * interpolation: a random ``hide_fraction`` of the time points (never the first or last)
      is hidden from the guide, and the posterior predictive is scored there: coverage of
      the central 50 % / 90 % intervals and the MSE of the predictive mean (when a point was
      hidden: not with ``hide_fraction=0`` or sequences of two points);
    * forecasting: the guide sees all but each sequence's last ``forecast_points``
      observed points, which are forecast through the prior
      (:func:`~pyro_vpf.evaluation.forecast`, from the sequence's own last visible point):
      MSE of the predictive mean and interval coverage, over the sequences with at least
      ``forecast_points + 2`` observed points (shared or per-sequence times, ragged panels).

    Returns:
        dict: the figures, plus ``"interpolation_draws"`` and, when forecasts were scored,
        ``"forecast_draws"`` ``(S, b, forecast_points, Dx)`` for the sequences
        ``"forecast_rows"`` at ``"forecast_times"`` ``(b, forecast_points)``.
    """
    check_integer("num_particles", num_particles, 1)
    check_integer("num_samples", num_samples, 1)
    check_integer("forecast_points", forecast_points, 0)
    if isinstance(hide_fraction, bool) or not isinstance(hide_fraction, numbers.Real) or not (
            0 <= hide_fraction <= 1):
        raise ValueError(f"hide_fraction must be a number in [0, 1], got {hide_fraction!r}")
    points = float(check_program_data(model, x, times, mask)[2].sum())
    if not points > 0:
        raise ValueError("mask marks no entry observed: the figures per observed point are "
                         "undefined")
    g = torch.Generator().manual_seed(seed)
    B, K1, _ = x.shape
    # the points observed in full: the ones to hide and to forecast
    observed = torch.ones(B, K1, dtype=torch.bool, device=x.device) if mask is None else (
        mask if mask.dim() == 2 else mask.all(-1))
    out = {
        "elbo_per_point": float(elbo(model, guide, x, times, mask, num_particles=num_particles)
                                .per_sequence.sum()) / points,
        "iw_per_point": float(importance_log_likelihood(
            model, guide, x, times, mask, num_particles=num_particles).sum()) / points,
    }
    hidden = torch.rand(B, K1, generator=g).to(x.device) < hide_fraction
    hidden[:, 0] = hidden[:, -1] = False
    hidden &= observed
    draws = posterior_predictive(model, guide, x, times, observed & ~hidden, num_samples)["x"]
    target = hidden.unsqueeze(-1).expand_as(x)
    if bool(hidden.any()):  # else there is nothing to score
        coverage = predictive_coverage(draws, x, target)
        out["interpolation_coverage_50"], out["interpolation_coverage_90"] = coverage[0.5], \
            coverage[0.9]
        out["interpolation_mse"] = float((draws.mean(0) - x)[target].square().mean())
    out["interpolation_draws"], out["hidden"] = draws, hidden
    # forecasting: each sequence's last forecast_points observed points are hidden and
    # forecast from its earlier ones (shared or per-sequence times, ragged panels alike)
    index = torch.arange(K1, device=x.device)
    rank = observed.flip(-1).cumsum(-1).flip(-1)  # observed points from here to the end
    future = observed & (rank <= forecast_points)  # (B, K+1): the last forecast_points
    enough = observed.sum(-1) >= forecast_points + 2
    if forecast_points >= 1 and bool(enough.any()):
        rows = enough.nonzero().squeeze(-1)
        positions = index.expand(len(rows), K1)[future[rows]].view(len(rows), forecast_points)
        grid = expand_times(times, B)[rows]
        future_times = grid.gather(-1, positions)
        # the guide sees every observed entry before each sequence's first held-out point
        entries = torch.ones_like(x, dtype=torch.bool) if mask is None else (
            mask.view(B, K1, -1).expand_as(x))
        visible = entries[rows] & (index < positions[:, :1]).unsqueeze(-1)
        fc = forecast(model, guide, x[rows], select_times(times, rows), future_times, visible,
                      num_samples)["x"]
        # the held-out points are observed in full: every entry is scored
        truth = x[rows].gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        coverage = predictive_coverage(fc, truth, torch.ones_like(truth, dtype=torch.bool))
        out["forecast_coverage_50"], out["forecast_coverage_90"] = coverage[0.5], coverage[0.9]
        out["forecast_mse"] = float((fc.mean(0) - truth).square().mean())
        out["forecast_draws"], out["forecast_rows"] = fc, rows
        out["forecast_times"] = future_times
    return out
