r"""Classical baselines: a structural time-series forecast and linear interpolation.

:func:`structural_forecast` fits a linear-Gaussian structural model (local linear trend plus a
trigonometric seasonal component) to one regularly sampled series with missing values, by
maximum likelihood with the Kalman filter of ``statsmodels``, and draws forecast paths of the
observations. ``statsmodels`` is an optional dependency, imported only when the function is
called (``pip install "pyro-vpf[data]"``).

:func:`linear_interpolation` is the naive baseline for hidden entries of a batch of
sequences: each channel is interpolated linearly in time between its observed entries.
"""

import numbers
import warnings
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["BaselineForecast", "linear_interpolation", "structural_forecast"]

#: Tolerance, as a share of the observation step, on the regularity of ``times`` and on the
#: whole number of steps that separates a future time from the last observation time.
_GRID_TOLERANCE = 0.01


class BaselineForecast(NamedTuple):
    r"""Forecast of a baseline model (see :func:`structural_forecast`).

    Attributes:
        samples (torch.Tensor): ``(num_samples, F)`` joint draws of the future observations.
        mean (torch.Tensor): ``(F,)`` exact predictive mean of the observations.
        std (torch.Tensor): ``(F,)`` exact predictive standard deviation of the observations
            (observation noise included).
        summary (str): one-line description of the fitted model.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    summary: str


def _import_statsmodels():
    try:
        from statsmodels.tools.sm_exceptions import ConvergenceWarning
        from statsmodels.tsa.statespace.structural import UnobservedComponents
    except ImportError as error:
        raise ImportError('structural_forecast needs statsmodels: pip install "pyro-vpf[data]"') \
            from error
    return UnobservedComponents, ConvergenceWarning


def _as_vector(value, name):
    """A 1-D float64 numpy copy of a tensor or array-like."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _observed_history(times, y, mask):
    """Validated ``(times, y with NaN at missing entries, step)``."""
    times = _as_vector(times, "times")
    y = _as_vector(y, "y")
    num = times.shape[0]
    if num < 2:
        raise ValueError(f"times must hold at least 2 points, got {num}")
    if y.shape != times.shape:
        raise ValueError(f"y must have shape {times.shape} (as times), got {y.shape}")
    if mask is None:
        mask = np.ones(num, dtype=bool)
    else:
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
        if mask.shape != times.shape:
            raise ValueError(f"mask must have shape {times.shape} (as times), got {mask.shape}")
    if not np.isfinite(times).all():
        raise ValueError("times contains NaN or infinite values")
    if not np.isfinite(y[mask]).all():
        raise ValueError("y contains NaN or infinite values at observed entries (mask True)")
    step = (times[-1] - times[0]) / (num - 1)
    if not step > 0:
        raise ValueError("times must be increasing")
    offset = times - (times[0] + step * np.arange(num))
    if np.abs(offset).max() > _GRID_TOLERANCE * step:
        raise ValueError(f"times must lie on a regular grid (step {step:.6g}, tolerance "
                         f"{_GRID_TOLERANCE:.0%} of a step); worst offset "
                         f"{np.abs(offset).max():.3g}")
    return times, np.where(mask, y, np.nan), step


def _steps_ahead(future_times, last_time, step):
    future_times = _as_vector(future_times, "future_times")
    if future_times.shape[0] == 0:
        raise ValueError("future_times must hold at least one time")
    if not np.isfinite(future_times).all():
        raise ValueError("future_times contains NaN or infinite values")
    ahead = (future_times - last_time) / step
    if (ahead < 1 - _GRID_TOLERANCE).any():
        raise ValueError(f"future_times must lie at least one step ({step:.6g}) after the last "
                         f"observation time {last_time:.6g}; earliest is "
                         f"{future_times.min():.6g}")
    whole = np.round(ahead)
    if (np.abs(ahead - whole) > _GRID_TOLERANCE).any():
        raise ValueError(f"future_times must lie a whole number of steps ({step:.6g}) after the "
                         f"last observation time (tolerance {_GRID_TOLERANCE:.0%} of a step)")
    return whole.astype(np.int64)


def _draw_states(mean, cov, num, rng):
    r"""``(k, num)`` draws of :math:`\mathcal{N}(m, P)`; tiny negative eigenvalues are clipped."""
    cov = 0.5 * (cov + cov.T)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    return mean[:, None] + factor @ rng.standard_normal((mean.shape[0], num))


def structural_forecast(times, y, mask, future_times, *, num_samples=1000, seasonal_period=1.0,
                        harmonics=3, seed=0):
    r"""Forecast one series with a local-linear-trend plus trigonometric-seasonal model.

    The series :math:`y_t` observed on a regular grid :math:`t_k = t_0 + k\Delta` is modelled
    as (``statsmodels`` ``UnobservedComponents``, ``level="local linear trend"``,
    ``freq_seasonal=[{"period": P, "harmonics": h}]``)

    .. math::

        y_k = \mu_k + \gamma_k + \varepsilon_k, \qquad
        \mu_{k+1} = \mu_k + \beta_k + \eta_k, \qquad \beta_{k+1} = \beta_k + \zeta_k,

    .. math::

        \gamma_k = \sum_{j=1}^{h} \gamma_{j,k}, \qquad
        \begin{pmatrix} \gamma_{j,k+1} \\ \gamma^*_{j,k+1} \end{pmatrix} =
        \begin{pmatrix} \cos\lambda_j & \sin\lambda_j \\ -\sin\lambda_j & \cos\lambda_j
        \end{pmatrix} \begin{pmatrix} \gamma_{j,k} \\ \gamma^*_{j,k} \end{pmatrix}
        + \omega_{j,k}, \qquad \lambda_j = 2\pi j / P,

    with independent Gaussian noises whose four variances (irregular :math:`\varepsilon`, level
    :math:`\eta`, trend :math:`\zeta`, seasonal :math:`\omega`) are fitted by maximum
    likelihood. :math:`P = \text{seasonal\_period} / \Delta` is the seasonal period in steps
    (e.g. 52.18 for weekly data with times in years and ``seasonal_period=1``), and may be
    fractional. Missing entries (``mask`` False) are passed to the Kalman filter as NaN, which
    skips their update step: they contribute nothing to the likelihood and the states are
    simply propagated across them.

    The step is :math:`\Delta = (t_{T-1} - t_0)/(T - 1)`, equal to every spacing (hence to
    their median) on a regular grid; ``times`` must lie within 1 % of a step of the grid
    :math:`t_0 + k\Delta`, and every future time a whole number :math:`m \ge 1` of steps
    (within 1 % of a step) after :math:`t_{T-1}`.

    Forecast route: the samples are **simulated paths**. The state at the first future step is
    drawn from its filtered predictive law :math:`\mathcal{N}(a_T, P_T)` given all the
    observations, then states and observations are simulated forward with the fitted noise
    variances (``results.simulate(..., anchor="end")``). For this linear-Gaussian model these
    are exact joint draws of the future observations given the fitted parameters, so each
    row of ``samples`` is a coherent path; parameter uncertainty is not included. ``mean`` and
    ``std`` are the exact predictive moments of the observations from
    ``results.get_forecast``, which the samples match up to Monte Carlo error.

    The optimisation runs with ``disp=False`` and no convergence warning; if it did not
    converge, ``summary`` says so.

    Args:
        times (array-like or torch.Tensor): ``(T,)`` observation times on a regular grid.
        y (array-like or torch.Tensor): ``(T,)`` series; entries with ``mask`` False are
            ignored and may hold NaN.
        mask (array-like or torch.Tensor): ``(T,)`` boolean, True where ``y`` is observed;
            ``None`` for a fully observed series. More than ``2 + 2 * harmonics`` entries
            must be observed.
        future_times (array-like or torch.Tensor): ``(F,)`` times to forecast, each a whole
            number of steps after ``times[-1]``, in any order.
        num_samples (int): number of simulated paths.
        seasonal_period (float): length of the seasonal cycle in the units of ``times``.
        harmonics (int): number of harmonics :math:`h \ge 1` of the seasonal component, at
            most :math:`P / 2`.
        seed (int): seed of the simulation (the fit itself is deterministic).

    Returns:
        BaselineForecast: ``samples`` ``(num_samples, F)``, ``mean`` ``(F,)``, ``std``
        ``(F,)`` and a ``summary`` string with the fitted variances. The tensors have ``y``'s
        dtype and device when ``y`` is a floating-point tensor, else ``torch.float64`` on the
        CPU.

    Raises:
        ImportError: if ``statsmodels`` is not installed.
    """
    unobserved_components, convergence_warning = _import_statsmodels()
    num_samples = _check_positive_int(num_samples, "num_samples")
    harmonics = _check_positive_int(harmonics, "harmonics")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (isinstance(seasonal_period, bool) or not isinstance(seasonal_period, numbers.Real)
            or not np.isfinite(seasonal_period) or not seasonal_period > 0):
        raise ValueError(f"seasonal_period must be a finite number > 0, got {seasonal_period!r}")
    if isinstance(y, torch.Tensor) and y.is_floating_point():
        dtype, device = y.dtype, y.device
    else:
        dtype, device = torch.float64, torch.device("cpu")
    times, series, step = _observed_history(times, y, mask)
    ahead = _steps_ahead(future_times, times[-1], step)
    period = float(seasonal_period / step)
    if 2 * harmonics > period:
        raise ValueError(f"harmonics must be at most half the seasonal period in steps "
                         f"({period:.4g} steps from seasonal_period={seasonal_period!r}), got "
                         f"{harmonics}")
    observed = int(np.isfinite(series).sum())
    num_states = 2 + 2 * harmonics
    if observed <= num_states:
        raise ValueError(f"mask must select more than {num_states} observed entries (the "
                         f"number of states), got {observed}")

    model = unobserved_components(series, level="local linear trend",
                                  freq_seasonal=[{"period": period, "harmonics": harmonics}])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=convergence_warning)
        results = model.fit(disp=False, warn_convergence=False)
    converged = bool(results.mle_retvals.get("converged", True))

    horizon = int(ahead.max())
    prediction = results.get_forecast(horizon)
    mean = np.asarray(prediction.predicted_mean)[ahead - 1]
    std = np.sqrt(np.asarray(prediction.var_pred_mean)[ahead - 1])
    rng = np.random.default_rng(int(seed))
    initial = _draw_states(results.predicted_state[:, -1], results.predicted_state_cov[:, :, -1],
                           num_samples, rng)
    paths = results.simulate(horizon, anchor="end", repetitions=num_samples,
                             initial_state=initial, rng=rng)
    paths = np.asarray(paths).reshape(horizon, num_samples)
    samples = paths[ahead - 1].T

    variances = ", ".join(f"{name}={value:.3g}"
                          for name, value in zip(model.param_names, results.params, strict=True))
    summary = (f"UnobservedComponents(local linear trend + trigonometric seasonal, period "
               f"{period:.4g} steps, {harmonics} harmonics) on {observed} of {len(series)} "
               f"observations: {variances}; log-likelihood {results.llf:.4g}")
    if not converged:
        summary += "; WARNING: the maximum-likelihood optimisation did not converge"

    def to_tensor(array):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    return BaselineForecast(samples=to_tensor(samples), mean=to_tensor(mean), std=to_tensor(std),
                            summary=summary)


def linear_interpolation(x, times, mask):
    r"""Fill hidden entries by linear interpolation in time between observed entries.

    For each sequence :math:`b` and channel :math:`d`, with observed times
    :math:`s_1 < \dots < s_m` and values :math:`v_1, \dots, v_m`, a hidden entry at time
    :math:`t` gets

    .. math::

        \hat{x}(t) = v_j + \frac{t - s_j}{s_{j+1} - s_j}\,(v_{j+1} - v_j)
            \quad (s_j < t < s_{j+1}),

    :math:`v_1` before :math:`s_1` and :math:`v_m` after :math:`s_m` (constant extrapolation),
    as :func:`numpy.interp`. A channel with no observed entry in a sequence is filled with 0,
    the mean of standardised training data; the other channels of the sequence are not used.
    Observed entries are returned unchanged.

    Args:
        x (torch.Tensor): ``(B, K+1, D)`` values; hidden entries are ignored (may hold NaN).
        times (torch.Tensor): ``(K+1,)`` times shared by the batch or ``(B, K+1)`` times per
            sequence, finite and strictly increasing along the sequence.
        mask (torch.Tensor): ``(B, K+1, D)`` boolean, True where an entry is observed.

    Returns:
        torch.Tensor: ``(B, K+1, D)`` filled values, with ``x``'s dtype and device.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, K+1, D), got {tuple(x.shape)}")
    batch, length, _ = x.shape
    if batch < 1 or length < 1:
        raise ValueError(f"x must hold at least one sequence of at least one point, got shape "
                         f"{tuple(x.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError("mask must be a boolean tensor")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have shape {tuple(x.shape)} (as x), got "
                         f"{tuple(mask.shape)}")
    if not isinstance(times, torch.Tensor) or not times.is_floating_point():
        raise ValueError("times must be a floating-point tensor")
    if times.shape not in ((length,), (batch, length)):
        raise ValueError(f"times must have shape ({length},) or ({batch}, {length}), got "
                         f"{tuple(times.shape)}")
    mask = mask.to(x.device)
    times = times.to(x.device).expand(batch, length)
    if not bool(torch.isfinite(times).all()):
        raise ValueError("times contains NaN or infinite values")
    if length > 1 and not bool((times.diff(dim=-1) > 0).all()):
        raise ValueError("times must be strictly increasing along each sequence")
    if not bool(torch.isfinite(x[mask]).all()):
        raise ValueError("x contains NaN or infinite values at observed entries (mask True)")

    values = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    index = torch.arange(length, device=x.device).view(1, length, 1).expand_as(x)
    # Last observed index at or before each step, and first at or after it (-1 / length: none).
    before = torch.where(mask, index, torch.full_like(index, -1)).cummax(dim=1).values
    after = torch.where(mask, index, torch.full_like(index, length))
    after = after.flip(1).cummin(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < length
    before_index = torch.where(has_before, before, after).clamp(0, length - 1)
    after_index = torch.where(has_after, after, before).clamp(0, length - 1)
    time = times.to(torch.promote_types(times.dtype, x.dtype))
    time = time.unsqueeze(-1).expand(x.shape)
    time_before = time.gather(1, before_index)
    time_after = time.gather(1, after_index)
    gap = time_after - time_before
    weight = torch.where(gap > 0, (time - time_before) / torch.where(gap > 0, gap, 1), 0)
    weight = weight.to(x.dtype)
    value_before = values.gather(1, before_index)
    value_after = values.gather(1, after_index)
    filled = value_before + weight * (value_after - value_before)
    filled = torch.where(has_before | has_after, filled, torch.zeros_like(filled))
    return torch.where(mask, x, filled)
