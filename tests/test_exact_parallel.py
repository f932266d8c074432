"""The parallel-in-time exact likelihood, smoother and observation marginals of the
linear-Gaussian VPF against the sequential Kalman filter and RTS smoother
(``kalman_reference``), and the Gauss--Markov helpers they are built from against dense
Gaussians."""

import kalman_reference
import pyro.distributions as dist
import pytest
import torch
from pyro_vpf.models import VPF

from pyro_vpf.distributions.gauss_markov import (
    gauss_markov_evidence,
    gauss_markov_marginals,
    gauss_markov_posterior,
    linear_gaussian_potentials,
)
from pyro_vpf.evaluation import (
    exact_log_likelihood,
    kalman_log_likelihood,
    kalman_observation_marginals,
    kalman_smoother,
)
from pyro_vpf.processes import OU, LocalLinearTrend, Matern, Oscillator, Sum, make_base

D64 = torch.float64
B, DZ, DX = 4, 2, 3


def linear_vpf(base=None, seed=0):
    torch.manual_seed(seed)
    kwargs = {} if base is None else {"base": base}
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian",
                **kwargs).double()
    with torch.no_grad():
        model.prior.init_loc.copy_(torch.tensor([0.4, -0.7]))
        model.prior.base_mean.copy_(torch.tensor([0.5, -1.0]))
        model.obs_linear.weight.add_(0.3 * torch.randn_like(model.obs_linear.weight))
        model.obs_linear.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
        model.obs_linear.noise_unconstrained.copy_(torch.tensor([-2.0, -1.0, 0.5]))
    return model


def sum_base():
    """Coordinate 0: Matern 3/2; coordinate 1: trend + exactly periodic season + OU (a
    noiseless block in the state)."""
    return [Matern(1.5, 0.7, 1.3),
            Sum(LocalLinearTrend(0.2, 0.3, init_level_scale=1.5, init_slope_scale=0.4),
                Oscillator(1.0, periodic=True, scale=0.8), OU(2.0, 0.5))]


BASES = {
    "ou": lambda: None,
    "matern32": lambda: make_base("matern32"),
    "trend+cycle": lambda: make_base("trend+cycle"),
    "sum": sum_base,
    "fbm": lambda: make_base("fbm"),  # several states driven by one noise: a singular Q
}


def irregular_times(K1, seed=1):
    g = torch.Generator().manual_seed(seed)
    gaps = torch.rand(B, K1 - 1, generator=g, dtype=D64) * 0.6 + 1e-3
    if K1 > 3:
        gaps[1, 2] = 5.0  # a long gap beside short ones
    return torch.cat([torch.zeros(B, 1, dtype=D64), gaps.cumsum(-1)], -1) + 1.5


def entry_mask(K1, seed=2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, K1, DX, generator=g) > 0.35  # single channels missing
    mask[0, min(2, K1 - 1)] = False  # whole points missing: inside, first and last
    mask[2, 0] = False
    mask[3, -1] = False
    return mask


def observations(K1, seed=3):
    return torch.randn(B, K1, DX, generator=torch.Generator().manual_seed(seed), dtype=D64)


def assert_matches_reference(model, x, times, mask):
    with torch.no_grad():
        got_ll = kalman_log_likelihood(model, x, times, mask)
        got_loc, got_cov = kalman_smoother(model, x, times, mask)
        got = kalman_observation_marginals(model, x, times, mask)
        ll = kalman_reference.kalman_log_likelihood(model, x, times, mask)
        loc, cov = kalman_reference.kalman_smoother(model, x, times, mask)
        expected = kalman_reference.kalman_observation_marginals(model, x, times, mask)
    K1 = x.shape[1]
    assert got_ll.shape == (B,) and got_loc.shape == (B, K1, DZ)
    assert got_cov.shape == (B, K1, DZ, DZ) and got.loc.shape == (B, K1, DX)
    assert torch.allclose(got_ll, ll, rtol=1e-8, atol=1e-8), (got_ll - ll).abs().max()
    assert torch.allclose(got_loc, loc, rtol=1e-8, atol=1e-8), (got_loc - loc).abs().max()
    assert torch.allclose(got_cov, cov, rtol=1e-8, atol=1e-8), (got_cov - cov).abs().max()
    assert torch.allclose(got.loc, expected.loc, rtol=1e-8, atol=1e-8)
    assert torch.allclose(got.scale, expected.scale, rtol=1e-8, atol=1e-8)
    with torch.no_grad():
        assert torch.allclose(exact_log_likelihood(model, x, times, mask), ll, rtol=1e-8,
                              atol=1e-8)


def test_ou_base_shared_regular_times_matches_the_sequential_filter():
    model = linear_vpf()
    times = torch.linspace(0, 3, 21, dtype=D64)
    assert_matches_reference(model, observations(21), times, None)


@pytest.mark.parametrize("base", sorted(BASES))
def test_irregular_per_sequence_times_with_masks_match_the_sequential_filter(base):
    model = linear_vpf(BASES[base]())
    K1 = 13
    assert_matches_reference(model, observations(K1), irregular_times(K1), entry_mask(K1))


@pytest.mark.parametrize("base", ["ou", "sum"])
def test_point_mask_and_shared_irregular_times_match_the_sequential_filter(base):
    model = linear_vpf(BASES[base]())
    times = torch.tensor([0.0, 0.1, 0.15, 1.2, 1.25, 3.0, 3.01], dtype=D64)
    mask = torch.ones(B, 7, dtype=torch.bool)
    mask[1, 3:5] = False  # a (B, K+1) mask: whole points missing
    assert_matches_reference(model, observations(7), times, mask)


@pytest.mark.parametrize("base", sorted(BASES))
def test_a_single_step_matches_the_sequential_filter(base):
    model = linear_vpf(BASES[base]())
    mask = entry_mask(2)
    mask[1] = False  # a sequence with nothing observed: log p = 0, the prior marginals
    assert_matches_reference(model, observations(2), irregular_times(2), mask)
    with torch.no_grad():
        assert kalman_log_likelihood(model, observations(2), irregular_times(2), mask)[1] == 0


def test_float32_log_likelihood_is_close_to_float64():
    model = linear_vpf(make_base("trend+cycle"))
    K1 = 41
    x, times, mask = observations(K1), irregular_times(K1), entry_mask(K1)
    with torch.no_grad():
        exact = kalman_log_likelihood(model, x, times, mask)
        single = kalman_log_likelihood(model.float(), x.float(), times.float(), mask)
    assert single.dtype == torch.float32
    per_point = (single.double() - exact).abs() / K1
    assert per_point.max() < 2e-5, per_point


def test_gradients_flow_to_the_model_parameters():
    model = linear_vpf(make_base("matern32"))
    K1 = 9
    kalman_log_likelihood(model, observations(K1), irregular_times(K1), entry_mask(K1)).sum(
    ).backward()
    grads = [p.grad for p in (model.obs_linear.weight, model.obs_linear.noise_unconstrained,
                              model.prior.init_loc)]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def random_chain(D, K, seed, singular=False):
    g = torch.Generator().manual_seed(seed)
    loc0 = torch.randn(D, generator=g, dtype=D64)
    L0 = torch.linalg.cholesky(torch.eye(D, dtype=D64) + 0.3 * torch.ones(D, D, dtype=D64))
    A = 0.5 * torch.randn(K, D, D, generator=g, dtype=D64)
    b = torch.randn(K, D, generator=g, dtype=D64)
    L = torch.randn(K, D, D, generator=g, dtype=D64).tril(-1) + torch.diag_embed(
        torch.rand(K, D, generator=g, dtype=D64) + 0.5)
    if singular:  # the last coordinate moves deterministically
        L[..., -1, :] = 0
    return loc0, L0, A, b, L


def dense_chain(loc0, L0, A, b, L):
    """Mean and covariance of z_{0:K} stacked ((K+1) D,), by the recursion written out."""
    K, D = b.shape
    mean = [loc0]
    for k in range(K):
        mean.append(A[k] @ mean[-1] + b[k])
    # z = T (z0, eps_1..eps_K) with T built block by block
    T = torch.zeros((K + 1) * D, (K + 1) * D, dtype=D64)
    T[:D, :D] = L0
    for k in range(K):
        rows = slice((k + 1) * D, (k + 2) * D)
        T[rows] = A[k] @ T[k * D:(k + 1) * D]
        T[rows, (k + 1) * D:(k + 2) * D] = L[k]
    return torch.cat(mean), T @ T.T


@pytest.mark.parametrize("singular", [False, True])
def test_gauss_markov_evidence_matches_a_dense_gaussian(singular):
    # a masked linear-Gaussian observation of every step: log of the evidence from the
    # potentials and the mean path against the dense marginal likelihood
    D, K, Dx = 3, 5, 2
    loc0, L0, A, b, L = random_chain(D, K, 7, singular)
    g = torch.Generator().manual_seed(8)
    W = torch.randn(Dx, D, generator=g, dtype=D64)
    d = torch.randn(Dx, generator=g, dtype=D64)
    r = torch.rand(Dx, generator=g, dtype=D64) + 0.2
    x = torch.randn(K + 1, Dx, generator=g, dtype=D64)
    mask = torch.rand(K + 1, Dx, generator=g) > 0.3
    mask[2] = False
    J, h = linear_gaussian_potentials(W, d, r, x, mask)
    assert J.shape == (K + 1, D, D) and h.shape == (K + 1, D)
    loc, log_ratio = gauss_markov_evidence(loc0, L0, A, b, L, J, h)
    o = mask.to(D64)
    log_lik = (o * dist.Normal(loc @ W.T + d, r).log_prob(x)).sum()
    mean, cov = dense_chain(loc0, L0, A, b, L)
    Wd = torch.block_diag(*[W] * (K + 1))[mask.reshape(-1)]
    Rd = torch.diag(r.square().repeat(K + 1)[mask.reshape(-1)])
    xd = (x - d).reshape(-1)[mask.reshape(-1)]
    expected = dist.MultivariateNormal(Wd @ mean, Wd @ cov @ Wd.T + Rd).log_prob(xd)
    assert torch.allclose(log_lik + log_ratio, expected, rtol=1e-10, atol=1e-10)
    # the mean path is the posterior mean of the chain, as from gauss_markov_posterior
    gain = cov @ Wd.T @ torch.linalg.inv(Wd @ cov @ Wd.T + Rd)
    assert torch.allclose(loc.reshape(-1), mean + gain @ (xd - Wd @ mean), atol=1e-10)
    m0, P0, A2, b2, L2 = gauss_markov_posterior(loc0, L0, A, b, L, J, h)
    post_loc, _ = gauss_markov_marginals(m0, P0 @ P0.T, A2, b2, L2)
    assert torch.allclose(post_loc, loc, atol=1e-10)


def test_linear_gaussian_potentials_are_the_observed_log_likelihood():
    # log N(x; W z + d, r^2) over the observed entries, as a function of z, is
    # -z^T J z / 2 + h^T z + const
    g = torch.Generator().manual_seed(9)
    W = torch.randn(2, 4, 3, generator=g, dtype=D64)  # batched weights
    d, r = torch.randn(4, generator=g, dtype=D64), torch.rand(4, generator=g, dtype=D64) + 0.1
    x = torch.randn(2, 4, generator=g, dtype=D64)
    mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    J, h = linear_gaussian_potentials(W, d, r, x, mask)
    z1, z2 = torch.randn(2, 2, 3, generator=g, dtype=D64)

    def log_lik(z):
        return (mask * dist.Normal((W @ z.unsqueeze(-1)).squeeze(-1) + d, r).log_prob(x)).sum(-1)

    def quadratic(z):
        return -0.5 * (z * (J @ z.unsqueeze(-1)).squeeze(-1)).sum(-1) + (h * z).sum(-1)

    assert torch.allclose(log_lik(z1) - log_lik(z2), quadratic(z1) - quadratic(z2))
    assert (J[1] == 0).all() and (h[1] == 0).all()
    unmasked = linear_gaussian_potentials(W, d, r, x)
    full = linear_gaussian_potentials(W, d, r, x, torch.ones(2, 4, dtype=torch.bool))
    assert all(torch.allclose(a, b) for a, b in zip(unmasked, full, strict=True))
    with pytest.raises(ValueError, match="mask"):
        linear_gaussian_potentials(W, d, r, x, mask.float())
    with pytest.raises(ValueError, match="value"):
        linear_gaussian_potentials(W, d, r, x[..., :3])
