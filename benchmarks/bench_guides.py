"""One model, three guides: ELBO, IW log-likelihood, step time and exact gap for each.

Two problems, the same training budget for every guide (steps, learning-rate schedule,
particles, widths):

* ``linear``: a linear-Gaussian VPF (identity latent flow, linear Gaussian observations)
  on 64 simulated sequences of 50 irregular points (``problems.linear_gaussian_problem``),
  model and guide trained jointly; the exact log p(x) of the trained model (Kalman filter)
  gives the gap of each guide's ELBO and IW estimate;
* ``lorenz``: a VPF with flows on stochastic Lorenz sequences, scored on held-out
  sequences (no exact reference).

Guides: ``AffineGuide`` (independent Gaussian marginals), ``MarkovGuide`` (Gauss-Markov
path, full transitions and scales; ``markov``: its default smoother parametrisation,
``markov-direct``: transitions straight from the encoder's heads) and ``FlowGuide`` (affine
marginals through a conditional flow). Step time is the median wall time of one SVI step.

To separate the family from the encoder, the trained Markov guide's per-step ``(A, b, L)`` are
then freed (one set per sequence and step, no encoder) and fitted further on the same trained
model: the gap that remains is the family's, the difference the amortisation's.

``lengths``: the median step time of each guide on the linear problem at 51, 201 and 1001
points per sequence, with the growth from the shortest, to show how each guide's cost
scales with the sequence length (all of them without a loop over time).

    python benchmarks/bench_guides.py             # about 45 minutes on 2 cores
    python benchmarks/bench_guides.py --quick     # about a minute
    python benchmarks/bench_guides.py --json out.json
"""

import argparse
import json
import platform
import statistics
import time

import pyro
import torch
from problems import linear_gaussian_problem
from pyro.distributions import MultivariateNormal
from pyro_vpf.guides import AffineGuide, FlowGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.distributions import GaussMarkovPath
from pyro_vpf.evaluation import elbo, exact_log_likelihood, importance_log_likelihood
from pyro_vpf.infer import fit
from pyro_vpf.sites import SEQUENCES, Z0, Z

GUIDES = {
    "affine": lambda dx, dz, h: AffineGuide(dx, dz, hidden_dim=h),
    "markov": lambda dx, dz, h: MarkovGuide(dx, dz, hidden_dim=h),
    "markov-direct": lambda dx, dz, h: MarkovGuide(dx, dz, hidden_dim=h,
                                                   parametrization="direct"),
    "flow": lambda dx, dz, h: FlowGuide(dx, dz, hidden_dim=h, num_flow_layers=4),
}


def train(model, guide, x, times, mask, args, steps, batch_size=None):
    history = fit(model, guide, x, times, mask, num_steps=steps, lr=args.lr,
                  lr_decay=args.final_lr_factor ** (1 / max(steps, 1)),
                  num_particles=args.train_particles, batch_size=batch_size, progress=False)
    return statistics.median(history.step_seconds), sum(history.step_seconds)


def score(model, guide, x, times, mask, particles):
    points = x.shape[0] * x.shape[1] if mask is None else int(mask.sum())
    lower = float(elbo(model, guide, x, times, mask, num_particles=particles)
                  .per_sequence.sum()) / points
    iw = float(importance_log_likelihood(model, guide, x, times, mask,
                                         num_particles=particles).sum()) / points
    return lower, iw


class FreeMarkovPath(torch.nn.Module):
    """Non-amortised Gauss-Markov guide: free ``(m0, L0, A, b, L)`` per sequence and step,
    started from a trained ``MarkovGuide``'s output. Same family, no encoder."""

    def __init__(self, guide, x, times):
        super().__init__()
        self.obs_dim = guide.obs_dim
        with torch.no_grad():
            m0, L0, A, b, L = guide.parameters_of(x, times)
        self.m0, self.L0, self.A, self.b, self.L = (
            torch.nn.Parameter(t.clone()) for t in (m0, L0, A, b, L))

    @staticmethod
    def _tril(raw):
        return raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).abs() + 1e-6)

    def forward(self, x, times, mask=None, **kwargs):
        pyro.module("free_markov", self)
        with pyro.plate(SEQUENCES, x.shape[0], dim=-1):
            z0 = pyro.sample(Z0, MultivariateNormal(self.m0, scale_tril=self._tril(self.L0)))
            pyro.sample(Z, GaussMarkovPath(z0, self.A, self.b, self._tril(self.L)))


def free_markov_gap(model, guide, x, times, args):
    """Relative ELBO gap of the Markov family without amortisation, on the trained model."""
    model.requires_grad_(False).eval()
    free = FreeMarkovPath(guide, x, times)
    pyro.clear_param_store()
    fit(model, free, x, times, num_steps=args.free_steps, lr=1e-3, num_particles=8,
        lr_decay=0.1 ** (1 / args.free_steps), progress=False)
    with torch.no_grad():
        exact = float(exact_log_likelihood(model, x, times).sum())
    lower = float(elbo(model, free, x, times, num_particles=args.particles).per_sequence.sum())
    model.requires_grad_(True).train()
    return (exact - lower) / abs(exact)


def _selected_guides(args):
    """The chosen guides in order, each after a fresh param store and the same seed."""
    for name, build in GUIDES.items():
        if name in args.guides:
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            yield name, build


def linear_rows(args):
    x, times, _ = linear_gaussian_problem(args.sequences, args.points, args.seed)
    rows = []
    for name, build in _selected_guides(args):
        model = VPF(3, 2, num_flow_layers=0, observation="linear_gaussian")
        guide = build(3, 2, args.hidden_dim)
        step, total = train(model, guide, x, times, None, args, args.steps)
        with torch.no_grad():
            exact = float(exact_log_likelihood(model, x, times).sum()) / x[..., 0].numel()
        lower, iw = score(model, guide, x, times, None, args.particles)
        rows.append({"problem": "linear", "guide": name, "elbo": lower, "iw": iw,
                     "exact": exact, "elbo_gap": (exact - lower) / abs(exact),
                     "iw_gap": (exact - iw) / abs(exact), "step_ms": 1e3 * step,
                     "train_s": total})
        if name.startswith("markov") and args.free_steps:
            rows[-1]["free_elbo_gap"] = free_markov_gap(model, guide, x, times, args)
        print(f"  linear / {name}: done in {total:.0f} s", flush=True)
    return rows


def lorenz_rows(args):
    train_set, test = stochastic_lorenz(args.lorenz_sequences, 41, seed=args.seed)
    rows = []
    for name, build in _selected_guides(args):
        model = VPF(3, 4, hidden_dim=args.hidden_dim, num_flow_layers=4, num_obs_flow_layers=4)
        guide = build(3, 4, args.hidden_dim)
        step, total = train(model, guide, train_set.x, train_set.times, None, args,
                            args.lorenz_steps, batch_size=args.batch_size)
        lower, iw = score(model, guide, test.x, test.times, None, args.particles)
        rows.append({"problem": "lorenz", "guide": name, "elbo": lower, "iw": iw,
                     "exact": None, "elbo_gap": None, "iw_gap": None, "step_ms": 1e3 * step,
                     "train_s": total})
        print(f"  lorenz / {name}: done in {total:.0f} s", flush=True)
    return rows


def length_rows(args):
    """Median SVI step time of each guide on the linear problem at several sequence lengths."""
    rows = []
    for points in args.lengths:
        x, times, _ = linear_gaussian_problem(args.length_sequences, points, args.seed)
        for name, build in _selected_guides(args):
            model = VPF(3, 2, num_flow_layers=0, observation="linear_gaussian")
            step, _ = train(model, build(3, 2, args.hidden_dim), x, times, None, args,
                            args.length_steps)
            rows.append({"guide": name, "points": points, "step_ms": 1e3 * step})
        print(f"  lengths / {points} points: done", flush=True)
    return rows


def print_lengths(rows, args):
    guides = list(dict.fromkeys(r["guide"] for r in rows))
    ms = {(r["points"], r["guide"]): r["step_ms"] for r in rows}
    print(f"\nstep ms by sequence length ({args.length_sequences} sequences, median of "
          f"{args.length_steps} steps; 'x first' is the growth from the shortest length)")
    head = f"{'points':>7}" + "".join(f"{g:>15}{'x first':>9}" for g in guides)
    print(head)
    print("-" * len(head))
    first = args.lengths[0]
    for points in args.lengths:
        print(f"{points:>7}" + "".join(
            f"{ms[points, g]:>15.1f}{ms[points, g] / ms[first, g]:>9.2f}" for g in guides))
    if "markov" in guides and "markov-direct" in guides:
        print("markov / markov-direct: " + ", ".join(
            f"{ms[p, 'markov'] / ms[p, 'markov-direct']:.2f} at {p}" for p in args.lengths))


def print_table(rows, args):
    print(f"\nnats per time point; {args.particles} particles for ELBO and IW; linear: "
          f"{args.steps} steps, lorenz: {args.lorenz_steps} steps (batch {args.batch_size}); "
          f"lr {args.lr} decaying to x{args.final_lr_factor}, {args.train_particles} "
          "training particles")
    head = (f"{'problem':<8}{'guide':<15}{'ELBO':>9}{'IW':>9}{'exact':>9}{'ELBO gap':>10}"
            f"{'IW gap':>9}{'step ms':>9}{'vs affine':>10}")
    print(head)
    print("-" * len(head))
    first = {}
    for r in rows:
        first.setdefault(r["problem"], r["step_ms"])
    for r in rows:
        def cell(v, fmt, width):
            return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"
        print(f"{r['problem']:<8}{r['guide']:<15}{r['elbo']:>9.4f}{r['iw']:>9.4f}"
              f"{cell(r['exact'], '.4f', 9)}{cell(r['elbo_gap'], '.2%', 10)}"
              f"{cell(r['iw_gap'], '.2%', 9)}{r['step_ms']:>9.1f}"
              f"{r['step_ms'] / first[r['problem']]:>10.2f}")
    print("gaps are (exact - estimate) / |exact| of the trained model; 'vs affine' is the "
          "step-time ratio to the first guide of the problem, measured in this run")
    for r in rows:
        if "free_elbo_gap" in r:
            print(f"{r['guide']}: the Markov family without amortisation (free per-step A, b, L "
                  f"from the trained guide, {args.free_steps} steps): ELBO gap "
                  f"{r['free_elbo_gap']:.2%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, few particles")
    parser.add_argument("--problems", nargs="+", default=["linear", "lorenz", "lengths"],
                        choices=["linear", "lorenz", "lengths"],
                        help="'lengths': step time against sequence length")
    parser.add_argument("--steps", type=int, default=None, help="linear problem (3000)")
    parser.add_argument("--lorenz-steps", type=int, default=None, help="(1000)")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--lorenz-sequences", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr-factor", type=float, default=0.03,
                        help="the learning rate decays geometrically to lr x this")
    parser.add_argument("--train-particles", type=int, default=4)
    parser.add_argument("--particles", type=int, default=None, help="for scoring (1000)")
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--free-steps", type=int, default=None,
                        help="steps of the non-amortised Markov fit on the linear problem "
                             "(2000; 0 to skip)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="points per sequence for 'lengths' (51 201 1001)")
    parser.add_argument("--length-sequences", type=int, default=16)
    parser.add_argument("--length-steps", type=int, default=None, help="(10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.steps = args.steps or (150 if args.quick else 3000)
    args.lorenz_steps = args.lorenz_steps or (30 if args.quick else 1000)
    args.particles = args.particles or (50 if args.quick else 1000)
    if args.free_steps is None:
        args.free_steps = 20 if args.quick else 2000
    args.lengths = args.lengths or ([21, 41] if args.quick else [51, 201, 1001])
    args.length_steps = args.length_steps or (3 if args.quick else 10)
    if args.quick:
        args.sequences, args.points, args.lorenz_sequences = 16, 20, 40
        args.batch_size, args.hidden_dim = 16, 16

    start = time.perf_counter()
    rows = []
    if "linear" in args.problems:
        rows += linear_rows(args)
    if "lorenz" in args.problems:
        rows += lorenz_rows(args)
    lengths = length_rows(args) if "lengths" in args.problems else []
    if rows:
        print_table(rows, args)
    if lengths:
        print_lengths(lengths, args)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "lengths": lengths, "args": vars(args),
                       "torch": torch.__version__, "python": platform.python_version()},
                      f, indent=2)
    return rows


if __name__ == "__main__":
    main()
