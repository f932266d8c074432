r"""Rolling-origin backtests of a forecaster on one long series."""

import math
import numbers
import time

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vpf.data.series import split_series
from pyro_vpf.evaluation.predictive import forecast_series
from pyro_vpf.evaluation.scores import forecast_scores
from pyro_vpf.infer.fit import fit
from pyro_vpf.validation import check_integer

__all__ = ["backtest"]


def _origins(times, horizon, num_origins, spacing):
    """``num_origins`` origins spaced by ``spacing``, the last one ``horizon`` before the
    series' end."""
    last = float(times[-1]) - horizon
    return [last - spacing * k for k in range(num_origins - 1, -1, -1)]


def backtest(model_factory, times, values, *, horizon, window, origins=None, num_origins=3,
             spacing=None, stride=None, fit_options=None, context=None, num_samples=500,
             levels=(0.5, 0.9), seed=0, progress=True):
    r"""Train and forecast from several origins of one series and score every forecast.

    For each origin :math:`t_o` the forecaster sees the *history* :math:`t \le t_o` only:
    it is standardised with the history's own observed statistics and cut into training
    windows (:func:`~pyro_vpf.data.split_series`), ``model_factory(train)`` builds a fresh
    ``(model, guide)``, :func:`~pyro_vpf.infer.fit` trains them, and
    :func:`~pyro_vpf.evaluation.forecast_series` forecasts the points
    :math:`t_o < t \le t_o + h` (``horizon`` :math:`h`) from the history's last ``context``
    points; :func:`~pyro_vpf.evaluation.forecast_scores` scores the draws against them in
    the series' original units (missing points unscored). So every origin is an honest
    out-of-sample forecast, as in ``pyro.contrib.forecast.backtest``.

    Args:
        model_factory (callable): ``model_factory(train) -> (model, guide)``, with ``train``
            the :class:`~pyro_vpf.data.SequenceData` of training windows (so the factory can
            read ``train.obs_dim``); called once per origin, under ``pyro.set_rng_seed(seed +
            i)`` for the ``i``-th origin.
        times (torch.Tensor): ``(T,)`` strictly increasing.
        values (torch.Tensor): ``(T,)`` or ``(T, Dx)``, NaN where missing.
        horizon (float): :math:`h > 0`, the forecast length in time units.
        window (int): points per training window.
        origins (sequence of float): the origins; by default ``num_origins`` of them,
            ``spacing`` apart (default :math:`h`), the last one :math:`h` before the end.
        stride (int): points between training windows (default ``window // 2``).
        fit_options (dict): keyword arguments of :func:`~pyro_vpf.infer.fit` (e.g.
            ``num_steps``, ``lr``, ``batch_size``); ``progress`` is off.
        context (int): history points the guide conditions on (default ``window``).
        num_samples (int): predictive draws per forecast.
        levels (sequence of float): central interval probabilities scored.
        seed (int): base seed.
        progress (bool): a progress bar over the origins.

    Returns:
        list of dict: one per origin, with ``origin``, ``num_train`` (training windows),
        ``num_test`` (scored entries), ``crps``, ``mse``, ``mae``, ``coverage`` and
        ``interval_width`` (dicts by level), ``seconds`` (training and forecasting),
        ``history`` (the fit's :class:`~pyro_vpf.infer.FitHistory`) and ``draws``
        (``(num_samples, F, Dx)`` in original units).
    """
    if not callable(model_factory):
        raise ValueError("model_factory must be callable: model_factory(train) -> "
                         "(model, guide)")
    if not isinstance(times, torch.Tensor) or times.dim() != 1 or times.numel() < 3:
        raise ValueError("times must be a 1-D tensor of at least three times")
    if not bool(torch.isfinite(times).all()) or not bool((times.diff() > 0).all()):
        raise ValueError("times must be finite and strictly increasing")
    check_integer("num_samples", num_samples, 2)  # an interval needs two draws
    check_integer("seed", seed, 0)
    if context is not None:
        check_integer("context", context, 2)
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Real) or not (
            math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a finite number > 0, got {horizon!r}")
    if origins is None:
        if isinstance(num_origins, bool) or not isinstance(num_origins, numbers.Integral) or \
                num_origins < 1:
            raise ValueError(f"num_origins must be an integer >= 1, got {num_origins!r}")
        spacing = float(horizon) if spacing is None else spacing
        if isinstance(spacing, bool) or not isinstance(spacing, numbers.Real) or not (
                math.isfinite(spacing) and spacing > 0):
            raise ValueError(f"spacing must be a finite number > 0, got {spacing!r}")
        origins = _origins(times, float(horizon), int(num_origins), float(spacing))
    origins = [float(o) for o in origins]
    if not origins or any(not math.isfinite(o) for o in origins):
        raise ValueError(f"origins must be finite times, got {origins}")
    options = dict(fit_options or {})
    if "progress" in options:
        raise ValueError("fit_options may not set progress (backtest has its own bar)")
    t64 = times.to(torch.float64)
    results = []
    for i, origin in enumerate(tqdm(origins, desc="backtest", disable=not progress)):
        end = int((t64 <= origin + horizon).sum())
        num_history = int((t64 <= origin).sum())
        if num_history < window:
            raise ValueError(f"origin {origin:g} leaves {num_history} points of history, "
                             f"fewer than window={window}")
        if end == num_history:
            raise ValueError(f"origin {origin:g} has no point in the {horizon:g} after it")
        split = split_series(times[:end], values[:end], holdout=float(t64[end - 1]) - origin,
                             window=window, stride=stride, dtype=torch.get_default_dtype())
        if not bool(split.test.observed().any()):  # before any fitting: nothing to score
            raise ValueError(f"origin {origin:g} has no observed entry in the {horizon:g} "
                             "after it")
        tic = time.perf_counter()
        pyro.set_rng_seed(seed + i)
        model, guide = model_factory(split.train)
        train = split.train
        history = fit(model, guide, train.x, train.times, train.mask, progress=False,
                      **options)
        draws = forecast_series(model, guide, split.history, split.test.times,
                                context=min(context or window, split.history.x.shape[1]),
                                num_samples=num_samples)
        seconds = time.perf_counter() - tic
        test = split.test
        truth = test.unstandardise(test.x[0])
        observed = test.observed()[0]
        scores = forecast_scores(draws, truth, observed, levels=levels)
        results.append({"origin": origin, "num_train": len(train), "num_test": scores.count,
                        "crps": scores.crps, "mse": scores.mse, "mae": scores.mae,
                        "coverage": scores.coverage, "interval_width": scores.interval_width,
                        "seconds": seconds, "history": history, "draws": draws})
    return results
