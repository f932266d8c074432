"""VPF against a latent SDE trained by SDE matching: same data, widths, guide and budget.

Stochastic Lorenz sequences on [0, 1.5] (61 points). Both models share the observation
model (a conditional observation flow, same width and depth) and the guide class
(``AffineGuide``, same width); the VPF's latent path is its OU process through a
time-conditioned flow (``Trace_ELBO``), the latent SDE's a neural drift and diffusion
(``SDEMatchingELBO``: no solver in training). Both are trained for the same number of steps;
the faster one is trained again, from scratch, for the other's wall time ("equal time" row).

Reported per model:

* training: median step time and total wall time; the final training-objective ELBO per
  point (each a lower bound on its own model's log-likelihood; the VPF's IW estimate on
  held-out data too, which the SDE cannot have: it has no path density);
* forecasts: the guide reads the first 41 points (t <= 1) of each held-out sequence and each
  model runs its own prior dynamics to the last 20 (the SDE through ``torchsde``); MSE of the
  predictive mean, CRPS, 50 % and 90 % interval coverage;
* samples: energy distance between prior samples and held-out sequences, per time point,
  averaged over time (the floor: training against held-out sequences);
* prior sampling latency for 64 paths at 101 / 1 001 / 10 001 points (the VPF in one pass;
  the SDE by Euler-Maruyama with one step per output interval, its cheapest setting), the
  ratio measured in the same run, matmul FLOPs per sampled point and the number of
  sequential steps.

    python benchmarks/bench_vpf_vs_sde.py             # about 10 minutes on 2 cores
    python benchmarks/bench_vpf_vs_sde.py --quick     # under a minute
    python benchmarks/bench_vpf_vs_sde.py --json out.json
"""

import argparse
import json
import math
import platform
import statistics
import time

import pyro
import torch
from problems import median_time
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF, LatentSDE
from torch.utils.flop_counter import FlopCounterMode

from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.evaluation import energy_distance, forecast, forecast_scores
from pyro_vpf.evaluation import importance_log_likelihood as iw_log_likelihood
from pyro_vpf.infer import SDEMatchingELBO, elbo_per_point, fit

HORIZON, POINTS, CONTEXT = 1.5, 61, 41


def build(name, args):
    common = {"hidden_dim": args.hidden_dim, "num_obs_flow_layers": args.obs_flow_layers}
    if name == "vpf":
        model = VPF(3, args.latent_dim, num_flow_layers=args.flow_layers, **common)
    else:
        model = LatentSDE(3, args.latent_dim, drift_layers=2, **common)
    return model, AffineGuide(3, args.latent_dim, hidden_dim=args.hidden_dim)


def objective(name, args):
    return "trace" if name == "vpf" else SDEMatchingELBO(num_time_samples=args.time_samples)


def train(name, data, args, steps):
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    model, guide = build(name, args)
    history = fit(model, guide, data.x, data.times, num_steps=steps, batch_size=args.batch_size,
                  lr=args.lr, lr_decay=args.final_lr_factor ** (1 / max(steps, 1)),
                  elbo=objective(name, args), progress=False)
    model.requires_grad_(False).eval()
    guide.requires_grad_(False).eval()
    return model, guide, history


def score(name, model, guide, data, test, args):
    times = test.times
    torch.manual_seed(args.seed + 1)
    future = forecast(model, guide, test.x[:, :CONTEXT], times[:CONTEXT], times[CONTEXT:],
                      num_samples=args.forecast_samples)["x"]
    scores = forecast_scores(future, test.x[:, CONTEXT:], levels=(0.5, 0.9))
    _, samples = model.sample_prior(times, args.prior_samples)
    distance = statistics.mean(
        float(energy_distance(samples[:, k], test.x[:, k])) for k in range(times.shape[0]))
    elbo = elbo_per_point(model, guide, test.x, times, num_particles=args.particles,
                          elbo=None if name == "vpf" else SDEMatchingELBO(
                              num_particles=args.particles, num_time_samples=64))
    iw = None
    if name == "vpf":
        per_sequence = iw_log_likelihood(model, guide, test.x, times,
                                         num_particles=args.iw_particles)
        iw = float(per_sequence.sum()) / test.x[:, :, 0].numel()
    return {"mse": scores.mse, "crps": scores.crps, "cov50": scores.coverage[0.5],
            "cov90": scores.coverage[0.9], "energy": distance, "elbo": elbo, "iw": iw}


def _sampler(name, model, points, paths):
    times = torch.linspace(0.0, HORIZON, points)

    @torch.no_grad()
    def draw():
        if name == "vpf":
            return model.sample_prior(times, paths)
        return model.sample_prior(times, paths, method="euler", dt=HORIZON / (points - 1))
    return draw


def sampling_rows(models, args):
    rows = []
    for points in args.sampling_points:
        row = {"points": points}
        for name, model in models.items():
            draw = _sampler(name, model, points, args.sampling_paths)
            row[f"{name}_ms"] = 1e3 * median_time(draw, args.sampling_repeats)
            if points == args.sampling_points[min(1, len(args.sampling_points) - 1)]:
                with FlopCounterMode(display=False) as counter:
                    draw()
                row[f"{name}_flops_per_point"] = counter.get_total_flops() / (
                    args.sampling_paths * points)
        row["ratio"] = row["sde_ms"] / row["vpf_ms"]
        rows.append(row)
    return rows


def print_tables(rows, sampling, args):
    print(f"\nstochastic Lorenz, {args.sequences} sequences of {POINTS} points on [0, {HORIZON}]"
          f" (held out {args.test_sequences}); hidden {args.hidden_dim}, Dz {args.latent_dim}, "
          f"batch {args.batch_size}, lr {args.lr} decaying to x{args.final_lr_factor}")
    head = (f"{'model':<18}{'steps':>6}{'step ms':>9}{'train s':>9}{'ELBO/pt':>9}{'IW/pt':>8}"
            f"{'fc MSE':>8}{'CRPS':>8}{'cov50':>7}{'cov90':>7}{'ED':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        iw = f"{r['iw']:>8.3f}" if r["iw"] is not None else f"{'n/a':>8}"
        print(f"{r['label']:<18}{r['steps']:>6}{r['step_ms']:>9.1f}{r['train_s']:>9.1f}"
              f"{r['elbo']:>9.3f}{iw}{r['mse']:>8.4f}{r['crps']:>8.4f}{r['cov50']:>7.2f}"
              f"{r['cov90']:>7.2f}{r['energy']:>8.4f}")
    print(f"ED floor (training vs held-out sequences): {args.energy_floor:.4f}; forecasts: "
          f"{args.forecast_samples} draws, t <= 1 read by the guide, the last "
          f"{POINTS - CONTEXT} points forecast")
    print(f"\nprior sampling, {args.sampling_paths} paths on [0, {HORIZON}] (median of "
          f"{args.sampling_repeats}; SDE: Euler-Maruyama, one step per output interval)")
    head = (f"{'points':>8}{'VPF ms':>10}{'SDE ms':>10}{'SDE/VPF':>9}"
            f"{'VPF MFLOP/pt':>14}{'SDE MFLOP/pt':>14}{'sequential steps (VPF / SDE)':>31}")
    print(head)
    print("-" * len(head))
    for r in sampling:
        flops = (f"{r['vpf_flops_per_point'] / 1e6:>14.3f}{r['sde_flops_per_point'] / 1e6:>14.3f}"
                 if "vpf_flops_per_point" in r else f"{'':>14}{'':>14}")
        depth = f"{math.ceil(math.log2(r['points'])):d} / {r['points'] - 1:d}"
        print(f"{r['points']:>8}{r['vpf_ms']:>10.1f}{r['sde_ms']:>10.1f}{r['ratio']:>9.2f}"
              f"{flops}{depth:>31}")
    print("VPF sequential steps: the depth of its parallel scan over the OU path (log2 K); "
          "the solver's: one drift and diffusion evaluation per step, in sequence")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (1000)")
    parser.add_argument("--sequences", type=int, default=None, help="total sequences (640)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=4)
    parser.add_argument("--flow-layers", type=int, default=4)
    parser.add_argument("--obs-flow-layers", type=int, default=4)
    parser.add_argument("--time-samples", type=int, default=16,
                        help="random times per sequence of the SDE-matching ELBO")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr-factor", type=float, default=0.1)
    parser.add_argument("--particles", type=int, default=None, help="ELBO particles (32)")
    parser.add_argument("--iw-particles", type=int, default=None, help="(256)")
    parser.add_argument("--forecast-samples", type=int, default=None, help="(200)")
    parser.add_argument("--prior-samples", type=int, default=None, help="(512)")
    parser.add_argument("--sampling-points", type=int, nargs="+", default=None,
                        help="(101 1001 10001)")
    parser.add_argument("--sampling-paths", type=int, default=64)
    parser.add_argument("--sampling-repeats", type=int, default=None, help="(5)")
    parser.add_argument("--no-equal-time", action="store_true",
                        help="skip retraining the faster model for the slower one's wall time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps or (10 if quick else 1000)
    args.sequences = args.sequences or (24 if quick else 640)
    args.particles = args.particles or (2 if quick else 32)
    args.iw_particles = args.iw_particles or (8 if quick else 256)
    args.forecast_samples = args.forecast_samples or (10 if quick else 200)
    args.prior_samples = args.prior_samples or (16 if quick else 512)
    args.sampling_points = args.sampling_points or ([11, 51] if quick else [101, 1001, 10001])
    args.sampling_repeats = args.sampling_repeats or (1 if quick else 5)
    if quick:
        args.batch_size, args.hidden_dim, args.flow_layers, args.obs_flow_layers = 8, 16, 2, 2

    start = time.perf_counter()
    data, test = stochastic_lorenz(args.sequences, POINTS, t_end=HORIZON, seed=args.seed)
    args.test_sequences = test.x.shape[0]
    args.batch_size = min(args.batch_size, data.x.shape[0])
    args.energy_floor = statistics.mean(
        float(energy_distance(data.x[:, k], test.x[:, k])) for k in range(POINTS))
    rows, trained = [], {}
    for name in ("vpf", "sde"):
        model, guide, history = train(name, data, args, args.steps)
        trained[name] = (model, guide, history)
        rows.append({"label": name, "model": name, "steps": args.steps,
                     "step_ms": 1e3 * statistics.median(history.step_seconds),
                     "train_s": sum(history.step_seconds),
                     **score(name, model, guide, data, test, args)})
        print(f"  {name}: trained in {rows[-1]['train_s']:.0f} s", flush=True)
    if not args.no_equal_time:
        fast, slow = sorted(rows, key=lambda r: r["train_s"])
        steps = round(args.steps * slow["train_s"] / fast["train_s"])
        if steps > args.steps:
            name = fast["model"]
            model, guide, history = train(name, data, args, steps)
            rows.append({"label": f"{name} (equal time)", "model": name, "steps": steps,
                         "step_ms": 1e3 * statistics.median(history.step_seconds),
                         "train_s": sum(history.step_seconds),
                         **score(name, model, guide, data, test, args)})
            print(f"  {name}, equal time: {steps} steps in {rows[-1]['train_s']:.0f} s",
                  flush=True)
    sampling = sampling_rows({name: trained[name][0] for name in ("vpf", "sde")}, args)
    print_tables(rows, sampling, args)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "sampling": sampling, "args": vars(args),
                       "torch": torch.__version__, "python": platform.python_version()},
                      f, indent=2)
    return rows, sampling


if __name__ == "__main__":
    main()
