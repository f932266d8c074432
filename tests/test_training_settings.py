"""Both training loops refuse bad optimisation settings with a ValueError naming the argument,
before any step (one shared check: pyro_vpf.infer.core.OptimSettings)."""

import pyro
import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.infer import fit
from pyro_vpf.infer.core import OptimSettings

BAD = [
    (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(clip_norm=0.0), "clip_norm"), (dict(clip_norm=-2.0), "clip_norm"),
    (dict(lr_decay=0.0), "lr_decay"), (dict(lr_decay=1.5), "lr_decay"),
    (dict(beta=0.0), "beta"), (dict(kl_start=-0.1), "kl_start"),
    (dict(kl_anneal_steps=2.5), "kl_anneal_steps"), (dict(kl_anneal_steps=-1), "kl_anneal_steps"),
    (dict(num_particles=0), "num_particles"), (dict(num_particles=True), "num_particles"),
]


@pytest.mark.parametrize("kwargs, name", BAD)
def test_bad_settings_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        OptimSettings(**kwargs)


@pytest.mark.parametrize("kwargs, name", BAD + [
    (dict(batch_size=2.0), "batch_size"), (dict(batch_size=0), "batch_size"),
    (dict(num_steps=1.5), "num_steps"), (dict(num_steps=-1), "num_steps"),
])
def test_fit_refuses_them_before_any_step(kwargs, name):
    pyro.clear_param_store()
    model = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1)
    guide = AffineGuide(2, 2, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, times = torch.randn(4, 5, 2), torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match=name):
        fit(model, guide, x, times, **{"num_steps": 2, "progress": False, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_schedule_and_the_defaults():
    s = OptimSettings(beta=2.0, kl_anneal_steps=4, kl_start=0.0)
    assert [s.kl_weight(k) for k in (0, 2, 4, 9)] == [0.0, 1.0, 2.0, 2.0]
    assert OptimSettings().kl_weight(0) == 1.0
    assert OptimSettings(lr=0.5, lr_decay=0.9).adam_args() == {"lr": 0.5, "clip_norm": 10.0,
                                                               "lrd": 0.9}


def test_the_lightning_module_shares_the_check():
    pytest.importorskip("lightning")
    from pyro_vpf.infer.lightning import SVIModule

    model = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1)
    for kwargs, name in BAD:
        with pytest.raises(ValueError, match=name):
            SVIModule(model, AffineGuide(2, 2, 8), num_sequences=4, **kwargs)


def test_silent_wrong_answers_of_the_inputs_are_refused():
    from pyro_vpf.guides import MarkovGuide

    from pyro_vpf.data import stochastic_lorenz
    from pyro_vpf.evaluation import elbo

    model = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1)
    times = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="num_sequences"):
        model(None, times, num_sequences=0)
    with pytest.raises(ValueError, match="num_sequences"):
        model(None, times.expand(3, -1), num_sequences=2)
    with pytest.raises(ValueError, match="num_sequences"):
        model(torch.randn(3, 5, 2), times, num_sequences=2)
    assert pyro.poutine.trace(model).get_trace(None, times, num_sequences=4).nodes["x"][
        "value"].shape == (4, 5, 2)
    for Guide in (AffineGuide, MarkovGuide):
        with pytest.raises(ValueError, match="min_scale"):
            Guide(2, 2, 8, min_scale=-1.0)
    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match="t_end"):
            stochastic_lorenz(8, 5, t_end=bad)
    x = torch.randn(3, 5, 2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False  # a sequence with nothing observed
    scores = elbo(model, AffineGuide(2, 2, 8), x, times, mask, num_particles=2)
    assert torch.isnan(scores.per_point[1]) and torch.isfinite(scores.per_point[[0, 2]]).all()
    assert torch.isfinite(scores.per_sequence).all()


def test_empty_and_degenerate_inputs_name_the_argument():
    from pyro_vpf.models import LatentSDE

    from pyro_vpf.evaluation import (
        elbo,
        exact_log_likelihood,
        forecast,
        importance_log_likelihood,
        interpolate,
        posterior_predictive,
        to_inference_data,
    )

    model = VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1)
    guide = AffineGuide(2, 2, 8)
    times = torch.linspace(0, 1, 5)
    empty = torch.randn(0, 5, 2)
    for call in (lambda: fit(model, guide, empty, times, num_steps=1, progress=False),
                 lambda: elbo(model, guide, empty, times),
                 lambda: importance_log_likelihood(model, guide, empty, times, num_particles=2),
                 lambda: posterior_predictive(model, guide, empty, times, num_samples=2)):
        with pytest.raises(ValueError, match="at least one sequence"):
            call()
    lg = VPF(2, 2, 8, num_flow_layers=0, observation="linear_gaussian")
    with pytest.raises(ValueError, match="at least one sequence"):
        exact_log_likelihood(lg, empty, times)
    x = torch.randn(3, 5, 2)
    with pytest.raises(ValueError, match="mask marks no entry observed"):
        fit(model, guide, x, times, torch.zeros(3, 5, dtype=torch.bool), num_steps=1,
            progress=False)
    for call in (lambda: posterior_predictive(model, guide, x, times, num_samples=0),
                 lambda: to_inference_data(model, guide, x, times, num_samples=0),
                 lambda: forecast(model, guide, x, times, torch.tensor([1.5]), num_samples=0),
                 lambda: interpolate(model, guide, x, times, times, num_samples=0)):
        with pytest.raises(ValueError, match="num_samples"):
            call()
    for kwargs, name in ((dict(time_scale=0.0), "time_scale"), (dict(hidden_dim=-4), "hidden_dim"),
                         (dict(time_scale=float("inf")), "time_scale")):
        with pytest.raises(ValueError, match=name):
            VPF(2, 2, **{"num_flow_layers": 1, "num_obs_flow_layers": 1, **kwargs})
        with pytest.raises(ValueError, match=name):
            LatentSDE(2, 2, **{"num_obs_flow_layers": 1, **kwargs})
