"""Users' own data into a SequenceData: arrays, ragged lists, long-format data frames,
timestamps, standardisation."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from pyro_vpf.guides import MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import SequenceData
from pyro_vpf.infer import fit

pd = pytest.importorskip("pandas")


def _ragged():
    rng = np.random.default_rng(0)
    lengths = [5, 3, 7]
    times = [np.sort(rng.uniform(0, 10, n)) for n in lengths]
    values = [np.stack([np.sin(t), t], -1) for t in times]
    values[0][1, 0] = np.nan  # one missing channel
    values[2][4] = np.nan  # one missing time point
    return times, values


def test_a_ragged_list_is_padded_and_masked():
    times, values = _ragged()
    data = SequenceData.from_arrays(values, times)
    assert data.x.shape == (3, 7, 2) and data.times.shape == (3, 7)
    assert data.mask.shape == (3, 7, 2) and data.ids == [0, 1, 2]
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        n = len(t)
        np.testing.assert_allclose(data.times[i, :n].numpy(), t, rtol=1e-6)
        observed = ~np.isnan(v)
        assert np.array_equal(data.mask[i, :n].numpy(), observed)
        np.testing.assert_allclose(data.x[i, :n].numpy()[observed], v[observed], rtol=1e-6)
        assert not data.mask[i, n:].any() and (data.x[i, n:] == 0).all()
        # the padding's times continue the sequence's last spacing
        step = t[-1] - t[-2]
        np.testing.assert_allclose(data.times[i, n:].numpy(),
                                   t[-1] + step * np.arange(1, 8 - n), rtol=1e-5)
    assert (data.times.diff(dim=-1) > 0).all()
    assert not data.mask[2, 4].any()


def test_single_channel_lists_and_arrays_with_shared_times():
    data = SequenceData.from_arrays([np.arange(4.0), np.arange(2.0)])
    assert data.x.shape == (2, 4, 1) and torch.equal(data.times[0], torch.arange(4.0))
    assert torch.equal(data.times[1], torch.arange(4.0))  # 0, 1 then the spacing 1
    full = np.random.default_rng(1).normal(size=(3, 6, 2))
    shared = np.linspace(0, 1, 6)
    data = SequenceData.from_arrays(full, shared, dtype=torch.float64)
    assert data.times.shape == (6,) and data.mask is None and data.x.dtype == torch.float64
    np.testing.assert_array_equal(data.x.numpy(), full)
    per_sequence = SequenceData.from_arrays(full, np.tile(shared, (3, 1)))
    assert per_sequence.times.shape == (3, 6)


def test_timestamps_become_float_times_since_the_earliest():
    start = np.datetime64("2024-01-01T00:00")
    times = [start + np.array([0, 6, 30], "timedelta64[h]"),
             start + np.array([12, 36], "timedelta64[h]")]
    data = SequenceData.from_arrays([np.ones(3), np.ones(2)], times, time_unit="h")
    assert data.time_origin == start and data.time_unit == "h"
    np.testing.assert_allclose(data.times[0].numpy(), [0, 6, 30])
    np.testing.assert_allclose(data.times[1].numpy(), [12, 36, 60])
    days = SequenceData.from_arrays([np.ones(3)], times[:1])
    np.testing.assert_allclose(days.times[0].numpy(), [0, 0.25, 1.25])


@pytest.mark.parametrize("values, times, message", [
    ([np.array([1.0, np.inf])], None, r"values\[0\] holds infinite"),
    ([np.ones(3), np.ones(2)], [np.arange(3.0), np.array([1.0, 1.0])],
     r"times\[1\] must be finite and strictly increasing"),
    ([np.ones(3)], [np.arange(2.0)], r"times\[0\] must have shape \(3,\)"),
    ([np.ones(3), np.full(2, np.nan)], None, r"sequences \[1\] have no observed value"),
    ([np.ones((3, 2)), np.ones((3, 1))], None, "one Dx"),
    ([np.ones(3)], [np.arange(3.0), np.arange(3.0)], "times holds 2 sequences but values 1"),
    ([], None, "no sequence"),
    ([np.array(["a", "b"])], None, r"values\[0\] must hold numbers"),
    (np.ones(4), None, r"shape \(N, T\) or \(N, T, Dx\)"),
])
def test_bad_arrays_are_refused_by_name(values, times, message):
    with pytest.raises(ValueError, match=message):
        SequenceData.from_arrays(values, times)


def test_ids_must_name_every_sequence():
    with pytest.raises(ValueError, match="ids names 1 sequences but there are 2"):
        SequenceData.from_arrays([np.ones(2), np.ones(3)], ids=["a"])


def _frame():
    return pd.DataFrame({
        "store": ["b", "a", "b", "a", "b", "a", "a"],
        "day": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-01", "2024-01-02",
                               "2024-01-02", "2024-01-05", "2024-01-03"]),
        "sales": [3.0, 1.0, 1.0, np.nan, 2.0, 5.0, 3.0],
        "visits": [30.0, 10.0, 10.0, 20.0, np.nan, 50.0, 30.0],
    })


def test_a_long_data_frame_becomes_one_sequence_per_series():
    data = SequenceData.from_dataframe(_frame(), id="store", time="day")
    assert data.ids == ["b", "a"]  # in order of first appearance
    assert data.x.shape == (2, 4, 2)
    np.testing.assert_allclose(data.times[0, :3].numpy(), [0, 1, 2])  # b, sorted by day
    np.testing.assert_allclose(data.times[1].numpy(), [0, 1, 2, 4])  # a
    np.testing.assert_allclose(data.x[0, :3, 0].numpy(), [1, 2, 3])
    assert data.mask[1, 1].tolist() == [False, True] and data.mask[0, 1].tolist() == [True, False]
    assert not data.mask[0, 3].any()  # b's padding
    assert data.time_origin == np.datetime64("2024-01-01")
    one = SequenceData.from_dataframe(_frame(), id="store", time="day", values=["visits"])
    assert one.x.shape == (2, 4, 1)
    assert data[1].ids == "a" and data[1:].ids == ["a"]
    assert data[torch.tensor([1, 0])].ids == ["a", "b"]


def test_new_data_keeps_the_training_clock():
    """Series loaded later measure their times from the training data's origin: a model's
    time features (e.g. a weekly period) read the same clock."""
    train = SequenceData.from_dataframe(_frame(), id="store", time="day")
    later = _frame().query("store == 'a' and day >= '2024-01-02'")
    alone = SequenceData.from_dataframe(later, id="store", time="day")
    same = SequenceData.from_dataframe(later, id="store", time="day",
                                       time_origin=train.time_origin)
    assert alone.times[0, 0] == 0 and same.time_origin == train.time_origin
    np.testing.assert_allclose(same.times[0].numpy(), [1, 2, 4])
    with pytest.raises(ValueError, match="time_origin must be a timestamp"):
        SequenceData.from_arrays([np.ones(2)], [np.array(["2024-01-01", "2024-01-02"],
                                                         dtype="datetime64[D]")],
                                 time_origin="soon")
    with pytest.raises(ValueError, match="time_origin is for timestamps"):
        SequenceData.from_arrays([np.ones(2)], time_origin=np.datetime64("2024-01-01"))


def test_numeric_times_in_a_data_frame():
    frame = pd.DataFrame({"series": [1, 1, 2, 2, 2], "time": [0.5, 0.1, 3.0, 1.0, 2.0],
                          "y": [2.0, 1.0, 6.0, 4.0, 5.0]})
    data = SequenceData.from_dataframe(frame)
    assert data.time_origin is None and data.ids == [1, 2]
    np.testing.assert_allclose(data.times[0, :2].numpy(), [0.1, 0.5])
    np.testing.assert_allclose(data.x[1, :, 0].numpy(), [4, 5, 6])


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="store"), "id='store' is not a column"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "series 'b' has two rows at one time"),
    (lambda f: f.assign(day=f.day.where(f.index != 2)), "holds missing times"),
    (lambda f: f.assign(day=f.day.dt.strftime("%Y-%m-%d")), "pandas.to_datetime"),
])
def test_bad_data_frames_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        SequenceData.from_dataframe(change(_frame()), id="store", time="day")
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        SequenceData.from_dataframe({"store": [1]}, id="store", time="day")
    with pytest.raises(ValueError, match="missing: \\['nope'\\]"):
        SequenceData.from_dataframe(_frame(), id="store", time="day", values=["nope"])


def test_standardise_uses_the_observed_entries_only_and_round_trips():
    times, values = _ragged()
    data = SequenceData.from_arrays(values, times, dtype=torch.float64)
    unit = data.standardise()
    stacked = np.concatenate(values)
    np.testing.assert_allclose(unit.loc.numpy(), np.nanmean(stacked, 0))
    np.testing.assert_allclose(unit.scale.numpy(), np.nanstd(stacked, 0, ddof=1))
    seen = unit.observed()
    assert (unit.x[~seen] == 0).all()
    np.testing.assert_allclose(unit.unstandardise(unit.x)[seen].numpy(), data.x[seen].numpy())
    # standardising again composes: unstandardise still maps to the original units
    twice = unit.standardise(torch.tensor([0.5, -1.0], dtype=torch.float64),
                             torch.tensor([2.0, 4.0], dtype=torch.float64))
    np.testing.assert_allclose(twice.unstandardise(twice.x)[seen].numpy(), data.x[seen].numpy())
    # a held-out set standardised with the training statistics
    test = SequenceData.from_arrays([v + 1.0 for v in values], times, dtype=torch.float64)
    moved = test.standardise(unit.loc, unit.scale)
    np.testing.assert_allclose(moved.x[seen].numpy(), (unit.x + 1.0 / unit.scale)[seen].numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"loc": torch.zeros(2)}, "both loc and scale"),
    ({"loc": torch.zeros(3), "scale": torch.ones(3)}, r"loc must be a finite \(2,\)"),
    ({"loc": torch.zeros(2), "scale": torch.tensor([1.0, 0.0])}, "scale must be positive"),
])
def test_bad_statistics_are_refused(kwargs, message):
    times, values = _ragged()
    with pytest.raises(ValueError, match=message):
        SequenceData.from_arrays(values, times).standardise(**kwargs)


def test_a_constant_channel_cannot_be_standardised():
    with pytest.raises(ValueError, match="no spread"):
        SequenceData.from_arrays([np.stack([np.arange(4.0), np.ones(4)], -1)]).standardise()


def test_a_ragged_panel_from_arrays_trains():
    times, values = _ragged()
    data = SequenceData.from_arrays(values, times).standardise()
    # entry-wise gaps: a likelihood that factorises over channels
    model = VPF(2, 2, 8, 1, 1, observation="linear_gaussian")
    guide = MarkovGuide(2, 2, 8)
    history = fit(model, guide, data.x, data.times, data.mask, num_steps=2, progress=False)
    assert len(history) == 2 and np.isfinite(history.loss).all()


def test_the_core_imports_without_pandas():
    code = ("import sys; sys.modules['pandas'] = None\n"
            "import pyro_vpf, pyro_vpf.data, pyro_vpf.evaluation, pyro_vpf.infer\n"
            "from pyro_vpf.data import SequenceData\n"
            "try:\n    SequenceData.from_dataframe(None)\n"
            "except ImportError as e:\n    assert 'pandas' in str(e)\n"
            "else:\n    raise SystemExit('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
