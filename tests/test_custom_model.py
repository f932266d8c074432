"""A user's own sequence model built from public parts works with the guides, fit and evaluation."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.distributions import Poisson
from pyro_vpf.guides import GUIDES
from torch import nn
from torch.nn.functional import softplus

from pyro_vpf.evaluation import forecast, importance_log_likelihood, posterior_predictive
from pyro_vpf.infer import fit
from pyro_vpf.plates import sequence_plate
from pyro_vpf.prior import LatentPathPrior
from pyro_vpf.sites import X
from pyro_vpf.validation import check_sequences


class PoissonPathModel(nn.Module):
    """Counts with a softplus rate on the VPF's latent path prior (as in notebook 07)."""

    def __init__(self, obs_dim, latent_dim=2, hidden_dim=8):
        super().__init__()
        self.obs_dim, self.latent_dim = obs_dim, latent_dim
        self.prior = LatentPathPrior(latent_dim, hidden_dim, num_flow_layers=2)
        self.readout = nn.Linear(latent_dim, obs_dim)

    def observation_distribution(self, z, mask=None):
        counts = Poisson(softplus(self.readout(z)))
        return (counts if mask is None else counts.mask(mask)).to_event(2)

    def forward(self, x, times, mask=None, *, batch_size=None, num_sequences=None, kl_weight=1.0):
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim,
                                            like=self.readout.weight, num_sequences=num_sequences)
        pyro.module("poisson_path", self)
        with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
            z = self.prior.pyro_sample(tb, kl_weight)
            pyro.sample(X, self.observation_distribution(z, mb), obs=xb)
        return z


@pytest.fixture
def counts():
    gen = torch.Generator().manual_seed(0)
    times = torch.sort(torch.rand(12, 9, generator=gen), dim=-1).values
    rate = (1.0 + torch.sin(6 * times)).unsqueeze(-1).expand(12, 9, 2).exp()
    x = torch.poisson(rate, generator=gen)
    mask = torch.rand(x.shape, generator=gen) > 0.2
    return x, times, mask


def test_sites_and_shapes(counts):
    x, times, mask = counts
    model = PoissonPathModel(obs_dim=2)
    trace = poutine.trace(model).get_trace(x, times, mask, batch_size=5, kl_weight=0.5)
    assert trace.nodes["z0"]["fn"].batch_shape == (5,)
    assert trace.nodes["z0"]["fn"].event_shape == (2,)
    assert trace.nodes["z"]["fn"].event_shape == (8, 2)
    assert trace.nodes["x"]["fn"].event_shape == (9, 2) and trace.nodes["x"]["is_observed"]
    assert trace.nodes["z"]["scale"] == pytest.approx(0.5 * 12 / 5)
    # sampling without data gives counts
    sampled = poutine.trace(model).get_trace(None, times[0], num_sequences=3)
    value = sampled.nodes["x"]["value"]
    assert value.shape == (3, 9, 2) and torch.equal(value, value.round()) and (value >= 0).all()


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_trains_with_every_guide_and_evaluates(counts, name):
    x, times, mask = counts
    model = PoissonPathModel(obs_dim=2)
    guide = GUIDES[name](2, 2, hidden_dim=8)
    history = fit(model, guide, x, times, mask, num_steps=40, lr=1e-2, progress=False)
    assert len(history) == 40 and all(torch.isfinite(torch.tensor(history.loss)))
    assert sum(history.loss[-10:]) < sum(history.loss[:10])
    iw = importance_log_likelihood(model, guide, x, times, mask, num_particles=8)
    assert iw.shape == (12,) and torch.isfinite(iw).all()
    draws = posterior_predictive(model, guide, x, times, mask, num_samples=4)
    assert draws["x"].shape == (4, 12, 9, 2) and torch.equal(draws["x"], draws["x"].round())
    if guide.continuous_time:
        out = forecast(model, guide, x[:2, :6], times[:2, :6], torch.tensor([1.1, 1.3]),
                       mask=mask[:2, :6], num_samples=5)
        assert out["x"].shape == (5, 2, 2, 2)
