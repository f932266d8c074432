import calendar
import datetime
import socket
import sys

import numpy as np
import pytest
import torch

from pyro_vpf.data import (
    CO2,
    BasicMotions,
    SequenceData,
    hide_blocks,
    hide_entries,
    load_basic_motions,
    load_co2,
)

pytest.importorskip("statsmodels")
pytest.importorskip("aeon")


@pytest.fixture(scope="module")
def co2_frame():
    from statsmodels.datasets import co2

    return co2.load_pandas().data


@pytest.fixture(scope="module")
def co2_data():
    return load_co2(dtype=torch.float64)


def decimal_year(day):
    days = 366 if calendar.isleap(day.year) else 365
    return day.year + (day.timetuple().tm_yday - 1) / days


# ----------------------------------------------------------------------------- CO2


def test_co2_raw_frame_has_2284_weeks_and_59_gaps(co2_frame):
    assert co2_frame.shape == (2284, 1)
    assert int(co2_frame["co2"].isna().sum()) == 59
    assert co2_frame.index[0] == datetime.datetime(1958, 3, 29)
    assert co2_frame.index[-1] == datetime.datetime(2001, 12, 29)
    assert (np.diff(co2_frame.index.to_numpy()) == np.timedelta64(7, "D")).all()


def test_co2_shapes_and_types():
    data = load_co2()
    assert isinstance(data, CO2)
    train, history, test = data.train, data.history, data.test
    assert all(isinstance(part, SequenceData) for part in (train, history, test))
    assert train.x.shape == (32, 104, 1) and train.times.shape == (32, 104)
    assert train.mask.shape == (32, 104) and train.mask.dtype == torch.bool
    assert history.x.shape == (1, 1762, 1) and history.times.shape == (1762,)
    assert history.mask.shape == (1, 1762)
    assert test.x.shape == (1, 522, 1) and test.times.shape == (522,)
    assert test.mask.shape == (1, 522)
    assert train.x.dtype == torch.get_default_dtype() == history.times.dtype
    assert data.loc.shape == data.scale.shape == (1,)
    for part in (train, history, test):
        assert part.loc is data.loc and part.scale is data.scale
    assert load_co2(dtype=torch.float64).test.x.dtype == torch.float64


def test_co2_mask_is_exactly_the_missing_weeks(co2_frame, co2_data):
    mask = torch.cat([co2_data.history.mask[0], co2_data.test.mask[0]])
    missing = torch.tensor(co2_frame["co2"].isna().to_numpy())
    assert mask.shape == (2284,)
    assert torch.equal(~mask, missing)
    assert int((~mask).sum()) == 59
    # Placeholders at the missing weeks, finite everywhere.
    x = torch.cat([co2_data.history.x[0, :, 0], co2_data.test.x[0, :, 0]])
    assert torch.isfinite(x).all() and (x[missing] == 0).all()


def test_co2_times_are_the_decimal_years_of_the_dates(co2_frame, co2_data):
    times = torch.cat([co2_data.history.times, co2_data.test.times])
    assert (times.diff() > 0).all()
    expected = torch.tensor([decimal_year(day) for day in co2_frame.index], dtype=torch.float64)
    assert torch.allclose(times, expected, rtol=0, atol=1e-12)
    # By hand: 1958-03-29 is day 31 + 28 + 29 = 88 of a common year; 2000-03-04 is day
    # 31 + 29 + 4 = 64 of a leap year.
    assert times[0].item() == pytest.approx(1958 + 87 / 365, abs=1e-12)
    leap_week = int(np.flatnonzero(co2_frame.index == datetime.datetime(2000, 3, 4))[0])
    assert times[leap_week].item() == pytest.approx(2000 + 63 / 366, abs=1e-12)
    assert times[-1].item() == pytest.approx(2001 + 362 / 365, abs=1e-12)
    # float32 times still increase strictly.
    assert (load_co2().history.times.diff() > 0).all()


@pytest.mark.parametrize("holdout_years", [10.0, 5.5, 0.01])
def test_co2_is_split_by_time(holdout_years):
    data = load_co2(holdout_years=holdout_years, dtype=torch.float64)
    history, test = data.history.times, data.test.times
    last = test[-1]
    assert history.shape[0] + test.shape[0] == 2284
    assert history[-1] < test[0]
    assert (history <= last - holdout_years).all() and (test > last - holdout_years).all()
    assert data.train.times.max() <= history[-1]


def test_co2_default_split_is_at_the_turn_of_1992(co2_data):
    assert co2_data.history.times[-1].item() == pytest.approx(1991 + 361 / 365, abs=1e-12)
    assert co2_data.test.times[0].item() == pytest.approx(1992 + 3 / 366, abs=1e-12)


def test_co2_standardisation_uses_the_observed_history_only(co2_frame, co2_data):
    history = co2_frame.loc[:"1991-12-31", "co2"].dropna().to_numpy()
    assert co2_data.loc.item() == pytest.approx(history.mean(), rel=1e-12)
    assert co2_data.scale.item() == pytest.approx(history.std(ddof=1), rel=1e-12)
    everything = co2_frame["co2"].dropna().to_numpy()
    assert abs(co2_data.loc.item() - everything.mean()) > 1.0
    mask = co2_data.history.mask[0]
    observed = co2_data.history.x[0, :, 0][mask]
    assert observed.mean().abs() < 1e-10 and (observed.std() - 1).abs() < 1e-10


def test_co2_unstandardise_round_trips_to_ppm(co2_frame, co2_data):
    raw = torch.tensor(co2_frame["co2"].to_numpy(dtype="float64"))
    ppm = torch.cat([co2_data.history.unstandardise(co2_data.history.x)[0, :, 0],
                     co2_data.test.unstandardise(co2_data.test.x)[0, :, 0]])
    mask = ~raw.isnan()
    assert torch.allclose(ppm[mask], raw[mask], rtol=0, atol=1e-9)
    plain = load_co2(standardise=False, dtype=torch.float64)
    assert plain.loc is None and plain.scale is None and plain.history.loc is None
    x = torch.cat([plain.history.x[0, :, 0], plain.test.x[0, :, 0]])
    assert torch.equal(x[mask], raw[mask]) and (x[~mask] == 0).all()


@pytest.mark.parametrize("window, stride", [(104, None), (52, 13), (30, 7)])
def test_co2_windows_are_consecutive_slices_of_the_history(co2_data, window, stride):
    data = load_co2(window=window, stride=stride, dtype=torch.float64)
    step = window // 2 if stride is None else stride
    length = data.history.x.shape[1]
    starts = range(0, length - window + 1, step)
    assert len(data.train) == len(starts)
    for i, start in enumerate(starts):
        piece = slice(start, start + window)
        assert torch.equal(data.train.x[i], data.history.x[0, piece])
        assert torch.equal(data.train.times[i], data.history.times[piece])
        assert torch.equal(data.train.mask[i], data.history.mask[0, piece])
    assert torch.equal(data.history.x, co2_data.history.x)


def test_co2_windows_without_observations_are_dropped():
    data = load_co2(window=2, stride=1, dtype=torch.float64)
    mask = data.history.mask[0]
    kept = [s for s in range(mask.shape[0] - 1) if mask[s:s + 2].any()]
    assert len(kept) < mask.shape[0] - 1  # the 1958 gaps hold consecutive missing weeks
    assert len(data.train) == len(kept)
    assert data.train.mask.any(-1).all()
    starts = torch.tensor(kept)
    assert torch.equal(data.train.times[:, 0], data.history.times[starts])


@pytest.mark.parametrize("kwargs, name", [
    ({"window": 1}, "window"), ({"window": 10.0}, "window"), ({"window": True}, "window"),
    ({"window": 5000}, "window"), ({"stride": 0}, "stride"), ({"stride": 2.5}, "stride"),
    ({"holdout_years": 0}, "holdout_years"), ({"holdout_years": -1.0}, "holdout_years"),
    ({"holdout_years": float("nan")}, "holdout_years"),
    ({"holdout_years": float("inf")}, "holdout_years"),
    ({"holdout_years": "10"}, "holdout_years"), ({"holdout_years": 42.0}, "holdout_years"),
    ({"standardise": 1}, "standardise"), ({"dtype": torch.int64}, "dtype"),
])
def test_co2_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_co2(**kwargs)


# ----------------------------------------------------------------------- BasicMotions


@pytest.fixture(scope="module")
def raw_motions():
    from aeon.datasets import load_basic_motions as aeon_load

    return {split: aeon_load(split=split.upper()) for split in ("train", "test")}


def test_basic_motions_shapes_times_and_labels():
    motions = load_basic_motions()
    assert isinstance(motions, BasicMotions)
    data = motions.data
    assert data.x.shape == (80, 100, 6) and data.x.dtype == torch.get_default_dtype()
    assert data.mask is None
    expected = torch.arange(100, dtype=torch.float64) / 10
    assert data.times.shape == (100,)
    assert torch.allclose(data.times.double(), expected, atol=1e-6)
    assert data.times[0] == 0 and data.times[-1].item() == pytest.approx(9.9)
    assert motions.class_names == ["standing", "running", "walking", "badminton"]
    assert motions.labels.dtype == torch.int64
    assert torch.equal(motions.labels.bincount(), torch.full((4,), 20))


def test_basic_motions_splits(raw_motions):
    full = load_basic_motions(dtype=torch.float64)
    train = load_basic_motions(split="train", dtype=torch.float64)
    test = load_basic_motions(split="test", dtype=torch.float64)
    assert len(train.data) == len(test.data) == 40
    for part in (train, test):
        assert torch.equal(part.labels.bincount(), torch.full((4,), 10))
    assert torch.equal(full.data.x, torch.cat([train.data.x, test.data.x]))
    assert torch.equal(full.labels, torch.cat([train.labels, test.labels]))
    for split, part in (("train", train), ("test", test)):
        _, names = raw_motions[split]
        assert [part.class_names[i] for i in part.labels] == list(names)


def test_basic_motions_standardises_with_training_statistics(raw_motions):
    values = {split: np.transpose(x, (0, 2, 1)) for split, (x, _) in raw_motions.items()}
    loc = values["train"].mean(axis=(0, 1))
    scale = values["train"].std(axis=(0, 1), ddof=1)
    for split in ("all", "train", "test"):
        data = load_basic_motions(split=split, dtype=torch.float64).data
        assert np.allclose(data.loc.numpy(), loc, rtol=1e-12, atol=0)
        assert np.allclose(data.scale.numpy(), scale, rtol=1e-12, atol=0)
    train = load_basic_motions(split="train", dtype=torch.float64).data
    assert torch.allclose(train.x.mean((0, 1)), torch.zeros(6, dtype=torch.float64),
                          atol=1e-12)
    assert torch.allclose(train.x.std((0, 1)), torch.ones(6, dtype=torch.float64))
    test = load_basic_motions(split="test", dtype=torch.float64).data
    assert not torch.allclose(test.x.mean((0, 1)), torch.zeros(6, dtype=torch.float64),
                              atol=1e-3)
    assert np.allclose(test.unstandardise(test.x).numpy(), values["test"], rtol=0, atol=1e-12)
    plain = load_basic_motions(split="test", standardise=False, dtype=torch.float64).data
    assert plain.loc is None and np.array_equal(plain.x.numpy(), values["test"])


@pytest.mark.parametrize("kwargs, name", [
    ({"split": "TRAIN"}, "split"), ({"split": "validation"}, "split"), ({"split": None}, "split"),
    ({"standardise": "yes"}, "standardise"), ({"dtype": torch.int32}, "dtype"),
])
def test_basic_motions_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_basic_motions(**kwargs)


# ----------------------------------------------------------------------------- both


def test_loaders_read_packaged_files_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert load_co2().history.x.shape == (1, 1762, 1)
    assert load_basic_motions().data.x.shape == (80, 100, 6)


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.datasets.co2", None)
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    with pytest.raises(ImportError, match=r"pyro-vpf\[data\]"):
        load_co2()
    with pytest.raises(ImportError, match=r"pyro-vpf\[data\]"):
        load_basic_motions()


def test_co2_time_origin_shifts_the_times_before_the_cast():
    absolute = load_co2(dtype=torch.float64)
    shifted = load_co2(time_origin=1958.0)
    assert shifted.history.times.dtype == torch.get_default_dtype()
    expected = (absolute.history.times - 1958.0).to(shifted.history.times.dtype)
    assert torch.equal(shifted.history.times, expected)
    steps = shifted.history.times.double().diff()
    assert (steps - 7 / 365.25).abs().max() < 7 / 365.25 * 0.01  # weekly to 1 %, in float32
    with pytest.raises(ValueError, match="time_origin"):
        load_co2(time_origin=float("nan"))


def test_hide_entries_hides_the_stated_share_of_each_sequence():
    hidden = hide_entries((50, 100, 6), 0.3, seed=1)
    assert hidden.shape == (50, 100, 6) and hidden.dtype == torch.bool
    assert (hidden.reshape(50, -1).sum(-1) == 180).all()
    # uniform over entries: every (time, channel) cell is hidden about 30 % of the time
    share = hide_entries((4000, 5, 2), 0.3, seed=2).float().mean(0)
    assert ((share - 0.3).abs() < 5 * (0.3 * 0.7 / 4000) ** 0.5).all()
    assert torch.equal(hidden, hide_entries((50, 100, 6), 0.3, seed=1))
    with pytest.raises(ValueError, match="fraction"):
        hide_entries((2, 3, 4), 1.0)


def test_hide_blocks_hides_one_whole_block_per_sequence():
    hidden = hide_blocks((300, 100, 6), 20, seed=0)
    per_time = hidden.all(-1)
    assert torch.equal(per_time, hidden.any(-1))  # whole time points
    assert (per_time.sum(-1) == 20).all()
    first = per_time.float().argmax(-1)
    block = torch.arange(100) - first.unsqueeze(-1)
    assert torch.equal(per_time, (block >= 0) & (block < 20))  # consecutive
    assert first.min() < 5 and first.max() > 75  # starts spread over 0..80
    with pytest.raises(ValueError, match="length"):
        hide_blocks((2, 10, 1), 10)


def test_polynomial_trend_recovers_a_polynomial_and_ignores_masked_points():
    from pyro_vpf.data import PolynomialTrend

    times = torch.linspace(1958.0, 1992.0, 300, dtype=torch.float64)
    truth = 315.0 + 0.8 * (times - 1958.0) + 0.012 * (times - 1958.0) ** 2
    values = truth.clone()
    mask = torch.ones(300, dtype=torch.bool)
    mask[::7] = False
    values[~mask] = 1e6  # garbage where unobserved
    trend = PolynomialTrend(2).fit(times, values, mask)
    future = torch.linspace(1992.0, 2002.0, 50, dtype=torch.float64)
    expected = 315.0 + 0.8 * (future - 1958.0) + 0.012 * (future - 1958.0) ** 2
    assert torch.allclose(trend(future), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="more than 2"):
        PolynomialTrend(2).fit(times[:2], values[:2])
