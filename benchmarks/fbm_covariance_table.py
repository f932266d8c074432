r"""How well the Markov approximation of fBM reproduces the type II fBM covariance.

For each Hurst index H and number of OU components M, the covariance of
:class:`~pyro_vpf.processes.fbm.MarkovFBM` (scale 1, horizon T = 1) on a grid of times
t_k = k / n, k = 1..n, against the exact Riemann--Liouville (type II) covariance

    (1 / Gamma(H + 1/2)^2) int_0^min(s,t) (s - u)^(H - 1/2) (t - u)^(H - 1/2) du,

computed independently by mpmath quadrature. Reported: the relative Frobenius error
||C_approx - C_exact||_F / ||C_exact||_F, and the relative mean L2 error of the approximation
on [0, T] (``MarkovFBM.approximation_error``). ``--rates fixed`` swaps the default rate grid
for the fixed range [1/20, 20] of Daems et al. (ICLR 2024) for comparison.

    python benchmarks/fbm_covariance_table.py                  # a few seconds
    python benchmarks/fbm_covariance_table.py --json           # JSON on stdout
    python benchmarks/fbm_covariance_table.py --json out.json
"""

import argparse
import json
import math

import mpmath
import torch

from pyro_vpf.processes.fbm import MarkovFBM

HURSTS = (0.2, 0.3, 0.5, 0.7, 0.8)
COMPONENTS = (3, 5, 8)


def exact_type2_covariance(hurst, times):
    r"""Exact type II fBM covariance on ``times`` (a list of floats > 0) by mpmath
    quadrature: a ``(n, n)`` float64 tensor."""
    n = len(times)
    alpha = hurst - 0.5
    norm = mpmath.gamma(hurst + 0.5) ** 2
    cov = torch.zeros(n, n, dtype=torch.float64)
    for i, s in enumerate(times):
        for j in range(i, n):
            t = times[j]
            value = mpmath.quad(lambda u, s=s, t=t: (s - u) ** alpha * (t - u) ** alpha,
                                [0, min(s, t)]) / norm
            cov[i, j] = cov[j, i] = float(value)
    return cov


def fixed_range_rates(num_components, rate_max=20.0):
    """Daems et al.'s grid: geometric on [1 / rate_max, rate_max] (T = 1)."""
    if num_components == 1:
        return torch.ones(1, dtype=torch.float64)
    exponents = torch.linspace(-1.0, 1.0, num_components, dtype=torch.float64)
    return rate_max ** exponents


def covariance_table(hursts=HURSTS, components=COMPONENTS, grid_size=20, rates="geometric"):
    """Rows ``{"hurst", "num_components", "covariance_error", "l2_error"}`` (computed in
    float64 whatever the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _covariance_table(hursts, components, grid_size, rates)
    finally:
        torch.set_default_dtype(previous)


def _covariance_table(hursts, components, grid_size, rates):
    times = [k / grid_size for k in range(1, grid_size + 1)]
    grid = torch.tensor(times, dtype=torch.float64)
    rows = []
    for hurst in hursts:
        exact = exact_type2_covariance(hurst, times)
        for num_components in components:
            explicit = fixed_range_rates(num_components) if rates == "fixed" else None
            process = MarkovFBM(hurst, num_components, scale=1.0, rates=explicit)
            with torch.no_grad():
                approx = process.covariance(grid[:, None], grid[None, :])
                l2 = process.approximation_error().item()
            error = (torch.linalg.norm(approx - exact) / torch.linalg.norm(exact)).item()
            rows.append({"hurst": hurst, "num_components": num_components,
                         "covariance_error": error, "l2_error": l2})
    return rows


def format_table(rows, key="covariance_error"):
    components = sorted({row["num_components"] for row in rows})
    hursts = sorted({row["hurst"] for row in rows})
    lookup = {(row["hurst"], row["num_components"]): row[key] for row in rows}
    lines = ["H \\ M  " + "".join(f"{m:>11d}" for m in components)]
    for hurst in hursts:
        lines.append(f"{hurst:<7.2f}" + "".join(f"{lookup[hurst, m]:>11.2e}"
                                                for m in components))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hursts", type=float, nargs="+", default=list(HURSTS))
    parser.add_argument("--components", type=int, nargs="+", default=list(COMPONENTS))
    parser.add_argument("--grid-size", type=int, default=20)
    parser.add_argument("--rates", choices=("geometric", "fixed"), default="geometric",
                        help="the default grid of MarkovFBM, or Daems et al.'s [1/20, 20]")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="write the rows as JSON (to stdout without PATH)")
    args = parser.parse_args(argv)
    rows = covariance_table(args.hursts, args.components, args.grid_size, args.rates)
    if args.json is not None:
        text = json.dumps({"grid_size": args.grid_size, "rates": args.rates, "rows": rows},
                          indent=2)
        if args.json == "-":
            print(text)
            return rows
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    print(f"relative Frobenius error of the covariance on t = k/{args.grid_size}, "
          f"k = 1..{args.grid_size} ({args.rates} rates)")
    print(format_table(rows, "covariance_error"))
    print("\nrelative mean L2 error on [0, 1]")
    print(format_table(rows, "l2_error"))
    if not all(math.isfinite(row["covariance_error"]) for row in rows):
        raise SystemExit("non-finite covariance error")
    return rows


if __name__ == "__main__":
    main()
