"""The README's figure: prior paths of one trained VPF at 41 and at 10 001 time points.

A small VPF is trained for 1 000 SVI steps (KL annealed over the first half) on stochastic
Lorenz sequences observed at 41 points, then its prior is sampled on two grids over the same
interval: the training grid and one of 10 001 points (one parallel pass: the OU scan and the
flow over every point, no solver). The figure shows the decoded paths ``model.decode(z)`` of
the first channel (the observation noise left out) against the data's 5-50-95 % band.
Deterministic (fixed seeds); about a minute on 2 CPU cores.

    python docs/scripts/front_figure.py                      # writes docs/_static/front.png
    python docs/scripts/front_figure.py --out other.png --steps 100
"""

import argparse
import pathlib

import torch

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "_static" / "front.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyro_vpf.guides import AffineGuide
    from pyro_vpf.models import VPF

    from pyro_vpf.data import stochastic_lorenz
    from pyro_vpf.infer import fit
    from pyro_vpf.plotting import plot_bands

    torch.manual_seed(args.seed)
    train, _ = stochastic_lorenz(num_sequences=320, num_points=41, seed=args.seed)
    model = VPF(obs_dim=3, latent_dim=4, hidden_dim=32, num_flow_layers=2,
                num_obs_flow_layers=2)
    guide = AffineGuide(obs_dim=3, latent_dim=4, hidden_dim=32)
    fit(model, guide, train.x, train.times, num_steps=args.steps, batch_size=64, lr=1e-2,
        lr_decay=0.997, kl_anneal_steps=args.steps // 2, progress=False)

    channel, num_paths = 0, 4
    panels = []
    with torch.no_grad():
        for num_points in (41, 10_001):
            times = torch.linspace(0.0, 1.0, num_points)
            z, _ = model.sample_prior(times, num_samples=256)
            panels.append((times, model.decode(z)[..., channel]))

    data = train.x[:256, :, channel]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
    for ax, (times, paths) in zip(axes, panels, strict=True):
        plot_bands(train.times, data, ax=ax, color="0.55", label="data 5-50-95 %")
        plot_bands(times, paths, ax=ax, color="C0", label="prior 5-50-95 %")
        style = {"marker": "o", "ms": 2.5} if len(times) < 100 else {}
        for i in range(num_paths):
            ax.plot(times, paths[i], color=f"C{i + 1}", lw=0.9,
                    label="prior paths (decoded)" if i == 0 else None, **style)
        ax.set_title(f"{len(times):,} points".replace(",", " "), fontsize=10)
        ax.set_xlabel("time")
    axes[0].set_ylabel(f"x[{channel}] (standardised)")
    axes[0].legend(frameon=False, fontsize=8, loc="lower left")
    fig.suptitle("One VPF trained on 41 points, sampled at 41 and at 10 001 "
                 "(one parallel pass, no solver)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
