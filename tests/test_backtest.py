"""Rolling-origin backtests: every origin is an honest out-of-sample forecast."""

import math

import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.evaluation import backtest, forecast_scores


def _series(n=120):
    times = torch.arange(n, dtype=torch.float64) / 12
    values = torch.stack([torch.sin(2 * math.pi * times) + 0.1 * times,
                          torch.cos(2 * math.pi * times)], -1)
    values[30, 1] = float("nan")
    values[-3] = float("nan")  # a missing point inside the last forecast
    return times.float(), values.float()


class _Factory:
    """Builds a small VPF and records what each origin's training data held."""

    def __init__(self):
        self.seen = []

    def __call__(self, train):
        self.seen.append(train)
        return (VPF(train.obs_dim, 1, 8, 0, 0, observation="linear_gaussian"),
                AffineGuide(train.obs_dim, 1, 8))


def _run(values, **kwargs):
    times, _ = _series()
    factory = _Factory()
    options = {"horizon": 1.0, "window": 24, "num_origins": 2, "fit_options": {"num_steps": 3},
               "num_samples": 50, "progress": False}
    return backtest(factory, times, values, **{**options, **kwargs}), factory


def test_origins_train_on_the_past_and_score_the_next_horizon():
    times, values = _series()
    results, factory = _run(values)
    last = float(times[-1])
    assert [r["origin"] for r in results] == pytest.approx([last - 2.0, last - 1.0])
    for result, train in zip(results, factory.seen, strict=True):
        origin = result["origin"]
        assert float(train.times.max()) <= origin + 1e-6  # nothing after the origin is seen
        future = (times > origin + 1e-6) & (times <= origin + 1.0 + 1e-6)
        truth = values[future]
        assert result["draws"].shape == (50, int(future.sum()), 2)
        expected = forecast_scores(result["draws"], truth, ~truth.isnan())
        assert result["crps"] == pytest.approx(expected.crps)
        assert result["coverage"] == pytest.approx(expected.coverage)
        assert result["num_test"] == int((~truth.isnan()).sum())
        assert len(result["history"]) == 3 and result["num_train"] == len(train)


def test_values_after_an_origin_do_not_change_its_forecast():
    # (the standardisation, the training windows and the context are all from the past)
    times, values = _series()
    first, _ = _run(values, num_origins=1, origins=[float(times[-1]) - 3.0])
    changed = values.clone()
    changed[times > float(times[-1]) - 3.0 + 1e-6] += 100.0  # the scored future and beyond
    second, _ = _run(changed, num_origins=1, origins=[float(times[-1]) - 3.0])
    assert torch.equal(first[0]["draws"], second[0]["draws"])


def test_a_single_channel_series():
    times, values = _series()
    results, _ = _run(values[:, 0], num_origins=1)
    assert results[0]["draws"].shape[-1] == 1 and math.isfinite(results[0]["crps"])


@pytest.mark.parametrize("kwargs, message", [
    ({"horizon": 0.0}, "horizon must be"),
    ({"num_origins": 0}, "num_origins must be"),
    ({"spacing": -1.0}, "spacing must be"),
    ({"origins": [0.5]}, "fewer than window=24"),
    ({"origins": [float("nan")]}, "origins must be finite"),
    ({"origins": [9.95]}, "has no point"),
    ({"fit_options": {"progress": True}}, "may not set progress"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    _, values = _series()
    with pytest.raises(ValueError, match=message):
        _run(values, **kwargs)


def test_the_factory_must_be_callable():
    times, values = _series()
    with pytest.raises(ValueError, match="model_factory must be callable"):
        backtest(None, times, values, horizon=1.0, window=24)
