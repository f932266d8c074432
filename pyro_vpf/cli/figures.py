r"""The figures of a command-line run (matplotlib, written to files)."""

import os
import time

import torch

from pyro_vpf.times import select_times

__all__ = ["evaluation_figures", "prior_demo", "samples_figure", "write_figures"]


def evaluation_figures(data, result, out_dir, num_sequences=2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_predictive

    times = data.times.cpu()
    observed = data.unstandardise(data.x).cpu()
    panels = [("interpolation.png", result["interpolation_draws"], None, None,
               result["hidden"])]
    if result.get("forecast_draws") is not None:  # the scored sequences, at their own times
        panels.append(("forecast.png", result["forecast_draws"], result["forecast_rows"].cpu(),
                       result["forecast_times"].cpu(), None))
    for name, draws, rows, pred_times, hidden in panels:
        draws = data.unstandardise(draws).cpu()
        dims = observed.shape[-1]
        shown = min(num_sequences, draws.shape[1])
        fig, axes = plt.subplots(shown, dims, figsize=(4.2 * dims, 2.6 * shown),
                                 squeeze=False)
        for j in range(shown):
            i = j if rows is None else int(rows[j])
            t = select_times(times, i)
            q = t if pred_times is None else pred_times[j]
            for d in range(dims):
                plot_predictive(t, observed[i, :, d], q, draws[:, j, :, d], ax=axes[j, d],
                                hidden=None if hidden is None else hidden[i],
                                start_time=None if hidden is not None else t[t < q[0]][-1])
        axes[0, 0].legend(frameon=False, fontsize=7)
        title = ("Interpolation of hidden points" if hidden is not None else
                 "Forecast through the prior after the dashed line")
        fig.suptitle(f"{title} (held-out sequences, original units)")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)


def write_figures(config, model, guide, train_data, test_data, history, evaluations, paths):
    """``loss.png``, ``samples.png`` and ``reconstruction.png`` of a run, at ``paths``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_elbo

    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_elbo(history, ax=ax, evaluations=evaluations)
    ax.set_title("VPF on stochastic Lorenz")
    fig.tight_layout()
    fig.savefig(paths["loss.png"], dpi=120)
    plt.close(fig)
    samples_figure(config, model, train_data, paths["samples.png"],
                    num_points=max(1001, 25 * config.num_points), num_samples=200)
    _reconstruction_figure(model, guide, test_data, paths["reconstruction.png"])


def samples_figure(config, model, data, path, num_points, num_samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_bands

    times = data.times if data.times.dim() == 1 else data.times[0]
    fine = torch.linspace(float(times[0]), float(times[-1]), num_points,
                          device=times.device, dtype=times.dtype)
    with torch.no_grad():
        _, x = model.sample_prior(fine, num_samples)
    x, observed = data.unstandardise(x).cpu(), data.unstandardise(data.x).cpu()
    grid = data.times.cpu()
    dims = x.shape[-1]
    fig, axes = plt.subplots(2, dims, figsize=(4.2 * dims, 6), sharex=True, squeeze=False)
    for d in range(dims):
        top, bottom = axes[0, d], axes[1, d]
        for i in range(min(3, len(x), len(observed))):
            t = select_times(grid, i)
            top.plot(t, observed[i, :, d], "o", color="0.3", ms=2.5,
                     label="data" if i == 0 else None)
            top.plot(fine.cpu(), x[i, :, d], color=f"C{i}", lw=0.7,
                     label=f"prior draws ({num_points} points)" if i == 0 else None)
        n = min(len(observed), num_samples)
        t = grid if grid.dim() == 1 else None
        if t is not None:
            plot_bands(t, observed[:n, :, d], ax=bottom, color="0.4", label="data 5-50-95%")
        plot_bands(fine.cpu(), x[..., d], ax=bottom, color="C0", label="prior 5-50-95%")
        top.set_title(f"channel {d}")
        bottom.set_xlabel("time")
    axes[0, 0].legend(frameon=False, fontsize=8)
    axes[1, 0].legend(frameon=False, fontsize=8)
    fig.suptitle("Prior samples at any resolution vs data (original units)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reconstruction_figure(model, guide, data, path, num_sequences=3, num_draws=200):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_bands

    rows = slice(0, min(num_sequences, len(data)))
    x = data.x[rows]
    times = select_times(data.times, rows)
    mask = None if data.mask is None else data.mask[rows]
    t0, t1 = times[..., 0], times[..., -1]
    unit = torch.linspace(0, 1, 201, device=x.device, dtype=x.dtype)
    query = t0.unsqueeze(-1) + (t1 - t0).unsqueeze(-1) * unit if times.dim() == 2 else (
        t0 + (t1 - t0) * unit)
    if not guide.continuous_time:  # a guide defined at the observation times only
        query = times
    with torch.no_grad():
        z = guide.marginal(x, times, query, mask).sample((num_draws,))
        draws = model.observation_distribution(z).sample()  # (S, n, Q, Dx)
    draws, observed = data.unstandardise(draws).cpu(), data.unstandardise(x).cpu()
    n, dims = x.shape[0], x.shape[-1]
    fig, axes = plt.subplots(n, dims, figsize=(4.2 * dims, 2.6 * n), squeeze=False,
                             sharex="row")
    for i in range(n):
        q, t = select_times(query, i).cpu(), select_times(times, i).cpu()
        for d in range(dims):
            ax = axes[i, d]
            plot_bands(q, draws[:, i, :, d], ax=ax, color="C0",
                       label="posterior predictive 5-50-95%")
            ax.plot(t, observed[i, :, d], "o", color="k", ms=2.5, label="held-out data")
            if i == 0:
                ax.set_title(f"channel {d}")
    axes[0, 0].legend(frameon=False, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time")
    fig.suptitle("Posterior reconstruction of held-out sequences (original units)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prior_demo(num_samples=1000, points=(41, 10_001), latent_dim=2, out_dir="outputs", seed=0,
             device="cpu", hidden_dim=64, num_flow_layers=4):
    """Sample a latent path prior at several resolutions and show that they agree.

    The prior (an OU path pushed through a time-conditioned flow, with random weights) is
    drawn at each resolution in one pass; the law of :math:`z` at the last time must not
    depend on the resolution, which the demo checks and plots.

    Returns:
        dict: per resolution, the time taken and the mean and standard deviation of
        :math:`z(t_K)`; and the figure's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_marginals, plot_paths
    from pyro_vpf.prior import LatentPathPrior

    torch.manual_seed(seed)
    device = torch.device(device)
    prior = LatentPathPrior(latent_dim, hidden_dim, num_flow_layers, time_scale=1.0)
    with torch.no_grad():  # random, non-trivial flow weights: the prior is not just an OU path
        for p in prior.flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prior.to(device)

    results, finals, draws = {}, [], {}
    with torch.no_grad():
        for n in points:
            times = torch.linspace(0.0, 4.0, n, device=device)
            start = time.perf_counter()
            z = prior.sample(times, num_samples)
            elapsed = time.perf_counter() - start
            finals.append(z[:, -1])
            draws[n] = (times, z)
            results[n] = {"seconds": elapsed, "mean": z[:, -1].mean(0).tolist(),
                          "std": z[:, -1].std(0).tolist()}

    os.makedirs(out_dir, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
    coarse, fine = min(points), max(points)
    plot_paths(*draws[fine], ax=axes[0], max_paths=5, color="C0", alpha=0.6,
               label=f"{fine} points")
    plot_paths(*draws[coarse], ax=axes[0], max_paths=5, color="C3", marker="o", ms=2.5,
               lw=0.8, label=f"{coarse} points")
    axes[0].legend(frameon=False)
    axes[0].set_title("prior paths at two resolutions (independent draws)")
    plot_marginals(finals, [f"{n} points" for n in points], ax=axes[1])
    axes[1].set_title("z[0] at the last time: same law at every resolution")
    fig.tight_layout()
    figure = os.path.join(out_dir, "prior_samples.png")
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return {"resolutions": results, "figure": figure}
