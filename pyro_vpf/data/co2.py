r"""The Mauna Loa weekly atmospheric CO2 series bundled with statsmodels, split by time."""

import math
import numbers

import torch

from pyro_vpf.data.series import SeriesSplit, split_series
from pyro_vpf.data.toy2d import _resolve_dtype
from pyro_vpf.optional import optional_import
from pyro_vpf.validation import check_integer

__all__ = ["CO2", "load_co2"]


class CO2(SeriesSplit):
    """The CO2 series: training windows, the whole history, the held-out future
    (:class:`~pyro_vpf.data.SeriesSplit` fields: ``train`` ``(N, window, 1)`` windows with
    times and mask ``(N, window)``; ``history`` ``(1, T_h, 1)``; ``test`` ``(1, T_test, 1)``;
    ``loc`` and ``scale`` ``(1,)``, the observed history's mean and standard deviation in ppm,
    or ``None`` unstandardised)."""

    __slots__ = ()


def _decimal_years(index):
    """Decimal years ``(T,)`` ``float64`` of a pandas ``DatetimeIndex``."""
    # torch.tensor copies: pandas may hand out read-only arrays.
    year = torch.tensor(index.year.to_numpy(dtype="float64"))
    day_of_year = torch.tensor(index.dayofyear.to_numpy(dtype="float64"))
    days_in_year = torch.tensor(index.is_leap_year).double().add(365.0)
    elapsed = (index - index.normalize()).to_numpy().astype("timedelta64[ns]")
    fraction = torch.tensor(elapsed.astype("int64"), dtype=torch.float64) / 86_400e9
    return year + (day_of_year - 1.0 + fraction) / days_in_year


def load_co2(*, window=104, stride=None, holdout_years=10.0, standardise=True,
             time_origin=0.0, dtype=None, device=None):
    r"""Weekly Mauna Loa CO2 (ppm), March 1958 -- December 2001, with its gaps as a mask.

    The series is ``statsmodels.datasets.co2`` (it ships inside statsmodels; no download):
    2284 consecutive weeks, each a Saturday, from 1958-03-29 to 2001-12-29, of which 59 have
    no value. statsmodels is an optional dependency: ``pip install "pyro-vpf[data]"``.

    **Times** are decimal years computed from the calendar dates,

    .. math::

        t = y + \frac{d - 1 + f}{D(y)}, \qquad D(y) = \begin{cases} 366 & y
        \text{ a leap year} \\ 365 & \text{otherwise,} \end{cases}

    with :math:`y` the year, :math:`d \in \{1, \dots, D(y)\}` the day of the year and
    :math:`f \in [0, 1)` the elapsed fraction of the day (0 here: the dates are midnights).
    So 1958-03-29 is :math:`1958 + 87/365` and 2000-03-04 is :math:`2000 + 63/366`. The times
    are computed in ``float64`` and then cast to ``dtype``; in ``float32`` they are rounded to
    about :math:`1.2 \cdot 10^{-4}` years (an hour), so the weekly steps are equal only up to
    about 0.6%: pass ``dtype=torch.float64`` where that matters, or a ``time_origin``
    (subtracted in ``float64`` before the cast, e.g. 1958.0: times then count years since it,
    exact to about :math:`4 \cdot 10^{-6}` years in ``float32``, and small enough for a time
    embedding).

    **Missing weeks** are kept, never interpolated or dropped: the mask is ``False`` exactly
    at the weeks without a value and their entries of ``x`` hold the placeholder 0 (in the
    returned units), which no model reads. A finite placeholder (rather than NaN) keeps
    masked-out terms from turning gradients into NaN.

    **Split by time.** With :math:`t_{last}` the last week's time and :math:`h` =
    ``holdout_years``, the weeks with :math:`t > t_{last} - h` form ``test``; the others,
    all earlier, form the ``history``. With the default :math:`h = 10` the history is
    1958-03-29 -- 1991-12-28 (1762 weeks) and the test part 1992-01-04 -- 2001-12-29
    (522 weeks).

    **Standardisation** (``standardise=True``): :math:`x = (v - \mu) / \sigma` with
    :math:`\mu` the mean and :math:`\sigma` the sample standard deviation (divisor
    :math:`n - 1`) of the *observed history* values only: the test part never enters them.
    The same :math:`\mu, \sigma` standardise the windows, the history and the test part and
    are stored as ``loc``/``scale`` in the result and in each :class:`SequenceData`, so
    ``data.unstandardise(data.x)`` gives back ppm at the observed entries. With
    ``standardise=False`` the values stay in ppm and ``loc``/``scale`` are ``None``.

    **Training windows.** The history is cut into windows of ``window`` consecutive weeks
    starting at weeks :math:`0, s, 2s, \dots` (:math:`s` = ``stride``) while a whole window
    fits; up to :math:`s - 1` final weeks of the history may lie in no window (they are
    still in ``history``). Each window keeps its own times (absolute decimal years, so
    ``train.times`` is ``(N, window)``) and its slice of the mask; windows without any
    observed week are dropped.

    Args:
        window (int): weeks per training window, at least 2 and at most the history length.
        stride (int): weeks between the starts of consecutive windows, at least 1 (default
            ``max(1, window // 2)``).
        holdout_years (float): length :math:`h > 0` of the held-out final period, in years.
            It must leave at least ``window`` weeks of history.
        standardise (bool): standardise with the history's statistics.
        time_origin (float): subtracted from every decimal year (default 0: absolute years).
        dtype (torch.dtype): floating-point dtype of values and times (default: torch's
            default).
        device (torch.device or str): device of every tensor (default: CPU).

    Returns:
        CO2: ``(train, history, test, loc, scale)``, see :class:`CO2`.

    Raises:
        ImportError: if statsmodels is not installed.
    """
    window = check_integer("window", window, 2)
    if isinstance(holdout_years, bool) or not isinstance(holdout_years, numbers.Real) \
            or not math.isfinite(holdout_years) or holdout_years <= 0:
        raise ValueError(f"holdout_years must be a finite number > 0, got {holdout_years!r}")
    dtype = _resolve_dtype(dtype)
    co2 = optional_import("statsmodels.datasets.co2", needed_by="load_co2",
                          package="statsmodels")
    frame = co2.load_pandas().data
    if isinstance(time_origin, bool) or not isinstance(time_origin, numbers.Real) \
            or not math.isfinite(time_origin):
        raise ValueError(f"time_origin must be a finite number, got {time_origin!r}")
    times = _decimal_years(frame.index) - float(time_origin)
    values = torch.tensor(frame["co2"].to_numpy(dtype="float64"), dtype=torch.float64)

    num_history = int((times <= times[-1] - float(holdout_years)).sum())
    if num_history < window:
        raise ValueError(
            f"holdout_years={holdout_years!r} leaves {num_history} weeks of history, fewer "
            f"than window={window}; shorten holdout_years or window")
    return CO2(*split_series(times, values, holdout=float(holdout_years), window=window,
                             stride=stride, standardise=standardise, dtype=dtype,
                             device=device))
