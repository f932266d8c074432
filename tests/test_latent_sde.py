"""The latent SDE, its torchsde sampling and the SDE-matching ELBO, against closed forms."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import LatentSDE, NeuralSDE
from reference import ou_path_moments
from torch import nn

from pyro_vpf.distributions import GaussianMarginals, SDEPath, solve_sde
from pyro_vpf.evaluation import forecast, posterior_predictive, sample_posterior_sde
from pyro_vpf.infer import SDEMatchingELBO, elbo_per_point, fit, posterior_drift
from pyro_vpf.sites import SEQUENCES, Z0, Z

D64 = torch.float64


class OUSDE(nn.Module):
    """dz = -theta (z - mu) dt + sigma dW, known dynamics (state-independent noise)."""

    noise_type, sde_type = "diagonal", "ito"
    diffusion_depends_on_state = False

    def __init__(self, theta, mu, sigma):
        super().__init__()
        self.theta, self.mu, self.sigma = theta, mu, sigma

    def drift(self, z, t):
        return -self.theta * (z - self.mu)

    def diffusion(self, z, t):
        return torch.full_like(z, self.sigma)

    def f(self, t, z):
        return self.drift(z, t)

    def g(self, t, z):
        return self.diffusion(z, t)


def ou_marginal(t, m0, v0, theta, mu, sigma):
    """Closed-form N(m(t), v(t)) of the OU process started at N(m0, v0) at t = 0."""
    decay = torch.exp(-theta * t)
    mean = mu + (m0 - mu) * decay
    var = v0 * decay**2 + sigma**2 / (2 * theta) * (1 - decay**2)
    return mean, var


# --------------------------------------------------------------------------- drift formula


def test_posterior_drift_of_an_ou_marginal_is_the_ou_drift():
    theta, mu, sigma, m0, v0 = 1.7, 0.4, 0.8, -1.2, 0.3
    t = torch.linspace(0.05, 3.0, 40, dtype=D64)
    mean, var = ou_marginal(t, m0, v0, theta, mu, sigma)
    scale = var.sqrt()
    dmean = -theta * (mean - mu)  # the ODEs of the OU moments, written out
    dscale = (-2 * theta * var + sigma**2) / (2 * scale)
    eps = torch.randn(40, dtype=D64)
    z = mean + scale * eps
    drift = posterior_drift(eps, scale, dmean, dscale, torch.full_like(z, sigma))
    torch.testing.assert_close(drift, -theta * (z - mu), rtol=1e-12, atol=1e-12)


def test_posterior_drift_solves_fokker_planck_with_state_dependent_noise():
    """d_t q = -d_z (f q) + 1/2 d_z^2 (g^2 q) for a moving 1-D Gaussian, g = g(z)."""
    def moments(t):
        return torch.sin(t) + 0.3 * t, 0.5 + 0.4 * t**2

    def g(z):
        return 0.6 + 0.3 * torch.tanh(z)

    def q(z, t):
        m, s = moments(t)
        return torch.exp(dist.Normal(m, s).log_prob(z))

    def drift(z, t):
        m, s = moments(t)
        dm = torch.autograd.grad(m.sum(), t, create_graph=True)[0]
        ds = torch.autograd.grad(s.sum(), t, create_graph=True)[0]
        eps = (z - m) / s
        dg2 = torch.autograd.grad(g(z).square().sum(), z, create_graph=True)[0]
        return posterior_drift(eps, s, dm, ds, g(z), dg2)

    z = torch.linspace(-2.0, 3.0, 25, dtype=D64, requires_grad=True)
    t = torch.full_like(z, 0.7).requires_grad_()
    density = q(z, t)
    dq_dt = torch.autograd.grad(density.sum(), t, create_graph=True)[0]
    flux = drift(z, t) * q(z, t)
    dflux = torch.autograd.grad(flux.sum(), z, create_graph=True)[0]
    spread = g(z).square() * q(z, t)
    d1 = torch.autograd.grad(spread.sum(), z, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), z, create_graph=True)[0]
    residual = dq_dt + dflux - 0.5 * d2
    assert residual.abs().max() < 1e-10 * density.max()


def test_gaussian_marginals_rates_are_the_time_derivatives():
    def marginal(query):
        loc = torch.stack([torch.sin(query), query**2], -1)
        return loc, torch.exp(-query).unsqueeze(-1).expand(loc.shape) + 0.1

    grid = torch.linspace(0.1, 1.0, 5, dtype=D64).expand(3, 5)
    q = GaussianMarginals(*marginal(grid), marginal)
    query = torch.rand(3, 7, dtype=D64)
    loc, scale, dloc, dscale = q.rates(query)
    torch.testing.assert_close(dloc, torch.stack([torch.cos(query), 2 * query], -1))
    torch.testing.assert_close(dscale, -torch.exp(-query).unsqueeze(-1).expand(3, 7, 2))
    assert q.batch_shape == (3,) and q.event_shape == (5, 2)


# --------------------------------------------------------------------------- dynamics module


def test_state_dependent_diffusion_is_diagonal_in_the_state():
    sde = NeuralSDE(3, 16, time_embed_dim=4, state_dependent_diffusion=True).double()
    with torch.no_grad():
        sde.diffusion_out.normal_()
    z, t = torch.randn(3, dtype=D64), torch.tensor(0.3, dtype=D64)
    jac = torch.autograd.functional.jacobian(lambda v: sde.diffusion(v, t), z)
    off_diagonal = jac - torch.diag(torch.diagonal(jac))
    assert off_diagonal.abs().max() == 0 and torch.diagonal(jac).abs().min() > 0
    assert (sde.diffusion(torch.randn(5, 3, dtype=D64), t) > 0).all()


def test_neural_sde_batched_times_match_scalar_times():
    sde = NeuralSDE(2, 16, time_embed_dim=4, state_dependent_diffusion=True)
    z, t = torch.randn(4, 2), torch.rand(4)
    rows = torch.stack([sde.drift(z[i], t[i]) for i in range(4)])
    torch.testing.assert_close(sde.drift(z, t), rows)
    torch.testing.assert_close(sde.g(t[0], z), sde.diffusion(z, t[0].expand(4)))


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_sde_path_moments_match_the_ou_process(method):
    """Marginal means/variances and a lag covariance at irregular times, 20 000 paths."""
    theta, mu, sigma = 1.5, 0.5, 0.9
    times = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.55, 1.3, 1.31], dtype=D64)
    n = 20_000
    z0 = torch.full((n, 1), -1.0, dtype=D64)
    path = solve_sde(OUSDE(theta, mu, sigma), z0, times, method=method, dt=0.005)
    assert path.shape == (7, n, 1)
    torch.testing.assert_close(path[0], z0)
    mean, var = ou_marginal(times[1:], -1.0, 0.0, theta, mu, sigma)
    sample_mean, sample_var = path[1:, :, 0].mean(1), path[1:, :, 0].var(1)
    assert ((sample_mean - mean).abs() < 4 * (var / n).sqrt() + 5e-3).all()
    assert ((sample_var / var - 1).abs() < 4 * math.sqrt(2 / n) + 0.02).all()
    # Cov(z_s, z_t) = e^{-theta (t - s)} Var(z_s): interpolating between steps would break it
    a, b = path[4, :, 0], path[5, :, 0]
    lag_cov = ((a - a.mean()) * (b - b.mean())).mean()
    expected = math.exp(-theta * 0.75) * var[3]
    assert abs(lag_cov - expected) < 4 * math.sqrt(var[3] * var[4] / n) + 0.01


def test_uniform_grids_are_one_solver_call_and_irregular_ones_split(monkeypatch):
    import torchsde

    calls = []
    original = torchsde.sdeint

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(torchsde, "sdeint", counting)
    z0 = torch.zeros(4, 1)
    solve_sde(OUSDE(1.0, 0.0, 1.0), z0, torch.linspace(0, 1, 101))
    assert len(calls) == 1 and calls[0].shape == (101,)  # dt defaults to a hundredth
    calls.clear()
    solve_sde(OUSDE(1.0, 0.0, 1.0), z0, torch.tensor([0.0, 0.5, 0.6, 0.7, 0.8]), dt=0.05)
    assert len(calls) == 2 and calls[0].tolist() == [0.0, 10.0]  # 10 steps of 0.05
    assert calls[1].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_sde_path_distribution_shapes_and_per_sequence_times():
    sde = OUSDE(1.0, 0.0, 1.0)
    times = torch.sort(torch.rand(3, 6), -1).values
    path = SDEPath(torch.zeros(3, 2), times, sde)
    assert path.batch_shape == (3,) and path.event_shape == (5, 2)
    assert path.sample((4,)).shape == (4, 3, 5, 2)
    assert path.expand((2, 3)).sample().shape == (2, 3, 5, 2)
    with pytest.raises(NotImplementedError, match="SDEMatchingELBO"):
        path.log_prob(torch.zeros(3, 5, 2))


def test_solver_options_are_checked():
    z0, times = torch.zeros(2, 1), torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="method"):
        solve_sde(OUSDE(1.0, 0.0, 1.0), z0, times, method="heun")
    with pytest.raises(ValueError, match="adaptive"):
        solve_sde(OUSDE(1.0, 0.0, 1.0), z0, times, adaptive=True)
    with pytest.raises(ValueError, match="dt"):
        solve_sde(OUSDE(1.0, 0.0, 1.0), z0, times, dt=-0.1)
    model = LatentSDE(2, 1, 8, num_obs_flow_layers=1)
    with pytest.raises(ValueError, match="times"):
        model.sample_prior(torch.tensor([0.0, 0.5, 0.4]), 3)
    with pytest.raises(ValueError, match="method"):
        LatentSDE(2, 1, 8, method="rk4")
    with pytest.raises(ValueError, match="num_time_samples"):
        SDEMatchingELBO(num_time_samples=0)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_sample_prior_shapes_dtype_and_adaptive(method):
    model = LatentSDE(3, 2, 16, num_obs_flow_layers=1, time_embed_dim=4,
                      state_dependent_diffusion=True).double()
    times = torch.linspace(0, 2, 11, dtype=D64)
    z, x = model.sample_prior(times, 5, method=method)
    assert z.shape == (5, 11, 2) and x.shape == (5, 11, 3)
    assert z.dtype == x.dtype == D64 and torch.isfinite(x).all()
    if method != "euler":
        z, _ = model.sample_prior(times, 5, method=method, adaptive=True)
        assert z.shape == (5, 11, 2) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match="dtype"):
        model.sample_prior(times.float(), 2)


def test_model_program_samples_observations_with_per_sequence_times():
    model = LatentSDE(3, 2, 16, num_obs_flow_layers=1)
    times = torch.sort(torch.rand(4, 7), -1).values
    trace = pyro.poutine.trace(model).get_trace(None, times, num_sequences=4)
    assert trace.nodes[Z]["value"].shape == (4, 6, 2)
    assert trace.nodes["x"]["value"].shape == (4, 7, 3)


# --------------------------------------------------------------------------- the ELBO


class ExactMarginalGuide:
    """The exact posterior marginals of a 1-D OU latent with linear-Gaussian observations,
    by dense Gaussian conditioning at any query time (differentiable in it)."""

    def __init__(self, x, times, m0, s0, theta, mu, sigma, c, d, r, shift=0.0):
        self.x, self.times = x, times
        self.m0, self.s0, self.theta, self.mu, self.sigma = m0, s0, theta, mu, sigma
        self.c, self.d, self.r, self.shift = c, d, r, shift
        mean, cov = self._prior(times)
        self.cov_x = c**2 * cov + r**2 * torch.eye(times.shape[0], dtype=D64)
        self.resid = x[..., 0] - c * mean - d  # (B, K+1)

    def _kernel(self, s, t):
        k, t0 = self.theta, self.times[0]
        s, t = s - t0, t - t0
        return (torch.exp(-k * (s + t)) * self.s0**2 + torch.exp(-k * (s - t).abs())
                * self.sigma**2 * -torch.expm1(-2 * k * torch.minimum(s, t)) / (2 * k))

    def _prior(self, times):
        mean = self.mu + (self.m0 - self.mu) * torch.exp(-self.theta * (times - self.times[0]))
        return mean, self._kernel(times[:, None], times[None, :])

    def marginal(self, query):
        """query (B, Q) -> loc, scale (B, Q, 1)."""
        mean = self.mu + (self.m0 - self.mu) * torch.exp(-self.theta * (query - self.times[0]))
        cross = self.c * self._kernel(query.unsqueeze(-1), self.times)  # (B, Q, K+1)
        gain = torch.linalg.solve(self.cov_x, cross.mT).mT
        loc = mean + (gain * self.resid.unsqueeze(-2)).sum(-1) + self.shift
        var = self._kernel(query, query) - (gain * cross).sum(-1)
        return loc.unsqueeze(-1), var.sqrt().unsqueeze(-1)

    def posterior_cov(self, s, t):
        """Cov(z(s), z(t) | x) for scalar times s, t."""
        ks = self.c * self._kernel(s, self.times)
        kt = self.c * self._kernel(t, self.times)
        return self._kernel(s, t) - ks @ torch.linalg.solve(self.cov_x, kt)

    def __call__(self, x, times, mask=None, **kwargs):
        B = x.shape[0]
        loc, scale = self.marginal(times.expand(B, -1))
        with pyro.plate(SEQUENCES, B, dim=-1):
            pyro.sample(Z0, dist.Normal(loc[:, 0], scale[:, 0]).to_event(1))
            pyro.sample(Z, GaussianMarginals(loc[:, 1:], scale[:, 1:], self.marginal))


def _linear_problem(B=3):
    theta, mu, sigma, m0, s0, c, d, r = 1.2, 0.3, 0.9, -0.5, 0.7, 1.3, 0.2, 0.4
    times = torch.tensor([0.0, 0.4, 0.5, 1.1, 1.6, 2.0], dtype=D64)
    model = LatentSDE(1, 1, 8, observation="linear_gaussian",
                      sde=OUSDE(theta, mu, sigma)).double()
    with torch.no_grad():
        model.prior.init_loc.fill_(m0)
        model.prior.init_scale_unconstrained.fill_(math.log(math.expm1(s0)))
        model.obs_linear.weight.fill_(c)
        model.obs_linear.bias.fill_(d)
        model.obs_linear.noise_unconstrained.fill_(math.log(math.expm1(r)))
    # exact log p(x) of each sequence from the dense OU covariance (independent of the ELBO)
    mz, Sz = ou_path_moments(times, torch.tensor([m0], dtype=D64), torch.tensor([s0], dtype=D64),
                             torch.tensor([mu], dtype=D64), torch.tensor([theta], dtype=D64),
                             torch.tensor([sigma], dtype=D64))
    p_x = dist.MultivariateNormal(c * mz + d, c**2 * Sz + r**2 * torch.eye(6, dtype=D64))
    x = p_x.sample((B,)).unsqueeze(-1)
    exact = p_x.log_prob(x[..., 0]).sum()
    params = (m0, s0, theta, mu, sigma, c, d, r)
    return model, x, times, exact, params


def _elbo_estimates(model, make_guide, x, times, repeats=25, copies=400):
    """Per-sequence ELBO estimates, each the mean of ``copies`` independent ones (the data set
    repeated, so that the particles are drawn in one vectorised pass)."""
    x = x.repeat(copies, 1, 1)
    guide, elbo = make_guide(x), SDEMatchingELBO(num_time_samples=8)
    return torch.tensor([-elbo.loss(model, guide, x, times) / copies for _ in range(repeats)])


@pytest.mark.slow
def test_sde_matching_elbo_equals_log_p_at_the_exact_posterior():
    """1-D latent: the exact posterior marginals fix the posterior drift, KL(Q || P(.|x)) = 0,
    so the continuous-time ELBO is log p(x) itself; a shifted marginal falls below it."""
    model, x, times, exact, params = _linear_problem()
    values = _elbo_estimates(model, lambda xs: ExactMarginalGuide(xs, times, *params), x, times)
    se = values.std() / math.sqrt(len(values))
    assert se < 0.05
    assert abs(values.mean() - exact) < 4 * se
    shifted = _elbo_estimates(
        model, lambda xs: ExactMarginalGuide(xs, times, *params, shift=0.3), x, times, repeats=5)
    gap = exact - shifted.mean()
    assert gap > 10 * shifted.std() / math.sqrt(5) and gap > 0.2


def test_sde_matching_elbo_with_an_untrained_affine_guide_is_below_log_p():
    model, x, times, exact, _ = _linear_problem()
    guide = AffineGuide(1, 1, 16).double()
    values = _elbo_estimates(model, lambda xs: guide, x, times, repeats=5, copies=50)
    assert values.mean() + 4 * values.std() / math.sqrt(5) < exact


def test_path_term_follows_plate_and_poutine_scale():
    model = LatentSDE(2, 2, 16, num_obs_flow_layers=1, state_dependent_diffusion=True)
    guide = AffineGuide(2, 2, 16)
    x, times = torch.randn(6, 9, 2), torch.linspace(0, 1, 9)
    elbo = SDEMatchingELBO(num_time_samples=4)

    def scaled(fn):
        def program(*args, **kwargs):
            with pyro.poutine.scale(scale=3.0):
                return fn(*args, **kwargs)
        return program

    pyro.set_rng_seed(3)
    plain = elbo.differentiable_loss(model, guide, x, times)
    pyro.set_rng_seed(3)
    tripled = elbo.differentiable_loss(scaled(model), scaled(guide), x, times)
    torch.testing.assert_close(tripled, 3 * plain)
    pyro.set_rng_seed(3)
    guide_trace = pyro.poutine.trace(guide).get_trace(x, times, kl_weight=0.5)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(
        x, times, kl_weight=0.5)
    pyro.set_rng_seed(4)
    half = elbo.path_term(model_trace, guide_trace)
    model_trace.nodes[Z]["scale"] = 1.0
    pyro.set_rng_seed(4)
    torch.testing.assert_close(half, 0.5 * elbo.path_term(model_trace, guide_trace))


def test_svi_and_fit_train_a_latent_sde_and_reach_every_parameter():
    model = LatentSDE(3, 2, 16, num_obs_flow_layers=2, time_embed_dim=4,
                      state_dependent_diffusion=True)
    guide = AffineGuide(3, 2, 16)
    x, times = torch.randn(6, 12, 3), torch.linspace(0, 1, 12)
    with torch.no_grad():  # the zero-initialised output layers would block the gradients
        model.sde.drift_net[-1].weight.normal_(0, 0.1)
        model.sde.diffusion_out.normal_(0, 0.1)
    SDEMatchingELBO().differentiable_loss(model, guide, x, times).backward()
    for name, p in list(model.named_parameters()) + list(guide.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), SDEMatchingELBO())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert math.isfinite(svi.step(x, times))
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters())
    history = fit(model, guide, x, times, num_steps=3, batch_size=3,
                  elbo=SDEMatchingELBO(num_particles=2), progress=False)
    assert len(history) == 3 and all(math.isfinite(v) for v in history.loss)
    assert math.isfinite(elbo_per_point(model, guide, x, times, elbo=SDEMatchingELBO()))


def test_wrong_pairings_raise_clear_errors():
    model = LatentSDE(2, 2, 16, num_obs_flow_layers=1)
    x, times = torch.randn(3, 8, 2), torch.linspace(0, 1, 8)
    with pytest.raises(ValueError, match="GaussianMarginals"):
        SDEMatchingELBO().loss(model, MarkovGuide(2, 2, 16), x, times)
    with pytest.raises(NotImplementedError, match="SDEMatchingELBO"):
        Trace_ELBO().loss(model, AffineGuide(2, 2, 16), x, times)


def test_forecast_and_posterior_predictive_run_through_the_solver():
    model = LatentSDE(3, 2, 16, num_obs_flow_layers=1)
    guide = AffineGuide(3, 2, 16)
    x = torch.randn(4, 10, 3)
    times = torch.sort(torch.rand(4, 10), -1).values
    future = torch.linspace(1.1, 1.5, 5)
    out = forecast(model, guide, x, times, future, num_samples=6)
    assert out["z"].shape == (6, 4, 5, 2) and out["x"].shape == (6, 4, 5, 3)
    draws = posterior_predictive(model, guide, x, times, num_samples=6)
    assert torch.isfinite(draws["x"]).all()


@pytest.mark.slow
def test_posterior_paths_have_the_exact_posterior_marginals_and_correlations():
    """1-D OU prior, exact posterior marginals: the posterior SDE's paths must have them, and
    (the posterior process being fixed by its marginals and diffusion in 1-D) the two-time
    covariance of the exact posterior, which no marginal-only sampler reproduces."""
    model, x, times, _, params = _linear_problem(B=1)
    guide = ExactMarginalGuide(x, times, *params)
    query = torch.tensor([0.2, 0.45, 0.8, 1.1, 1.9], dtype=D64)
    n = 2000
    z, draws = sample_posterior_sde(model, guide, x, times, query, num_samples=n, dt=0.005)
    assert z.shape == (n, 1, 5, 1) and draws.shape == (n, 1, 5, 1)
    path = z[:, 0, :, 0]
    loc, scale = (v[0, :, 0] for v in guide.marginal(query.unsqueeze(0)))
    assert ((path.mean(0) - loc).abs() < 4 * scale / math.sqrt(n) + 0.01).all()
    assert ((path.var(0) / scale**2 - 1).abs() < 4 * math.sqrt(2 / n) + 0.02).all()
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        sample_cov = ((path[:, i] - path[:, i].mean()) * (path[:, j] - path[:, j].mean())).mean()
        exact = guide.posterior_cov(query[i], query[j])
        assert abs(sample_cov - exact) < 4 * float(scale[i] * scale[j]) / math.sqrt(n) + 0.003
        assert exact > 0.015  # what independent draws from the marginals (0) would miss
    with pytest.raises(ValueError, match="GaussianMarginals"):
        sample_posterior_sde(model, MarkovGuide(1, 1, 8).double(), x, times, query)
    with pytest.warns(DeprecationWarning, match="sample_posterior_sde"):  # the old method
        old, _ = model.sample_posterior(guide, x, times, query[:2], num_samples=3, dt=0.05)
    assert old.shape == (3, 1, 2, 1)
