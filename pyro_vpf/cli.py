"""Command line: ``python -m pyro_vpf demo``."""

import argparse
import os
import sys
import time

import torch

__all__ = ["main", "run_demo"]


def run_demo(num_samples=1000, points=(41, 10_001), latent_dim=2, out_dir="outputs", seed=0,
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pyro_vpf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample the latent path prior at several resolutions")
    demo.add_argument("--num-samples", type=int, default=1000)
    demo.add_argument("--points", type=int, nargs="+", default=[41, 10_001])
    demo.add_argument("--out-dir", default="outputs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    demo.add_argument("--fast", action="store_true", help="small sizes (for tests)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        points = [11, 201] if args.fast else args.points
        num_samples = 32 if args.fast else args.num_samples
        if any(p < 2 for p in points) or num_samples < 2:
            parser.error("--points must be >= 2 and --num-samples >= 2")
        out = run_demo(num_samples, points, out_dir=args.out_dir, seed=args.seed,
                       device=args.device)
        print(f"{'points':>8} {'seconds':>9}   mean of z(t_K)        std of z(t_K)")
        for n, r in out["resolutions"].items():
            mean = ", ".join(f"{v:+.3f}" for v in r["mean"])
            std = ", ".join(f"{v:.3f}" for v in r["std"])
            print(f"{n:>8} {r['seconds']:>9.3f}   [{mean}]   [{std}]")
        print(f"figure: {out['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
