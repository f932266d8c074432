"""Real data: CO2 forecasting against a statsmodels baseline, BasicMotions interpolation.

CO2 (``pyro_vpf.data.load_co2``): weekly Mauna Loa CO2 1958-2001 with its 59 missing weeks
masked; the last 10 years (522 weeks) are held out. Each model sees the history only and
forecasts every held-out week; scores in ppm on the observed held-out weeks: MSE of the
predictive mean, MAE of the median, CRPS (energy form, from samples), and the coverage of the
central 50 % and 90 % intervals.

* ``structural``: statsmodels ``UnobservedComponents``, local linear trend + a yearly
  trigonometric seasonal (3 harmonics), fitted by maximum likelihood on the history
  (``pyro_vpf.evaluation.structural_forecast``) -- the model a practitioner reaches for: its
  trend and season are exactly the structure of this series;
* ``vpf``: a VPF on the standardised windows (104 weeks, stride 26) with the affine guide,
  forecasting from the last window of history; its latent flow is conditioned on the yearly
  period alone (``time_periods=(1.0,)``, ``time_embed_dim=0``), so it is defined the same way
  in the forecast years as in training (learned time features would take unseen phases there);
* ``vpf+trend``: the same VPF on the residual of a linear trend fitted to the last 10 years of
  the history (``PolynomialTrend``; a local linear trend, as the baseline's), the trend added
  back to every draw: an OU path is mean-reverting and cannot extrapolate a trend on its own.

BasicMotions (``pyro_vpf.data.load_basic_motions``): 40 training and 40 test recordings,
6 channels x 100 steps at 10 Hz, standardised per channel. On the test recordings, hide 30 % of
the entries at random, or separately one block of 20 steps per recording; score the hidden
entries (standardised units): MSE of the predictive mean and 90 % coverage.

* ``vpf-affine`` / ``vpf-markov``: a VPF with a latent flow and a linear-Gaussian observation
  head (channels independent given the latent, so single hidden entries are exact), trained by
  SVI on the training recordings with entries and blocks hidden the same way (other seeds);
* ``lg-vpf``: the linear-Gaussian VPF (no flow), trained by maximising its exact Kalman
  likelihood, interpolated by the exact smoother (``kalman_observation_marginals``);
* ``linear``: linear interpolation between observed entries (no intervals).

    python benchmarks/bench_real.py            # about 15 minutes on 2 cores
    python benchmarks/bench_real.py --quick    # about a minute
    python benchmarks/bench_real.py --json out.json
"""

import argparse
import json
import platform
import time

import pyro
import torch
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import (
    PolynomialTrend,
    SequenceData,
    hide_blocks,
    hide_entries,
    load_basic_motions,
    load_co2,
)
from pyro_vpf.evaluation import (
    exact_log_likelihood,
    forecast_scores,
    forecast_series,
    interpolate,
    kalman_observation_marginals,
    linear_interpolation,
    structural_forecast,
)
from pyro_vpf.infer import fit

ORIGIN = 1958.0


def _fit(model, guide, data, mask, args, steps, batch_size):
    fit(model, guide, data.x, data.times, mask, num_steps=steps, batch_size=batch_size,
        lr=args.lr, lr_decay=args.final_lr_factor ** (1 / max(steps, 1)), progress=False)
    model.requires_grad_(False).eval()
    guide.requires_grad_(False).eval()


def _score(name, samples, truth, mask, seconds, **extra):
    s = forecast_scores(samples, truth, mask)
    return {"model": name, "mse": s.mse, "mae": s.mae, "crps": s.crps,
            "cov50": s.coverage[0.5], "cov90": s.coverage[0.9], "seconds": seconds, **extra}


def co2_rows(args):
    rows = []
    data = load_co2(window=args.co2_window, stride=args.co2_window // 4, time_origin=ORIGIN)
    exact = load_co2(window=args.co2_window, time_origin=ORIGIN, dtype=torch.float64,
                     standardise=False)
    truth = exact.test.x[0, :, 0]
    scored = exact.test.mask[0]

    tic = time.perf_counter()
    # The weeks are regular in days, not in decimal years (leap years): the state-space
    # baseline runs on the week index, with a period of 365.25 / 7 weeks.
    T, F = exact.history.x.shape[1], exact.test.x.shape[1]
    weeks = torch.arange(T + F, dtype=torch.float64)
    base = structural_forecast(weeks[:T], exact.history.x[0, :, 0], exact.history.mask[0],
                               weeks[T:], num_samples=args.samples, seasonal_period=365.25 / 7)
    rows.append(_score("structural", base.samples, truth, scored, time.perf_counter() - tic))
    print(f"  co2 / structural: {base.summary.splitlines()[0]}", flush=True)

    for name, degree in (("vpf", None), ("vpf+trend", 1)):
        tic = time.perf_counter()
        train, history = data.train, data.history
        trend = None
        if degree is not None:  # residuals of a trend fitted to the observed history
            recent = history.times > history.times[-1] - args.trend_years
            trend = PolynomialTrend(degree).fit(history.times[recent],
                                                history.x[0, recent, 0],
                                                history.mask[0, recent])
            residual = history.x[0, :, 0] - trend(history.times)
            spread = residual[history.mask[0]].std()
            train = SequenceData((train.x - trend(train.times).unsqueeze(-1)) / spread,
                                 train.times, train.mask)
            history = SequenceData(((history.x[0, :, 0] - trend(history.times)) / spread)
                                   .reshape(1, -1, 1), history.times, history.mask)
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = VPF(1, args.co2_latent_dim, args.hidden_dim, 4, 2, time_scale=10.0,
                    time_embed_dim=args.co2_time_embed_dim, time_periods=(1.0,))
        guide = AffineGuide(1, args.co2_latent_dim, args.hidden_dim)
        _fit(model, guide, train, train.mask, args, args.co2_steps, 32)
        draws = forecast_series(model, guide, history, data.test.times,
                                context=args.co2_window, num_samples=args.samples)[..., 0]
        if trend is not None:  # back from residual units; the plain history is unstandardised
            draws = (draws * spread + trend(data.test.times)) * data.scale + data.loc
        rows.append(_score(name, draws.double(), truth, scored, time.perf_counter() - tic))
        print(f"  co2 / {name}: done", flush=True)
    return rows


def motions_rows(args):
    rows = []
    train = load_basic_motions(split="train").data
    test = load_basic_motions(split="test").data
    shape = tuple(test.x.shape)
    train_hidden = (hide_entries(train.x.shape, 0.3, seed=args.seed + 10)
                    | hide_blocks(train.x.shape, 20, seed=args.seed + 11))
    hidden_sets = {"entries": hide_entries(shape, 0.3, seed=args.seed + 1),
                   "blocks": hide_blocks(shape, 20, seed=args.seed + 2)}
    D = shape[-1]

    fitted = {}
    for name, Guide in (("vpf-affine", AffineGuide), ("vpf-markov", MarkovGuide)):
        tic = time.perf_counter()
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = VPF(D, args.motions_latent_dim, args.hidden_dim, 4, 0, time_scale=10.0,
                    observation="linear_gaussian")
        guide = Guide(D, args.motions_latent_dim, hidden_dim=args.hidden_dim)
        _fit(model, guide, train, ~train_hidden, args, args.motions_steps, 20)
        fitted[name] = (model, guide, time.perf_counter() - tic)
        print(f"  motions / {name}: trained", flush=True)

    tic = time.perf_counter()
    pyro.set_rng_seed(args.seed)
    linear_vpf = VPF(D, args.motions_latent_dim, args.hidden_dim, 0, 0, time_scale=10.0,
                     observation="linear_gaussian")
    optimizer = torch.optim.Adam(linear_vpf.parameters(), lr=args.lr * 3)
    for _ in range(args.exact_steps):  # maximum likelihood, exact
        optimizer.zero_grad()
        loss = -exact_log_likelihood(linear_vpf, train.x, train.times, ~train_hidden).sum()
        loss.backward()
        optimizer.step()
    linear_vpf.requires_grad_(False).eval()
    lg_seconds = time.perf_counter() - tic
    print("  motions / lg-vpf: trained", flush=True)

    for kind, hidden in hidden_sets.items():
        seen = ~hidden
        for name, (model, guide, seconds) in fitted.items():
            samples = interpolate(model, guide, test.x, test.times, test.times, mask=seen,
                                  num_samples=args.samples)
            rows.append(_score(name, samples, test.x, hidden, seconds, hidden=kind))
        with torch.no_grad():
            marginals = kalman_observation_marginals(linear_vpf, test.x, test.times, seen)
        rows.append(_score("lg-vpf", marginals.sample((args.samples,)), test.x, hidden,
                           lg_seconds, hidden=kind))
        filled = linear_interpolation(test.x, test.times, seen)
        point = forecast_scores(filled.expand(2, *shape), test.x, hidden)
        rows.append({"model": "linear", "hidden": kind, "mse": point.mse, "mae": point.mae,
                     "crps": None, "cov50": None, "cov90": None, "seconds": 0.0})
    return rows


def _fmt(value, width, digits):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_tables(co2, motions, args):
    if co2:
        print(f"\nCO2, 10 held-out years (ppm); {args.samples} draws; VPF: {args.co2_steps} "
              f"steps, hidden {args.hidden_dim}, Dz {args.co2_latent_dim}")
        head = f"{'model':<12}{'MSE':>9}{'MAE':>8}{'CRPS':>8}{'cov50':>8}{'cov90':>8}{'s':>8}"
        print(head + "\n" + "-" * len(head))
        for r in co2:
            print(f"{r['model']:<12}{r['mse']:>9.3f}{r['mae']:>8.3f}{r['crps']:>8.3f}"
                  f"{r['cov50']:>8.3f}{r['cov90']:>8.3f}{r['seconds']:>8.1f}")
    if motions:
        print(f"\nBasicMotions interpolation, hidden entries of 40 test recordings "
              f"(standardised units); VPF: {args.motions_steps} steps, Dz "
              f"{args.motions_latent_dim}; lg-vpf: {args.exact_steps} exact-likelihood steps")
        head = f"{'hidden':<9}{'model':<12}{'MSE':>8}{'CRPS':>8}{'cov90':>8}{'train s':>9}"
        print(head + "\n" + "-" * len(head))
        for r in motions:
            print(f"{r['hidden']:<9}{r['model']:<12}{r['mse']:>8.4f}{_fmt(r['crps'], 8, 4)}"
                  f"{_fmt(r['cov90'], 8, 3)}{r['seconds']:>9.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, few draws")
    parser.add_argument("--parts", nargs="+", default=["co2", "motions"],
                        choices=["co2", "motions"])
    parser.add_argument("--co2-steps", type=int, default=None, help="(1000)")
    parser.add_argument("--co2-window", type=int, default=104)
    parser.add_argument("--co2-latent-dim", type=int, default=2)
    parser.add_argument("--co2-time-embed-dim", type=int, default=0,
                        help="learned time features besides the yearly period (0: periodic only)")
    parser.add_argument("--trend-years", type=float, default=10.0,
                        help="history span of the linear trend of vpf+trend")
    parser.add_argument("--motions-steps", type=int, default=None, help="(1000)")
    parser.add_argument("--motions-latent-dim", type=int, default=4)
    parser.add_argument("--exact-steps", type=int, default=None, help="(300)")
    parser.add_argument("--hidden-dim", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr-factor", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=None, help="predictive draws (500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    for key, full, fast in (("co2_steps", 1000, 10), ("motions_steps", 1000, 10),
                            ("exact_steps", 300, 5), ("samples", 500, 20)):
        if getattr(args, key) is None:
            setattr(args, key, fast if args.quick else full)
    start = time.perf_counter()
    co2 = co2_rows(args) if "co2" in args.parts else []
    motions = motions_rows(args) if "motions" in args.parts else []
    print_tables(co2, motions, args)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"co2": co2, "motions": motions, "args": vars(args),
                       "torch": torch.__version__, "machine": platform.platform()}, f, indent=2)


if __name__ == "__main__":
    main()
