"""Simulated problems and timing shared by the benchmarks."""

import statistics
import time

import torch
from pyro_vpf.models import VPF


def linear_gaussian_problem(num_sequences=64, num_points=50, seed=0):
    """Sequences from a seeded ground-truth linear-Gaussian VPF (Dz = 2, Dx = 3).

    OU rates 0.5 and 2.0, observation noise scale softplus(-2) = 0.127, irregular steps drawn
    uniformly in [0.01, 0.21]. Returns ``(x, times, truth)``: ``x (B, K+1, 3)``,
    ``times (B, K+1)``, the generating model.
    """
    torch.manual_seed(seed)
    truth = VPF(3, 2, num_flow_layers=0, observation="linear_gaussian")
    with torch.no_grad():
        truth.prior.ou_rate_unconstrained.copy_(torch.tensor([0.5, 2.0]))
        truth.obs_linear.noise_unconstrained.fill_(-2.0)
        gaps = torch.rand(num_sequences, num_points - 1) * 0.2 + 0.01
        times = torch.cat([torch.zeros(num_sequences, 1), gaps.cumsum(-1)], -1)
        z = truth.prior.sample(times, 1)[0]
        x = truth.observation_distribution(z).sample()
    return x, times, truth


def median_time(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)
