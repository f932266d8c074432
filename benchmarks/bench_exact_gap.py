"""How far the ELBO and the importance-weighted estimate sit from the exact log-likelihood.

Simulated linear-Gaussian data (Dz = 2, Dx = 3, 64 sequences, 50 irregular points each, from
a seeded ground-truth linear-Gaussian VPF); a linear-Gaussian VPF is trained by SVI with the
guide of ``--guide`` (default the affine one), then on the same data it reports, per time
point: the exact log p(x) (Kalman filter / GaussianHMM under the trained model), the ELBO, the
importance-weighted estimate with 1 000 particles, and the relative gaps; and the coverage of
posterior predictive intervals at 20 % of the points hidden from the guide. With
``--train-missing p`` the guide is trained with a random share ``p`` of the points missing (so
hidden points are not new to it), and the likelihood figures are for the observed points.

    python benchmarks/bench_exact_gap.py                  # about a minute
    python benchmarks/bench_exact_gap.py --guide markov   # the Markov guide
    python benchmarks/bench_exact_gap.py --quick
    python benchmarks/bench_exact_gap.py --json out.json
"""

import argparse
import json
import platform
import time

import pyro
import torch
from problems import linear_gaussian_problem
from pyro_vpf.guides import GUIDES
from pyro_vpf.models import VPF

from pyro_vpf.evaluation import (
    elbo,
    evaluate_sequences,
    exact_log_likelihood,
    importance_log_likelihood,
)
from pyro_vpf.infer import fit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and particles")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--train-missing", type=float, default=0.0,
                        help="share of points missing during training")
    parser.add_argument("--guide", choices=list(GUIDES), default="affine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.steps = args.steps or (200 if args.quick else 2000)
    particles = 100 if args.quick else args.particles

    x, times, truth = linear_gaussian_problem(args.sequences, args.points, args.seed)
    mask = None
    if args.train_missing > 0:
        g = torch.Generator().manual_seed(args.seed + 1)
        mask = torch.rand(x.shape[:2], generator=g) >= args.train_missing
        mask[:, 0] = True
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = VPF(3, 2, num_flow_layers=0, observation="linear_gaussian")
    guide = GUIDES[args.guide](3, 2, hidden_dim=args.hidden_dim)
    start = time.perf_counter()
    fit(model, guide, x, times, mask, num_steps=args.steps, lr=args.lr, progress=False)
    seconds = time.perf_counter() - start
    points = x.shape[0] * x.shape[1] if mask is None else int(mask.sum())
    with torch.no_grad():
        exact = float(exact_log_likelihood(model, x, times, mask).sum()) / points
        truth_exact = float(exact_log_likelihood(truth, x, times, mask).sum()) / points
    lower = float(elbo(model, guide, x, times, mask, num_particles=particles).per_sequence.sum())
    iw = float(importance_log_likelihood(model, guide, x, times, mask,
                                         num_particles=particles).sum())
    lower, iw = lower / points, iw / points
    scores = evaluate_sequences(model, guide, x, times, num_particles=10, num_samples=400,
                                seed=args.seed + 2)
    record = {
        "exact_per_point": exact, "elbo_per_point": lower, "iw_per_point": iw,
        "elbo_gap_per_point": exact - lower, "iw_gap_per_point": exact - iw,
        "elbo_relative_gap": (exact - lower) / abs(exact),
        "iw_relative_gap": (exact - iw) / abs(exact),
        "true_model_exact_per_point": truth_exact, "train_seconds": seconds,
        "interpolation_coverage_50": scores["interpolation_coverage_50"],
        "interpolation_coverage_90": scores["interpolation_coverage_90"],
    }
    print(f"\nlinear-Gaussian VPF + {args.guide} guide, {args.sequences} sequences x {args.points} "
          f"irregular points, {args.steps} SVI steps ({seconds:.0f} s), {particles} particles, "
          f"{args.train_missing:.0%} of points missing in training")
    print(f"{'nats per time point':<34}{'value':>10}")
    for name, key in [("exact log p(x), trained model", "exact_per_point"),
                      ("exact log p(x), true model", "true_model_exact_per_point"),
                      ("ELBO", "elbo_per_point"), ("IW estimate", "iw_per_point"),
                      ("exact - ELBO", "elbo_gap_per_point"),
                      ("exact - IW", "iw_gap_per_point")]:
        print(f"{name:<34}{record[key]:>10.4f}")
    print(f"{'relative gap ELBO / IW':<34}{record['elbo_relative_gap']:>10.2%}"
          f"{record['iw_relative_gap']:>10.2%}")
    print(f"{'coverage of hidden points 50/90 %':<34}{record['interpolation_coverage_50']:>10.3f}"
          f"{record['interpolation_coverage_90']:>10.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": record, "args": vars(args), "particles": particles,
                       "torch": torch.__version__, "python": platform.python_version()},
                      f, indent=2)
    return record


if __name__ == "__main__":
    main()
