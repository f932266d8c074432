"""A container for a set of sequences with their times and mask, and the ways in: arrays,
ragged lists of arrays and long-format data frames."""

from dataclasses import dataclass, replace

import numpy as np
import torch

from pyro_vpf.optional import optional_import
from pyro_vpf.times import select_times

__all__ = ["SequenceData", "channel_statistics"]


def channel_statistics(values, observed):
    r"""Mean and sample standard deviation per channel over the observed entries.

    Args:
        values (torch.Tensor): ``(..., Dx)``; entries where ``observed`` is ``False`` may hold
            anything (NaN included) and are never read.
        observed (torch.Tensor): bool, shaped like ``values``.

    Returns:
        tuple: ``(loc, scale)``, each ``(Dx,)``, in ``values``' dtype:
        :math:`\mu_d = \frac1{n_d}\sum v`,
        :math:`\sigma_d^2 = \frac1{n_d - 1}\sum (v - \mu_d)^2` over the :math:`n_d` observed
        values of channel :math:`d`.

    Raises:
        ValueError: if a channel has fewer than two observed values or no spread.
    """
    values = values.reshape(-1, values.shape[-1])
    observed = observed.reshape(values.shape)
    count = observed.sum(0)
    if bool((count < 2).any()):
        raise ValueError(f"every channel needs at least two observed values to be standardised"
                         f"; observed per channel: {count.tolist()}")
    seen = torch.where(observed, values, torch.zeros((), dtype=values.dtype))
    loc = seen.sum(0) / count
    scale = (torch.where(observed, seen - loc, 0.0).square().sum(0) / (count - 1)).sqrt()
    if not bool((scale > 0).all()):
        raise ValueError(f"a channel has no spread (standard deviations {scale.tolist()}): it "
                         "cannot be standardised")
    return loc, scale


@dataclass
class SequenceData:
    """Sequences ``x (N, K+1, Dx)`` at ``times`` (``(K+1,)`` shared or ``(N, K+1)``), the one
    container of the collection's data (training loops, data sets and loaders use it).

    ``times`` is ``None`` for unordered data points ``x (N, D)`` of a static model.

    ``mask`` (``(N, K+1)`` or ``(N, K+1, Dx)`` bool, ``True`` = observed) or ``None``.
    ``loc`` and ``scale`` (``(Dx,)``) undo the standardisation:
    ``original = x * scale + loc``. ``ids`` names the sequences (e.g. the series ids of a
    data frame), ``time_origin`` and ``time_unit`` say what the float times count from when
    they were made from timestamps: ``timestamp = time_origin + times * time_unit``.

    Ragged panels (sequences of different lengths) are padded at the end: the padding's
    entries are unobserved (``False`` in ``mask``) and its times continue each sequence's
    own spacing, so times stay strictly increasing; :meth:`from_arrays` and
    :meth:`from_dataframe` build them.
    """

    x: torch.Tensor
    times: torch.Tensor | None
    mask: torch.Tensor | None = None
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    ids: list | None = None
    time_origin: object = None
    time_unit: object = None

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, index):
        mask = None if self.mask is None else self.mask[index]
        times = None if self.times is None else select_times(self.times, index)
        ids = self.ids
        if ids is not None:
            rows = index.cpu().numpy() if isinstance(index, torch.Tensor) else index
            picked = np.asarray(ids, dtype=object)[rows]
            ids = picked.tolist() if isinstance(picked, np.ndarray) else picked
        return replace(self, x=self.x[index], times=times, mask=mask, ids=ids)

    @property
    def obs_dim(self):
        return self.x.shape[-1]

    def to(self, device=None, dtype=None):
        def move(t, floating=True):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if floating else None)

        return replace(self, x=move(self.x), times=move(self.times),
                       mask=move(self.mask, floating=False), loc=move(self.loc),
                       scale=move(self.scale))

    def unstandardise(self, values):
        """Map standardised values ``(..., Dx)`` back to the original units."""
        if self.loc is None:
            return values
        return values * self.scale.to(values) + self.loc.to(values)

    def observed(self):
        """``(N, K+1, Dx)`` bool: the observed entries (all, when there is no mask)."""
        if self.mask is None:
            return torch.ones_like(self.x, dtype=torch.bool)
        return self.mask if self.mask.dim() == 3 else self.mask.unsqueeze(-1).expand_as(self.x)

    def standardise(self, loc=None, scale=None):
        r"""Standardise every channel: :math:`x' = (x - \mu) / \sigma`.

        With no arguments :math:`\mu, \sigma` are the mean and sample standard deviation of
        the *observed* entries (:func:`~pyro_vpf.data.sequences.channel_statistics`); pass
        ``loc`` and ``scale`` (``(Dx,)``, e.g. a training set's ``data.loc`` and
        ``data.scale``) to apply other statistics. Unobserved entries stay the placeholder 0.
        The result's :meth:`unstandardise` maps back to the original units, also when this
        data was standardised already (the two maps compose).

        Returns:
            SequenceData: a new container; this one is unchanged.
        """
        observed = self.observed()
        if (loc is None) != (scale is None):
            raise ValueError("pass both loc and scale, or neither")
        if loc is None:
            loc, scale = channel_statistics(self.x, observed)
        else:
            loc, scale = (torch.as_tensor(v, dtype=self.x.dtype, device=self.x.device)
                          for v in (loc, scale))
            for name, v in (("loc", loc), ("scale", scale)):
                if v.shape != (self.obs_dim,) or not bool(torch.isfinite(v).all()):
                    raise ValueError(f"{name} must be a finite ({self.obs_dim},) tensor, got "
                                     f"shape {tuple(v.shape)}")
            if not bool((scale > 0).all()):
                raise ValueError("scale must be positive")
        x = torch.where(observed, (self.x - loc) / scale, torch.zeros((), dtype=self.x.dtype))
        if self.loc is not None:  # original = (x' scale + loc) * old_scale + old_loc
            loc, scale = self.loc + self.scale * loc, self.scale * scale
        return replace(self, x=x, loc=loc, scale=scale)

    @classmethod
    def from_arrays(cls, values, times=None, *, ids=None, time_unit="D", time_origin=None,
                    dtype=None, device=None):
        """Sequences from arrays: one ``(N, T, Dx)`` (or ``(N, T)``) array, or a list of
        ``(T_i, Dx)`` (or ``(T_i,)``) arrays of different lengths (a ragged panel).

        NaN marks a missing entry (masked, never read). Ragged sequences are padded at the
        end to the longest: the padding is unobserved and its times continue the sequence's
        last spacing (1 for a one-point sequence), so every row of times is strictly
        increasing.

        Args:
            values: a numpy array or tensor ``(N, T, Dx)`` / ``(N, T)``, or a list of them
                ``(T_i, Dx)`` / ``(T_i,)``.
            times: ``None`` (``0, 1, 2, ...``), one ``(T,)`` array shared by an array of
                sequences, ``(N, T)``, or a list of ``(T_i,)`` arrays; numbers or numpy
                ``datetime64`` timestamps (then measured in ``time_unit`` since the earliest
                one, kept as ``time_origin``). Strictly increasing within each sequence.
            ids: names of the sequences (default ``0 .. N-1``).
            time_unit (str): numpy's unit for timestamps (``"D"`` days, ``"h"``, ``"s"``...).
            time_origin: the timestamp that time 0 stands for (default: the earliest one).
                Pass the training data's ``time_origin`` when loading new data for a trained
                model: its time features (e.g. ``time_periods``) read times on that clock.
            dtype, device: of the tensors (default: torch's default dtype, the CPU).

        Returns:
            SequenceData: ``x (N, L, Dx)`` with zeros at missing entries, ``times`` ``(L,)``
            when an array came with shared times, else ``(N, L)``, ``mask (N, L, Dx)`` or
            ``None`` when every entry is observed.
        """
        dtype = torch.get_default_dtype() if dtype is None else dtype
        shared = None
        if isinstance(values, (list, tuple)):
            rows = [_as_float_array(v, f"values[{i}]") for i, v in enumerate(values)]
        else:
            array = _as_float_array(values, "values")
            if array.ndim not in (2, 3):
                raise ValueError(f"values must have shape (N, T) or (N, T, Dx), or be a list of "
                                 f"arrays, got shape {array.shape}")
            rows = list(array)
            if times is not None and not isinstance(times, (list, tuple)) \
                    and np.ndim(times) == 1:
                shared, times = times, [times] * len(rows)
        if not rows:
            raise ValueError("values holds no sequence")
        rows = [r.reshape(-1, 1) if r.ndim == 1 else r for r in rows]
        dims = {r.shape[1] for r in rows}
        if any(r.ndim != 2 for r in rows) or len(dims) != 1:
            raise ValueError(f"values: every sequence must be (T_i,) or (T_i, Dx) with one Dx, "
                             f"got shapes {[r.shape for r in rows][:5]}")
        for i, r in enumerate(rows):
            if r.shape[0] < 1:
                raise ValueError(f"values[{i}] has no time point")
            if np.isinf(r).any():
                raise ValueError(f"values[{i}] holds infinite values (NaN marks missing ones)")
        if times is None:
            times = [np.arange(r.shape[0], dtype=np.float64) for r in rows]
        elif not isinstance(times, (list, tuple)):
            times = list(np.asarray(times))
        if len(times) != len(rows):
            raise ValueError(f"times holds {len(times)} sequences but values {len(rows)}")
        times, origin = _float_times(times, time_unit, time_origin)
        for i, (t, r) in enumerate(zip(times, rows, strict=True)):
            if t.shape != (r.shape[0],):
                raise ValueError(f"times[{i}] must have shape ({r.shape[0]},) like values[{i}]"
                                 f", got {t.shape}")
            if not np.isfinite(t).all() or (np.diff(t) <= 0).any():
                raise ValueError(f"times[{i}] must be finite and strictly increasing")
        length = max(r.shape[0] for r in rows)
        x = np.full((len(rows), length, dims.pop()), np.nan)
        padded = np.empty((len(rows), length))
        for i, (t, r) in enumerate(zip(times, rows, strict=True)):
            x[i, :len(t)] = r
            step = t[-1] - t[-2] if len(t) > 1 else 1.0
            padded[i] = np.concatenate([t, t[-1] + step * np.arange(1, length - len(t) + 1)])
        observed = ~np.isnan(x)
        if not observed.reshape(len(rows), -1).any(-1).all():
            empty = np.flatnonzero(~observed.reshape(len(rows), -1).any(-1)).tolist()
            raise ValueError(f"values: sequences {empty[:10]} have no observed value")

        def as_tensor(array, kind=dtype):
            return torch.as_tensor(array, dtype=kind, device=device)

        out_times = as_tensor(padded[0] if shared is not None else padded)
        ids = list(range(len(rows))) if ids is None else list(ids)
        if len(ids) != len(rows):
            raise ValueError(f"ids names {len(ids)} sequences but there are {len(rows)}")
        return cls(as_tensor(np.where(observed, x, 0.0)), out_times,
                   None if observed.all() else as_tensor(observed, torch.bool), ids=ids,
                   time_origin=origin, time_unit=None if origin is None else time_unit)

    @classmethod
    def from_dataframe(cls, frame, *, id="series", time="time", values=None, time_unit="D",
                       time_origin=None, dtype=None, device=None):
        """Sequences from a long-format pandas DataFrame: one row per (series, time), one
        column per channel, NaN where missing.

        Each series' rows are sorted by time and become one sequence (padded as in
        :meth:`from_arrays`); the sequences keep the order in which the series first
        appear and their ids are kept in ``ids``. Times are numbers or timestamps (then
        measured in ``time_unit`` since the earliest, kept as ``time_origin``).

        Args:
            frame (pandas.DataFrame): the data.
            id (str): the column naming the series.
            time (str): the column of times.
            values (list): the channel columns (default: every other column).
            time_unit, time_origin, dtype, device: as for :meth:`from_arrays` (pass the
                training data's ``time_origin`` for new data of a trained model).
        """
        pd = optional_import("pandas", needed_by="SequenceData.from_dataframe",
                             package="pandas")
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        for name, column in (("id", id), ("time", time)):
            if column not in frame.columns:
                raise ValueError(f"{name}={column!r} is not a column of the frame "
                                 f"({list(frame.columns)})")
        values = [c for c in frame.columns if c not in (id, time)] if values is None \
            else list(values)
        missing = [c for c in values if c not in frame.columns]
        if not values or missing:
            raise ValueError(f"values must name channel columns of the frame; missing: "
                             f"{missing or 'no channel column'}")
        if frame[time].isna().any():
            raise ValueError(f"the time column {time!r} holds missing times")
        column = frame[time]
        if not (pd.api.types.is_numeric_dtype(column)
                or pd.api.types.is_datetime64_any_dtype(column)):
            raise ValueError(f"the time column {time!r} holds {column.dtype} values: convert it "
                             "to numbers or timestamps first (e.g. pandas.to_datetime)")
        ids, arrays, stamps = [], [], []
        for key, group in frame.groupby(id, sort=False):
            group = group.sort_values(time, kind="stable")
            if group[time].duplicated().any():
                raise ValueError(f"series {key!r} has two rows at one time")
            ids.append(key)
            arrays.append(group[values].to_numpy(dtype=np.float64, na_value=np.nan))
            column = group[time]
            stamps.append(column.to_numpy("datetime64[ns]") if
                          pd.api.types.is_datetime64_any_dtype(column) else
                          column.to_numpy(dtype=np.float64))
        return cls.from_arrays(arrays, stamps, ids=ids, time_unit=time_unit,
                               time_origin=time_origin, dtype=dtype, device=device)


def _as_float_array(values, name):
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers (NaN for missing): {err}") from err


def _float_times(times, unit, origin=None):
    """Float times per sequence, and the origin of timestamps (``None`` for numbers): the
    given one or the earliest timestamp."""
    arrays = [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
              for t in times]
    stamps = [np.issubdtype(t.dtype, np.datetime64) for t in arrays]
    if any(stamps) and not all(stamps):
        raise ValueError("times mixes timestamps and numbers")
    if not all(stamps):
        if origin is not None:
            raise ValueError("time_origin is for timestamps; these times are numbers")
        try:
            return [t.astype(np.float64) for t in arrays], None
        except (TypeError, ValueError) as err:
            raise ValueError(f"times must be numbers or datetime64 timestamps: {err}") from err
    if not isinstance(unit, str):
        raise ValueError(f"time_unit must be a numpy time unit such as 'D', got {unit!r}")
    if any(np.isnat(t).any() for t in arrays):
        raise ValueError("times holds missing timestamps (NaT)")
    if origin is None:
        origin = min(t.min() for t in arrays if t.size)
    else:
        try:
            origin = np.datetime64(origin)
        except (TypeError, ValueError) as err:
            raise ValueError(f"time_origin must be a timestamp, got {origin!r}") from err
        if np.isnat(origin):
            raise ValueError("time_origin must be a timestamp, got NaT")
    step = np.timedelta64(1, unit)
    return [(t - origin) / step for t in arrays], origin
