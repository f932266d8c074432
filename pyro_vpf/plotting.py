"""Plots of latent paths and their marginals (matplotlib, created on demand)."""

import numpy as np

__all__ = ["plot_paths", "plot_marginals"]


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
