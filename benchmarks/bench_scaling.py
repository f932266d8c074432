"""Training throughput of the VPF on one and two processes (DDP), on CPUs and on GPUs.

Stochastic Lorenz sequences (``pyro_vpf.data.stochastic_lorenz``, 41 points on [0, 1],
seed 0), the VPF with the affine guide at the seed configuration of ``bench_train.py``
(Dz = 4, hidden 128, 6 + 6 couplings), a global batch of 256 sequences per step,
``Trace_ELBO``. For each setting it reports sequences per second = global batch / median step
time (rank 0's step: forward, backward with the gradient all-reduce, optimiser; the first
``--warmup`` steps left out) and the wall-clock of the whole call (process start included):

* ``fit``: :func:`pyro_vpf.infer.fit` (plain SVI) in this process, for reference;
* ``lightning x1``: :func:`pyro_vpf.infer.lightning.fit_distributed` on one process;
* ``lightning x1, 1 thread``: the same with one thread (the work of one of the two
  processes below, alone);
* ``lightning x2``: two processes (``ddp_spawn``; gloo on CPUs, NCCL on GPUs), each with
  half of the threads, so that ``x1`` and ``x2`` use the same cores.

The speed-ups of two processes over one (same cores: data parallelism against intra-op
threads; and over one thread: 2 is linear scaling) are measured in the same run. On a machine
busy with other work, intra-op threads suffer first (they wait on each other), so run it on
an otherwise idle machine. GPU rows (1 and, with
two or more GPUs, 2 devices, with ``--gpu-batch-size`` sequences per step) are added when
``torch.cuda.device_count() > 0``. Needs the ``distributed`` extra.

    python benchmarks/bench_scaling.py            # about 2 minutes on 2 cores
    python benchmarks/bench_scaling.py --quick    # tiny sizes, about 30 s (process start-up)
    python benchmarks/bench_scaling.py --json results.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import pyro
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.infer import fit
from pyro_vpf.infer.lightning import fit_distributed


def build(args):
    pyro.set_rng_seed(args.seed)
    model = VPF(3, 4, args.hidden_dim, args.layers, args.layers)
    guide = AffineGuide(3, 4, args.hidden_dim)
    return model, guide


def measure(name, run, batch_size, args):
    """Run one training call; its throughput from the median of the timed steps."""
    print(f"{name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    history = run()
    wall = time.perf_counter() - start
    timed = history.step_seconds[args.warmup:]
    step = statistics.median(timed)
    return {"setting": name, "global_batch": batch_size, "steps": len(history),
            "step_ms": step * 1e3, "sequences_per_second": batch_size / step,
            "wall_seconds": wall, "final_loss": history.loss[-1]}


def cpu_rows(args, train):
    cores = torch.get_num_threads()
    steps, B = args.warmup + args.steps, args.batch_size
    settings = dict(num_steps=steps, batch_size=B, lr=1e-3, progress=False)
    rows = []
    model, guide = build(args)
    row = measure("fit (SVI)", lambda: fit(model, guide, train.x, train.times, **settings),
                  B, args)
    rows.append({**row, "device": "cpu", "processes": 1, "threads_per_process": cores})
    runs = [("lightning x1", 1, cores), ("lightning x1, 1 thread", 1, 1),
            ("lightning x2", 2, max(1, cores // 2))]
    for name, processes, threads in runs:
        if name.endswith("1 thread") and cores == 1:
            continue
        model, guide = build(args)
        previous = os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # what the spawned processes start with
        try:
            row = measure(name, lambda p=processes, m=model, g=guide: fit_distributed(
                m, g, train.x, train.times, devices=p, accelerator="cpu", seed=args.seed,
                strategy="ddp_spawn" if p > 1 else "auto", **settings), B, args)
        finally:
            torch.set_num_threads(cores)
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        rows.append({**row, "device": "cpu", "processes": processes,
                     "threads_per_process": threads})
    return rows


def gpu_rows(args, train):
    count = torch.cuda.device_count()
    B = min(args.gpu_batch_size, len(train) - len(train) % 2)
    rows = []
    for processes in sorted({1, min(2, count)}):
        model, guide = build(args)
        strategy = "ddp_spawn" if processes > 1 else "auto"
        row = measure(f"lightning x{processes} GPU", lambda p=processes, s=strategy, m=model,
                      g=guide: fit_distributed(m, g, train.x, train.times, devices=p,
                                               strategy=s, accelerator="gpu", seed=args.seed,
                                               num_steps=args.warmup + args.steps,
                                               batch_size=B, lr=1e-3, progress=False),
                      B, args)
        rows.append({**row, "device": torch.cuda.get_device_name(0), "processes": processes,
                     "threads_per_process": None})
    return rows


def speedups(rows):
    """Throughput of two processes over one, per device, from the Lightning rows of this run:
    over one process on the same cores (``x2/x1``) and, on CPUs, over one process with one
    thread (``x2/x1, 1 thread``: 2 is linear scaling)."""
    out = {}
    for device in sorted({r["device"] for r in rows}):
        rate = {r["setting"].removesuffix(" GPU"): r["sequences_per_second"] for r in rows
                if r["device"] == device}
        if "lightning x2" in rate:
            for base in ("lightning x1", "lightning x1, 1 thread"):
                if base in rate:
                    out[f"{device}: x2/{base.removeprefix('lightning ')}"] = (
                        rate["lightning x2"] / rate[base])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny model and batches, a few steps (start-up dominates)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch on CPUs")
    parser.add_argument("--gpu-batch-size", type=int, default=1024)
    parser.add_argument("--hidden-dim", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None, help="couplings of each flow")
    parser.add_argument("--num-sequences", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads in all (default: torch's, i.e. the cores)")
    parser.add_argument("--no-gpu", action="store_true", help="CPU rows only")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    quick = {"steps": 3, "warmup": 1, "batch_size": 16, "hidden_dim": 16, "layers": 2,
             "num_sequences": 80}
    full = {"steps": 20, "warmup": 3, "batch_size": 256, "hidden_dim": 128, "layers": 6,
            "num_sequences": 1280}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch_size % 2 or args.batch_size < 2:
        parser.error("--batch-size must be even (it is split over two processes)")
    pyro.enable_validation(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    train, _ = stochastic_lorenz(args.num_sequences, 41, 1.0, seed=args.seed)
    if args.batch_size > len(train):
        parser.error(f"--batch-size must be at most {len(train)} (the training sequences)")
    rows = cpu_rows(args, train)
    if torch.cuda.device_count() > 0 and not args.no_gpu:
        rows += gpu_rows(args, train)
    ratio = speedups(rows)

    print(f"\nVPF training throughput: 41 points, Dz=4, hidden={args.hidden_dim}, "
          f"{args.layers}+{args.layers} couplings; median of {args.steps} steps after "
          f"{args.warmup} warm-up; {torch.get_num_threads()} CPU threads in all")
    header = (f"{'setting':<24} {'device':<10} {'procs':>5} {'threads':>7} {'batch':>6} "
              f"{'step ms':>9} {'seq/s':>9} {'wall s':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        threads = "-" if r["threads_per_process"] is None else r["threads_per_process"]
        print(f"{r['setting']:<24} {r['device'][:10]:<10} {r['processes']:>5} {threads:>7} "
              f"{r['global_batch']:>6} {r['step_ms']:>9.1f} {r['sequences_per_second']:>9.1f} "
              f"{r['wall_seconds']:>8.1f}")
    for name, value in ratio.items():
        print(f"speed-up {name}: {value:.2f}x")
    if args.json:
        record = {"rows": rows, "speedup_2_over_1": ratio, "args": vars(args),
                  "torch": torch.__version__, "python": platform.python_version(),
                  "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return rows, ratio


if __name__ == "__main__":
    main()
