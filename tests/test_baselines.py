import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vpf.evaluation import (
    BaselineForecast,
    forecast_scores,
    linear_interpolation,
    structural_forecast,
)

needs_statsmodels = pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None,
                                       reason="statsmodels is not installed")

# --------------------------------------------------------------------- linear interpolation


def reference_interpolation(x, times, mask):
    """np.interp per sequence and channel; 0 where a channel has no observed entry."""
    x, mask = x.double().numpy(), mask.numpy()
    times = np.broadcast_to(times.double().numpy(), x.shape[:2])
    out = x.copy()
    for b in range(x.shape[0]):
        for d in range(x.shape[2]):
            seen = mask[b, :, d]
            hidden = ~seen
            if not seen.any():
                out[b, hidden, d] = 0.0
            else:
                out[b, hidden, d] = np.interp(times[b, hidden], times[b, seen], x[b, seen, d])
    return out


def test_interpolation_by_hand():
    nan = float("nan")
    x = torch.tensor([[[1.0], [nan], [nan], [4.0]],
                      [[1.0], [nan], [nan], [4.0]],
                      [[nan], [2.0], [nan], [nan]]])
    mask = ~torch.isnan(x)
    times = torch.tensor([[0.0, 1.0, 2.0, 3.0],
                          [0.0, 1.0, 3.0, 4.0],
                          [0.0, 1.0, 2.0, 3.0]])
    out = linear_interpolation(x, times, mask)
    expected = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                             [1.0, 1.75, 3.25, 4.0],  # 1 + 3 * (1/4), 1 + 3 * (3/4)
                             [2.0, 2.0, 2.0, 2.0]]).unsqueeze(-1)  # one point: constant
    assert torch.equal(out, expected)


@pytest.mark.parametrize("shared_times", [False, True])
def test_interpolation_matches_np_interp(shared_times):
    g = torch.Generator().manual_seed(0)
    batch, length, dim = 4, 9, 3
    x = torch.randn(batch, length, dim, generator=g)
    mask = torch.rand(batch, length, dim, generator=g) < 0.5
    mask[0, :, 0] = False  # no observed entry: filled with 0
    mask[1, :, 1] = False
    mask[1, 4, 1] = True  # one observed entry: constant
    mask[2, 0, :] = False  # hidden ends: constant extrapolation
    mask[2, -1, :] = False
    mask[3] = True  # fully observed
    if shared_times:
        times = torch.rand(length, generator=g).cumsum(0) + 0.1 * torch.arange(length)
    else:
        times = (torch.rand(batch, length, generator=g) + 0.05).cumsum(-1)
    x_hidden = x.masked_fill(~mask, float("nan"))
    out = linear_interpolation(x_hidden, times, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[mask], x[mask])
    expected = reference_interpolation(x_hidden, times, mask)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[0, :, 0], torch.zeros(length))


def test_interpolation_dtype_float64():
    x = torch.tensor([[[0.0], [5.0], [10.0]]], dtype=torch.float64)
    mask = torch.tensor([[[True], [False], [True]]])
    times = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float32)
    out = linear_interpolation(x, times, mask)
    assert out.dtype == torch.float64
    assert out[0, 1, 0].item() == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("change, name", [
    ({"x": torch.zeros(2, 3)}, "x"),
    ({"x": torch.zeros(2, 3, 1, dtype=torch.long)}, "x"),
    ({"mask": torch.ones(2, 3, 1)}, "mask"),
    ({"mask": torch.ones(2, 3, 2, dtype=torch.bool)}, "mask"),
    ({"times": torch.tensor([0.0, 1.0])}, "times"),
    ({"times": torch.tensor([0.0, 2.0, 1.0])}, "times"),
    ({"times": torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 1.0]])}, "times"),
    ({"times": torch.tensor([0.0, float("nan"), 2.0])}, "times"),
    ({"x": torch.tensor([[[0.0], [float("nan")], [1.0]]] * 2)}, "x"),
])
def test_interpolation_bad_input(change, name):
    arguments = {"x": torch.zeros(2, 3, 1), "times": torch.tensor([0.0, 1.0, 2.0]),
                 "mask": torch.ones(2, 3, 1, dtype=torch.bool)}
    arguments.update(change)
    with pytest.raises(ValueError, match=name):
        linear_interpolation(**arguments)


# ---------------------------------------------------------------------- structural forecast

STEP = 1 / 52.18  # weekly, times in years
HISTORY, HORIZON = 208, 26  # four years of history, forecasts up to half a year ahead
NOISE = 0.3


def simulate_series(seed):
    r"""Local linear trend + annual sinusoid (two harmonics) + white noise, 15 % missing.

    Slope :math:`\beta_{k+1} = \beta_k + 0.01\,\zeta_k` from 1 per year, level
    :math:`\mu_{k+1} = \mu_k + \beta_k \Delta + 0.02\,\eta_k`, observation
    :math:`y_k = \mu_k + \sin(2\pi t_k) + 0.5 \cos(4\pi t_k) + 0.3\,\varepsilon_k`.
    """
    rng = np.random.default_rng(seed)
    num = HISTORY + HORIZON
    times = np.arange(num) * STEP
    slope = 1.0 + np.cumsum(rng.normal(0.0, 0.01, num))
    level = np.cumsum(np.r_[0.0, slope[:-1] * STEP]) + np.cumsum(rng.normal(0.0, 0.02, num))
    signal = level + np.sin(2 * np.pi * times) + 0.5 * np.cos(4 * np.pi * times)
    y = signal + rng.normal(0.0, NOISE, num)
    mask = rng.random(HISTORY) > 0.15
    return times, y, signal, mask


@pytest.fixture(scope="module")
def fitted():
    """Six independent series, fitted once (about 1 s each)."""
    runs = []
    for seed in range(6):
        times, y, signal, mask = simulate_series(seed)
        history = np.where(mask, y[:HISTORY], np.nan)
        result = structural_forecast(times[:HISTORY], history, mask, times[HISTORY:],
                                     num_samples=1000, seed=seed)
        runs.append((times, y, signal, mask, result))
    return runs


@needs_statsmodels
def test_forecast_shapes_and_moments(fitted):
    _, _, _, mask, result = fitted[1]
    assert isinstance(result, BaselineForecast)
    assert result.samples.shape == (1000, HORIZON)
    assert result.mean.shape == result.std.shape == (HORIZON,)
    assert result.samples.dtype == torch.float64
    assert bool(torch.isfinite(result.samples).all())
    assert f"on {int(mask.sum())} of {HISTORY} observations" in result.summary
    assert "sigma2.irregular" in result.summary
    # The simulated paths match the exact predictive moments up to Monte Carlo error.
    error = (result.samples.mean(0) - result.mean) / (result.std / math.sqrt(1000))
    assert error.abs().max() < 4.5
    assert torch.allclose(result.samples.std(0), result.std, rtol=0.12)
    # One step ahead, the predictive spread is mostly the observation noise.
    assert 0.8 * NOISE < result.std[0] < 1.5 * NOISE
    # The spread grows with the horizon (trend uncertainty accumulates).
    assert result.std[-1] >= result.std[0]


@needs_statsmodels
def test_forecast_coverage(fitted):
    r"""Pooled coverage of the held-out observations by the central 50 % and 90 % intervals.

    The 6 x 26 = 156 held-out entries are not independent: forecast errors of one series share
    the errors of its estimated level and slope. Over 40 simulated series, the 90 % coverage
    of one series had standard deviation 0.082, against 0.059 for 26 independent entries, a
    design effect of about 2: the pooled coverage of 156 entries has an effective sample size
    of about 78, hence standard errors 0.034 (90 %) and 0.057 (50 %). Plugging in estimated
    variances makes the intervals slightly too narrow (mean 90 % coverage 0.885 over those 40
    series). The tolerances, 0.1 and 0.15, are about 3 standard errors around the nominal
    levels.
    """
    samples = torch.cat([result.samples for *_, result in fitted], dim=1)
    truth = torch.cat([torch.as_tensor(y[HISTORY:]) for _, y, *_ in fitted])
    scores = forecast_scores(samples, truth, levels=(0.5, 0.9))
    assert scores.count == 6 * HORIZON
    assert abs(scores.coverage[0.9] - 0.9) < 0.1
    assert abs(scores.coverage[0.5] - 0.5) < 0.15


@needs_statsmodels
def test_forecast_tracks_trend(fitted):
    for _, y, signal, _, result in fitted:
        span = np.ptp(y)  # about 6 over the 4.5 years
        rmse = np.sqrt(np.mean((result.mean.numpy() - signal[HISTORY:]) ** 2))
        assert rmse < 0.1 * span
        # The forecast continues upwards as the slope of 1 per year does.
        assert result.mean[-13:].mean() > result.mean[:13].mean()


@needs_statsmodels
def test_forecast_is_reproducible_and_follows_y():
    times, y, _, mask = simulate_series(7)
    short = 104  # two years of history keep the two fits quick
    history = torch.as_tensor(np.where(mask[:short], y[:short], 0.0), dtype=torch.float32)
    # Any order, repeats allowed, and within 1 % of a whole step is a whole step.
    future = times[short:][[5, 0, 5]] + 0.004 * STEP
    first = structural_forecast(torch.as_tensor(times[:short]), history,
                                torch.as_tensor(mask[:short]), future, num_samples=50, seed=3)
    assert first.samples.dtype == torch.float32 and first.samples.shape == (50, 3)
    assert torch.equal(first.mean[0], first.mean[2])
    assert torch.equal(first.samples[:, 0], first.samples[:, 2])
    second = structural_forecast(times[:short], history.numpy(), mask[:short], future,
                                 num_samples=50, seed=3)
    assert torch.equal(first.samples, second.samples.float())


def check_error(name, **change):
    times, y, _, mask = simulate_series(0)
    arguments = {"times": times[:HISTORY], "y": y[:HISTORY], "mask": mask,
                 "future_times": times[HISTORY:HISTORY + 4]}
    arguments.update(change)
    with pytest.raises(ValueError, match=name):
        structural_forecast(**arguments)


@needs_statsmodels
def test_forecast_rejects_irregular_times():
    times = np.arange(HISTORY) * STEP
    times[100] += 0.05 * STEP
    check_error("times must lie on a regular grid", times=times)
    check_error("times must be increasing", times=times[::-1].copy())


@needs_statsmodels
def test_forecast_rejects_future_times_before_the_end():
    last = (HISTORY - 1) * STEP
    check_error("future_times must lie at least one step", future_times=[last])
    check_error("future_times must lie at least one step", future_times=[last + STEP, 0.5])


@needs_statsmodels
def test_forecast_rejects_non_integer_steps():
    last = (HISTORY - 1) * STEP
    check_error("whole number of steps", future_times=[last + 1.5 * STEP])
    check_error("whole number of steps", future_times=[last + 2.02 * STEP])


@needs_statsmodels
@pytest.mark.parametrize("change, name", [
    ({"harmonics": 27}, "harmonics"),
    ({"harmonics": 0}, "harmonics"),
    ({"seasonal_period": -1.0}, "seasonal_period"),
    ({"num_samples": 0}, "num_samples"),
    ({"mask": np.zeros(HISTORY, dtype=bool)}, "mask"),
    ({"mask": np.ones(HISTORY)}, "mask"),
    ({"y": np.full(HISTORY, np.nan)}, "y"),
    ({"y": np.zeros(HISTORY - 1)}, "y"),
    ({"future_times": []}, "future_times"),
])
def test_forecast_bad_input(change, name):
    check_error(name, **change)


def test_missing_statsmodels(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.tsa.statespace.structural", None)
    with pytest.raises(ImportError, match=r'pip install "pyro-vpf\[data\]"'):
        structural_forecast([0.0, 1.0], [0.0, 1.0], None, [2.0])


def test_package_imports_without_statsmodels():
    code = ("import sys; sys.modules['statsmodels'] = None; "
            "import pyro_vpf.evaluation as e; assert e.structural_forecast")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
