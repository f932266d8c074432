"""Constrained parameters: the helper, and the modules that hold positive parameters with it.

Every constrained value is compared with ``torch.nn.functional.softplus`` of the stored raw
tensor (an independent reference), after the raw tensors have been moved off their initial
values, and so is a log-density that reads them.
"""

import copy
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.distributions import (
    MultivariateNormal,
    NegativeBinomial,
    Normal,
    StudentT,
    constraints,
)
from pyro_vpf.guides import MarkovGuide
from pyro_vpf.guides.markov import _local_window
from pyro_vpf.models import VPF
from pyro_vpf.models.latent_sde import NeuralSDE
from pyro_vpf.models.likelihoods import (
    NegativeBinomialLikelihood,
    StudentTLikelihood,
)
from torch import nn
from torch.distributions import transform_to
from torch.nn.functional import softplus

from pyro_vpf.distributions import OUPath, gauss_markov_posterior, ou_transition
from pyro_vpf.nn import ConstrainedParameters
from pyro_vpf.ops import inverse_softplus
from pyro_vpf.processes import OU, Matern
from pyro_vpf.sites import Z0, Z


def close(actual, expected, rtol=1e-6):
    """Equal to 1e-6 relative (in practice the two are bit-identical)."""
    return torch.allclose(actual, expected, rtol=rtol, atol=0.0)


def perturb(module):
    """Move every ``*_unconstrained`` tensor off its initial value, reproducibly."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("_unconstrained"):
                noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.add_(noise.to(tensor.device))


class Scale(ConstrainedParameters):
    def __init__(self, value, **kwargs):
        super().__init__()
        self.register_constrained("scale", value, **kwargs)


# -- the helper -----------------------------------------------------------------------------
def test_register_positive_parameter():
    module = Scale(torch.tensor([0.5, 1.0, 30.0]))
    raw = module.scale_unconstrained
    assert isinstance(raw, nn.Parameter) and raw.requires_grad
    assert torch.equal(raw, inverse_softplus(torch.tensor([0.5, 1.0, 30.0])))
    assert torch.equal(module.scale, softplus(raw))
    assert torch.equal(module.constrained("scale"), module.scale)
    assert module.unconstrained("scale") is raw
    assert module.constrained_names() == ("scale",)
    assert "scale" in dir(module)
    assert module.constraint_of("scale") is constraints.softplus_positive
    assert list(module.state_dict()) == ["scale_unconstrained"]
    module.scale.sum().backward()
    assert close(raw.grad, torch.sigmoid(raw.detach()))


def test_register_buffer_and_names():
    module = Scale(2.0, learnable=False)
    assert not list(module.parameters())
    assert list(module.state_dict()) == ["scale_unconstrained"]
    assert torch.equal(module.scale, softplus(module.scale_unconstrained))

    raw = torch.tensor([-1.0, 0.0, 3.0])
    module = Scale(None, unconstrained_value=raw, unconstrained_name="noise_unconstrained")
    assert list(module.state_dict()) == ["noise_unconstrained"]
    assert torch.equal(module.noise_unconstrained, raw)
    assert torch.equal(module.scale, softplus(raw))


def test_other_constraints():
    L = torch.tensor([[0.5, 0.0], [-1.0, 2.0]])
    module = Scale(L, constraint=constraints.softplus_lower_cholesky)
    assert torch.allclose(module.scale, L)
    raw = module.scale_unconstrained
    expected = raw.tril(-1) + torch.diag_embed(softplus(raw.diagonal()))
    assert torch.equal(module.scale, expected)

    module = Scale(0.25, constraint=constraints.unit_interval)
    assert math.isclose(module.scale.item(), 0.25, rel_tol=1e-6)
    assert math.isclose(module.scale_unconstrained.item(), math.log(0.25 / 0.75), rel_tol=1e-6)


def test_state_dict_round_trip_and_copies():
    source, target = Scale(torch.ones(3)), Scale(torch.ones(3))
    perturb(source)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.scale, source.scale)
    twin = copy.deepcopy(source)
    assert torch.equal(twin.scale, source.scale)
    assert twin.scale_unconstrained is not source.scale_unconstrained


def test_register_again_replaces():
    module = Scale(1.0)
    module.register_constrained("scale", torch.full((2,), 3.0), learnable=False)
    assert not list(module.parameters())
    assert torch.allclose(module.scale, torch.full((2,), 3.0))
    del module.scale
    assert module.constrained_names() == ()
    assert not hasattr(module, "scale_unconstrained")


@pytest.mark.parametrize("kwargs, match", [
    ({"value": 1.0, "constraint": "positive"}, "'constraint'"),
    ({"value": 1.0, "constraint": constraints.integer_interval(0, 3)}, "'constraint'"),
    ({"value": -1.0}, "'scale' must satisfy"),
    ({"value": 0.0}, "'scale' must satisfy"),
    ({"value": float("inf")}, "'scale' must satisfy"),
    ({"value": float("nan")}, "'scale' must satisfy"),
    ({"value": None}, "exactly one of 'value' and 'unconstrained_value'"),
    ({"value": 1.0, "unconstrained_value": 0.0}, "exactly one"),
    ({"value": None, "unconstrained_value": float("nan")}, "'unconstrained_value'"),
    ({"value": 1.0, "unconstrained_name": "scale"}, "'unconstrained_name'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Scale(**kwargs)


def test_names_taken_and_assignment():
    module = Scale(1.0)
    module.other = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="'name': attribute 'other'"):
        module.register_constrained("other", 1.0)
    with pytest.raises(ValueError, match="'unconstrained_name': attribute 'other'"):
        module.register_constrained("positive", 1.0, unconstrained_name="other")
    with pytest.raises(AttributeError, match="scale_unconstrained"):
        module.scale = torch.ones(1)
    with pytest.raises(KeyError):
        module.constrained("missing")
    with pytest.raises(AttributeError):
        module.missing  # noqa: B018


# -- the modules that use it: values and log-densities against softplus of the raw tensor --
def test_prior_and_vpf_log_density():
    pyro.set_rng_seed(0)
    model = VPF(3, 2, 8, 0, 0, observation="linear_gaussian")
    prior, obs = model.prior, model.obs_linear
    assert torch.equal(prior.init_scale_unconstrained, inverse_softplus(torch.ones(2)))
    assert torch.equal(obs.noise_unconstrained, torch.full((3,), -1.0))
    perturb(model)
    keys = {k for k in model.state_dict() if k.endswith("_unconstrained")}
    assert keys == {"prior.init_scale_unconstrained", "prior.base.rate_unconstrained",
                    "prior.base.scale_unconstrained", "likelihood.noise_unconstrained"}
    s0 = softplus(prior.init_scale_unconstrained)
    rate, scale = softplus(prior.ou_rate_unconstrained), softplus(prior.ou_scale_unconstrained)
    r = softplus(obs.noise_unconstrained)
    assert torch.equal(prior.init_scale, s0)
    assert torch.equal(prior.ou_rate, rate) and torch.equal(prior.ou_scale, scale)
    assert torch.equal(obs.noise_scale, r)

    times = torch.linspace(0.0, 1.0, 6)
    x = torch.randn(4, 6, 3)
    z = torch.randn(4, 6, 2)
    conditioned = poutine.condition(model, data={Z0: z[:, 0], Z: z[:, 1:]})
    actual = poutine.trace(conditioned).get_trace(x, times).log_prob_sum()
    expected = (Normal(prior.init_loc, s0).log_prob(z[:, 0]).sum()
                + OUPath(z[:, 0], times, prior.base_mean, rate, scale).log_prob(z[:, 1:]).sum()
                + Normal(z @ obs.weight.T + obs.bias, r).log_prob(x).sum())
    assert close(actual, expected)


def test_student_t_and_negative_binomial():
    torch.manual_seed(0)
    z, x = torch.randn(5, 2), torch.randn(5, 3)
    for learn_df in (True, False):
        lik = StudentTLikelihood(3, 2, df=4.0, learn_df=learn_df)
        assert torch.equal(lik.df_unconstrained, inverse_softplus(torch.full((3,), 4.0)))
        assert isinstance(lik.df_unconstrained, nn.Parameter) == learn_df
        perturb(lik)
        df, r = softplus(lik.df_unconstrained), softplus(lik.noise_unconstrained)
        assert torch.equal(lik.df, df) and torch.equal(lik.noise_scale, r)
        loc = z @ lik.weight.T + lik.bias
        assert close(lik.point_distribution(z).log_prob(x), StudentT(df, loc, r).log_prob(x))

    lik = NegativeBinomialLikelihood(3, 2, concentration=10.0)
    assert torch.equal(lik.concentration_unconstrained,
                       inverse_softplus(torch.full((3,), 10.0)))
    perturb(lik)
    c = softplus(lik.concentration_unconstrained)
    assert torch.equal(lik.concentration, c)
    counts = torch.poisson(torch.full((5, 3), 2.0))
    mean = softplus(z @ lik.weight.T + lik.bias)
    expected = NegativeBinomial(total_count=c.expand_as(mean), logits=mean.log() - c.log())
    assert close(lik.point_distribution(z).log_prob(counts), expected.log_prob(counts))


def test_processes():
    ou, matern = OU(rate=[0.5, 2.0], scale=1.0), Matern(1.5, lengthscale=0.3, scale=2.0)
    for process in (ou, matern):
        perturb(process)
        for name in process.constrained_names():
            raw = getattr(process, name + "_unconstrained")
            assert torch.equal(getattr(process, name), softplus(raw))
    assert ou.batch_shape == (2,)
    wide = matern.expand((3,))
    assert wide.lengthscale.shape == (3,) and wide.batch_shape == (3,)
    assert isinstance(wide.lengthscale_unconstrained, nn.Parameter)


def test_markov_guide_smoother():
    pyro.set_rng_seed(0)
    guide = MarkovGuide(3, 2, 8)
    assert torch.equal(guide.reference_init_scale_unconstrained, inverse_softplus(torch.ones(2)))
    assert torch.equal(guide.reference_scale_unconstrained,
                       inverse_softplus(torch.full((2,), 2.0).sqrt()))
    perturb(guide)
    for name in ("reference_init_scale", "reference_rate", "reference_scale"):
        assert torch.equal(getattr(guide, name),
                           softplus(getattr(guide, name + "_unconstrained")))
    x, times = torch.randn(4, 6, 3), torch.linspace(0.0, 1.0, 6)
    precision, information = guide.potentials(x, times)
    decay, variance = ou_transition(times.expand(4, -1),
                                    softplus(guide.reference_rate_unconstrained),
                                    softplus(guide.reference_scale_unconstrained))
    expected = gauss_markov_posterior(
        guide.reference_init_loc,
        torch.diag_embed(softplus(guide.reference_init_scale_unconstrained)),
        torch.diag_embed(decay), (1 - decay) * guide.reference_mean,
        torch.diag_embed(variance.sqrt()), precision, information)
    actual = guide.parameters_of(x, times)
    for a, e in zip(actual, expected, strict=True):
        assert close(a, e)
    m0, L0 = actual[:2]
    z0 = torch.randn(4, 2)
    assert close(MultivariateNormal(m0, scale_tril=L0).log_prob(z0),
                 MultivariateNormal(expected[0], scale_tril=expected[1]).log_prob(z0))


@pytest.mark.parametrize("full_scale", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_markov_guide_direct_scale(full_scale, dtype):
    torch.manual_seed(0)
    guide = MarkovGuide(3, 3, 8, full_transition=False, full_scale=full_scale,
                        parametrization="direct", min_scale=1e-3).to(dtype)
    raw = 3 * torch.randn(5, 6 if full_scale else 3, dtype=dtype)
    if full_scale:
        L = raw.new_zeros(5, 3, 3)
        rows, cols = torch.tril_indices(3, 3)
        L[:, rows, cols] = raw
        expected = L.tril(-1) + torch.diag_embed(softplus(L.diagonal(dim1=-2, dim2=-1)) + 1e-3)
    else:
        expected = torch.diag_embed(softplus(raw) + 1e-3)
    assert torch.equal(guide._scale_tril(raw), expected)


def test_markov_guide_direct_log_density():
    pyro.set_rng_seed(0)
    guide = MarkovGuide(3, 2, 8, parametrization="direct")
    x, times = torch.randn(4, 6, 3), torch.linspace(0.0, 1.0, 6)
    trace = poutine.trace(guide).get_trace(x, times)
    steps, summary = guide.encoder(x, times)
    initial = guide.initial_head(torch.cat([steps[:, 0], summary], -1))
    m0 = initial[:, :2] + guide.skip(_local_window(x, None))[:, 0]
    raw = initial[:, 2:]  # the triangle row by row: L00, L10, L11
    L0 = torch.stack([softplus(raw[:, 0]) + 1e-4, torch.zeros(4),
                      raw[:, 1], softplus(raw[:, 2]) + 1e-4], -1).unflatten(-1, (2, 2))
    site = trace.nodes[Z0]
    assert close(site["fn"].log_prob(site["value"]),
                 MultivariateNormal(m0, scale_tril=L0).log_prob(site["value"]))


def test_neural_sde_diffusion():
    torch.manual_seed(0)
    for state_dependent in (False, True):
        sde = NeuralSDE(2, 8, time_embed_dim=4, time_scale=2.0,
                        state_dependent_diffusion=state_dependent, min_diffusion=1e-3)
        assert torch.equal(sde.diffusion_bias, inverse_softplus(torch.full((2,), 1.0)))
        with torch.no_grad():
            sde.diffusion_bias.add_(torch.randn(2))
            for p in sde.parameters():
                p.add_(0.1 * torch.randn_like(p))
        z, t = torch.randn(7, 2), torch.rand(7)
        g = sde.diffusion(z, t)
        phi = sde.time_embedding(t)
        if state_dependent:
            inputs = torch.cat([z.unsqueeze(-1), phi.unsqueeze(-2).expand(7, 2, -1)], -1)
            hidden = torch.einsum("bdi,dih->bdh", inputs, sde.diffusion_in)
            raw = (nn.functional.silu(hidden + sde.diffusion_in_bias) * sde.diffusion_out).sum(-1)
        else:
            raw = phi @ sde.diffusion_time.T
        assert close(g, softplus(raw + sde.diffusion_bias) + 1e-3)


def test_old_state_dicts_load():
    """State dicts keyed as before the helper (``<name>_unconstrained`` tensors) load
    strictly and give the same constrained values."""
    pyro.set_rng_seed(0)
    guide = MarkovGuide(3, 2, 8)
    old = {k: v + 0.5 if k.endswith("_unconstrained") else v
           for k, v in guide.state_dict().items()}
    fresh = MarkovGuide(3, 2, 8)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.reference_rate, softplus(old["reference_rate_unconstrained"]))

    lik = StudentTLikelihood(3, 2, learn_df=False)
    state = {"weight": torch.zeros(3, 2), "bias": torch.zeros(3),
             "noise_unconstrained": torch.full((3,), 0.25), "df_unconstrained": torch.ones(3)}
    lik.load_state_dict(state)
    assert torch.equal(lik.noise_scale, softplus(torch.full((3,), 0.25)))
    assert torch.equal(lik.df, softplus(torch.ones(3)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_softplus_is_the_transform_inverse(dtype):
    value = torch.logspace(-30, 30, 601, dtype=dtype)
    transform = transform_to(constraints.softplus_positive)
    assert torch.equal(inverse_softplus(value), transform.inv(value))
    assert torch.equal(transform(inverse_softplus(value)), softplus(inverse_softplus(value)))
