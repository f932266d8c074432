import arviz as az
import pyro
import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF
from reference import DensePosteriorGuide

from pyro_vpf.evaluation import (
    forecast,
    forecast_series,
    interpolate,
    posterior_predictive,
    predictive_coverage,
    to_inference_data,
)

D64 = torch.float64


def tiny(observation="flow"):
    torch.manual_seed(0)
    model = VPF(2, 2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1,
                observation=observation)
    guide = AffineGuide(2, 2, hidden_dim=8)
    return model, guide


def test_posterior_predictive_replicates_every_entry():
    model, guide = tiny()
    x = torch.randn(4, 7, 2)
    times = torch.sort(torch.rand(4, 7), dim=-1).values
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 3] = False
    out = posterior_predictive(model, guide, x, times, mask, num_samples=5)
    assert out["x"].shape == (5, 4, 7, 2) and out["z"].shape == (5, 4, 7, 2)
    assert out["log_likelihood"].shape == (5, 4)
    assert torch.isfinite(out["x"]).all()
    assert not torch.isclose(out["x"], x).any()  # fresh draws, not the observed values back


def test_coverage_is_calibrated_with_the_exact_posterior():
    # Sequences simulated from a linear-Gaussian VPF; 30 % of the entries held out; the
    # guide is the exact posterior given the kept entries. The predictive intervals are then
    # exact, and the empirical coverage of ~2 000 held-out entries has a binomial standard
    # error of ~0.007 at 90 % (entries within a sequence are correlated, so a few times
    # that): the required band 0.85-0.95 is about 7 standard errors wide. Seeded.
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    model = VPF(3, 2, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian").double()
    B, K1 = 120, 6
    times = torch.sort(torch.rand(B, K1, dtype=D64), dim=-1).values * 3
    with torch.no_grad():
        truth = model.observation_distribution(model.prior.sample(times, 1)[0]).sample()
    held_out = torch.rand(B, K1, 3) < 0.3
    guide = DensePosteriorGuide(model, truth, times, mask=~held_out)
    draws = posterior_predictive(model, guide, truth, times, ~held_out, num_samples=400)
    coverage = predictive_coverage(draws["x"], truth, held_out)
    assert 0.85 <= coverage[0.9] <= 0.95
    assert 0.44 <= coverage[0.5] <= 0.56
    # and a guide that is too narrow is caught
    narrow = DensePosteriorGuide(model, truth, times, inflate=0.05, mask=~held_out)
    draws = posterior_predictive(model, narrow, truth, times, ~held_out, num_samples=400)
    assert predictive_coverage(draws["x"], truth, held_out)[0.9] < 0.85


# ArviZ 0.23's plot_ppc calls a matplotlib helper that matplotlib 3.11 deprecates.
@pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")
def test_inference_data_works_with_arviz():
    model, guide = tiny()
    x = torch.randn(3, 5, 2)
    times = torch.linspace(0, 2, 5)
    idata = to_inference_data(model, guide, x, times, num_samples=20)
    assert {"posterior", "posterior_predictive", "observed_data", "log_likelihood",
            "constant_data"} <= set(idata.groups())
    pp = idata.posterior_predictive["x"]
    assert pp.dims == ("chain", "draw", "sequence", "time", "channel")
    assert pp.shape == (1, 20, 3, 5, 2)
    assert list(idata.observed_data["x"].coords["time"].values) == pytest.approx(
        times.tolist())
    assert az.hdi(idata.posterior_predictive, hdi_prob=0.9)["x"].shape == (3, 5, 2, 2)
    assert len(az.summary(idata, var_names=["z"], kind="stats")) == 3 * 5 * 2
    import matplotlib

    matplotlib.use("Agg")
    az.plot_ppc(idata, num_pp_samples=5)


def test_forecast_and_interpolation_shapes_and_checks():
    model, guide = tiny()
    x = torch.randn(3, 6, 2)
    times = torch.linspace(0, 1, 6)
    out = forecast(model, guide, x, times, torch.linspace(1.1, 2.0, 10), num_samples=4)
    assert out["x"].shape == (4, 3, 10, 2) and out["z"].shape == (4, 3, 10, 2)
    assert torch.isfinite(out["x"]).all()
    with pytest.raises(ValueError, match="after the last observed time"):
        forecast(model, guide, x, times, torch.linspace(0.5, 2.0, 10))
    with pytest.raises(ValueError, match="future_times"):
        forecast(model, guide, x, times, torch.tensor([1.5, 1.2]))
    mid = interpolate(model, guide, x, times, torch.linspace(0, 1, 21), num_samples=4)
    assert mid.shape == (4, 3, 21, 2)


def test_forecast_series_conditions_on_the_last_stretch_in_original_units():
    from pyro_vpf.data import SequenceData

    model, guide = tiny()
    T = 30
    history = SequenceData(torch.randn(1, T, 2), torch.linspace(0, 3, T),
                           mask=torch.rand(1, T) > 0.2, loc=torch.tensor([100.0, -5.0]),
                           scale=torch.tensor([10.0, 0.1]))
    future = torch.linspace(3.1, 4.0, 7)
    pyro.set_rng_seed(1)
    draws = forecast_series(model, guide, history, future, context=12, num_samples=50)
    assert draws.shape == (50, 7, 2)
    # the same draws by hand: forecast on the last 12 points, then unstandardise
    pyro.set_rng_seed(1)
    by_hand = forecast(model, guide, history.x[:, -12:], history.times[-12:].unsqueeze(0),
                       future, mask=history.mask[:, -12:], num_samples=50)["x"][:, 0]
    assert torch.allclose(draws, by_hand * history.scale + history.loc)
    with pytest.raises(ValueError, match="context"):
        forecast_series(model, guide, history, future, context=1)
    with pytest.raises(ValueError, match="one sequence"):
        forecast_series(model, guide, history[[0, 0]], future)


def test_predictive_draws_carry_no_gradient():
    """The predictive functions run without autograd: draws are plain tensors."""
    from pyro_vpf.guides import AffineGuide
    from pyro_vpf.models import VPF

    from pyro_vpf.evaluation import forecast, interpolate, posterior_predictive

    model, guide = VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)
    x, times = torch.randn(3, 5, 2), torch.linspace(0, 1, 5)
    outs = [posterior_predictive(model, guide, x, times, num_samples=2)["x"],
            forecast(model, guide, x, times, torch.tensor([1.5]), num_samples=2)["x"],
            interpolate(model, guide, x, times, times, num_samples=2)]
    assert not any(out.requires_grad for out in outs)
