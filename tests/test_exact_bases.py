"""The linear-Gaussian VPF with a structured base: exact likelihood and smoother against a
dense Gaussian built from the processes' covariance kernels, and the Markov guide's structured
reference holding the exact posterior."""

import mpmath
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro_vpf.guides import MarkovGuide
from pyro_vpf.models import VPF
from reference import set_likelihood_potentials

from pyro_vpf.evaluation import (
    elbo,
    exact_log_likelihood,
    kalman_observation_marginals,
    kalman_smoother,
    log_weights,
)
from pyro_vpf.infer import fit
from pyro_vpf.processes import (
    OU,
    JointStateSpace,
    LocalLinearTrend,
    Matern,
    Oscillator,
    Sum,
    make_base,
)
from tests import kernels

D64 = torch.float64
B, K1, DZ, DX = 3, 7, 2, 3


def structured_model():
    """Coordinate 0: Matern 3/2; coordinate 1: trend + periodic season + OU."""
    base = [Matern(1.5, 0.7, 1.3),
            Sum(LocalLinearTrend(0.2, 0.3, init_level_scale=1.5, init_slope_scale=0.4),
                Oscillator(1.0, periodic=True, scale=0.8), OU(2.0, 0.5))]
    torch.manual_seed(0)
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian",
                base=base).double()
    with torch.no_grad():
        model.prior.init_loc.copy_(torch.tensor([0.4, -0.7]))
        model.prior.base_mean.copy_(torch.tensor([0.5, -1.0]))
        model.obs_linear.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
        model.obs_linear.noise_unconstrained.copy_(torch.tensor([-2.0, -1.0, 0.5]))
    return model


def coordinate_kernels(t0):
    trend = kernels.local_linear_trend(0.2, 0.3, 1.5, 0.4, t0)
    return [kernels.matern(1.5, 0.7, 1.3),
            kernels.total(trend, kernels.oscillator(1.0, 0.0, [0.8]),
                          kernels.matern(0.5, 0.5, 0.25))]


def dense_prior(model, times):
    """Mean (K+1, Dz) and covariance (K+1, Dz, K+1, Dz) of z from the kernels: z_0 from its
    prior, the rest by conditioning the Gaussian process on its value at t_0."""
    p = model.prior
    loc0, var0, mean = p.init_loc.detach(), p.init_scale.detach().square(), p.base_mean.detach()
    K = times.shape[0]
    mz = torch.zeros(K, DZ, dtype=D64)
    Sz = torch.zeros(K, DZ, K, DZ, dtype=D64)
    t = [mpmath.mpf(v) for v in times.tolist()]
    for d, k in enumerate(coordinate_kernels(times[0].item())):
        C = torch.tensor([[float(k(a, b)) for b in t] for a in t], dtype=D64)
        g = C[:, 0] / C[0, 0]  # E[y | y_0] = g y_0 (g_0 = 1)
        mz[:, d] = mean[d] + g * (loc0[d] - mean[d])
        Sz[:, d, :, d] = C - C[0, 0] * torch.outer(g, g) + var0[d] * torch.outer(g, g)
    return mz.reshape(-1), Sz.reshape(K * DZ, K * DZ)


def dense_joint(model, times):
    mz, Sz = dense_prior(model, times)
    o = model.obs_linear
    W = torch.block_diag(*[o.weight.detach()] * times.shape[0])
    mx = W @ mz + o.bias.detach().repeat(times.shape[0])
    Sx = W @ Sz @ W.T + torch.diag(o.noise_scale.detach().square().repeat(times.shape[0]))
    return mz, Sz, W, mx, Sx


def per_sequence_times():
    g = torch.Generator().manual_seed(3)
    gaps = torch.rand(B, K1 - 1, generator=g, dtype=D64) * 0.6 + 1e-3
    gaps[1, 2] = 5.0  # a long gap beside short ones
    return torch.cat([torch.zeros(B, 1, dtype=D64), gaps.cumsum(-1)], -1) + 1.5


def observations(mask_entries):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, K1, DX, generator=g, dtype=D64)
    mask = torch.rand(B, K1, DX, generator=g) > 0.35 if mask_entries else None
    if mask is not None:
        mask[0, 2] = False  # a whole point missing
    return x, mask


def test_joint_state_space_start_is_the_readout_conditional():
    # s_0 when H s_0 ~ N(loc, scale^2) and s_0 | H s_0 follows N(0, P_0): by sampling
    space = JointStateSpace(make_base("trend+cycle").expand((2,)).double(), 2)
    loc, scale = torch.tensor([1.0, -2.0], dtype=D64), torch.tensor([0.5, 2.0], dtype=D64)
    mean, cov = space.start(loc, scale)
    P0, H = space.initial_covariance(), space.readout()
    assert H.shape == (2, space.state_dim) and P0.shape == (space.state_dim,) * 2
    assert torch.allclose(H @ mean, loc) and torch.allclose(H @ cov @ H.T, torch.diag(scale**2))
    # a Gaussian is fixed by its readout's law and its law given the readout: the latter
    # must be the process's own conditional given H s_0 = y, for any y
    y = torch.tensor([[0.3, 4.0], [-2.0, 1.0]], dtype=D64)

    def conditional(m, P, value):
        gain = P @ H.T @ torch.linalg.inv(H @ P @ H.T)
        return m + (value - H @ m) @ gain.T, P - gain @ H @ P

    for value in y:
        m_ref, P_ref = conditional(torch.zeros_like(mean), P0, value)
        m_got, P_got = conditional(mean, cov, value)
        assert torch.allclose(m_got, m_ref, atol=1e-10)
        assert torch.allclose(P_got, P_ref, atol=1e-10)


@pytest.mark.parametrize("mask_entries", [False, True])
def test_exact_log_likelihood_with_a_structured_base_matches_the_dense_kernel(mask_entries):
    model = structured_model()
    times = per_sequence_times()
    x, mask = observations(mask_entries)
    expected = []
    for b in range(B):
        _, _, _, mx, Sx = dense_joint(model, times[b])
        keep = torch.ones(K1 * DX, dtype=torch.bool) if mask is None else mask[b].reshape(-1)
        expected.append(dist.MultivariateNormal(mx[keep], Sx[keep][:, keep]).log_prob(
            x[b].reshape(-1)[keep]))
    with torch.no_grad():
        got = exact_log_likelihood(model, x, times, mask)
    assert torch.allclose(got, torch.stack(expected), rtol=1e-8, atol=1e-8)


def test_kalman_smoother_with_a_structured_base_matches_dense_conditioning():
    model = structured_model()
    times = per_sequence_times()
    x, mask = observations(True)
    with torch.no_grad():
        loc, cov = kalman_smoother(model, x, times, mask)
        marginals = kalman_observation_marginals(model, x, times, mask)
    for b in range(B):
        mz, Sz, W, _, _ = dense_joint(model, times[b])
        keep = mask[b].reshape(-1)
        Wk = W[keep]
        R = torch.diag(model.obs_linear.noise_scale.detach().square().repeat(K1)[keep])
        resid = (x[b].reshape(-1) - model.obs_linear.bias.detach().repeat(K1))[keep]
        gain = Sz @ Wk.T @ torch.linalg.inv(Wk @ Sz @ Wk.T + R)
        post_loc = (mz + gain @ (resid - Wk @ mz)).reshape(K1, DZ)
        post_cov = (Sz - gain @ Wk @ Sz).reshape(K1, DZ, K1, DZ)
        assert torch.allclose(loc[b], post_loc, atol=1e-8)
        for k in range(K1):
            assert torch.allclose(cov[b, k], post_cov[k, :, k, :], atol=1e-8)
    assert marginals.loc.shape == (B, K1, DX)


def exact_structured_member(model, guide):
    """The smoother guide with a structured reference set to the exact posterior of a
    linear-Gaussian VPF with that base."""
    prior, obs = model.prior, model.obs_linear
    with torch.no_grad():
        guide.reference.load_state_dict(prior.base.state_dict())
        guide.reference_init_loc.copy_(prior.init_loc)
        guide.reference_init_scale_unconstrained.copy_(prior.init_scale_unconstrained)
        guide.reference_mean.copy_(prior.base_mean)
    set_likelihood_potentials(guide, obs)


@pytest.mark.parametrize("mask_entries", [False, True])
def test_structured_reference_holds_the_exact_posterior(mask_entries):
    # q = p(z | x) iff the importance weights log p(x, z) - log q(z) are constant and equal
    # log p(x): irregular per-sequence times, missing entries, trend + season + Matern.
    model = structured_model()
    times = per_sequence_times()
    x, mask = observations(mask_entries)
    guide = MarkovGuide(DX, DZ, hidden_dim=8, base=model.prior.base).double()
    exact_structured_member(model, guide)
    with torch.no_grad():
        exact = exact_log_likelihood(model, x, times, mask)
        weights = log_weights(model, guide, x, times, mask, num_particles=50)
    assert torch.allclose(weights, exact.expand_as(weights), atol=1e-6), (weights - exact).abs(
    ).max()
    with torch.no_grad():  # a different reference is not exact
        guide.reference[1].parts[0].slope_scale_unconstrained.add_(0.5)
        off = log_weights(model, guide, x, times, mask, num_particles=50)
    assert off.std(0).min() > 1e-3


def test_structured_guide_marginals_are_the_kalman_smoother():
    model = structured_model()
    times = per_sequence_times()
    x, mask = observations(True)
    guide = MarkovGuide(DX, DZ, hidden_dim=8, base=model.prior.base).double()
    exact_structured_member(model, guide)
    with torch.no_grad():
        q = guide.marginal(x, times, times[:, [0, 3, 6]], mask)
        loc, cov = kalman_smoother(model, x, times, mask)
    assert torch.allclose(q.loc, loc[:, [0, 3, 6]], atol=1e-7)
    assert torch.allclose(q.covariance_matrix, cov[:, [0, 3, 6]], atol=1e-7)


def test_trained_structured_markov_guide_approaches_the_exact_likelihood():
    # the model is fixed, the guide (reference copied from the model's base) learns. A short
    # run (measured: gap 0.8-2.2 % after 500 steps from 4 600 % untrained over four seeds;
    # after 300 steps it was 1.0-7.3 %, depending on rounding); benchmarks/bench_bases.py
    # trains to convergence and reports the remaining gap.
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian",
                base=make_base("trend+cycle"))
    times = torch.linspace(0, 2, 13)
    with torch.no_grad():
        x = model.observation_distribution(model.prior.sample(times, 16)).sample()
        exact = exact_log_likelihood(model, x, times)
    model.requires_grad_(False).eval()
    guide = MarkovGuide(DX, DZ, hidden_dim=32, base=model.prior.base)

    def relative_gap():
        with torch.no_grad():
            reached = elbo(model, guide, x, times, num_particles=64).per_sequence
        return float((exact - reached).sum() / exact.abs().sum())

    untrained = relative_gap()
    fit(model, guide, x, times, num_steps=500, lr=1e-2, progress=False)
    trained = relative_gap()
    assert 0 <= trained < 0.04 and trained < 0.01 * untrained, (untrained, trained)


def test_base_reference_needs_the_smoother():
    with pytest.raises(ValueError, match="base"):
        MarkovGuide(DX, DZ, parametrization="direct", base=OU())
    with pytest.raises(ValueError, match="base"):
        MarkovGuide(DX, DZ, base=Matern(1.5).expand((3,)))
