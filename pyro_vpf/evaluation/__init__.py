"""Evaluation: exact likelihoods where they exist, and estimators for every model."""

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
    linear_gaussian_parameters,
)

__all__ = [
    "SequenceScores",
    "elbo",
    "exact_log_likelihood",
    "gaussian_hmm",
    "importance_log_likelihood",
    "kalman_log_likelihood",
    "linear_gaussian_parameters",
    "log_weights",
]
