"""Likelihood modules and PathModel(prior, likelihood): densities against their formulas,
masks, moments, the program's sites, training, and the earlier layout's checkpoints."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import (
    VPF,
    BernoulliLikelihood,
    FlowLikelihood,
    LatentSDE,
    LinearGaussianLikelihood,
    NegativeBinomialLikelihood,
    PathModel,
    PoissonLikelihood,
    StudentTLikelihood,
)

from pyro_vpf.evaluation import forecast, posterior_predictive
from pyro_vpf.prior import LatentPathPrior
from pyro_vpf.processes import Matern
from pyro_vpf.sites import X, Z

D64 = torch.float64
ENTRYWISE = {
    "linear_gaussian": lambda: LinearGaussianLikelihood(3, 2),
    "student_t": lambda: StudentTLikelihood(3, 2, df=3.5),
    "poisson": lambda: PoissonLikelihood(3, 2),
    "bernoulli": lambda: BernoulliLikelihood(3, 2),
    "negative_binomial": lambda: NegativeBinomialLikelihood(3, 2, concentration=2.5),
}


def _reference_log_density(name, lik, z, x):
    """Per-entry log-density written from the textbook formula (float64)."""
    eta = (z @ lik.weight.T + lik.bias).double()
    x = x.double()
    if name == "linear_gaussian":
        r = lik.noise_scale.double()
        return -0.5 * ((x - eta) / r) ** 2 - torch.log(r) - 0.5 * math.log(2 * math.pi)
    if name == "student_t":
        nu, r = lik.df.double(), lik.noise_scale.double()
        u = (x - eta) / r
        return (torch.lgamma((nu + 1) / 2) - torch.lgamma(nu / 2) - 0.5 * torch.log(nu * math.pi)
                - torch.log(r) - (nu + 1) / 2 * torch.log1p(u**2 / nu))
    if name == "poisson":
        lam = torch.nn.functional.softplus(eta)
        return x * torch.log(lam) - lam - torch.lgamma(x + 1)
    if name == "bernoulli":
        p = torch.sigmoid(eta)
        return x * torch.log(p) + (1 - x) * torch.log1p(-p)
    mu, r = torch.nn.functional.softplus(eta), lik.concentration.double()
    # NB(r, p) with success probability p = mu / (mu + r): mean mu, variance mu + mu^2 / r
    return (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)
            + r * torch.log(r / (r + mu)) + x * torch.log(mu / (r + mu)))


def _data(name, shape, gen):
    if name in ("linear_gaussian", "student_t"):
        return torch.randn(shape, generator=gen)
    if name == "bernoulli":
        return (torch.rand(shape, generator=gen) > 0.5).float()
    return torch.poisson(torch.full(shape, 3.0), generator=gen)


@pytest.mark.parametrize("name", sorted(ENTRYWISE))
def test_entrywise_density_is_the_formula_and_masks_drop_entries(name):
    gen = torch.Generator().manual_seed(1)
    lik = ENTRYWISE[name]()
    z = torch.randn(4, 6, 2, generator=gen)
    x = _data(name, (4, 6, 3), gen)
    mask = torch.rand(4, 6, 3, generator=gen) > 0.3
    d = lik.distribution(z, mask)
    assert d.batch_shape == (4,) and d.event_shape == (6, 3)
    with torch.no_grad():
        ref = _reference_log_density(name, lik, z, x)
        assert torch.allclose(d.log_prob(x).double(), (ref * mask).sum((-1, -2)), rtol=1e-5)
        full = lik.distribution(z).log_prob(x).double()
        assert torch.allclose(full, ref.sum((-1, -2)), rtol=1e-5)
    draws = lik.distribution(z).sample((2,))
    assert draws.shape == (2, 4, 6, 3)


@pytest.mark.parametrize("name", sorted(ENTRYWISE))
def test_decode_is_the_mean(name):
    """decode(z) is the mean of p(x | z) (the location for the Student-t), by moments."""
    torch.manual_seed(0)
    lik = ENTRYWISE[name]()
    z = torch.randn(5, 2)
    n = 40_000
    with torch.no_grad():
        draws = lik.distribution(z.unsqueeze(0)).sample((n,))[:, 0]  # (n, 5, 3)
        mean = lik.decode(z)
        if name == "student_t":  # df 3.5: the mean exists but its estimate is noisy; use the median
            assert torch.allclose(draws.median(0).values, mean, atol=0.05)
        else:
            sd = draws.std(0)
            assert ((draws.mean(0) - mean).abs() < 5 * sd / math.sqrt(n) + 1e-3).all()
        if name == "negative_binomial":  # variance mu + mu^2 / r
            r = lik.concentration
            assert torch.allclose(draws.var(0), mean + mean**2 / r, rtol=0.1)


def test_location_scale_decoders_take_noise_and_the_others_refuse_it():
    z, noise = torch.randn(4, 2), torch.randn(4, 3)
    lg = LinearGaussianLikelihood(3, 2)
    assert torch.allclose(lg.decode(z, noise), lg.decode(z) + noise * lg.noise_scale)
    with pytest.raises(ValueError, match="noise"):
        PoissonLikelihood(3, 2).decode(z, noise)
    with pytest.raises(ValueError, match="noise must have shape"):
        lg.decode(z, torch.randn(4, 2))
    with pytest.raises(ValueError, match="z must have shape"):
        lg.decode(torch.randn(4, 5))


def test_flow_likelihood_refuses_partial_time_points():
    lik = FlowLikelihood(2, 2, num_layers=1, hidden_dim=8)
    z = torch.randn(3, 4, 2)
    mask = torch.ones(3, 4, 2, dtype=torch.bool)
    mask[0, 1] = False  # a whole time point: fine
    assert lik.distribution(z, mask).log_prob(torch.randn(3, 4, 2)).shape == (3,)
    mask[1, 2, 0] = False
    with pytest.raises(ValueError, match="whole time points"):
        lik.distribution(z, mask)


@pytest.mark.parametrize("kwargs, match", [
    (dict(obs_dim=0, latent_dim=2), "obs_dim"), (dict(obs_dim=2, latent_dim=1.5), "latent_dim"),
])
def test_bad_dimensions_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoissonLikelihood(**kwargs)
    with pytest.raises(ValueError, match="df"):
        StudentTLikelihood(2, 2, df=0.0)
    with pytest.raises(ValueError, match="concentration"):
        NegativeBinomialLikelihood(2, 2, concentration=-1.0)


def test_path_model_checks_its_parts():
    prior = LatentPathPrior(2, 8, num_flow_layers=1)
    with pytest.raises(ValueError, match="latent_dim"):
        PathModel(prior, PoissonLikelihood(3, latent_dim=4))
    with pytest.raises(ValueError, match="likelihood"):
        PathModel(prior, torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="prior"):
        PathModel(torch.nn.Linear(2, 2), PoissonLikelihood(3, 2))


@pytest.mark.parametrize("name", ["poisson", "negative_binomial", "student_t", "bernoulli"])
def test_a_composed_model_trains_samples_and_forecasts(name):
    gen = torch.Generator().manual_seed(0)
    times = torch.sort(torch.rand(10, 8, generator=gen), -1).values
    x = _data(name, (10, 8, 3), gen)
    mask = torch.rand(x.shape, generator=gen) > 0.2
    model = PathModel(LatentPathPrior(2, 8, num_flow_layers=1, base=Matern(1.5)),
                      ENTRYWISE[name](), name=f"counts_{name}")
    guide = MarkovGuide(3, 2, hidden_dim=8)
    trace = poutine.trace(model).get_trace(x, times, mask, batch_size=4)
    assert trace.nodes[X]["fn"].event_shape == (8, 3) and trace.nodes[Z]["value"].shape == (4, 7, 2)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x, times, mask) for _ in range(30)]
    assert all(math.isfinite(v) for v in losses) and sum(losses[-5:]) < sum(losses[:5])
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith(f"counts_{name}$$$likelihood.") for n in names)
    z, xs = model.sample_prior(torch.linspace(0, 2, 50), num_samples=3)
    assert z.shape == (3, 50, 2) and xs.shape == (3, 50, 3)
    draws = posterior_predictive(model, guide, x, times, mask, num_samples=2)
    assert draws["x"].shape == (2, 10, 8, 3)
    out = forecast(model, guide, x[:2], times[:2], torch.tensor([1.2, 1.5]), mask=mask[:2],
                   num_samples=4)
    assert out["x"].shape == (4, 2, 2, 3) and torch.isfinite(out["x"]).all()


@pytest.mark.parametrize("observation", ["flow", "linear_gaussian"])
def test_state_dicts_of_the_earlier_layout_load(observation):
    """Checkpoints written when the likelihood lived in obs_flow / obs_linear still load."""
    model = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1, observation=observation)
    state = model.state_dict()
    old = {k.replace("likelihood.flow.", "obs_flow.") if observation == "flow"
           else k.replace("likelihood.", "obs_linear."): v + 0.5 for k, v in state.items()}
    assert any(k.startswith(("obs_flow.", "obs_linear.")) for k in old)
    fresh = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1, observation=observation)
    fresh.load_state_dict(old)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key] + 0.5), key
    assert (fresh.obs_flow is None) == (observation != "flow")
    assert (fresh.obs_linear is None) == (observation != "linear_gaussian")
    assert fresh.observation == observation


def test_vpf_and_latent_sde_are_path_models_with_their_parameter_names():
    vpf = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1)
    sde = LatentSDE(2, 2, 8, num_obs_flow_layers=1)
    assert isinstance(vpf, PathModel) and isinstance(sde, PathModel)
    assert (vpf.name, sde.name) == ("vpf", "latent_sde")
    x, times = torch.randn(3, 5, 2), torch.linspace(0, 1, 5)
    trace = poutine.trace(AffineGuide(2, 2, 8)).get_trace(x, times)
    assert trace.nodes[Z]["value"].shape == (3, 4, 2)


def test_the_earlier_base_class_still_builds_a_model_and_warns():
    from pyro_vpf.models import ObservationModel

    class Old(ObservationModel):
        def __init__(self):
            super().__init__()
            self._init_observation(2, 3, "linear_gaussian", 0, 8, 1)

    with pytest.warns(DeprecationWarning, match="PathModel"):
        old = Old()
    z = torch.randn(4, 5, 3)
    assert old.observation_distribution(z).event_shape == (5, 2)
    assert old.obs_linear is old.likelihood and old.decode(z).shape == (4, 5, 2)
