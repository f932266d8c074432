"""The chain engine's two executions: where the sequential loop beats the parallel scan.

Every chain operation of the library is one associative scan (``pyro_vpf.chain``), run either
as a parallel odd-even reduction or as a sequential loop; ``choose_execution`` picks one from
the number of steps K, the state size S and the batch. This script times both executions,
forward and backward, of the heaviest operator, the parallel Kalman filter's element
(``gaussian_combine``: five S x S matrices per element, two solves per combine), and of the
cheapest one with matrices, the affine recurrence of a draw (``affine_combine``), over a grid
of K x S x batch, and prints for each cell the median milliseconds of both, their ratio
(sequential / parallel: below 1 the loop wins), and what the rule picks. Cells whose
sequential run would exceed a few seconds are skipped.

    python benchmarks/bench_chain.py            # about 5 minutes on 2 cores
    python benchmarks/bench_chain.py --quick    # about 20 seconds
"""

import argparse
import platform
import sys

import torch
from problems import median_time

from pyro_vpf.chain import affine_combine, choose_execution, gaussian_combine, scan

OPERATORS = ("gaussian", "affine")


def _spd(*shape):
    X = torch.randn(*shape)
    return X @ X.transpose(-1, -2) / shape[-1] + 0.1 * torch.eye(shape[-1])


def _elements(operator, K, S, B):
    if operator == "gaussian":
        return [0.5 * torch.randn(K, B, S, S), torch.randn(K, B, S, 1), _spd(K, B, S, S),
                torch.randn(K, B, S, 1), _spd(K, B, S, S)], gaussian_combine
    return [0.5 * torch.randn(K, B, S, S) / S ** 0.5, torch.randn(K, B, S, 1)], affine_combine


def cell(operator, K, S, B, repeats):
    elements, combine = _elements(operator, K, S, B)
    elements = [t.requires_grad_() for t in elements]

    def run(execution):
        def fn():
            out = scan(combine, elements, execution=execution, state_dim=S)
            sum(o.sum() for o in out).backward()
        return fn

    parallel = median_time(run("parallel"), repeats)
    sequential = median_time(run("sequential"), repeats)
    work = max(t[0].numel() for t in elements) * S
    return {"operator": operator, "K": K, "S": S, "B": B, "parallel_ms": 1e3 * parallel,
            "sequential_ms": 1e3 * sequential, "ratio": sequential / parallel,
            "rule": choose_execution(K, S, torch.device("cpu"), work=work)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2e9,
                        help="skip cells with more multiply-adds than this (K x B x S^3)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.quick:
        lengths, states, batches = (10, 100), (1, 5, 20), (1, 128)
        args.budget = min(args.budget, 2e8)
    else:
        lengths, states, batches = (10, 100, 1000, 10000), (1, 5, 20, 40), (1, 128)
    print(f"{platform.platform()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32; forward + backward, median of "
          f"{args.repeats}")
    header = (f"{'operator':9} {'K':>6} {'S':>3} {'B':>4} {'parallel ms':>12} "
              f"{'sequential ms':>14} {'seq/par':>8} {'rule':>10} {'rule right':>10}")
    print(header)
    print("-" * len(header))
    for operator in OPERATORS:
        for B in batches:
            for S in states:
                for K in lengths:
                    if K * B * S ** 3 * (5 if operator == "gaussian" else 1) > args.budget:
                        print(f"{operator:9} {K:>6} {S:>3} {B:>4} {'skipped':>12}")
                        continue
                    row = cell(operator, K, S, B, args.repeats)
                    best = "sequential" if row["ratio"] < 1 else "parallel"
                    print(f"{operator:9} {K:>6} {S:>3} {B:>4} {row['parallel_ms']:12.2f} "
                          f"{row['sequential_ms']:14.2f} {row['ratio']:8.2f} "
                          f"{row['rule']:>10} {'yes' if row['rule'] == best else 'no':>10}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
