"""Flow-prior VAE: mean-field vs conditional-flow guide, with and without prior refinement.

For each data set and guide, the same budget (steps, batch, learning-rate schedule, widths):

* ``ELBO`` and ``IW`` (importance-weighted log-likelihood) on held-out points, nats per point;
* ``AU``: active latent units, ``Var_x E_q[z_d | x] > 0.01`` (posterior collapse check);
* ``ED`` (2-D sets): energy distance between 4096 model samples and held-out points, for
  plain prior samples and for samples refined by 10 steps of anchored ascent on the exact
  prior log-density (``FlowVAE.sample(n, refine_steps=10)``), lower is better; the gap
  ``ED_floor`` of a second held-out sample of the true density shows the noise floor;
* ``step ms``: median wall time of one SVI step (batch 512); ``sample ms``: wall time of
  ``sample(1024, refine_steps=10)``.

Data: 8 Gaussians, two moons, checkerboard (Gaussian decoder with learned precision,
Dz = 2) and scikit-learn's binarised 8x8 digits (Bernoulli decoder, Dz = 8).

    python benchmarks/bench_flow_vae.py            # about 15 minutes on 2 cores
    python benchmarks/bench_flow_vae.py --quick    # under a minute
    python benchmarks/bench_flow_vae.py --json out.json
"""

import argparse
import json
import platform
import statistics
import time

import pyro
import torch
from pyro_vpf.guides import VAE_GUIDES
from pyro_vpf.models import FlowVAE

from pyro_vpf.data import load_digits, toy_2d
from pyro_vpf.evaluation import active_units, elbo, energy_distance, importance_log_likelihood
from pyro_vpf.infer import fit

TOY_SETS = ("8gaussians", "moons", "checkerboard")


def data_set(name, args):
    """(train, test, reference test sample or None, likelihood, latent_dim)."""
    if name == "digits":
        digits = load_digits(binarize=True, seed=args.seed)
        return digits.train, digits.test, None, "bernoulli", args.digits_latent_dim
    train = toy_2d(name, args.train_points, seed=args.seed)
    test = toy_2d(name, args.test_points, seed=args.seed + 1)
    floor = toy_2d(name, args.test_points, seed=args.seed + 2)
    return train, test, floor, "gaussian", 2


def run(name, guide_name, args):
    train, test, floor, likelihood, latent_dim = data_set(name, args)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = FlowVAE(train.shape[1], latent_dim, args.hidden_dim, args.prior_layers,
                    likelihood=likelihood)
    guide = VAE_GUIDES[guide_name](train.shape[1], latent_dim, args.hidden_dim)
    tic = time.perf_counter()
    history = fit(model, guide, train, num_steps=args.steps, batch_size=args.batch_size,
                  lr=args.lr, lr_decay=args.final_lr_factor ** (1 / max(args.steps, 1)),
                  kl_anneal_steps=args.anneal_steps, progress=False)
    train_seconds = time.perf_counter() - tic
    model.requires_grad_(False).eval()
    guide.requires_grad_(False).eval()
    row = {
        "data": name, "guide": guide_name, "train_s": train_seconds,
        "step_ms": 1e3 * statistics.median(history.step_seconds),
        "elbo": float(elbo(model, guide, test, num_particles=args.particles)
                      .per_sequence.mean()),
        "iw": float(importance_log_likelihood(model, guide, test,
                                              num_particles=args.particles).mean()),
        "au": active_units(guide, test).count, "latent_dim": latent_dim,
    }
    tic = time.perf_counter()
    model.sample(1024, refine_steps=args.refine_steps)
    row["sample_ms"] = 1e3 * (time.perf_counter() - tic)
    if floor is not None:
        n = args.test_points
        pyro.set_rng_seed(args.seed + 3)
        plain = model.sample(n)[1]
        pyro.set_rng_seed(args.seed + 3)  # the same prior draws, refined
        refined = model.sample(n, refine_steps=args.refine_steps, anchor=args.anchor,
                               refine_lr=args.refine_lr)[1]
        row["ed"] = float(energy_distance(plain, test))
        row["ed_refined"] = float(energy_distance(refined, test))
        row["ed_floor"] = float(energy_distance(floor, test))
    print(f"  {name} / {guide_name}: trained in {train_seconds:.0f} s", flush=True)
    return row


def print_table(rows, args):
    print(f"\nheld-out nats per point; {args.particles} particles for ELBO and IW; "
          f"{args.steps} steps, batch {args.batch_size}, hidden {args.hidden_dim}, "
          f"{args.prior_layers} prior couplings; refinement: {args.refine_steps} steps, "
          f"lr {args.refine_lr}, anchor {args.anchor}")
    head = (f"{'data':<13}{'guide':<10}{'ELBO':>9}{'IW':>9}{'AU':>6}{'ED':>9}{'ED ref':>9}"
            f"{'ED floor':>10}{'step ms':>9}{'sample ms':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ed = "".join(f"{r[k]:>9.4f}" if k in r else f"{'-':>9}" for k in ("ed", "ed_refined"))
        floor = f"{r['ed_floor']:>10.4f}" if "ed_floor" in r else f"{'-':>10}"
        au = f"{r['au']}/{r['latent_dim']}"
        print(f"{r['data']:<13}{r['guide']:<10}{r['elbo']:>9.3f}{r['iw']:>9.3f}{au:>6}{ed}"
              f"{floor}{r['step_ms']:>9.1f}{r['sample_ms']:>11.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, few particles")
    parser.add_argument("--data", nargs="+", default=[*TOY_SETS, "digits"],
                        choices=[*TOY_SETS, "digits"])
    parser.add_argument("--guides", nargs="+", default=list(VAE_GUIDES), choices=list(VAE_GUIDES))
    parser.add_argument("--steps", type=int, default=None, help="(2000)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--prior-layers", type=int, default=4)
    parser.add_argument("--digits-latent-dim", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr-factor", type=float, default=0.1)
    parser.add_argument("--anneal-steps", type=int, default=None, help="KL warm-up (steps/5)")
    parser.add_argument("--train-points", type=int, default=None, help="2-D sets (20000)")
    parser.add_argument("--test-points", type=int, default=None, help="(4096)")
    parser.add_argument("--particles", type=int, default=None, help="(1000)")
    parser.add_argument("--refine-steps", type=int, default=10)
    parser.add_argument("--refine-lr", type=float, default=0.1)
    parser.add_argument("--anchor", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    quick = args.quick
    for key, full, fast in (("steps", 2000, 30), ("train_points", 20000, 1024),
                            ("test_points", 4096, 256), ("particles", 1000, 20)):
        if getattr(args, key) is None:
            setattr(args, key, fast if quick else full)
    if args.anneal_steps is None:
        args.anneal_steps = args.steps // 5
    if quick:
        args.batch_size = min(args.batch_size, 256)
    start = time.perf_counter()
    rows = [run(name, guide, args) for name in args.data for guide in args.guides]
    print_table(rows, args)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "args": vars(args), "torch": torch.__version__,
                       "machine": platform.platform(), "threads": torch.get_num_threads()},
                      f, indent=2)


if __name__ == "__main__":
    main()
