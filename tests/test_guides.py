"""The three guides side by side: same sites, exact log q, training, estimators, marginals."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro_vpf.guides import AffineGuide, FlowGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.evaluation import (
    elbo,
    exact_log_likelihood,
    forecast,
    importance_log_likelihood,
    interpolate,
)
from pyro_vpf.infer import fit
from pyro_vpf.sites import Z0, Z

B, K1, DX, DZ = 4, 7, 3, 2
GUIDES = {
    "affine": lambda: AffineGuide(DX, DZ, hidden_dim=8, window=3),
    "markov": lambda: MarkovGuide(DX, DZ, hidden_dim=8),
    "markov-direct": lambda: MarkovGuide(DX, DZ, hidden_dim=8, parametrization="direct"),
    "flow": lambda: FlowGuide(DX, DZ, hidden_dim=8, window=3, num_flow_layers=2),
}


def data(seed=0, per_sequence=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K1, DX, generator=g)
    times = torch.sort(torch.rand(B if per_sequence else 1, K1, generator=g), -1).values * 3
    return x, times if per_sequence else times[0]


@pytest.mark.parametrize("name", GUIDES)
def test_same_sites_shapes_and_gradients(name):
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1)
    guide = GUIDES[name]()
    x, times = data()
    mask = torch.rand(B, K1) > 0.2
    tr = poutine.trace(guide).get_trace(x, times, mask)
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    assert sites == ["sequences", Z0, Z]
    assert tr.nodes[Z0]["fn"].batch_shape == (B,) and tr.nodes[Z0]["fn"].event_shape == (DZ,)
    assert tr.nodes[Z]["fn"].batch_shape == (B,) and tr.nodes[Z]["fn"].event_shape == (K1 - 1, DZ)
    Trace_ELBO().differentiable_loss(model, guide, x, times, mask).backward()
    for pname, p in guide.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_flow_guide_log_q_is_the_change_of_variables(float64):
    # log q(z) = log N(u; m, s^2) - log|det dh/du| at u = h^{-1}(z); the Jacobian of the
    # forward map h(.; m) by autograd, at every time point of every sequence
    guide = FlowGuide(DX, DZ, hidden_dim=8, window=3, num_flow_layers=3)
    with torch.no_grad():  # move the flow away from its near-identity start
        for p in guide.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, times = data()
    x, times = x.double(), times.double()
    loc, scale = guide.affine.posterior(x, times, times)
    u = loc + scale * torch.randn_like(loc)
    h = guide.flow.condition(loc)
    z = h(u)
    log_q = guide.marginal(x, times, times).log_prob(z)
    base = torch.distributions.Normal(loc, scale).log_prob(u).sum(-1)
    for b in range(B):
        for k in range(K1):
            J = torch.autograd.functional.jacobian(
                lambda v, b=b, k=k: guide.flow.condition(loc[b, k])(v), u[b, k])
            expected = base[b, k] - torch.linalg.slogdet(J)[1]
            assert torch.allclose(log_q[b, k], expected, atol=1e-9)
    # the site "z" of the program scores the same thing, summed over the path
    tr = poutine.trace(poutine.condition(guide, {Z0: z[:, 0], Z: z[:, 1:]})).get_trace(x, times)
    assert torch.allclose(tr.nodes[Z]["fn"].log_prob(z[:, 1:]), log_q[:, 1:].sum(-1))


@pytest.mark.parametrize("name", GUIDES)
def test_each_guide_trains_the_same_model_and_feeds_the_estimators(name):
    pyro.set_rng_seed(1)
    model = VPF(DX, DZ, num_flow_layers=0, observation="linear_gaussian")
    times = torch.linspace(0, 2, K1)
    with torch.no_grad():
        x = model.observation_distribution(model.prior.sample(times, 8)).sample()
    guide = GUIDES[name]()
    history = fit(model, guide, x, times, num_steps=60, lr=1e-2, num_particles=2,
                  progress=False)
    first, last = sum(history.loss[:10]) / 10, sum(history.loss[-10:]) / 10
    assert last < first, (first, last)
    with torch.no_grad():
        exact = exact_log_likelihood(model, x, times)
    lower = elbo(model, guide, x, times, num_particles=200).per_sequence
    iw = importance_log_likelihood(model, guide, x, times, num_particles=500)
    assert lower.shape == iw.shape == (8,)
    # a normalised q can only give ELBO <= log p(x); the IW estimate sits in between
    # (up to Monte Carlo error, far smaller than the gaps of a 60-step guide)
    slack = 0.05 * exact.abs()
    assert (lower <= exact + slack).all() and (lower <= iw + slack).all()
    assert (iw <= exact + slack).all()


@pytest.mark.parametrize("name", GUIDES)
def test_marginals_feed_forecast_and_interpolation(name):
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1)
    guide = GUIDES[name]()
    x, times = data(per_sequence=False)
    m = guide.marginal(x, times, times[[3, 0, 6]])
    assert m.batch_shape == (B, 3) and m.event_shape == (DZ,)
    draws = interpolate(model, guide, x, times, times[1:3], num_samples=5)
    assert draws.shape == (5, B, 2, DX)
    out = forecast(model, guide, x, times, times[-1] + torch.tensor([0.5, 1.0]), num_samples=5)
    assert out["x"].shape == (5, B, 2, DX)
    with pytest.raises(ValueError, match="query_times"):
        guide.marginal(x, times, times.double())


def test_markov_marginals_are_the_guide_path_moments():
    torch.manual_seed(0)
    guide = MarkovGuide(DX, DZ, hidden_dim=8)
    x, times = data()
    query = times[:, [5, 0, 2]]
    m = guide.marginal(x, times, query)
    with torch.no_grad(), pyro.plate("draws", 20_000, dim=-2):
        tr = poutine.trace(guide).get_trace(x, times)
    paths = torch.cat([tr.nodes[Z0]["value"].unsqueeze(-2), tr.nodes[Z]["value"]], -2)
    draws = paths[:, :, [5, 0, 2]]  # (N, B, 3, DZ)
    se = (m.covariance_matrix.diagonal(dim1=-2, dim2=-1) / 20_000).sqrt()
    assert ((draws.mean(0) - m.mean).abs() <= 5 * se).all()
    centred = draws - draws.mean(0)
    cov = torch.einsum("nbqi,nbqj->bqij", centred, centred) / 20_000
    assert torch.allclose(cov, m.covariance_matrix.detach(), rtol=0.1, atol=0.02)
    with pytest.raises(ValueError, match="grid"):
        guide.marginal(x, times, times[:, :2] + 1e-3)


def test_a_guide_written_on_the_sequence_guide_base_runs_the_program():
    """A user's guide defines sample_sites and marginal_distribution; the base writes the
    checks, the plate, the parameter registration and the KL scaling."""
    from pyro.distributions import Normal
    from pyro_vpf.guides import SequenceGuide

    from pyro_vpf.sites import Z0, Z

    class MeanField(SequenceGuide):
        name = "mean_field_test"
        continuous_time = False

        def __init__(self, obs_dim, latent_dim, K1):
            super().__init__(obs_dim, latent_dim)
            self.loc = torch.nn.Parameter(torch.zeros(K1, latent_dim))

        def sample_sites(self, x, times, mask):
            B = x.shape[0]
            pyro.sample(Z0, Normal(self.loc[0].expand(B, -1), 1.0).to_event(1))
            pyro.sample(Z, Normal(self.loc[1:].expand(B, -1, -1), 1.0).to_event(2))

        def marginal_distribution(self, x, times, query_times, mask):
            return Normal(self.loc[:query_times.shape[-1]].expand(x.shape[0], -1, -1),
                          1.0).to_event(1)

    guide = MeanField(2, 3, 6)
    x, times = torch.randn(8, 6, 2), torch.linspace(0, 1, 6)
    trace = poutine.trace(guide).get_trace(x, times, batch_size=4, kl_weight=0.25)
    assert trace.nodes[Z]["value"].shape == (4, 5, 3) and trace.nodes[Z]["scale"] == 0.25 * 2
    assert "mean_field_test$$$loc" in pyro.get_param_store()
    assert guide.marginal(x, times, times[:4]).batch_shape == (8, 4)
    with pytest.raises(ValueError, match="query_times"):
        guide.marginal(x, times, times[:4].double())
    with pytest.raises(ValueError, match="latent_dim"):
        MeanField(2, 0, 6)
