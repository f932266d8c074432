"""Plots of latent paths and their marginals (matplotlib, created on demand)."""

import numpy as np

__all__ = ["plot_bands", "plot_elbo", "plot_marginals", "plot_paths", "plot_predictive"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    return ax


def _numpy(tensor):
    return tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)


def plot_paths(times, paths, dim=0, ax=None, max_paths=8, label=None, **style):
    """Draw up to ``max_paths`` sample paths of one coordinate.

    Args:
        times: ``(K+1,)`` times.
        paths: ``(N, K+1, D)`` samples.
        dim (int): the coordinate to draw.
        ax: a matplotlib axis (a new figure if omitted).

    Returns:
        The axis.
    """
    ax = _axes(ax)
    t, z = _numpy(times), _numpy(paths)[:max_paths, :, dim]
    style.setdefault("lw", 0.8)
    for i, path in enumerate(z):
        ax.plot(t, path, label=label if i == 0 else None, **style)
    ax.set_xlabel("time")
    ax.set_ylabel(f"z[{dim}]")
    return ax


def plot_marginals(samples, labels, dim=0, ax=None, bins=40):
    """Overlay histograms of one coordinate from several sample sets (e.g. two resolutions).

    Args:
        samples: a list of ``(N, D)`` arrays or tensors.
        labels: one label per sample set.
    """
    ax = _axes(ax)
    for s, label in zip(samples, labels, strict=True):
        ax.hist(_numpy(s)[:, dim], bins=bins, density=True, histtype="step", label=label)
    ax.set_xlabel(f"z[{dim}]")
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return ax


def plot_elbo(history, ax=None, smooth=25, evaluations=None):
    """ELBO per observed time point against step, smoothed, with optional test points.

    Args:
        history: a :class:`~pyro_vpf.infer.FitHistory`.
        evaluations: optional ``[(step, elbo_per_point), ...]`` on held-out data (default:
            the history's own held-out scores, when ``fit`` had ``validation=``), the best
            one marked.
    """
    ax = _axes(ax)
    if evaluations is None and getattr(history, "validation_step", None):
        evaluations = list(zip(history.validation_step, history.validation_elbo_per_point,
                               strict=True))
    values = np.asarray(history.elbo_per_point)
    ax.plot(np.arange(1, len(values) + 1), values, color="C0", alpha=0.25, lw=0.6)
    if len(values) >= smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(np.arange(smooth, len(values) + 1), np.convolve(values, kernel, "valid"),
                color="C0", label=f"train (mean of {smooth} steps)")
    if evaluations:
        steps, elbos = zip(*evaluations, strict=True)
        ax.plot(steps, elbos, "o-", color="C3", ms=4, label="held-out")
        best = getattr(history, "best_step", None)
        if best is not None and best in steps:
            ax.plot([best], [elbos[steps.index(best)]], "*", color="C3", ms=12,
                    label="best (restored)")
    finite = values[np.isfinite(values)]
    if finite.size:
        tail = finite[len(finite) // 10:] if finite.size > 10 else finite
        ax.set_ylim(np.percentile(tail, 1) - 0.5, max(tail.max(), *(e for _, e in evaluations or
                                                                     [(0, tail.max())])) + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO per time point (nats)")
    ax.legend(frameon=False)
    return ax


def plot_bands(times, draws, ax=None, color="C0", label=None, quantiles=(0.05, 0.5, 0.95)):
    """A median line and a central band from draws ``(S, T)`` at ``times (T,)``."""
    ax = _axes(ax)
    lo, mid, hi = np.quantile(_numpy(draws), quantiles, axis=0)
    t = _numpy(times)
    ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
    ax.plot(t, mid, color=color, lw=1.0, label=label)
    return ax


def plot_predictive(times, observed, pred_times, draws, ax=None, hidden=None, start_time=None,
                    color="C0"):
    """Data against predictive bands for one channel of one sequence.

    A fan chart when ``start_time`` is given (a dashed line where the forecast starts); hidden
    points (``hidden``, bool per time) are circled.

    Args:
        times, observed: ``(T,)`` the data's times and values.
        pred_times, draws: ``(Q,)`` and ``(S, Q)`` predictive draws.
    """
    ax = _axes(ax)
    plot_bands(pred_times, draws, ax=ax, color=color, label="predictive 5-50-95%")
    t, y = _numpy(times), _numpy(observed)
    ax.plot(t, y, "o", color="k", ms=2.5, label="data")
    if hidden is not None:
        h = _numpy(hidden).astype(bool)
        ax.plot(t[h], y[h], "o", mfc="none", color="C3", ms=6, label="hidden from the guide")
    if start_time is not None:
        ax.axvline(float(start_time), color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("time")
    return ax
