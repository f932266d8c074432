"""One call that scores a fitted model/guide on held-out sequences."""

import torch

from pyro_vpf.evaluation.estimators import elbo, importance_log_likelihood
from pyro_vpf.evaluation.predictive import forecast, posterior_predictive, predictive_coverage

__all__ = ["evaluate_sequences"]


def evaluate_sequences(model, guide, x, times, mask=None, *, num_particles=100,
                       num_samples=200, hide_fraction=0.2, forecast_points=10, seed=0):
    r"""ELBO, IW log-likelihood, interpolation coverage and forecast error on ``x``.

    * ``elbo_per_point`` and ``iw_per_point``: nats per observed time point;
    * interpolation: a random ``hide_fraction`` of the time points (never the first or last)
      is hidden from the guide, and the posterior predictive is scored there: coverage of
      the central 50 % / 90 % intervals and the MSE of the predictive mean;
    * forecasting: the guide sees all but the last ``forecast_points`` points, which are
      forecast through the prior (:func:`~pyro_vpf.evaluation.forecast`): MSE of the
      predictive mean and interval coverage. Needs times shared by all sequences.

    Returns:
        dict: the figures, plus ``"forecast_draws"`` and ``"interpolation_draws"`` tensors
        for plots.
    """
    g = torch.Generator().manual_seed(seed)
    B, K1, _ = x.shape
    observed = torch.ones(B, K1, dtype=torch.bool, device=x.device) if mask is None else (
        mask if mask.dim() == 2 else mask.all(-1))
    out = {
        "elbo_per_point": float(elbo(model, guide, x, times, mask, num_particles=num_particles)
                                .per_sequence.sum()) / float(observed.sum()),
        "iw_per_point": float(importance_log_likelihood(
            model, guide, x, times, mask, num_particles=num_particles).sum())
        / float(observed.sum()),
    }
    hidden = torch.rand(B, K1, generator=g).to(x.device) < hide_fraction
    hidden[:, 0] = hidden[:, -1] = False
    hidden &= observed
    draws = posterior_predictive(model, guide, x, times, observed & ~hidden, num_samples)["x"]
    target = hidden.unsqueeze(-1).expand_as(x)
    coverage = predictive_coverage(draws, x, target)
    out["interpolation_coverage_50"], out["interpolation_coverage_90"] = coverage[0.5], \
        coverage[0.9]
    out["interpolation_mse"] = float((draws.mean(0) - x)[target].square().mean())
    out["interpolation_draws"], out["hidden"] = draws, hidden
    if times.dim() == 1 and K1 > forecast_points + 1:
        cut = K1 - forecast_points
        prefix_mask = None if mask is None else mask[:, :cut]
        fc = forecast(model, guide, x[:, :cut], times[:cut], times[cut:], prefix_mask,
                      num_samples)["x"]
        truth = x[:, cut:]
        future = observed[:, cut:].unsqueeze(-1).expand_as(truth)
        coverage = predictive_coverage(fc, truth, future)
        out["forecast_coverage_50"], out["forecast_coverage_90"] = coverage[0.5], coverage[0.9]
        out["forecast_mse"] = float((fc.mean(0) - truth)[future].square().mean())
        out["forecast_draws"], out["forecast_start"] = fc, cut
    return out
