"""Two models (and guides) in one process train, one after the other and alternately, with no
pyro.clear_param_store(): each registers its parameters under a name of its own."""

import copy

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.infer import fit


def _snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def _changed(before, *modules):
    after = [p.detach() for m in modules for p in m.parameters()]
    return sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 6, 2, generator=gen), torch.linspace(0, 1, 6)


def test_a_second_model_trains_after_the_first():
    x, times = _data()
    first = VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)
    fit(*first, x, times, num_steps=2, progress=False)
    second = VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)
    before, untouched = _snapshot(*second), _snapshot(*first)
    fit(*second, x, times, num_steps=3, lr=1e-2, progress=False)
    n = len(before)
    assert _changed(before, *second) == n  # every parameter tensor of the second pair moved
    assert _changed(untouched, *first) == 0  # and none of the first's
    names = {name.split("$$$")[0] for name in pyro.get_param_store().keys()}
    assert {second[0]._pyro_name, second[1]._pyro_name} <= names
    assert second[0]._pyro_name != first[0]._pyro_name


def test_two_models_trained_alternately_and_a_copy():
    x, times = _data()
    pairs = [(VPF(2, 2, 8, 1, 1), MarkovGuide(2, 2, 8)) for _ in range(2)]
    svis = [SVI(m, g, Adam({"lr": 1e-2}), Trace_ELBO()) for m, g in pairs]
    before = [_snapshot(*pair) for pair in pairs]
    for _ in range(3):
        for svi in svis:
            svi.step(x, times)
    for pair, snap in zip(pairs, before, strict=True):
        assert _changed(snap, *pair) == len(snap)
    copied = copy.deepcopy(pairs[0][0]), copy.deepcopy(pairs[0][1])
    snap = _snapshot(*copied)
    original = _snapshot(*pairs[0])
    fit(*copied, x, times, num_steps=2, lr=1e-2, progress=False)
    assert _changed(snap, *copied) == len(snap) and _changed(original, *pairs[0]) == 0


def test_guides_that_cannot_read_new_sequences_are_refused_clearly():
    from pyro.infer.autoguide import AutoNormal

    from pyro_vpf.evaluation import forecast, interpolate, posterior_predictive

    x, times = _data()
    model = VPF(2, 2, 8, 1, 1)
    auto = AutoNormal(model)
    svi = SVI(model, auto, Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(x, times)  # an autoguide trains on its sequences ...
    for call in (lambda: forecast(model, auto, x, times, torch.tensor([1.5])),
                 lambda: posterior_predictive(model, auto, x, times, num_samples=2),
                 lambda: interpolate(model, auto, x, times, times)):
        with pytest.raises(ValueError, match="autoguide.*pyro_vpf.guides"):
            call()  # ... but cannot read new ones

    def bare_guide(x, times, mask=None, **kwargs):
        return AffineGuide(2, 2, 8)(x, times, mask, **kwargs)

    with pytest.raises(ValueError, match="no marginal"):
        interpolate(model, bare_guide, x, times, times)
    with pytest.raises(ValueError, match="x=None"):
        AffineGuide(2, 2, 8)(None, times)


def test_posterior_predictive_scores_a_likelihood_that_depends_on_more_than_z():
    """A model with a static per-sequence offset c: x_k ~ N(z_k + c, 0.1). Its log-likelihood
    under each draw is the model's own (with c), not observation_distribution(z)."""
    from pyro import poutine
    from pyro.distributions import Normal
    from pyro_vpf.models import LinearGaussianLikelihood, PathModel

    from pyro_vpf.evaluation import posterior_predictive
    from pyro_vpf.plates import sequence_plate
    from pyro_vpf.prior import LatentPathPrior
    from pyro_vpf.validation import check_sequences

    class Offset(PathModel):
        def forward(self, x, times, mask=None, *, batch_size=None, num_sequences=None,
                    kl_weight=1.0):
            x, times, mask, B = check_sequences(x, times, mask, obs_dim=1,
                                                like=self.prior.init_loc,
                                                num_sequences=num_sequences)
            with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
                c = pyro.sample("c", Normal(5.0, 1.0))
                z = self.prior.pyro_sample(tb, kl_weight)
                law = Normal(z + c[..., None, None], 0.1)
                law = law if mb is None else law.mask(mb)
                pyro.sample("x", law.to_event(2), obs=xb)

    x, times = _data()
    x = x[..., :1] + 5.0
    model = Offset(LatentPathPrior(1, 8, 1), LinearGaussianLikelihood(1, 1), name="offset")

    class OffsetGuide(AffineGuide):  # the affine guide's sites, and c, in the same plate
        def sample_sites(self, x, times, mask):
            super().sample_sites(x, times, mask)
            pyro.sample("c", Normal(torch.full((x.shape[0],), 5.0), 0.01))

    guide = OffsetGuide(1, 1, 8)

    out = posterior_predictive(model, guide, x, times, num_samples=3)
    # the reference, by hand: the same draws of z and c from the guide, the model's law
    with pyro.plate("samples", 3, dim=-2):
        pyro.set_rng_seed(1)
        trace = poutine.trace(guide).get_trace(x, times)
    z = torch.cat([trace.nodes["z0"]["value"].unsqueeze(-2), trace.nodes["z"]["value"]], -2)
    c = trace.nodes["c"]["value"]
    assert out["log_likelihood"].shape == (3, 4)
    pyro.set_rng_seed(1)
    out = posterior_predictive(model, guide, x, times, num_samples=3)
    ref = Normal(z + c[..., None, None], 0.1).log_prob(x).sum((-1, -2))
    assert torch.allclose(out["log_likelihood"], ref, rtol=1e-5)
