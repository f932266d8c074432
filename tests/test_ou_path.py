import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vpf.distributions import OUPath

D64 = torch.float64


def dense_ou(y0, times, mu, kappa, sigma):
    """Mean and covariance of the flattened path (K*D,) from the OU covariance kernel.

    Cov(y_i, y_j | y_0) = exp(-kappa |t_j - t_i|) Var(y_min(i,j)),
    Var(y_i | y_0) = sigma^2 (1 - exp(-2 kappa (t_i - t_0))) / (2 kappa); dimensions independent.
    """
    t = times[1:] - times[0]
    K, D = t.shape[0], y0.shape[-1]
    mean = torch.empty(K, D, dtype=D64)
    cov = torch.zeros(K, D, K, D, dtype=D64)
    for d in range(D):
        var = sigma[d] ** 2 * -torch.expm1(-2 * kappa[d] * t) / (2 * kappa[d])
        tmin = torch.minimum(t[:, None], t[None, :])
        var_min = sigma[d] ** 2 * -torch.expm1(-2 * kappa[d] * tmin) / (2 * kappa[d])
        cov[:, d, :, d] = torch.exp(-kappa[d] * (t[:, None] - t[None, :]).abs()) * var_min
        mean[:, d] = mu[d] + torch.exp(-kappa[d] * t) * (y0[d] - mu[d])
        assert torch.allclose(cov[:, d, :, d].diagonal(), var)
    return mean.reshape(-1), cov.reshape(K * D, K * D)


def random_times(K, scale, generator):
    gaps = torch.rand(K, generator=generator, dtype=D64) * scale + 0.05 * scale
    return torch.cat([torch.zeros(1, dtype=D64), gaps.cumsum(0)]) + 0.3


@pytest.mark.parametrize(
    "kappa_dt",  # the typical kappa * Delta across the grid
    [1e-8, 1e-3, 0.5, 5.0, 50.0],
)
def test_log_prob_matches_dense_mvn_irregular(kappa_dt):
    g = torch.Generator().manual_seed(1)
    K, D = 7, 3
    times = random_times(K, 1.0, g)
    kappa = torch.tensor([1.0, 0.5, 2.0], dtype=D64) * kappa_dt
    sigma = torch.tensor([0.7, 1.3, 0.2], dtype=D64)
    mu = torch.tensor([0.1, -0.4, 2.0], dtype=D64)
    y0 = torch.randn(D, generator=g, dtype=D64)
    d = OUPath(y0, times, mu, kappa, sigma)
    mean, cov = dense_ou(y0, times, mu, kappa, sigma)
    ref = dist.MultivariateNormal(mean, cov)
    y = ref.sample((5,)) if kappa_dt > 1e-8 else mean + 0.1 * torch.randn(5, K * D, dtype=D64)
    expected = ref.log_prob(y)
    actual = d.log_prob(y.reshape(5, K, D))
    assert actual.shape == (5,)
    assert torch.allclose(actual, expected, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("horizon", [1e-3, 1.0, 1e4])
def test_log_prob_per_sequence_times_and_horizons(horizon):
    g = torch.Generator().manual_seed(2)
    B, K, D = 4, 6, 2
    times = torch.stack([random_times(K, horizon / K, g) * (1 + b) for b in range(B)])
    kappa = torch.tensor([0.3, 3.0], dtype=D64) / horizon
    sigma = torch.tensor([1.0, 0.5], dtype=D64) / math.sqrt(horizon)
    mu = torch.tensor([0.0, 1.0], dtype=D64)
    y0 = torch.randn(B, D, generator=g, dtype=D64)
    d = OUPath(y0, times, mu, kappa, sigma)
    assert d.batch_shape == (B,) and d.event_shape == (K, D)
    y = d.sample((3,))
    assert y.shape == (3, B, K, D)
    lp = d.log_prob(y)
    for b in range(B):
        mean, cov = dense_ou(y0[b], times[b], mu, kappa, sigma)
        expected = dist.MultivariateNormal(mean, cov).log_prob(y[:, b].reshape(3, -1))
        assert torch.allclose(lp[:, b], expected, rtol=1e-8, atol=1e-6)


def test_log_prob_matches_gaussian_hmm_on_regular_grid():
    # A GaussianHMM whose hidden state is y_k and whose observation is y_k plus noise of
    # standard deviation r: its marginal density tends to the path density as r -> 0, with a
    # remainder of order r^2 / Q (about 3e-6 nats at r = 1e-4, shrinking 100x per 10x in r;
    # much below r = 1e-5 the HMM's own factorisations lose precision). Its initial state
    # z_{-1} is y_0, up to the same r.
    torch.manual_seed(3)
    K, D, dt, r = 12, 2, 0.1, 1e-4
    kappa = torch.tensor([0.8, 2.5], dtype=D64)
    sigma = torch.tensor([0.5, 1.5], dtype=D64)
    mu = torch.tensor([0.3, -1.0], dtype=D64)
    y0 = torch.tensor([1.0, 0.5], dtype=D64)
    times = torch.arange(K + 1, dtype=D64) * dt
    d = OUPath(y0, times, mu, kappa, sigma)
    A = torch.exp(-kappa * dt)
    Q = sigma**2 * (1 - torch.exp(-2 * kappa * dt)) / (2 * kappa)
    hmm = dist.GaussianHMM(
        dist.MultivariateNormal(y0, r**2 * torch.eye(D, dtype=D64)),
        torch.diag(A),
        dist.MultivariateNormal(mu * (1 - A), torch.diag(Q)),
        torch.eye(D, dtype=D64),
        dist.Normal(torch.zeros(D, dtype=D64), r).to_event(1),
        duration=K,
    )
    y = d.sample((4,))
    assert torch.allclose(d.log_prob(y), hmm.log_prob(y), rtol=0, atol=2e-5)


def test_rsample_equals_sequential_recurrence_on_same_noise():
    g = torch.Generator().manual_seed(4)
    B, K, D = 3, 2001, 4
    times = torch.stack([random_times(K, 0.01 * (b + 1), g) for b in range(B)]).float()
    kappa = torch.tensor([0.1, 1.0, 10.0, 100.0])
    sigma = torch.tensor([1.0, 0.5, 2.0, 0.1])
    mu = torch.tensor([0.0, 1.0, -1.0, 3.0])
    y0 = torch.randn(B, D, generator=g)
    d = OUPath(y0, times, mu, kappa, sigma)
    torch.manual_seed(5)
    y = d.rsample((2,))
    torch.manual_seed(5)
    eps = torch.randn(2, B, K, D).double()
    dt = times.double().diff(dim=-1)[..., None]
    k64, s64, m64 = kappa.double(), sigma.double(), mu.double()
    A = torch.exp(-k64 * dt)
    Q = s64**2 * -torch.expm1(-2 * k64 * dt) / (2 * k64)
    prev = y0.double().expand(2, B, D)
    expected = []
    for k in range(K):
        prev = m64 + A[:, k] * (prev - m64) + Q[:, k].sqrt() * eps[:, :, k]
        expected.append(prev)
    expected = torch.stack(expected, dim=-2)
    assert torch.allclose(y.double(), expected, rtol=1e-4, atol=1e-4)


def test_sample_moments_match_kernel():
    # 40 000 paths: the standard error of a mean entry is sqrt(var / N) and of a covariance
    # entry sqrt((S_ii S_jj + S_ij^2) / N); a 5-standard-error band fails with probability
    # < 1e-5 per entry, and the seed is fixed.
    torch.manual_seed(6)
    N = 40_000
    times = torch.tensor([0.0, 0.1, 0.15, 0.6, 1.6, 1.7], dtype=D64)
    kappa = torch.tensor([1.5, 0.2], dtype=D64)
    sigma = torch.tensor([0.8, 1.1], dtype=D64)
    mu = torch.tensor([-0.5, 0.5], dtype=D64)
    y0 = torch.tensor([1.0, -2.0], dtype=D64)
    mean, cov = dense_ou(y0, times, mu, kappa, sigma)
    y = OUPath(y0, times, mu, kappa, sigma).rsample((N,)).reshape(N, -1)
    emp_mean = y.mean(0)
    emp_cov = torch.cov(y.T)
    assert ((emp_mean - mean).abs() <= 5 * (cov.diagonal() / N).sqrt()).all()
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / N).sqrt()
    assert ((emp_cov - cov).abs() <= 5 * se).all()
    d = OUPath(y0, times, mu, kappa, sigma)
    assert torch.allclose(d.mean.reshape(-1), mean)
    assert torch.allclose(d.variance.reshape(-1), cov.diagonal())


def test_large_horizon_is_stable_and_reparameterised():
    times = torch.linspace(0, 1000, 5001)
    rate = torch.tensor([50.0, 1e-4], requires_grad=True)
    y0 = torch.tensor([1e3, -2.0])
    d = OUPath(y0, times, torch.zeros(2), rate, torch.ones(2))
    y = d.rsample((8,))
    assert torch.isfinite(y).all()
    assert torch.isfinite(d.log_prob(y)).all()
    y.square().mean().backward()
    assert torch.isfinite(rate.grad).all() and (rate.grad != 0).all()


def test_expand_and_shapes():
    d = OUPath(torch.zeros(2), torch.linspace(0, 1, 5), 0.0, torch.ones(2), 1.0)
    assert d.batch_shape == () and d.event_shape == (4, 2) and d.has_rsample
    e = d.expand((3, 2))
    assert e.batch_shape == (3, 2)
    y = e.sample()
    assert y.shape == (3, 2, 4, 2)
    assert torch.allclose(e.log_prob(y), d.log_prob(y))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(times=torch.tensor([0.0, 1.0, 1.0])), "times"),
        (dict(times=torch.tensor([0.0, 2.0, 1.0])), "times"),
        (dict(times=torch.tensor([0.0, float("nan"), 1.0])), "times"),
        (dict(y0=torch.tensor([0.0, float("nan")])), "y0"),
        (dict(rate=torch.tensor([1.0, 0.0])), "rate"),
        (dict(scale=-1.0), "scale"),
        (dict(mean=torch.tensor([float("nan")])), "mean"),
        (dict(mean=torch.zeros(3)), "mean"),
        (dict(times=torch.zeros(1)), "times"),
        (dict(times=torch.linspace(0, 1, 3, dtype=D64)), "times"),
        (dict(y0=torch.zeros(3, 2), times=torch.linspace(0, 1, 3).expand(4, 3)), "broadcast"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    args = dict(y0=torch.zeros(2), times=torch.linspace(0, 1, 3), mean=0.0, rate=1.0, scale=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        OUPath(**args)


def test_log_prob_validates_sample_shape():
    d = OUPath(torch.zeros(2), torch.linspace(0, 1, 4), 0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(4, 2))
