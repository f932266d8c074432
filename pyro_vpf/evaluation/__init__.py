"""Evaluation: exact likelihoods where they exist, and estimators for every model."""

from pyro_vpf.evaluation.backtest import backtest
from pyro_vpf.evaluation.baselines import (
    BaselineForecast,
    linear_interpolation,
    structural_forecast,
)
from pyro_vpf.evaluation.distances import crps_ensemble, energy_distance, mmd
from pyro_vpf.evaluation.estimators import (
    SequenceScores,
    elbo,
    importance_log_likelihood,
    log_weights,
)
from pyro_vpf.evaluation.exact import (
    exact_log_likelihood,
    gaussian_hmm,
    kalman_log_likelihood,
    kalman_observation_marginals,
    kalman_smoother,
    linear_gaussian_parameters,
)
from pyro_vpf.evaluation.inference_data import to_inference_data
from pyro_vpf.evaluation.latent import ActiveUnits, active_units, posterior_mean
from pyro_vpf.evaluation.predictive import (
    forecast,
    forecast_series,
    interpolate,
    posterior_predictive,
    predictive_coverage,
    sample_posterior_sde,
)
from pyro_vpf.evaluation.report import evaluate_sequences
from pyro_vpf.evaluation.scores import ForecastScores, forecast_scores

__all__ = [
    "ActiveUnits",
    "BaselineForecast",
    "ForecastScores",
    "SequenceScores",
    "active_units",
    "backtest",
    "crps_ensemble",
    "elbo",
    "energy_distance",
    "evaluate_sequences",
    "exact_log_likelihood",
    "forecast",
    "forecast_series",
    "forecast_scores",
    "gaussian_hmm",
    "importance_log_likelihood",
    "interpolate",
    "kalman_log_likelihood",
    "kalman_observation_marginals",
    "kalman_smoother",
    "linear_gaussian_parameters",
    "linear_interpolation",
    "log_weights",
    "mmd",
    "posterior_mean",
    "posterior_predictive",
    "predictive_coverage",
    "sample_posterior_sde",
    "structural_forecast",
    "to_inference_data",
]
