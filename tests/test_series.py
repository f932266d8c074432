"""split_series: one long series into standardised windows, its history and a held-out end."""

import numpy as np
import pytest
import torch

from pyro_vpf.data import split_series


def _series():
    gen = torch.Generator().manual_seed(0)
    times = 2000.0 + torch.arange(100, dtype=torch.float64) / 12  # monthly, years
    values = torch.stack([torch.sin(times * 6.283), times - 2000.0], -1)
    values = values + 0.1 * torch.randn(100, 2, generator=gen, dtype=torch.float64)
    values[[3, 50, 97], 0] = float("nan")
    values[10, 1] = float("nan")
    return times, values


def test_windows_history_test_and_standardisation():
    times, values = _series()
    split = split_series(times, values, holdout=2.0, window=24, stride=6, dtype=torch.float64)
    in_test = times > times[-1] - 2.0
    H = int((~in_test).sum())
    assert split.history.x.shape == (1, H, 2) and split.test.x.shape == (1, 100 - H, 2)
    raw = values.numpy()
    loc = np.nanmean(raw[:H], axis=0)
    scale = np.nanstd(raw[:H], axis=0, ddof=1)  # history only
    assert np.allclose(split.loc.numpy(), loc) and np.allclose(split.scale.numpy(), scale)
    observed = ~np.isnan(raw)
    assert np.array_equal(split.history.mask[0].numpy(), observed[:H])
    back = split.test.unstandardise(split.test.x[0]).numpy()
    assert np.allclose(back[observed[H:]], raw[H:][observed[H:]])
    starts = list(range(0, H - 24 + 1, 6))
    assert split.train.x.shape == (len(starts), 24, 2)
    for i, s in enumerate(starts):
        assert torch.equal(split.train.times[i], times[s:s + 24])
        assert torch.equal(split.train.x[i], split.history.x[0, s:s + 24])
    assert (split.train.x[~split.train.mask] == 0).all()  # placeholders, never NaN


def test_one_channel_keeps_time_point_masks_and_defaults():
    times, values = _series()
    split = split_series(times, values[:, 0], holdout=1.0, window=12)
    assert split.train.x.dtype == torch.get_default_dtype()
    assert split.train.mask.shape == split.train.x.shape[:2]
    assert split.train.times.shape == split.train.x.shape[:2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(holdout=0.0), "holdout"), (dict(holdout=20.0), "history"),
    (dict(window=1), "window"), (dict(stride=0), "stride"),
    (dict(standardise=1), "standardise"),
])
def test_bad_arguments_are_named(kwargs, match):
    times, values = _series()
    arguments = dict(holdout=2.0, window=12) | kwargs
    with pytest.raises(ValueError, match=match):
        split_series(times, values, **arguments)
    with pytest.raises(ValueError, match="increasing"):
        split_series(times.flip(0), values, holdout=2.0, window=12)
    with pytest.raises(ValueError, match="values"):
        split_series(times, values[:-1], holdout=2.0, window=12)
