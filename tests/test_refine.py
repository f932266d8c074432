"""Latent search: anchored gradient ascent checked against closed-form Gaussian optima."""

import math

import pytest
import torch
from pyro.distributions import MultivariateNormal

from pyro_vpf.infer import refine

D = 3


@pytest.fixture
def gaussian(float64):
    """A correlated Gaussian log-density with known precision P and mean mu."""
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(D, D, generator=gen)
    cov = A @ A.T + 0.5 * torch.eye(D)
    mu = torch.randn(D, generator=gen)
    z_init = 2 * torch.randn(8, D, generator=gen)
    return MultivariateNormal(mu, cov), mu, torch.linalg.inv(cov), z_init


def optimum(precision, mu, z_init, anchor, reward_weight=0.0, target=None):
    """argmax of log N(z; mu, P^-1) - anchor |z - z0|^2 - w |z - c|^2: a linear solve."""
    eye = torch.eye(D, dtype=mu.dtype)
    lhs = precision + 2 * (anchor + reward_weight) * eye
    rhs = precision @ mu + 2 * anchor * z_init
    if target is not None:
        rhs = rhs + 2 * reward_weight * target
    return torch.linalg.solve(lhs, rhs.T).T


def test_zero_steps_is_the_identity(gaussian):
    prior, _, _, z_init = gaussian
    out = refine(prior.log_prob, z_init, steps=0)
    assert torch.equal(out.z, z_init)
    assert out.objective.shape == (1, 8)
    assert torch.allclose(out.objective[0], prior.log_prob(z_init))


def test_infinite_anchor_returns_the_start(gaussian):
    prior, _, _, z_init = gaussian
    out = refine(prior.log_prob, z_init, steps=25, lr=0.1, anchor=math.inf)
    assert torch.equal(out.z, z_init)
    # and a finite but huge anchor stays within its closed-form optimum of the start
    out = refine(prior.log_prob, z_init, steps=200, lr=0.1, anchor=1e8)
    assert (out.z - z_init).abs().max() < 1e-6


def test_small_steps_increase_the_objective_and_reach_the_optimum(gaussian):
    prior, mu, precision, z_init = gaussian
    anchor = 0.3
    lipschitz = float(torch.linalg.eigvalsh(precision).max())
    out = refine(prior.log_prob, z_init, steps=3000, lr=0.9 / lipschitz, anchor=anchor,
                 backtrack=False)
    assert (out.objective.diff(dim=0) >= -1e-12).all()
    expected = optimum(precision, mu, z_init, anchor)
    assert torch.allclose(out.z, expected, atol=1e-8)
    # the traced objective is the stated one at the final point
    final = prior.log_prob(out.z) - anchor * (out.z - z_init).square().sum(-1)
    assert torch.allclose(out.objective[-1], final)


def test_reward_moves_the_optimum_as_the_closed_form_says(gaussian):
    prior, mu, precision, z_init = gaussian
    target = torch.tensor([3.0, -1.0, 0.5])
    weight, anchor = 2.0, 0.1

    def reward(z):
        return -weight * (z - target).square().sum(-1)

    out = refine(prior.log_prob, z_init, steps=400, lr=0.5, anchor=anchor, reward=reward)
    assert torch.allclose(out.z, optimum(precision, mu, z_init, anchor, weight, target),
                          atol=1e-6)
    assert out.reward.shape == (401, 8)
    assert (out.reward[-1] > out.reward[0]).all()
    final = out.log_density[-1] + out.reward[-1] - anchor * (out.z - z_init).square().sum(-1)
    assert torch.allclose(out.objective[-1], final)


def test_backtracking_keeps_any_step_size_monotone(gaussian):
    prior, mu, precision, z_init = gaussian
    out = refine(prior.log_prob, z_init, steps=300, lr=50.0, anchor=0.3, backtrack=True)
    assert (out.objective.diff(dim=0) >= 0).all()
    assert (out.step_size < 50.0).all()
    assert torch.allclose(out.z, optimum(precision, mu, z_init, 0.3), atol=1e-5)
    with pytest.raises(FloatingPointError, match="non-finite"):
        refine(prior.log_prob, z_init, steps=1000, lr=50.0, anchor=0.3, backtrack=False)


def test_generic_over_event_shape_and_batch(float64):
    # a path-shaped sample (K+1, Dz): independent standard normals, event_dim=2
    z_init = torch.randn(4, 5, 6, 2)

    def log_density(z):
        return -0.5 * z.square().sum((-2, -1))

    out = refine(log_density, z_init, steps=50, lr=0.2, anchor=0.5, event_dim=2)
    assert out.z.shape == z_init.shape and out.objective.shape == (51, 4, 5)
    # per coordinate: argmax of -z^2/2 - lam (z - z0)^2 is 2 lam z0 / (1 + 2 lam)
    assert torch.allclose(out.z, z_init * 1.0 / 2.0, atol=1e-8)


def test_model_parameters_get_no_gradient(float64):
    net = torch.nn.Linear(2, 1)
    refine(lambda z: net(z).squeeze(-1) - z.square().sum(-1), torch.randn(3, 2), steps=3)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(z_init=torch.tensor([[float("nan"), 0.0]])), "z_init"),
    (dict(z_init=torch.zeros(2, 2, dtype=torch.long)), "z_init"),
    (dict(anchor=-1.0), "anchor"),
    (dict(lr=0.0), "lr"),
    (dict(steps=-1), "steps"),
    (dict(event_dim=3), "event_dim"),
    (dict(log_density=lambda z: z.sum()), "log_density"),
    (dict(reward=lambda z: z), "reward"),
])
def test_bad_input_raises(kwargs, match):
    args = dict(log_density=lambda z: -z.square().sum(-1), z_init=torch.zeros(2, 2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        refine(args.pop("log_density"), args.pop("z_init"), steps=args.pop("steps", 2), **args)


def test_path_refinement_keeps_shapes_and_times_and_climbs():
    import pyro
    from pyro_vpf.models import VPF

    model = VPF(obs_dim=2, latent_dim=2, hidden_dim=16, num_flow_layers=2, num_obs_flow_layers=2)
    times = torch.linspace(0.0, 1.0, 30) ** 1.5  # uneven spacing

    def reward(z):  # the decoded first channel near 1 at the 20th time
        return -(model.decode(z[..., 20, :])[..., 0] - 1.0).square()

    pyro.set_rng_seed(5)
    z_init, _ = model.sample_prior(times, 6)
    z_init = z_init.detach()
    out = refine(lambda z: model.prior.log_prob(z, times), z_init, steps=15, lr=0.05,
                 anchor=0.1, reward=reward, event_dim=2)
    assert out.z.shape == (6, 30, 2) and out.objective.shape == (16, 6)
    assert (out.objective.diff(dim=0) >= 0).all() and (out.objective[-1] > out.objective[0]).all()
    pyro.set_rng_seed(5)
    z, x = model.sample_prior(times, 6, refine_steps=15, refine_lr=0.05, reward=reward)
    assert torch.allclose(z, out.z) and x.shape == (6, 30, 2)
    pyro.set_rng_seed(5)
    z_fixed, _ = model.sample_prior(times, 6, refine_steps=15, anchor=math.inf)
    assert torch.equal(z_fixed, z_init)
