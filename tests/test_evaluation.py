import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF
from reference import DensePosteriorGuide, dense_joint

from pyro_vpf.evaluation import (
    elbo,
    exact_log_likelihood,
    gaussian_hmm,
    importance_log_likelihood,
    kalman_log_likelihood,
    kalman_observation_marginals,
    kalman_smoother,
    log_weights,
)

D64 = torch.float64
B, K1, DZ, DX = 3, 6, 2, 3


def linear_model(seed=0):
    torch.manual_seed(seed)
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian").double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def per_sequence_times(seed=1):
    g = torch.Generator().manual_seed(seed)
    gaps = torch.rand(B, K1 - 1, generator=g, dtype=D64) * 0.6 + 0.05
    return torch.cat([torch.zeros(B, 1, dtype=D64), gaps.cumsum(-1)], -1) + 0.2


def dense_log_likelihood(model, x, times, mask=None):
    out = []
    for b in range(x.shape[0]):
        t = times[b] if times.dim() == 2 else times
        _, _, _, mx, Sx = dense_joint(model, t)
        keep = torch.ones(K1 * DX, dtype=torch.bool) if mask is None else mask[b].reshape(-1)
        out.append(dist.MultivariateNormal(mx[keep], Sx[keep][:, keep]).log_prob(
            x[b].reshape(-1)[keep]))
    return torch.stack(out)


def test_kalman_filter_matches_dense_gaussian_with_masks_and_irregular_times():
    model = linear_model()
    times = per_sequence_times()
    x = torch.randn(B, K1, DX, dtype=D64)
    mask = torch.rand(B, K1, DX) > 0.35  # single entries missing, whole points too
    mask[0, 2] = False
    expected = dense_log_likelihood(model, x, times, mask)
    assert torch.allclose(kalman_log_likelihood(model, x, times, mask), expected, atol=1e-8)
    assert torch.allclose(exact_log_likelihood(model, x, times, mask), expected, atol=1e-8)


def test_gaussian_hmm_matches_kalman_and_dense():
    model = linear_model(2)
    times = per_sequence_times(3)
    x = torch.randn(B, K1, DX, dtype=D64)
    expected = dense_log_likelihood(model, x, times)
    hmm = gaussian_hmm(model, times, B).log_prob(x)
    assert torch.allclose(hmm, expected, atol=1e-8)
    assert torch.allclose(kalman_log_likelihood(model, x, times), expected, atol=1e-8)
    shared = torch.linspace(0, 2, K1, dtype=D64)
    assert torch.allclose(exact_log_likelihood(model, x, shared),
                          dense_log_likelihood(model, x, shared), atol=1e-8)


def test_exact_refuses_models_that_are_not_linear_gaussian():
    x, times = torch.randn(B, K1, DX, dtype=D64), torch.linspace(0, 1, K1, dtype=D64)
    flow_latent = VPF(DX, DZ, 8, num_flow_layers=1, observation="linear_gaussian").double()
    flow_obs = VPF(DX, DZ, 8, num_flow_layers=0, num_obs_flow_layers=1).double()
    for model in (flow_latent, flow_obs):
        with pytest.raises(ValueError, match="linear-Gaussian"):
            exact_log_likelihood(model, x, times)


def test_exact_posterior_guide_makes_every_estimate_exact():
    # With q = p(z | x) every importance weight equals p(x): ELBO = IW = log p(x).
    model = linear_model(4)
    times = per_sequence_times(5)
    x = torch.randn(B, K1, DX, dtype=D64)
    exact = exact_log_likelihood(model, x, times)
    guide = DensePosteriorGuide(model, x, times)
    iw = importance_log_likelihood(model, guide, x, times, num_particles=10, chunk_size=4)
    assert torch.allclose(iw, exact, atol=1e-6)
    assert torch.allclose(elbo(model, guide, x, times, num_particles=7).per_sequence, exact,
                          atol=1e-6)


def test_importance_estimate_lies_between_elbo_and_exact_and_converges():
    pyro.set_rng_seed(6)
    model = linear_model(6)
    times = per_sequence_times(7)
    with torch.no_grad():
        x = model.observation_distribution(model.prior.sample(times, 1)[0]).sample()
    exact = exact_log_likelihood(model, x, times)
    guide = DensePosteriorGuide(model, x, times, inflate=2.0)  # in the family, but off
    # One set of 4000 weights gives the ELBO, the mean of 800 independent 5-particle
    # estimates (the expected IW bound with N = 5) and the 4000-particle estimate.
    lw = log_weights(model, guide, x, times, num_particles=4000)
    lower = lw.mean(0)
    few = (torch.logsumexp(lw.reshape(800, 5, B), 1) - math.log(5)).mean(0)
    many = torch.logsumexp(lw, 0) - math.log(4000)
    assert (lower < few).all() and (few < many).all()
    # The 4000-particle estimate is exact up to its Monte Carlo error, which the weights
    # themselves estimate (delta method: s.e. of log mean w = sd(w) / (mean(w) sqrt(N))).
    w = torch.exp(lw - lw.max(0).values)
    se = w.std(0) / (w.mean(0) * math.sqrt(lw.shape[0]))
    assert ((many - exact).abs() <= 4 * se + 1e-3).all()
    assert ((exact - many).abs() < 0.1 * (exact - lower).abs()).all()
    fresh = importance_log_likelihood(model, guide, x, times, num_particles=4000)
    assert ((exact - fresh).abs() < 0.1 * (exact - lower).abs()).all()


def test_affine_guide_elbo_is_below_the_exact_likelihood():
    # ELBO <= log p(x) is a theorem; with an untrained guide the gap is large, and a
    # violation beyond the Monte Carlo error (4 s.e.) would mean a wrong log-density.
    pyro.set_rng_seed(8)
    model = linear_model(8)
    guide = AffineGuide(DX, DZ, hidden_dim=8).double()
    times = torch.linspace(0, 1, K1, dtype=D64)
    x = torch.randn(B, K1, DX, dtype=D64)
    exact = exact_log_likelihood(model, x, times)
    lw = log_weights(model, guide, x, times, num_particles=500)
    se = lw.std(0) / math.sqrt(500)
    assert (lw.mean(0) <= exact + 4 * se).all()
    scores = elbo(model, guide, x, times, num_particles=500, chunk_size=128)
    assert (scores.per_sequence <= exact + 4 * se).all()
    assert torch.allclose(scores.per_point, scores.per_sequence / K1)
    iw = importance_log_likelihood(model, guide, x, times, num_particles=300, chunk_size=128)
    assert iw.shape == (B,) and torch.isfinite(iw).all()


@pytest.mark.parametrize("masked", [False, True])
def test_kalman_smoother_matches_dense_conditioning(masked):
    model = linear_model(8)
    times = per_sequence_times(9)
    x = torch.randn(B, K1, DX, dtype=D64)
    mask = None
    if masked:
        g = torch.Generator().manual_seed(10)
        mask = torch.rand(B, K1, DX, generator=g) > 0.4
        mask[:, 0] = True
    with torch.no_grad():
        loc, cov = kalman_smoother(model, x, times, mask)
        dense = DensePosteriorGuide(model, x, times, mask=mask)
    assert loc.shape == (B, K1, DZ) and cov.shape == (B, K1, DZ, DZ)
    assert torch.allclose(loc.reshape(B, -1), dense.loc, atol=1e-9)
    blocks = torch.stack([dense.cov[:, k * DZ:(k + 1) * DZ, k * DZ:(k + 1) * DZ]
                          for k in range(K1)], 1)
    assert torch.allclose(cov, blocks, atol=1e-9)


def test_kalman_observation_marginals_match_dense_conditioning_of_x():
    """Condition the dense joint Gaussian of all x on the observed entries."""
    model = linear_model(8)
    times = per_sequence_times(9)
    x = torch.randn(B, K1, DX, dtype=D64)
    g = torch.Generator().manual_seed(11)
    mask = torch.rand(B, K1, DX, generator=g) > 0.4
    with torch.no_grad():
        marginals = kalman_observation_marginals(model, x, times, mask)
        for b in range(B):
            _, _, _, mx, Sx = dense_joint(model, times[b])
            seen = mask[b].reshape(-1)
            gain = Sx[:, seen] @ torch.linalg.inv(Sx[seen][:, seen])
            mean = mx + gain @ (x[b].reshape(-1)[seen] - mx[seen])
            var = torch.diagonal(Sx - gain @ Sx[seen])
            hidden = ~seen
            # hidden entries: the dense predictive; observed ones: their own noisy predictive
            assert torch.allclose(marginals.loc[b].reshape(-1)[hidden], mean[hidden], atol=1e-9)
            assert torch.allclose(marginals.variance[b].reshape(-1)[hidden], var[hidden],
                                  atol=1e-9)
