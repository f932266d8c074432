"""The flow-prior VAE and its guides, checked against autograd Jacobians and quadrature."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.distributions import Normal
from pyro.infer import Trace_ELBO
from pyro_vpf.guides import VAE_GUIDES, ConditionalFlowGuide, GaussianEncoderGuide
from pyro_vpf.models import FlowVAE

from pyro_vpf.evaluation import active_units, elbo, log_weights, posterior_mean
from pyro_vpf.infer import fit
from pyro_vpf.transforms import ContextAffineCoupling, CouplingFlow


def _randomise(module, scale=0.4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _standard_normal_log_prob(eps):
    return Normal(0.0, 1.0).log_prob(eps).sum(-1)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_coupling_flow_density_is_the_change_of_variables(float64, dim):
    flow = _randomise(CouplingFlow(dim, num_layers=4, hidden_dim=16))
    model_prior = torch.distributions.TransformedDistribution(
        Normal(torch.zeros(dim), 1.0).to_event(1), [flow])
    z = model_prior.sample((6,))
    eps = flow.inv(z)
    assert torch.allclose(flow(eps), z, atol=1e-12)  # round trip
    jac = torch.stack([torch.autograd.functional.jacobian(flow, e) for e in eps])
    expected = _standard_normal_log_prob(eps) - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(model_prior.log_prob(z), expected, atol=1e-10)


def test_unconditional_coupling_rejects_a_context():
    layer = ContextAffineCoupling(3, 0, 8)
    with pytest.raises(ValueError, match="unconditional"):
        layer.condition(torch.zeros(3))
    with pytest.raises(ValueError, match="context_dim"):
        ContextAffineCoupling(3, -1, 8)


@pytest.mark.parametrize("layers", [0, 3])
def test_log_prior_is_exact(float64, layers):
    model = _randomise(FlowVAE(4, latent_dim=3, hidden_dim=16, num_prior_layers=layers))
    z = 1.5 * torch.randn(7, 3)
    if layers == 0:
        expected = _standard_normal_log_prob(z)
    else:
        eps = model.prior_flow.inv(z)
        jac = torch.stack([torch.autograd.functional.jacobian(model.prior_flow, e) for e in eps])
        expected = _standard_normal_log_prob(eps) - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(model.log_prior(z), expected, atol=1e-10)


def test_conditional_flow_guide_density_is_the_change_of_variables(float64):
    guide = _randomise(ConditionalFlowGuide(4, latent_dim=3, hidden_dim=16, num_flow_layers=3))
    x = torch.randn(5, 4)
    q = guide.posterior(x)
    z = q.sample()
    loc, scale = guide.encode(x)
    for i in range(5):
        transform = guide.flow.condition(loc[i])
        u = transform.inv(z[i])
        jac = torch.autograd.functional.jacobian(transform, u)
        expected = Normal(loc[i], scale[i]).log_prob(u).sum() - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(q.log_prob(z)[i], expected, atol=1e-10)


def test_importance_weights_are_unbiased_for_the_quadrature_likelihood(float64):
    """p(x) = integral of N(eps) p(x | h(eps)) d eps on a fine grid: no log-determinant used."""
    model = _randomise(FlowVAE(2, latent_dim=1, hidden_dim=16, num_prior_layers=2), 0.5)
    guide = _randomise(GaussianEncoderGuide(2, latent_dim=1, hidden_dim=16, min_scale=2.0), 0.1)
    x = torch.tensor([[0.3, -0.5], [1.0, 0.8]])
    eps = torch.linspace(-12.0, 12.0, 40001).unsqueeze(-1)
    with torch.no_grad():
        log_joint = (_standard_normal_log_prob(eps).unsqueeze(-1)
                     + model.decode(model.prior_flow(eps).unsqueeze(-2)).log_prob(x))
    quadrature = torch.trapezoid(log_joint.exp(), eps.squeeze(-1), dim=0)
    weights = log_weights(model, guide, x, num_particles=40000).exp()
    mean, se = weights.mean(0), weights.std(0) / math.sqrt(weights.shape[0])
    assert ((mean - quadrature).abs() < 5 * se).all(), (mean, quadrature, se)
    assert (se < 0.05 * quadrature).all()  # the check has power
    # and the ELBO lies below log p(x)
    assert (elbo(model, guide, x, num_particles=2000).per_sequence < quadrature.log()).all()


def test_sites_shapes_scale_and_subsample():
    model = FlowVAE(3, latent_dim=2, hidden_dim=8, num_prior_layers=2)
    guide = ConditionalFlowGuide(3, latent_dim=2, hidden_dim=8, num_flow_layers=2)
    x = torch.randn(10, 3)
    guide_trace = poutine.trace(guide).get_trace(x, batch_size=4, kl_weight=0.3)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, batch_size=4, kl_weight=0.3)
    z, obs = trace.nodes["z"], trace.nodes["x"]
    assert z["fn"].batch_shape == (4,) and z["fn"].event_shape == (2,)
    assert obs["is_observed"] and obs["fn"].event_shape == (3,)
    assert z["scale"] == pytest.approx(0.3 * 10 / 4)
    assert obs["scale"] == pytest.approx(10 / 4)
    assert torch.equal(z["value"], guide_trace.nodes["z"]["value"])
    sampled = poutine.trace(model).get_trace(None, num_data=6)
    assert sampled.nodes["x"]["value"].shape == (6, 3)


@pytest.mark.parametrize("name", sorted(VAE_GUIDES))
def test_every_parameter_gets_a_gradient(name):
    model = FlowVAE(3, latent_dim=2, hidden_dim=8, num_prior_layers=2)
    guide = VAE_GUIDES[name](3, latent_dim=2, hidden_dim=8)
    loss = Trace_ELBO().differentiable_loss(model, guide, torch.randn(16, 3))
    loss.backward()
    for module in (model, guide):
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(VAE_GUIDES))
def test_fit_trains_with_minibatches_and_beta(name):
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    x = centres[torch.randint(0, 2, (256,), generator=gen)] + 0.2 * torch.randn(256, 2,
                                                                               generator=gen)
    model = FlowVAE(2, latent_dim=2, hidden_dim=32, num_prior_layers=2)
    guide = VAE_GUIDES[name](2, latent_dim=2, hidden_dim=32)
    history = fit(model, guide, x, num_steps=150, batch_size=64, lr=1e-2, beta=0.5,
                  kl_anneal_steps=50, kl_start=0.1, progress=False)
    assert history.kl_weight[0] == pytest.approx(0.1) and history.kl_weight[-1] == 0.5
    first, last = (sum(history.loss[s]) / 20 for s in (slice(0, 20), slice(-20, None)))
    assert last < first - 100  # nats over the 256 points


def test_bernoulli_likelihood_and_sample():
    model = FlowVAE(6, latent_dim=2, hidden_dim=8, likelihood="bernoulli")
    z, x = model.sample(5)
    assert z.shape == (5, 2) and x.shape == (5, 6) and ((x == 0) | (x == 1)).all()
    _, probs = model.sample(5, noise=False)
    assert ((probs > 0) & (probs < 1)).all()
    with pytest.raises(ValueError, match="0/1"):
        model(torch.full((3, 6), 0.5))


def test_sample_with_refinement_raises_the_reward():
    model = FlowVAE(2, latent_dim=2, hidden_dim=8, num_prior_layers=2)

    def reward(z):
        return -5.0 * (z[..., 0] - 1.5).square()

    pyro.set_rng_seed(3)
    z0, _ = model.sample(64)
    pyro.set_rng_seed(3)
    z1, x1 = model.sample(64, refine_steps=20, reward=reward, anchor=0.01)
    assert z1.shape == (64, 2) and x1.shape == (64, 2)
    assert reward(z1).mean() > reward(z0).mean() + 1.0
    pyro.set_rng_seed(3)
    z2, _ = model.sample(64, refine_steps=0)
    assert torch.equal(z2, z0)


def test_model_and_guide_follow_the_parameters_dtype(float64):
    model = FlowVAE(3, latent_dim=2, hidden_dim=8)
    guide = GaussianEncoderGuide(3, latent_dim=2, hidden_dim=8)
    loss = Trace_ELBO().loss(model, guide, torch.randn(4, 3))
    assert math.isfinite(loss)
    assert model.sample(2)[0].dtype == torch.float64


@pytest.mark.parametrize(("call", "match"), [
    (lambda m, g: m(torch.randn(4, 5)), "shape"),
    (lambda m, g: m(torch.tensor([[float("nan"), 0.0, 0.0]])), "NaN"),
    (lambda m, g: m(torch.randn(4, 3, dtype=torch.float64)), "dtype"),
    (lambda m, g: m(None), "num_data"),
    (lambda m, g: g(None), "x is required"),
    (lambda m, g: m.log_prior(torch.zeros(4, 3)), "z must"),
    (lambda m, g: m.sample(0), "num_samples"),
    (lambda m, g: fit(m, g, torch.randn(4, 3), torch.linspace(0, 1, 4), progress=False),
     "times=None"),
    (lambda m, g: FlowVAE(3, likelihood="poisson"), "likelihood"),
    (lambda m, g: FlowVAE(3, likelihood="bernoulli", precision=2.0), "precision"),
])
def test_bad_input_raises(call, match):
    model = FlowVAE(3, latent_dim=2, hidden_dim=8)
    guide = GaussianEncoderGuide(3, latent_dim=2, hidden_dim=8)
    with pytest.raises(ValueError, match=match):
        call(model, guide)


def test_active_units_counts_the_dimensions_whose_mean_moves():
    guide = GaussianEncoderGuide(3, latent_dim=3, hidden_dim=16)
    out = guide.encoder[-1]
    with torch.no_grad():  # means (rows 0..2): dimension 1 constant, 0 and 2 driven by x
        out.weight[1].zero_()
        out.bias[1] = 0.7
        out.weight[0].mul_(50.0)
        out.weight[2].mul_(50.0)
    x = torch.randn(500, 3)
    result = active_units(guide, x)
    assert result.count == 2 and result.variance[1] == 0
    # the Monte Carlo mean of the flow guide agrees with the exact Gaussian mean when the
    # flow is the identity up to its near-zero initial output layers
    flow = ConditionalFlowGuide(3, latent_dim=3, hidden_dim=16, num_flow_layers=2)
    flow.encoder.load_state_dict(guide.encoder.state_dict())
    mc = posterior_mean(flow, x[:50], num_samples=4000)
    exact = posterior_mean(guide, x[:50])
    scale = guide.encode(x[:50])[1]
    assert ((mc - exact).abs() < 5 * scale / math.sqrt(4000) + 0.05 * scale).all()
