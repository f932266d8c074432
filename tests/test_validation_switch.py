"""Input checks run once at the entry points; inside the programs only under Pyro's validation
switch (and never again inside an entry point that made them)."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf import validation
from pyro_vpf.evaluation import elbo, forecast, posterior_predictive
from pyro_vpf.infer import elbo_per_point, fit
from pyro_vpf.validation import inputs_checked, program_checks_values


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 2, generator=gen)
    return VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8), x, torch.linspace(0, 1, 6)


@pytest.fixture
def value_checks(monkeypatch):
    """Count the complete (value) checks of times made through ``check_sequences``."""
    calls = []
    original = validation.check_times

    def counted(times, like, name="times", values=True):
        if name == "times":  # not future or query times
            calls.append(values)
        return original(times, like, name, values)

    monkeypatch.setattr(validation, "check_times", counted)
    return calls


def test_the_switch_follows_pyro_validation_and_the_entry_point_context():
    assert program_checks_values()
    with inputs_checked():
        assert not program_checks_values()
        with inputs_checked():
            assert not program_checks_values()
        assert not program_checks_values()
    assert program_checks_values()
    with pyro.validation_enabled(False):
        assert not program_checks_values()
    assert program_checks_values()


@pytest.mark.parametrize("guide_cls", [AffineGuide, MarkovGuide])
def test_programs_check_values_only_under_the_validation_switch(guide_cls):
    model, _, x, times = _problem()
    guide = guide_cls(2, 2, 8)
    bad_times = times.clone()
    bad_times[3] = float("nan")
    for program in (model, guide):
        with pytest.raises(ValueError, match="times contains NaN"):
            poutine.trace(program).get_trace(x, bad_times)
    bad_x = x.clone()
    bad_x[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        poutine.trace(model).get_trace(bad_x, times)
    # without the switch the programs trust their inputs (no host synchronisation) ...
    with pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(bad_x, times)
    assert torch.isnan(trace.nodes["x"]["value"]).any()
    # ... but shapes, dtypes and devices are always checked
    with pyro.validation_enabled(False), pytest.raises(ValueError, match="x must have shape"):
        poutine.trace(model).get_trace(x[..., :1], times)
    with inputs_checked(), pytest.raises(ValueError, match="dtype"):
        poutine.trace(guide).get_trace(x.double(), times)


def test_masked_entries_are_zeroed_even_when_values_are_not_checked():
    model, guide, x, times = _problem()
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2] = False
    x = x.clone()
    x[1, 2] = float("nan")
    with pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(x, times, mask)
        trace.compute_log_prob()
    assert torch.isfinite(trace.nodes["x"]["log_prob_sum"])


def test_fit_checks_the_data_once_not_at_every_step(value_checks):
    model, guide, x, times = _problem()
    fit(model, guide, x, times, num_steps=4, progress=False)
    assert value_checks.count(True) == 1  # at the entry point
    assert value_checks.count(False) == 8  # model and guide at each of the 4 steps


@pytest.mark.parametrize("entry", ["elbo", "elbo_per_point", "posterior_predictive",
                                   "forecast"])
def test_evaluation_entry_points_check_once(value_checks, entry):
    model, guide, x, times = _problem()
    if entry == "elbo":
        elbo(model, guide, x, times, num_particles=4)
    elif entry == "elbo_per_point":
        elbo_per_point(model, guide, x, times, num_particles=4, batch_size=2)
    elif entry == "posterior_predictive":
        posterior_predictive(model, guide, x, times, num_samples=3)
    else:
        forecast(model, guide, x, times, torch.tensor([1.5, 2.0]), num_samples=3)
    assert value_checks.count(True) == 1
    assert value_checks.count(False) >= 1  # the programs it ran trusted the check


@pytest.mark.parametrize("entry", [fit, elbo_per_point])
def test_entry_points_still_refuse_bad_values(entry):
    model, guide, x, times = _problem()
    bad = x.clone()
    bad[0, 0, 0] = float("inf")
    kwargs = {"num_steps": 1, "progress": False} if entry is fit else {}
    with pytest.raises(ValueError, match="x contains NaN or infinite"):
        entry(model, guide, bad, times, **kwargs)
