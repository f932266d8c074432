"""Training cost and quality of the VPF at the seed configuration, and time to quality.

Seed configuration: B = 256 sequences per step (from 1 024 training sequences), 41 points
on [0, 1], Dz = 4, hidden 128, 6 + 6 coupling layers whose conditioners have two hidden
layers (the seed's depth, ``conditioner_layers=2``), Adam with learning rate 1e-3, on
stochastic Lorenz data (``pyro_vpf.data.stochastic_lorenz``, seed 0). Every figure below is
given at each depth of ``--conditioner-layers`` (default 1 and 2: the library's default and
the seed's), measured in the same run. It reports

* ``svi_step``: median time of ``SVI(model, guide, Adam, Trace_ELBO()).step``;
* ``raw_step``: median time of a plain-torch step computing the same ELBO estimate with the
  same modules and distributions (no Pyro tracing), and the ratio ``svi / raw``;
* ``flows``: median time of the two flows' own forward and backward passes on the same
  shapes (the floor at these widths), and their share of the SVI step;
* peak resident memory of the process;
* the held-out ELBO per time point after ``--steps`` (300) SVI steps;
* time to quality: wall-clock of training for the default configuration of
  ``python -m pyro_vpf train`` to reach held-out ELBOs of ``--target`` (-1.46, 1, 2 and 3) nats
  per time point, with its default guide (``pyro_vpf.guides.DEFAULT_GUIDE``) and with the
  affine guide, from one run of each (evaluated every ``--eval-every`` steps): a slower step
  that reaches a target in fewer steps can still be the faster way there. (Each figure is the
  bound of the model with that guide, so a tighter guide also reads higher.)

    python benchmarks/bench_train.py            # a few minutes
    python benchmarks/bench_train.py --quick    # < 60 s: fewer steps, no time to quality
    python benchmarks/bench_train.py --json results.json
"""

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import pyro
import torch
from pyro.distributions import Normal
from pyro.infer import SVI, Trace_ELBO
from pyro_vpf.guides import DEFAULT_GUIDE, GUIDES, AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.cli.config import TrainConfig
from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.infer import elbo_per_point, fit


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_times(steps, repeats):
    """Median wall time of each callable, run in turn (interleaved) so that drifts of a
    shared machine hit all of them alike; one warm-up round first."""
    times = [[] for _ in steps]
    for round_ in range(repeats + 1):
        for fn, record in zip(steps, times, strict=True):
            start = time.perf_counter()
            fn()
            if round_:
                record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def raw_loss(model, guide, x, times, num_sequences):
    """The same single-particle ELBO estimate as Trace_ELBO, written with plain torch."""
    loc, scale = guide.loc_scale(x, times, None, times)
    q0, qz = Normal(loc[:, 0], scale[:, 0]), Normal(loc[:, 1:], scale[:, 1:])
    z0, z = q0.rsample(), qz.rsample()
    log_q = q0.log_prob(z0).sum(-1) + qz.log_prob(z).sum((-1, -2))
    prior = model.prior
    log_p = (prior.initial_distribution().log_prob(z0)
             + prior.path_distribution(z0, times).log_prob(z)
             + model.observation_distribution(torch.cat([z0.unsqueeze(-2), z], -2)).log_prob(x))
    return -(log_p - log_q).sum() * (num_sequences / x.shape[0])


def flows_pass(model, z0, z, x, times):
    """Forward and backward of the two flows exactly as the ELBO uses them."""
    flow = model.prior.flow
    z0, z = z0.detach().requires_grad_(), z.detach().requires_grad_()
    y0 = flow.condition(times[:1]).inv(z0.unsqueeze(-2))
    latent = flow.condition(times[1:])
    y = latent.inv(z)
    total = y0.sum() + y.sum() + latent.log_abs_det_jacobian(y, z).sum()
    obs = model.obs_flow.condition(torch.cat([z0.unsqueeze(-2), z], -2))
    u = obs.inv(x)
    total = total + u.sum() + obs.log_abs_det_jacobian(u, x).sum()
    total.backward()


def build(args, depth):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = VPF(3, 4, args.hidden_dim, args.layers, args.layers, conditioner_layers=depth)
    return model, AffineGuide(3, 4, args.hidden_dim)


def seed_config_figures(args, train, test, depth):
    B, times, N = args.batch_size, train.times, len(train)
    model, guide = build(args, depth)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    rss_before = peak_rss_mb()
    row = {}

    def svi_step():
        svi.step(train.x, times, batch_size=B)

    params = list(model.parameters()) + list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def raw_step():
        idx = torch.randperm(N)[:B]
        optimizer.zero_grad()
        raw_loss(model, guide, train.x[idx], times, N).backward()
        optimizer.step()

    with torch.no_grad():
        loc, scale = guide.loc_scale(train.x[:B], times, None, times)
        z_all = Normal(loc, scale).sample()

    def flows_step():
        optimizer.zero_grad()
        flows_pass(model, z_all[:, 0], z_all[:, 1:], train.x[:B], times)

    row["svi_step"], row["raw_step"], row["flows"] = median_times(
        [svi_step, raw_step, flows_step], args.repeats)
    row["peak_rss_mb"] = peak_rss_mb()
    row["peak_rss_increase_mb"] = row["peak_rss_mb"] - rss_before
    row["svi_over_raw"] = row["svi_step"] / row["raw_step"]
    row["flows_share"] = row["flows"] / row["svi_step"]

    # quality at equal steps: a fresh model trained for args.steps SVI steps
    model, guide = build(args, depth)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    start = time.perf_counter()
    for _ in range(args.steps):
        svi.step(train.x, times, batch_size=B)
    row["train_seconds"] = time.perf_counter() - start
    row["test_elbo_per_point"] = elbo_per_point(model, guide, test.x, test.times,
                                                num_particles=16, batch_size=256)
    return row


def time_to_quality(args, train, test, guide_name):
    """Wall-clock until the default training configuration, with the guide ``guide_name``,
    reaches the target ELBO."""
    config = TrainConfig(seed=args.seed, guide=guide_name)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = VPF(3, config.latent_dim, config.hidden_dim, config.num_flow_layers,
                config.num_obs_flow_layers, time_scale=config.t_end)
    guide = GUIDES[config.guide](3, config.latent_dim, config.hidden_dim)
    held_out = test[:256]
    state = {"evaluations": [], "train_seconds": 0.0}

    def check(step, history):
        state["train_seconds"] = sum(history.step_seconds)
        if (step + 1) % args.eval_every:
            return
        rng = torch.get_rng_state()
        value = elbo_per_point(model, guide, held_out.x, held_out.times, num_particles=4)
        torch.set_rng_state(rng)
        state["evaluations"].append((step + 1, state["train_seconds"], value))
        if value >= max(args.target):
            raise StopIteration

    try:
        fit(model, guide, train.x, train.times, num_steps=config.num_steps,
            batch_size=config.batch_size, lr=config.lr, clip_norm=config.clip_norm,
            progress=False, callback=check)
    except StopIteration:
        pass
    reached = {target: next(((step, seconds) for step, seconds, value in state["evaluations"]
                             if value >= target), None) for target in args.target}
    return {"config": config.__dict__, "reached": reached, "evaluations": state["evaluations"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="< 60 s: 30 steps, no time to quality")
    parser.add_argument("--steps", type=int, default=None, help="SVI steps before the ELBO")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per entry")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6, help="coupling layers of each flow")
    parser.add_argument("--conditioner-layers", type=int, nargs="+", default=[1, 2],
                        help="hidden layers of each coupling's conditioner (the seed's: 2)")
    parser.add_argument("--target", type=float, nargs="+", default=[-1.46, 1.0, 2.0, 3.0],
                        help="held-out ELBOs per point to time (nats)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate", action="store_true", help="keep Pyro's validation on")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.steps = args.steps or (30 if args.quick else 300)
    args.repeats = args.repeats or (3 if args.quick else 10)
    pyro.enable_validation(args.validate)

    train, test = stochastic_lorenz(1280, 41, 1.0, seed=args.seed)
    seeds = {}
    for depth in args.conditioner_layers:
        print(f"timing the seed configuration, conditioner_layers={depth} ...",
              file=sys.stderr, flush=True)
        seeds[depth] = seed_config_figures(args, train, test, depth)
    quality = {}
    if not args.quick:
        for name in dict.fromkeys([DEFAULT_GUIDE, "affine"]):
            print(f"time to quality with the default configuration, {name} guide ...",
                  file=sys.stderr, flush=True)
            quality[name] = time_to_quality(args, train, test, name)

    print(f"\nVPF training, seed configuration: B={args.batch_size}, 41 points, Dz=4, "
          f"hidden={args.hidden_dim}, {args.layers}+{args.layers} couplings, Adam 1e-3; "
          f"{torch.get_num_threads()} threads, validation {'on' if args.validate else 'off'}")
    figures = [
        ("SVI step (median)", lambda r: f"{r['svi_step'] * 1e3:.0f} ms"),
        ("raw-torch step, same ELBO", lambda r: f"{r['raw_step'] * 1e3:.0f} ms"),
        ("SVI / raw (target <= 1.15)", lambda r: f"{r['svi_over_raw']:.3f}"),
        ("two flows fwd+bwd", lambda r: f"{r['flows'] * 1e3:.0f} ms"),
        ("flows' share of the SVI step", lambda r: f"{r['flows_share']:.2f}"),
        ("peak RSS (increase)", lambda r: f"{r['peak_rss_mb']:.0f} MB "
                                          f"(+{r['peak_rss_increase_mb']:.0f} MB)"),
        (f"held-out ELBO/point after {args.steps} steps",
         lambda r: f"{r['test_elbo_per_point']:.3f} nats"),
        (f"wall-clock of those {args.steps} steps", lambda r: f"{r['train_seconds']:.1f} s"),
    ]
    depths = list(seeds)
    header = ["", *[f"conditioner_layers={d}" for d in depths]]
    rows = [[name, *[show(seeds[d]) for d in depths]] for name, show in figures]
    if len(depths) > 1:
        first, last = seeds[depths[0]]["svi_step"], seeds[depths[-1]]["svi_step"]
        rows.append([f"SVI step, depth {depths[-1]} / depth {depths[0]}", f"{last / first:.2f}"]
                    + [""] * (len(depths) - 1))
    for name, result in quality.items():
        for target, reached in result["reached"].items():
            rows.append([f"time to {target:g} nats/point (default config, {name} guide)",
                         f"not reached in {result['config']['num_steps']} steps"
                         if reached is None else
                         f"{reached[1]:.1f} s of training ({reached[0]} steps)"] +
                        [""] * (len(depths) - 1))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths, strict=True)))
    seed = seeds[depths[-1]]
    if args.json:
        record = {"seed_config": seed, "by_conditioner_layers": seeds,
                  "time_to_quality": quality,
                  "args": vars(args), "torch": torch.__version__,
                  "python": platform.python_version(), "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return seeds, quality


if __name__ == "__main__":
    main()
