"""The VPF with structured base processes: sites, training, forecasts that carry the state
forward (against the dense Gaussian-process conditional), and bad bases refused."""

import mpmath
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.cli.config import TrainConfig, build
from pyro_vpf.prior import LatentPathPrior
from pyro_vpf.processes import (
    BASES,
    OU,
    LocalLinearTrend,
    Matern,
    Oscillator,
    Sum,
    make_base,
)
from pyro_vpf.sites import Z0, Z
from tests import kernels

D64 = torch.float64


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_named_base_trains_and_samples_at_any_resolution(name):
    base = make_base(name, time_scale=2.0)
    model = VPF(2, latent_dim=3, hidden_dim=16, num_flow_layers=2, num_obs_flow_layers=2,
                time_scale=2.0, base=base)
    guide = MarkovGuide(2, latent_dim=3, hidden_dim=16)
    times = torch.linspace(0, 2, 12)
    x = torch.randn(5, 12, 2)
    trace = pyro.poutine.trace(model).get_trace(x, times)
    assert trace.nodes[Z0]["value"].shape == (5, 3) and trace.nodes[Z]["value"].shape == (5, 11, 3)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    before = {n: p.detach().clone() for n, p in model.prior.base.named_parameters()}
    losses = [svi.step(x, times) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.prior.base.named_parameters()
               if not torch.equal(p.detach(), before[n])]
    assert changed == list(before), f"untrained base parameters: {set(before) - set(changed)}"
    with torch.no_grad():
        z, xs = model.sample_prior(torch.linspace(0, 4, 1001), num_samples=2)
    assert z.shape == (2, 1001, 3) and torch.isfinite(xs).all()


def test_prior_density_with_identity_flow_is_the_dense_kernel(float64):
    nu, ell, sigma = 1.5, 0.4, 0.9
    prior = LatentPathPrior(1, num_flow_layers=0, base=Matern(nu, ell, sigma)).double()
    with torch.no_grad():
        prior.base_mean.fill_(0.3)
    times = torch.tensor([0.0, 0.05, 0.4, 0.41, 1.7, 3.0], dtype=D64)
    z = prior.sample(times)[0]  # (K+1, 1)
    log_p = prior.path_distribution(z[0], times).log_prob(z[1:])
    ref = kernels.conditional_path_log_density(kernels.matern(nu, ell, sigma), times.tolist(),
                                               (z[:, 0] - 0.3).tolist())
    assert log_p.item() == pytest.approx(ref, rel=1e-9)


def test_forecast_is_the_dense_conditional_of_the_whole_path(float64):
    """Trend + cycle: draws given y_{0:K} match the GP conditional at future times."""
    trend = LocalLinearTrend(0.1, 0.2, init_level_scale=2.0, init_slope_scale=1.0)
    cycle = Oscillator(0.5, 0.2, 0.8)
    noise = OU(3.0, 0.4)
    prior = LatentPathPrior(1, num_flow_layers=0, base=Sum(trend, cycle, noise)).double()
    times = torch.tensor([0.0, 0.3, 0.5, 1.1, 1.6, 2.0], dtype=D64)
    future = torch.tensor([2.2, 3.0, 5.0], dtype=D64)
    y = 1.5 * times + 0.3 * torch.sin(3 * times)  # a clear upward slope
    draws = prior.forecast(y.reshape(1, -1, 1).expand(40_000, -1, -1), times, future)[..., 0]
    kernel = kernels.total(kernels.local_linear_trend(0.1, 0.2, 2.0, 1.0, 0.0),
                           kernels.oscillator(0.5, 0.2, [0.8]),
                           kernels.matern(0.5, 1 / 3.0, 0.4 / 6.0**0.5))
    all_t = times.tolist() + future.tolist()
    C = torch.tensor([[float(kernel(mpmath.mpf(a), mpmath.mpf(b))) for b in all_t]
                      for a in all_t], dtype=D64)
    n = len(times)
    gain = torch.linalg.solve(C[:n, :n], C[:n, n:]).T
    mean = gain @ y
    cov = C[n:, n:] - gain @ C[:n, n:]
    sd = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() < 4.5 * sd / 200).all(), (draws.mean(0), mean)
    assert ((draws.var(0) / sd.square() - 1).abs() < 0.05).all()
    assert mean[-1] > y[-1] + 2.0  # the slope is carried forward, not reverted


def test_forecast_of_a_trained_model_runs_through_the_guide():
    from pyro_vpf.evaluation import forecast

    model = VPF(1, latent_dim=2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1,
                base=make_base("trend+cycle"))
    times = torch.linspace(0, 1, 9)
    x = torch.randn(3, 9, 1)
    for guide in (MarkovGuide(1, latent_dim=2, hidden_dim=8),
                  AffineGuide(1, latent_dim=2, hidden_dim=8)):
        out = forecast(model, guide, x, times, torch.tensor([1.5, 2.0]), num_samples=7)
        assert out["z"].shape == (7, 3, 2, 2) and out["x"].shape == (7, 3, 2, 1)


@pytest.mark.parametrize("base, match", [
    (Matern(1.5).expand((3,)), "latent_dim"),
    (Oscillator(periodic=True), "no noise"),
    ("matern", "LTIProcess"),
    ([Matern(1.5)] * 3, "latent_dim"),
])
def test_bad_bases_are_refused(base, match):
    with pytest.raises(ValueError, match=match):
        LatentPathPrior(2, num_flow_layers=0, base=base)
    with pytest.raises(ValueError, match="base"):
        make_base("brownian")


def test_per_coordinate_bases_and_the_default_is_the_ou():
    prior = LatentPathPrior(2, num_flow_layers=1, base=[Matern(2.5), make_base("trend+cycle")])
    z = prior.sample(torch.linspace(0, 1, 7), num_samples=3)
    assert z.shape == (3, 7, 2)
    assert torch.isfinite(prior.log_prob(z, torch.linspace(0, 1, 7))).all()
    default = LatentPathPrior(3, num_flow_layers=0, time_scale=4.0)
    assert isinstance(default.base, OU) and default.base.batch_shape == (3,)
    assert torch.allclose(default.ou_rate, torch.full((3,), 0.25))


def test_checkpoints_from_before_base_processes_load():
    prior = LatentPathPrior(2, num_flow_layers=0)
    old = {k.replace("base_mean", "ou_mean").replace("base.rate_unconstrained",
                                                    "ou_rate_unconstrained")
           .replace("base.scale_unconstrained", "ou_scale_unconstrained"): v + 1.0
           for k, v in prior.state_dict().items()}
    assert "ou_rate_unconstrained" in old
    prior.load_state_dict(old)
    assert torch.equal(prior.ou_rate_unconstrained, old["ou_rate_unconstrained"])


def test_workflow_builds_every_named_base():
    for name in BASES:
        model, guide = build(TrainConfig.fast(base=name, guide="markov"), obs_dim=3)
        assert type(model.prior.base).__name__ == type(make_base(name)).__name__
        assert (guide.reference is None) == (name == "ou")


@pytest.mark.parametrize("name", ["matern32", "matern52", "matern32+ou", "trend+cycle"])
def test_a_structured_base_with_a_guide_of_independent_marginals_warns(name):
    with pytest.warns(UserWarning, match="guide markov"):
        build(TrainConfig.fast(base=name, guide="affine"), obs_dim=3)
    for quiet in ("ou", "fbm"):
        build(TrainConfig.fast(base=quiet, guide="affine"), obs_dim=3)  # warnings are errors


def test_trend_and_cycle_with_a_known_season():
    """``period`` fixes the cycle's frequency (harmonics at 1/P, 2/P, ...), the trend keeps the
    time unit; without it the base is the one-cycle-per-unit default."""
    base = make_base("trend+cycle", 10.0, period=0.5, harmonics=3).double()
    trend, cycle, noise = base.parts
    assert cycle.num_harmonics == 3 and cycle.state_dim == 6
    assert torch.allclose(cycle.frequency, torch.tensor(2.0, dtype=D64))
    names = dict(base.named_parameters())
    assert not any("frequency" in n for n in names)  # a known season is not learned
    assert torch.allclose(trend.slope_scale, torch.tensor(0.1 / 10.0**1.5, dtype=D64))
    # the rough noise lives on the season's time scale
    assert torch.allclose(noise.rate, torch.tensor(4.0 / 0.5, dtype=D64))
    # the cycle's readout covariance at one period is the sum of the harmonics' variances
    # damped over that lag: every harmonic is back in phase
    A = torch.linalg.matrix_exp(cycle.drift() * 0.5)  # independent of the closed forms
    H, P = cycle.readout(), cycle.initial_covariance()
    cov = H @ A @ P @ H
    variances = cycle.scale.square()
    assert torch.allclose(cov, variances.sum() * torch.exp(-cycle.damping * 0.5), rtol=1e-10)
    quarter = H @ torch.linalg.matrix_exp(cycle.drift() * 0.125) @ P @ H  # out of phase
    assert quarter < 0.9 * cov
    default = make_base("trend+cycle", 2.0)
    assert default.parts[1].num_harmonics == 1
    assert torch.allclose(default.parts[1].frequency, torch.tensor(0.5))
    assert any("frequency" in n for n, _ in default.named_parameters())


@pytest.mark.parametrize("kwargs, match", [
    (dict(period=0.0), "period"), (dict(period=float("nan")), "period"),
    (dict(harmonics=0), "harmonics"), (dict(harmonics=1.5), "harmonics"),
])
def test_bad_season_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_base("trend+cycle", 1.0, **kwargs)
    with pytest.raises(ValueError, match="trend"):
        make_base("ou", 1.0, period=1.0)
