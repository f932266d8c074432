import pyro.distributions as dist
import pytest
import torch
from reference import ou_path_moments as ou_dense

from pyro_vpf.prior import LatentPathPrior

D64 = torch.float64


def perturbed(prior, scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return prior


def test_log_prob_identity_flow_matches_dense_gaussian():
    prior = perturbed(LatentPathPrior(2, num_flow_layers=0).double())
    times = torch.tensor([0.2, 0.3, 0.35, 1.0, 2.5], dtype=D64)
    mean, cov = ou_dense(
        times, prior.init_loc, prior.init_scale, prior.ou_mean, prior.ou_rate, prior.ou_scale
    )
    ref = dist.MultivariateNormal(mean.detach(), cov.detach())
    z = ref.sample((6,))
    expected = ref.log_prob(z)
    assert torch.allclose(prior.log_prob(z.reshape(6, 5, 2), times), expected, atol=1e-8)


def test_log_prob_with_flow_matches_change_of_variables_by_jacobian():
    torch.manual_seed(1)
    prior = perturbed(LatentPathPrior(2, hidden_dim=16, num_flow_layers=3).double())
    times = torch.tensor([0.0, 0.4, 0.5, 1.3], dtype=D64)
    z = prior.sample(times, 3).detach()
    flow = prior.flow
    for n in range(3):
        # y_k = f_{t_k}^{-1}(z_k) point by point; the density of y_{1:K} given y_0 from the
        # dense OU kernel; the log-det of the whole map y_{1:K} -> z_{1:K} by autograd.
        y = torch.stack(
            [flow.condition(times[k : k + 1]).inv(z[n, k : k + 1].clone())[0] for k in range(4)]
        )

        def forward_path(v):
            return flow.condition(times[1:])(v.reshape(3, 2)).reshape(-1)

        J = torch.autograd.functional.jacobian(forward_path, y[1:].reshape(-1).clone())
        m, c = ou_dense(
            times, y[0], torch.full((2,), 1e-30, dtype=D64),
            prior.ou_mean, prior.ou_rate, prior.ou_scale,
        )
        base = dist.MultivariateNormal(m[2:].detach(), c[2:, 2:].detach())
        expected = (
            prior.initial_distribution().log_prob(z[n, 0])
            + base.log_prob(y[1:].reshape(-1))
            - torch.linalg.slogdet(J).logabsdet
        )
        assert torch.allclose(prior.log_prob(z[n], times), expected, atol=1e-8)


def test_sampler_moments_identity_flow():
    # 50 000 paths, 5-standard-error bands on means and variances (seeded).
    torch.manual_seed(2)
    prior = perturbed(LatentPathPrior(2, num_flow_layers=0).double(), seed=3)
    times = torch.tensor([0.0, 0.05, 0.5, 0.55, 3.0], dtype=D64)
    with torch.no_grad():
        z = prior.sample(times, 50_000).reshape(50_000, -1)
        mean, cov = ou_dense(
            times, prior.init_loc, prior.init_scale, prior.ou_mean, prior.ou_rate, prior.ou_scale
        )
    var = cov.diagonal()
    assert ((z.mean(0) - mean).abs() <= 5 * (var / 50_000).sqrt()).all()
    assert ((z.var(0) - var).abs() <= 5 * var * (2 / 50_000) ** 0.5).all()


def test_marginal_does_not_depend_on_resolution():
    # The point of an exact path model: the law of z at t = 1 is the same whether the path
    # is drawn on 3 points or 401. Compare means and standard deviations (5 s.e., seeded).
    torch.manual_seed(4)
    prior = perturbed(LatentPathPrior(2, hidden_dim=16, num_flow_layers=3), seed=5)
    n = 20_000
    with torch.no_grad():
        coarse = prior.sample(torch.tensor([0.0, 0.5, 1.0]), n)[:, -1]
        fine = prior.sample(torch.linspace(0, 1, 401), n)[:, -1]
    se_mean = (coarse.var(0) / n + fine.var(0) / n).sqrt()
    assert ((coarse.mean(0) - fine.mean(0)).abs() <= 5 * se_mean).all()
    se_std = coarse.std(0) * (1 / n) ** 0.5 * 2
    assert ((coarse.std(0) - fine.std(0)).abs() <= 5 * se_std).all()


@pytest.mark.parametrize("shape", [(1,), (2,), (101,), (3, 7)])
def test_sample_shapes(shape):
    prior = LatentPathPrior(3, hidden_dim=8, num_flow_layers=2)
    times = torch.sort(torch.rand(shape), dim=-1).values
    z = prior.sample(times, 5)
    assert z.shape == (5,) + shape + (3,)
    assert torch.isfinite(z).all()


def test_sample_checks_times():
    prior = LatentPathPrior(2, hidden_dim=8, num_flow_layers=1)
    with pytest.raises(ValueError, match="increasing"):
        prior.sample(torch.tensor([0.0, 1.0, 0.5]), 2)
    with pytest.raises(ValueError, match="dtype"):
        prior.sample(torch.linspace(0, 1, 5, dtype=D64), 2)
    with pytest.raises(ValueError, match="NaN"):
        prior.sample(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="shape"):
        prior.sample(torch.zeros(2, 2, 2), 2)
    with pytest.raises(ValueError, match="num_samples"):
        prior.sample(torch.linspace(0, 1, 5), 0)


def test_nothing_hard_codes_the_cpu():
    # On the meta device every tensor must be created from the module's or the data's device:
    # a stray CPU tensor would raise when mixed with meta tensors.
    prior = LatentPathPrior(3, hidden_dim=8, num_flow_layers=2).to("meta")
    times = torch.linspace(0, 1, 11, device="meta")
    import pyro

    pyro.enable_validation(False)  # value checks read data back, which meta cannot do
    with torch.no_grad():
        prior.flow.condition(times)(torch.randn(4, 11, 3, device="meta"))
        base_path = prior.path_distribution(torch.zeros(4, 3, device="meta"), times)
        z = base_path.rsample()
        lp = base_path.log_prob(z)
    assert z.device.type == "meta" and z.shape == (4, 10, 3) and lp.shape == (4,)


def test_float64_end_to_end():
    prior = LatentPathPrior(2, hidden_dim=8, num_flow_layers=2).double()
    times = torch.linspace(0, 1, 9, dtype=D64)
    z = prior.sample(times, 3)
    assert z.dtype == D64
    lp = prior.log_prob(z, times)
    lp.sum().backward()
    assert all(p.grad is not None for p in prior.parameters())
