"""Ragged panels: sequences of different lengths padded at the end. The padding is not
history: forecasts start after each sequence's own last observation, the guide never reads
the padding when forecasting, and the encoders normalise time over the real points."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import SequenceData
from pyro_vpf.evaluation import evaluate_sequences, forecast
from pyro_vpf.nn import normalised_time
from pyro_vpf.times import last_observed

LENGTHS = [26, 80, 40, 26]


def _panel():
    rng = np.random.default_rng(0)
    times, values = [], []
    for n in LENGTHS:
        t = np.cumsum(rng.uniform(0.2, 0.5, n))
        v = np.stack([np.sin(t) + 0.05 * t, np.cos(t)], -1)
        v[rng.uniform(size=n) < 0.1] = np.nan  # whole time points missing
        v[-1] = [0.3, -0.2]  # every sequence ends with an observation
        times.append(t)
        values.append(v)
    return SequenceData.from_arrays(values, times), times


def test_last_observed_finds_where_the_real_points_end():
    data, times = _panel()
    assert last_observed(data.mask, data.x.shape[1]).tolist() == [n - 1 for n in LENGTHS]
    assert last_observed(None, 5) is None
    assert last_observed(torch.zeros(1, 4, dtype=torch.bool), 4).tolist() == [0]


def test_forecasts_start_after_each_sequences_own_last_observation():
    data, times = _panel()
    model, guide = VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)
    ends = torch.tensor([t[-1] for t in times], dtype=torch.float32)
    future = ends.unsqueeze(-1) + torch.linspace(0.1, 2.0, 5)  # (B, F), inside the padding
    assert float(future[0, 0]) < float(data.times[0, -1])  # before sequence 0's padding ends
    out = forecast(model, guide, data.x, data.times, future, data.mask, num_samples=7)
    assert out["x"].shape == (7, 4, 5, 2) and torch.isfinite(out["x"]).all()
    early = future.clone()
    early[2] -= float(future[2, 0] - ends[2]) + 0.01  # starts just before its last point
    with pytest.raises(ValueError, match="after the last observed time of each sequence"):
        forecast(model, guide, data.x, data.times, early, data.mask)
    with pytest.raises(ValueError, match=r"future_times must have shape \(F,\) or \(4, F\)"):
        forecast(model, guide, data.x, data.times, future[:2], data.mask)


def test_the_guide_reads_no_padding_when_forecasting():
    data, times = _panel()
    model, guide = VPF(2, 2, 8, 1, 1), MarkovGuide(2, 2, 8)
    seen = []
    original = guide.forward

    def recording(x, times, mask=None, **kwargs):
        seen.append((x.shape[0], x.shape[1], mask))
        return original(x, times, mask, **kwargs)

    guide.forward = recording
    future = torch.tensor([t[-1] for t in times], dtype=torch.float32).unsqueeze(-1) + 1.0
    forecast(model, guide, data.x, data.times, future, data.mask, num_samples=3)
    assert sorted((b, k) for b, k, _ in seen) == [(1, 40), (1, 80), (2, 26)]
    assert all(bool(m[:, -1].any(-1).all()) for *_, m in seen)  # each ends with data


def _mean_and_error(draws):
    return draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])


def test_a_padded_forecast_has_the_distribution_of_the_unpadded_one():
    data, times = _panel()
    model = VPF(2, 2, 8, 0, 0, observation="linear_gaussian")
    guide = AffineGuide(2, 2, 8)
    future = torch.tensor([t[-1] for t in times], dtype=torch.float32).unsqueeze(-1) + \
        torch.tensor([0.3, 1.5])
    pyro.set_rng_seed(0)
    padded = forecast(model, guide, data.x, data.times, future, data.mask,
                      num_samples=3000)["x"]
    for i, n in enumerate(LENGTHS):
        alone = forecast(model, guide, data.x[i:i + 1, :n], data.times[i:i + 1, :n],
                         future[i:i + 1], data.mask[i:i + 1, :n], num_samples=3000)["x"][:, 0]
        m1, e1 = _mean_and_error(padded[:, i])
        m2, e2 = _mean_and_error(alone)
        assert ((m1 - m2).abs() < 6 * (e1.square() + e2.square()).sqrt()).all()
        assert torch.allclose(padded[:, i].std(0), alone.std(0), rtol=0.12)


def test_time_is_normalised_over_the_real_points():
    data, times = _panel()
    last = last_observed(data.mask, data.x.shape[1])
    tau = normalised_time(data.times, last=last)
    for i, t in enumerate(times):
        n = len(t)
        own = normalised_time(torch.tensor(t, dtype=torch.float32))
        torch.testing.assert_close(tau[i, :n], own)
        assert (tau[i, n:] > 1).all()  # the padding lies beyond the real points
    # the guides' encoder reads the same time features for the real points
    guide = AffineGuide(2, 2, 8)
    inputs = []
    guide.encoder.gru.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    guide.loc_scale(data.x, data.times, data.mask, data.times)
    guide.loc_scale(data.x[:1, :26], data.times[:1, :26], data.mask[:1, :26], data.times[:1, :26])
    torch.testing.assert_close(inputs[0][0, :26], inputs[1][0])


def test_evaluate_sequences_scores_forecasts_of_a_ragged_panel():
    data, times = _panel()
    model, guide = VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)
    result = evaluate_sequences(model, guide, data.x, data.times, data.mask, num_particles=4,
                                num_samples=20, forecast_points=3)
    assert math.isfinite(result["forecast_mse"]) and 0 <= result["forecast_coverage_90"] <= 1
    assert result["forecast_draws"].shape == (20, 4, 3, 2)
    for i, t in enumerate(times):
        real = torch.tensor(t, dtype=torch.float32)[data.mask[i, :len(t)].any(-1)]
        torch.testing.assert_close(result["forecast_times"][i], real[-3:])
