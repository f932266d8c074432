"""One table of what an accelerator changes: sampling, the training step and the guides' step.

Measured in one process on one device (``--device``, default CUDA when there is one):

* **sampling**: prior paths of the VPF (one parallel pass, no solver) against the latent SDE
  (Euler steps of the solver at the grid's spacing) at 101, 1 001 and 10 001 points, and the
  ratio SDE / VPF;
* **train step**: the SVI step of ``bench_train.py``'s seed configuration (B 256, 41 points,
  Dz 4, hidden 128, 6 + 6 couplings with two-layer conditioners, affine guide);
* **guide step**: the SVI step of the demo configuration (B 128, 41 points, Dz 4, hidden 64,
  4 + 4 couplings) with the affine and the Markov guide, and their ratio.

Times are the shortest of ``--repeats`` runs after a warm-up, synchronised on CUDA.

    bash benchmarks/device_check.sh                      # the full check (CUDA: < 8 min)
    bash benchmarks/device_check.sh --device cpu --quick # tiny sizes, seconds
"""

import argparse
import json
import platform
import sys
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF, LatentSDE

from pyro_vpf.data import stochastic_lorenz

FULL = {"points": (101, 1001, 10001), "paths": 64, "hidden": 128, "layers": 6,
        "seed_batch": 256, "seed_hidden": 128, "seed_layers": 6, "demo_batch": 128,
        "demo_hidden": 64, "demo_layers": 4, "repeats": 5}
QUICK = {"points": (11, 101), "paths": 4, "hidden": 16, "layers": 2, "seed_batch": 16,
         "seed_hidden": 16, "seed_layers": 2, "demo_batch": 8, "demo_hidden": 16,
         "demo_layers": 2, "repeats": 2}


def timed(fn, repeats, device):
    """Shortest wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def sampling(sizes, device, repeats):
    vpf = VPF(3, 4, sizes["hidden"], sizes["layers"], sizes["layers"]).to(device)
    sde = LatentSDE(3, 4, sizes["hidden"], sizes["layers"]).to(device)
    rows = []
    for points in sizes["points"]:
        times = torch.linspace(0, 1, points, device=device)
        dt = 1.0 / (points - 1)
        with torch.no_grad():
            fast = timed(lambda t=times: vpf.sample_prior(t, sizes["paths"]), repeats, device)
            slow = timed(lambda t=times, d=dt: sde.sample_prior(
                t, sizes["paths"], method="euler", dt=d), repeats, device)
        rows.append((f"sample {sizes['paths']} paths at {points} points: VPF / SDE",
                     f"{fast * 1e3:.1f} ms / {slow * 1e3:.1f} ms", f"{slow / fast:.1f}x"))
    return rows


def svi_step(model, guide, x, times, batch_size=None):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    return lambda: svi.step(x, times, batch_size=batch_size)


def train_steps(sizes, device, repeats):
    train, _ = stochastic_lorenz(4 * sizes["seed_batch"] + 16, 41, 1.0, seed=0)
    x, times = train.x.to(device), train.times.to(device)
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = VPF(3, 4, sizes["seed_hidden"], sizes["seed_layers"], sizes["seed_layers"],
                conditioner_layers=2).to(device)
    guide = AffineGuide(3, 4, sizes["seed_hidden"]).to(device)
    seed = timed(svi_step(model, guide, x, times, sizes["seed_batch"]), repeats, device)
    rows = [(f"train step, seed configuration (B {sizes['seed_batch']}, conditioner depth 2)",
             f"{seed * 1e3:.1f} ms", "")]
    demo = x[:sizes["demo_batch"]]
    steps = {}
    for name, guide_class in (("affine", AffineGuide), ("markov", MarkovGuide)):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model = VPF(3, 4, sizes["demo_hidden"], sizes["demo_layers"],
                    sizes["demo_layers"]).to(device)
        guide = guide_class(3, 4, sizes["demo_hidden"]).to(device)
        steps[name] = timed(svi_step(model, guide, demo, times), repeats, device)
    rows.append((f"guide step, demo configuration (B {sizes['demo_batch']}): affine / markov",
                 f"{steps['affine'] * 1e3:.1f} ms / {steps['markov'] * 1e3:.1f} ms",
                 f"markov {steps['markov'] / steps['affine']:.2f}x"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu)")
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or sizes["repeats"]
    pyro.enable_validation(False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device check on {device} ({name or 'cpu'}), torch {torch.__version__}, "
          f"{'quick' if args.quick else 'full'} sizes", file=sys.stderr, flush=True)
    start = time.perf_counter()
    rows = sampling(sizes, device, repeats) + train_steps(sizes, device, repeats)
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\ndevice: {device} ({name or 'cpu'}); torch {torch.__version__}; "
          f"{time.perf_counter() - start:.0f} s")
    for row in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, width, strict=True)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "name": name, "rows": rows,
                       "torch": torch.__version__}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
