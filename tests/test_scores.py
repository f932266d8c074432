import math

import pytest
import torch

from pyro_vpf.evaluation import ForecastScores, crps_ensemble, forecast_scores


def tiny():
    r"""Two entries with four members each, scored by hand below.

    Entry 0, members {0, 1, 2, 3} (shuffled), y = 3: mean 1.5 (squared error 2.25), median 1.5
    (absolute error 1.5); CRPS = (3 + 2 + 1 + 0)/4 - 2 * (1 + 2 + 3 + 1 + 2 + 1)/(2 * 4 * 3)
    = 1.5 - 5/6 = 2/3. Linear quantiles at positions 3p: q.25 = 0.75, q.75 = 2.25 (width 1.5),
    q.05 = 0.15, q.95 = 2.85 (width 2.7); y = 3 lies outside both intervals.

    Entry 1, members {2, 4, 4, 10}, y = 4: mean 5 (squared error 1), median 4 (absolute error
    0); CRPS = (2 + 0 + 0 + 6)/4 - 2 * (2 + 2 + 8 + 0 + 6 + 6)/24 = 2 - 2 = 0. q.25 = 3.5,
    q.75 = 5.5 (width 2), q.05 = 2.3, q.95 = 9.1 (width 6.8); y = 4 lies inside both.
    """
    samples = torch.tensor([[3.0, 10.0], [0.0, 4.0], [2.0, 2.0], [1.0, 4.0]],
                           dtype=torch.float64)
    y = torch.tensor([3.0, 4.0], dtype=torch.float64)
    return samples, y


def test_tiny_hand_computed():
    samples, y = tiny()
    scores = forecast_scores(samples, y)
    assert isinstance(scores, ForecastScores)
    assert scores.mse == pytest.approx((2.25 + 1.0) / 2)
    assert scores.mae == pytest.approx((1.5 + 0.0) / 2)
    assert scores.crps == pytest.approx((2 / 3 + 0.0) / 2)
    assert scores.coverage == pytest.approx({0.5: 0.5, 0.9: 0.5})
    assert scores.interval_width == pytest.approx({0.5: (1.5 + 2.0) / 2, 0.9: (2.7 + 6.8) / 2})
    assert scores.count == 2


def test_quantiles_match_torch_quantile():
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(37, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    levels = (0.3, 0.5, 0.8, 0.9, 0.95)
    scores = forecast_scores(samples, y, levels=levels)
    median = torch.quantile(samples, 0.5, dim=0)
    assert scores.mae == pytest.approx(float((median - y).abs().mean()))
    assert scores.mse == pytest.approx(float((samples.mean(0) - y).square().mean()))
    for level in levels:
        bounds = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        low, high = torch.quantile(samples, bounds, dim=0)
        inside = ((y >= low) & (y <= high)).double().mean()
        assert scores.coverage[level] == pytest.approx(float(inside))
        assert scores.interval_width[level] == pytest.approx(float((high - low).mean()))


def test_interval_ends_count_as_inside():
    # Members {0, 1, 2}: the central 50 % interval is [q.25, q.75] = [0.5, 1.5].
    samples = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]],
                           dtype=torch.float64)
    y = torch.tensor([0.5, 1.5, 1.5 + 1e-9], dtype=torch.float64)
    scores = forecast_scores(samples, y, levels=(0.5,))
    assert scores.coverage[0.5] == pytest.approx(2 / 3)
    assert scores.interval_width[0.5] == pytest.approx(1.0)


def test_calibrated_gaussian_coverage():
    r"""Members and observations from the same N(0, 1) law.

    The indicator of each of the n = 20 000 entries is an independent Bernoulli draw, so the
    coverage has binomial standard error sqrt(c (1 - c) / n) (0.0035 at c = 0.5, 0.0021 at
    0.9). Sample quantiles from S members bias the expected coverage to about
    level * (S - 1)/(S + 1) (the interpolated order statistics sit at expected CDF values
    ((S - 1) p + 1)/(S + 1)), which is compared with a tolerance of 4 standard errors.
    """
    num, entries = 500, 20_000
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(num, entries, generator=g, dtype=torch.float64)
    y = torch.randn(entries, generator=g, dtype=torch.float64)
    scores = forecast_scores(samples, y, levels=(0.5, 0.8, 0.9))
    assert scores.count == entries
    for level in (0.5, 0.8, 0.9):
        expected = level * (num - 1) / (num + 1)
        se = math.sqrt(expected * (1 - expected) / entries)
        assert abs(scores.coverage[level] - expected) < 4 * se
    # Width of the central 90 % interval of N(0, 1): 2 * 1.6449.
    assert scores.interval_width[0.9] == pytest.approx(2 * 1.6449, rel=0.02)
    # Expected CRPS of N(0, 1) at y ~ N(0, 1): E|X - Y| - E|X - X'|/2 = 1/sqrt(pi); MSE of the
    # mean: 1 + 1/S; MAE of the median: E|Y| = sqrt(2/pi).
    assert scores.crps == pytest.approx(1 / math.sqrt(math.pi), rel=0.02)
    assert scores.mse == pytest.approx(1 + 1 / num, rel=0.04)
    assert scores.mae == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)


def test_masked_entries_are_ignored():
    samples, y = tiny()
    reference = forecast_scores(samples, y)
    # Add a third, unscored entry whose observation and members are NaN.
    nan = float("nan")
    padded_samples = torch.cat([samples, torch.full((4, 1), nan, dtype=torch.float64)], dim=1)
    padded_y = torch.cat([y, torch.tensor([nan], dtype=torch.float64)])
    mask = torch.tensor([True, True, False])
    scores = forecast_scores(padded_samples, padded_y, mask)
    assert scores == reference

    # Random data with a batch shape: changing the hidden entries changes nothing.
    g = torch.Generator().manual_seed(3)
    samples = torch.randn(50, 4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) < 0.6
    scores = forecast_scores(samples, y, mask)
    assert scores.count == int(mask.sum())
    hidden_y = y.masked_fill(~mask, nan)
    hidden_samples = samples.masked_fill(~mask, nan)
    assert forecast_scores(hidden_samples, hidden_y, mask) == scores
    selected = forecast_scores(samples[:, mask], y[mask])
    assert selected == scores


def test_mask_broadcasts():
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(30, 3, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, 5, generator=g, dtype=torch.float64)
    rows = torch.tensor([True, False, True]).unsqueeze(-1)
    scores = forecast_scores(samples, y, rows)
    assert scores.count == 10
    assert scores == forecast_scores(samples[:, [0, 2]], y[[0, 2]])


def test_crps_is_mean_of_crps_ensemble():
    g = torch.Generator().manual_seed(5)
    samples = 2.0 + 0.5 * torch.randn(200, 7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(7, 3, generator=g) < 0.5
    scores = forecast_scores(samples, y, mask)
    expected = crps_ensemble(samples, y)[mask].mean()
    assert scores.crps == pytest.approx(float(expected), rel=1e-12)
    assert forecast_scores(samples, y).crps == pytest.approx(float(crps_ensemble(samples, y)
                                                                   .mean()), rel=1e-12)


def test_float32_and_levels():
    samples, y = tiny()
    scores = forecast_scores(samples.float(), y.float(), levels=[0.5])
    assert set(scores.coverage) == {0.5}
    assert scores.crps == pytest.approx(1 / 3, rel=1e-6)
    assert forecast_scores(samples, y, levels=()).coverage == {}


@pytest.mark.parametrize("kwargs, name", [
    ({"samples": torch.zeros(1, 3, dtype=torch.float64)}, "samples"),
    ({"samples": torch.zeros(4, 3, dtype=torch.long)}, "samples"),
    ({"samples": [[0.0]] * 4}, "samples"),
    ({"y": torch.zeros(4, dtype=torch.float64)}, "y"),
    ({"y": torch.zeros(3, dtype=torch.long)}, "y"),
    ({"mask": torch.ones(3, dtype=torch.long)}, "mask"),
    ({"mask": torch.ones(2, dtype=torch.bool)}, "mask"),
    ({"mask": torch.zeros(3, dtype=torch.bool)}, "mask"),
    ({"levels": (0.5, 1.0)}, "levels"),
    ({"levels": 0.9}, "levels"),
    ({"levels": ("0.5",)}, "levels"),
])
def test_bad_input(kwargs, name):
    arguments = {"samples": torch.zeros(4, 3, dtype=torch.float64),
                 "y": torch.zeros(3, dtype=torch.float64), "mask": None}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        forecast_scores(**arguments)


def test_non_finite_scored_entries():
    samples = torch.zeros(4, 3, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.float64)
    mask = torch.tensor([True, True, False])
    bad = samples.clone()
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="samples"):
        forecast_scores(bad, y, mask)
    bad = y.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="y"):
        forecast_scores(samples, bad, mask)
    bad = samples.clone()
    bad[:, 2] = float("nan")
    assert forecast_scores(bad, y, mask).count == 2


def test_float32_forecasts_score_against_float64_data_in_float64():
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(50, 6, generator=g, dtype=torch.float64).float()
    y = torch.randn(6, generator=g, dtype=torch.float64)
    mixed = forecast_scores(samples, y)
    same = forecast_scores(samples.double(), y)
    assert mixed == same
