"""Base processes of the VPF: CO2 forecasts, fine-scale realism, sampling and training cost.

The latent path of a VPF is a Gauss-Markov base process pushed through a time-conditioned
flow (``VPF(base=...)``, ``pyro_vpf.processes``). This script compares the named bases of
``pyro_vpf.processes.BASES`` (``make_base(name, time_scale)``) with each other and with the OU
base, every ratio measured in the same run. Models are float32; ``--guide`` (``markov`` by
default) is the guide of every trained model.

1. **CO2** (``pyro_vpf.data.load_co2``, as in ``bench_real.py``): weekly Mauna Loa CO2, the
   last 10 years (522 weeks) held out. A VPF (Dz 1, hidden 32, ``time_scale=10``; by default a
   linear-Gaussian likelihood and no latent couplings, ``--co2-observation`` and
   ``--co2-flow-layers`` to change: with the flow likelihood, draws that carry the trend
   beyond the latent values seen in training are mapped by couplings that never saw them,
   and the upper tail runs away) with the Markov guide (its smoother's reference: the
   model's base) is trained by SVI (lr ``--co2-lr``) on the standardised 520-week windows
   (10 years; a slope is poorly pinned by 2-year windows) of the history, stride a quarter
   window, and forecasts every held-out week from the last window, with **no manual
   detrending**:

   * ``vpf[trend+cycle]``: base ``make_base("trend+cycle", 10.0, period=1.0, harmonics=3)``,
     a local linear trend on the window's time scale (10 years), a damped oscillator of a
     known yearly period with 3 harmonics (frequency fixed, amplitudes and damping learned;
     CO2 times are decimal years) and a little OU noise: the structure of the structural
     model below, learned by SVI. Forecasts carry the trend's slope and the cycle's phase
     forward (``prior.forecast``);
   * ``vpf[ou]``: the same VPF with the OU base ``make_base("ou", 10.0)`` (the default base
     of ``bench_real.py``'s ``vpf``), for contrast: an OU path reverts to its mean;
   * ``exact[trend+cycle]``: the same base with an identity latent flow and the
     linear-Gaussian likelihood, a linear-Gaussian state-space model, fitted by maximising its
     exact evidence (``fit_exact``, ``--co2-exact-steps`` Adam steps at ``--co2-exact-lr`` on
     the same windows) and forecast with its exact posterior (``ExactPosterior``): no guide
     to train, deterministic, so fitted once;
   * ``structural``: statsmodels' local linear trend + yearly seasonal
     (``structural_forecast``), fitted in the same run; deterministic, so fitted once.

   The latent flow is conditioned on the yearly period alone (``time_periods=(1.0,)``,
   ``time_embed_dim=0``), as in ``bench_real.py``. Scores in ppm on the observed held-out
   weeks: MSE of the predictive mean, MAE of the median, CRPS, coverage of the central 50 %
   and 90 % intervals, seconds (training + forecast) and the largest absolute draw (ppm; the
   truth stays below 375: a larger one is a forecast that runs away); the VPF rows are the
   mean +- sd over ``--co2-seeds`` seeds. Targets: the trend+cycle VPF's CRPS <= the structural
   model's, its 90 % coverage in [0.85, 0.95].

2. **Fine-scale realism** on stochastic Lorenz (``stochastic_lorenz``, the demo's data:
   1 024 training sequences of 41 points on [0, 1]). A VPF at the demo's sizes (section 4)
   with each base of ``--bases`` is trained on them; then ``--fine-paths`` prior paths are
   drawn at ``--fine-points`` points on [0, 1] and decoded to observation space with the
   observation flow's noise-free map (``model.decode(z)``: x = g(0; z), without the white
   observation noise, which would swamp every increment at a fine spacing), and compared
   with as many paths of the true SDE simulated (Euler-Maruyama, ``simulate_lorenz``) on the
   same grid, standardised like the training data, without observation noise. Per channel:
   the ratio (model / truth) of the mean squared increment at the finest spacing (a rough
   path such as the SDE's has squared increments of order dt, a smooth Matern path of order
   dt^2 or less); ``gm@41`` is the geometric mean over channels of the same ratio at the
   training spacing; and the energy distance between the paths subsampled at 41 and at
   1 001 points (each path one vector). The ``truth`` row compares a second independent
   draw of the SDE with the first: the sampling noise of the figures (the energy distance
   is the unbiased estimate, so it can be slightly negative). Target: the best base's
   increment ratios in [0.5, 2].

3. **Sampling cost**: for each base, a VPF at the demo's sizes (Dz 4, hidden 64, 4 latent
   couplings, untrained) draws 64 prior paths (``prior.sample``: the base path and the flow)
   at 101 / 1 001 / 10 001 / 100 001 points; also timed, the base path alone
   (``prior.base_path(...).rsample()``). Median of ``--repeats`` runs after a warm-up (one
   run above 10 001 points; a warm-up longer than a second counts as the first run); the
   ratio to the OU base at the same number of points, and microseconds per sampled point
   (the linearity check).
   Targets: every base <= 2x the OU sampler at the largest size; time linear in the number
   of points (growth <= 11 for 10x the points).

4. **Train step**: seconds per SVI step (``fit``, batch 128 of 41-point Lorenz sequences,
   Dz 4, hidden 64, 4 + 4 couplings: the demo's ``TrainConfig``) of each base with the
   affine and the Markov guide (median over a few steps after a warm-up), and the ratio to
   the OU base with the same guide.

A last block lists each target with the measured figure, met or missed.

    python benchmarks/bench_bases.py            # about 15 minutes on 2 cores, 6 GB memory
    python benchmarks/bench_bases.py --quick    # about a minute (10 steps, 1 seed)
    python benchmarks/bench_bases.py --parts sampling step --bases ou matern52
    python benchmarks/bench_bases.py --json out.json
"""

import argparse
import json
import math
import platform
import statistics
import sys
import time

import pyro
import torch
from bench_real import ORIGIN, _fit, _fmt, _score
from pyro_vpf.guides import AffineGuide, ExactPosterior, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import load_co2, simulate_lorenz, stochastic_lorenz
from pyro_vpf.evaluation import energy_distance, forecast_series, structural_forecast
from pyro_vpf.infer import fit, fit_exact
from pyro_vpf.processes import BASES, OU, make_base

PARTS = ("co2", "fine", "sampling", "step")
DEFAULT_BASES = [name for name in ("ou", "matern32", "matern52", "matern32+ou", "trend+cycle",
                                   "fbm")
                 if name in BASES]
#: (base, make_base's arguments; times in years)
CO2_BASES = (("trend+cycle", {"time_scale": 10.0, "period": 1.0, "harmonics": 3}),
             ("ou", {"time_scale": 10.0}))
LORENZ_POINTS, LORENZ_END = 41, 1.0
TARGETS = {"co2_cov90": (0.85, 0.95), "increment_ratio": (0.5, 2.0), "sampler_over_ou": 2.0,
           "growth_per_10x_points": 11.0}


def _guide(kind, model, hidden_dim):
    """The guide called ``kind`` for ``model``, on the model's device."""
    if kind == "markov" and not isinstance(model.prior.base, OU):
        # the smoother's reference is the model's own base (exact for linear-Gaussian models)
        guide = MarkovGuide(model.obs_dim, model.latent_dim, hidden_dim=hidden_dim,
                            base=model.prior.base)
    else:
        Guide = {"affine": AffineGuide, "markov": MarkovGuide}[kind]
        guide = Guide(model.obs_dim, model.latent_dim, hidden_dim=hidden_dim)
    return guide.to(next(model.parameters()).device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, repeats, device):
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run; a warm-up
    longer than a second has amortised any first-call cost and counts as the first run."""
    _sync(device)
    tic = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - tic
    times = [first] if first > 1.0 else []
    for _ in range(repeats - len(times)):
        _sync(device)
        tic = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _lorenz_vpf(name, args):
    """A VPF at the demo's sizes with the base ``name`` (time unit: the horizon)."""
    return VPF(3, args.latent_dim, args.hidden_dim, args.flow_layers, args.obs_flow_layers,
               time_scale=LORENZ_END, base=make_base(name, LORENZ_END)).to(args.device)


# -- 1. CO2 ----------------------------------------------------------------------------------
def co2_rows(args):
    device = torch.device(args.device)
    rows = []
    data = load_co2(window=args.co2_window, stride=args.co2_window // 4, time_origin=ORIGIN,
                    device=device)
    exact = load_co2(window=args.co2_window, time_origin=ORIGIN, dtype=torch.float64,
                     standardise=False)
    truth, scored = exact.test.x[0, :, 0], exact.test.mask[0]

    tic = time.perf_counter()
    # weekly steps are regular in days, not in decimal years: the baseline runs on the week
    # index, with a period of 365.25 / 7 weeks (as in bench_real.py)
    T, F = exact.history.x.shape[1], exact.test.x.shape[1]
    weeks = torch.arange(T + F, dtype=torch.float64)
    base = structural_forecast(weeks[:T], exact.history.x[0, :, 0], exact.history.mask[0],
                               weeks[T:], num_samples=args.samples, seasonal_period=365.25 / 7)
    rows.append(_score("structural", base.samples, truth, scored, time.perf_counter() - tic,
                       seed=None, max_abs_ppm=float(base.samples.abs().max())))
    print("  co2 / structural: done", file=sys.stderr, flush=True)

    if "trend+cycle" in args.co2_bases:  # the same base, linear-Gaussian, fitted exactly
        tic = time.perf_counter()
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = VPF(1, 1, args.co2_hidden_dim, 0, time_scale=10.0, time_embed_dim=0,
                    time_periods=(1.0,), observation="linear_gaussian",
                    base=make_base("trend+cycle", **dict(CO2_BASES)["trend+cycle"])).to(device)
        fit_exact(model, data.train.x, data.train.times, data.train.mask,
                  num_steps=args.co2_exact_steps, lr=args.co2_exact_lr, progress=False)
        draws = forecast_series(model, ExactPosterior(model), data.history, data.test.times,
                                context=args.co2_window, num_samples=args.samples)[..., 0]
        rows.append(_score("exact[trend+cycle]", draws.double().cpu(), truth, scored,
                           time.perf_counter() - tic, seed=args.seed,
                           max_abs_ppm=float(draws.abs().max())))
        print("  co2 / exact[trend+cycle]: done", file=sys.stderr, flush=True)

    fit_args = argparse.Namespace(**{**vars(args), "lr": args.co2_lr})
    for name, base_args in CO2_BASES:
        if name not in args.co2_bases:
            continue
        for seed in range(args.seed, args.seed + args.co2_seeds):
            tic = time.perf_counter()
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            model = VPF(1, args.co2_latent_dim, args.co2_hidden_dim, args.co2_flow_layers,
                        2, time_scale=10.0, time_embed_dim=0, time_periods=(1.0,),
                        observation=args.co2_observation,
                        base=make_base(name, **base_args)).to(device)
            guide = _guide(args.guide, model, args.co2_hidden_dim)
            _fit(model, guide, data.train, data.train.mask, fit_args, args.co2_steps,
                 min(32, data.train.x.shape[0]))
            draws = forecast_series(model, guide, data.history, data.test.times,
                                    context=args.co2_window, num_samples=args.samples)[..., 0]
            draws = draws.double().cpu()
            seconds = time.perf_counter() - tic
            if torch.isfinite(draws[:, scored]).all():
                rows.append(_score(f"vpf[{name}]", draws, truth, scored, seconds, seed=seed))
            else:  # a forecast that left the floats: no score
                rows.append({"model": f"vpf[{name}]", "seed": seed, "seconds": seconds,
                             **dict.fromkeys(("mse", "mae", "crps", "cov50", "cov90"))})
            rows[-1]["max_abs_ppm"] = float(draws.abs().max())
            print(f"  co2 / vpf[{name}] seed {seed}: done", file=sys.stderr, flush=True)
    return rows


def co2_summary(rows):
    """One row per model: mean and sd over seeds of every score."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        runs = [r for r in rows if r["model"] == model]
        row = {"model": model, "runs": len(runs)}
        for key in ("mse", "mae", "crps", "cov50", "cov90", "seconds", "max_abs_ppm"):
            row[key], row[key + "_sd"] = _mean_sd([r[key] for r in runs])
        out.append(row)
    return out


# -- 2. fine-scale realism -------------------------------------------------------------------
def _lorenz_truth(train, num_paths, num_points, seed):
    """``num_paths`` SDE paths on the uniform ``num_points`` grid of [0, 1], standardised with
    the training data's statistics, float32."""
    g = torch.Generator().manual_seed(seed)
    initial = torch.randn(num_paths, 3, generator=g, dtype=torch.float64)
    path = simulate_lorenz(initial, LORENZ_END, num_points - 1, generator=g)
    return ((path - train.loc.double().cpu()) / train.scale.double().cpu()).float()


def _subsample(x, n):
    index = torch.linspace(0, x.shape[1] - 1, n).round().long()
    return x[:, index]


def _mean_square_increment(x, stride=1):
    return (x[:, stride::stride] - x[:, :-stride:stride]).square().mean((0, 1))


def _fine_row(name, x, truth, seconds):
    coarse = (x.shape[1] - 1) // (LORENZ_POINTS - 1)
    ratio = _mean_square_increment(x) / _mean_square_increment(truth)
    ratio41 = _mean_square_increment(x, coarse) / _mean_square_increment(truth, coarse)
    row = {"base": name, "seconds": seconds, "finite": bool(torch.isfinite(x).all()),
           "ratio": ratio.tolist(), "gm41": float(ratio41.log().mean().exp())}
    for n in (LORENZ_POINTS, 1001):
        if not row["finite"]:
            row[f"ed{n}"] = None
            continue
        a, b = _subsample(x, n).flatten(1), _subsample(truth, n).flatten(1)
        row[f"ed{n}"] = float(energy_distance(a.double(), b.double()))
    return row


def fine_rows(args, train, names):
    device = torch.device(args.device)
    K = args.fine_points
    truth = _lorenz_truth(train, args.fine_paths, K, args.seed + 1000)
    rows = [_fine_row("truth", _lorenz_truth(train, args.fine_paths, K, args.seed + 2000),
                      truth, 0.0)]
    grid = torch.linspace(0.0, LORENZ_END, K, device=device)
    data = train.to(device)
    for name in names:
        tic = time.perf_counter()
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = _lorenz_vpf(name, args)
        guide = _guide(args.guide, model, args.hidden_dim)
        _fit(model, guide, data, data.mask, args, args.lorenz_steps, args.batch_size)
        seconds = time.perf_counter() - tic
        with torch.no_grad():  # in chunks of paths: memory stays bounded at any K
            x = torch.cat([model.decode(model.prior.sample(grid, n)).cpu()
                           for n in _chunks(args.fine_paths, 32)])
        rows.append(_fine_row(name, x, truth, seconds))
        print(f"  fine / {name}: done", file=sys.stderr, flush=True)
    return rows


def _chunks(total, size):
    return [min(size, total - start) for start in range(0, total, size)]


def _log_distance(row):
    """How far a base's increment ratios are from 1, in the worst channel (log scale)."""
    return max(abs(math.log(r)) if r > 0 and math.isfinite(r) else math.inf
               for r in row["ratio"])


# -- 3. sampling cost ------------------------------------------------------------------------
def _time_sampler(prior, K, repeats, args):
    """Median seconds of the whole prior sampler and of the base path alone at ``K`` points."""
    device = torch.device(args.device)
    times = torch.linspace(0.0, LORENZ_END, K, device=device)
    y0 = torch.zeros(args.sampling_paths, args.latent_dim, device=device)

    def draw():  # the base path's transitions and its draw
        path = prior.base_path(y0, times)
        return path.rsample() if path.has_rsample else path.sample()

    with torch.no_grad():
        sampler = _median_time(lambda: prior.sample(times, args.sampling_paths), repeats,
                               device)
        base = _median_time(draw, repeats, device)
    return {"points": K, "paths": args.sampling_paths, "sampler_s": sampler, "base_s": base,
            "us_per_point": sampler / (K * args.sampling_paths) * 1e6}


def sampling_rows(args, names):
    rows = []
    for name in names:
        torch.manual_seed(args.seed)  # the same flow weights for every base
        prior = _lorenz_vpf(name, args).prior.requires_grad_(False)
        for K in args.sampling_points:
            reps = args.repeats if K <= 10001 else 1  # seconds a run: little noise
            rows.append({"base": name, **_time_sampler(prior, K, reps, args)})
        print(f"  sampling / {name}: done", file=sys.stderr, flush=True)
    ou = {r["points"]: r for r in rows if r["base"] == "ou"}
    for r in rows:
        reference = ou.get(r["points"])
        r["sampler_over_ou"] = r["sampler_s"] / reference["sampler_s"] if reference else None
        r["base_over_ou"] = r["base_s"] / reference["base_s"] if reference else None
    return rows


# -- 4. train step ---------------------------------------------------------------------------
def step_rows(args, train, names):
    device = torch.device(args.device)
    data = train.to(device)
    rows = []
    for kind in ("affine", "markov"):
        for name in names:
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            model = _lorenz_vpf(name, args)
            guide = _guide(kind, model, args.hidden_dim)
            history = fit(model, guide, data.x, data.times, data.mask,
                          num_steps=args.warmup_steps + args.step_repeats,
                          batch_size=args.batch_size, lr=args.lr, progress=False)
            seconds = statistics.median(history.step_seconds[args.warmup_steps:])
            rows.append({"guide": kind, "base": name, "step_s": seconds})
        print(f"  step / {kind}: done", file=sys.stderr, flush=True)
    ou = {r["guide"]: r["step_s"] for r in rows if r["base"] == "ou"}
    for r in rows:
        r["over_ou"] = r["step_s"] / ou[r["guide"]] if r["guide"] in ou else None
    return rows


# -- tables ----------------------------------------------------------------------------------
def _pm(mean, sd, width, digits):
    if mean is None:
        return f"{'-':>{width}}"
    return f"{f'{mean:.{digits}f}+-{sd:.{digits}f}':>{width}}"


def print_co2(summary, args):
    print(f"\nCO2, 10 held-out years (ppm); {args.samples} draws; VPF: {args.co2_steps} steps, "
          f"{args.guide} guide, hidden {args.co2_hidden_dim}, Dz {args.co2_latent_dim}, "
          f"time_periods=(1.0,), time_embed_dim=0; mean+-sd over {args.co2_seeds} seed(s)")
    head = (f"{'model':<18}{'MSE':>16}{'MAE':>14}{'CRPS':>14}{'cov50':>14}{'cov90':>14}"
            f"{'s':>16}{'max|draw|':>11}")
    print(head + "\n" + "-" * len(head))
    for r in summary:
        print(f"{r['model']:<18}{_pm(r['mse'], r['mse_sd'], 16, 3)}"
              f"{_pm(r['mae'], r['mae_sd'], 14, 3)}{_pm(r['crps'], r['crps_sd'], 14, 3)}"
              f"{_pm(r['cov50'], r['cov50_sd'], 14, 3)}{_pm(r['cov90'], r['cov90_sd'], 14, 3)}"
              f"{_pm(r['seconds'], r['seconds_sd'], 16, 1)}{r['max_abs_ppm']:>11.4g}")
    low, high = TARGETS["co2_cov90"]
    print(f"targets (vpf[trend+cycle]): CRPS <= structural's; cov90 in [{low}, {high}]")


def print_fine(rows, args):
    print(f"\nFine-scale realism, stochastic Lorenz on [0, {LORENZ_END:g}]: trained on "
          f"{LORENZ_POINTS} points ({args.lorenz_steps} steps, {args.guide} guide); "
          f"{args.fine_paths} prior paths vs {args.fine_paths} SDE paths at {args.fine_points} "
          f"points (noise-free decoding); increment ratio = model / truth at the finest spacing")
    head = (f"{'base':<14}{'ratio x':>9}{'ratio y':>9}{'ratio z':>9}{'gm@41':>8}"
            f"{'ED@41':>9}{'ED@1001':>9}{'train s':>9}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        ratios = "".join(f"{v:>9.3g}" for v in r["ratio"])
        print(f"{r['base']:<14}{ratios}{r['gm41']:>8.3g}{_fmt(r['ed41'], 9, 3)}"
              f"{_fmt(r['ed1001'], 9, 3)}{r['seconds']:>9.1f}")
    low, high = TARGETS["increment_ratio"]
    print(f"target: the best base's ratios in [{low:g}, {high:g}] ('truth': a second draw of "
          "the SDE, the sampling noise)")


def print_sampling(rows, args):
    print(f"\nPrior sampling, {args.sampling_paths} paths, Dz {args.latent_dim}, hidden "
          f"{args.hidden_dim}, {args.flow_layers} couplings; median of {args.repeats} run(s) "
          "after a warm-up (1 above 10 001 points)")
    head = (f"{'base':<14}{'points':>8}{'sampler ms':>12}{'/ ou':>7}{'base ms':>10}{'/ ou':>7}"
            f"{'us/point':>10}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['base']:<14}{r['points']:>8}{r['sampler_s'] * 1e3:>12.2f}"
              f"{_fmt(r['sampler_over_ou'], 7, 2)}{r['base_s'] * 1e3:>10.2f}"
              f"{_fmt(r['base_over_ou'], 7, 2)}{r['us_per_point']:>10.3f}")
    print(f"targets: sampler <= {TARGETS['sampler_over_ou']:g}x ou at the largest size; "
          f"time linear in the number of points")


def print_step(rows, args):
    print(f"\nSVI step, batch {args.batch_size} x {LORENZ_POINTS} points, Dz {args.latent_dim}, "
          f"hidden {args.hidden_dim}, {args.flow_layers} + {args.obs_flow_layers} couplings; "
          f"median of {args.step_repeats} steps after {args.warmup_steps}")
    head = f"{'guide':<8}{'base':<14}{'step ms':>10}{'/ ou':>7}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['guide']:<8}{r['base']:<14}{r['step_s'] * 1e3:>10.1f}"
              f"{_fmt(r['over_ou'], 7, 2)}")


def targets(co2, fine, sampling):
    """``(name, measured, target, met)`` for every target the measured sections allow."""
    out = []
    by_model = {r["model"]: r for r in co2}
    vpf, structural = by_model.get("vpf[trend+cycle]"), by_model.get("structural")
    if vpf and structural:
        crps = vpf["crps"]
        out.append(("co2 CRPS trend+cycle vs structural",
                    "-" if crps is None else f"{crps:.3f} vs {structural['crps']:.3f}",
                    "<=", crps is not None and crps <= structural["crps"]))
        low, high = TARGETS["co2_cov90"]
        cov = vpf["cov90"]
        out.append(("co2 cov90 trend+cycle", "-" if cov is None else f"{cov:.3f}",
                    f"in [{low}, {high}]", cov is not None and low <= cov <= high))
    bases = [r for r in fine if r["base"] != "truth"]
    if bases:
        best = min(bases, key=_log_distance)
        low, high = TARGETS["increment_ratio"]
        out.append((f"increment ratio, best base ({best['base']})",
                    " ".join(f"{v:.3g}" for v in best["ratio"]), f"in [{low:g}, {high:g}]",
                    all(low <= v <= high for v in best["ratio"])))
    if sampling:
        largest = max(r["points"] for r in sampling)
        worst = max((r for r in sampling if r["points"] == largest
                     and r["sampler_over_ou"] is not None),
                    key=lambda r: r["sampler_over_ou"], default=None)
        if worst is not None:
            bound = TARGETS["sampler_over_ou"]
            out.append((f"sampler / ou at {largest} points, worst ({worst['base']})",
                        f"{worst['sampler_over_ou']:.2f}", f"<= {bound:g}",
                        worst["sampler_over_ou"] <= bound))
        sizes = sorted({r["points"] for r in sampling})
        if len(sizes) > 1:
            small = sizes[-2]
            per_base = {}
            for r in sampling:
                per_base.setdefault(r["base"], {})[r["points"]] = r["sampler_s"]
            growth = max(t[largest] / t[small] * (small - 1) * 10 / (largest - 1)
                         for t in per_base.values())
            bound = TARGETS["growth_per_10x_points"]
            out.append((f"growth {small} -> {largest} points per 10x, worst",
                        f"{growth:.2f}", f"<= {bound:g}", growth <= bound))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs: about a minute")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--bases", nargs="+", default=None, choices=sorted(BASES),
                        help=f"bases of sections 2-4 (default: {' '.join(DEFAULT_BASES)})")
    parser.add_argument("--guide", default="markov", choices=["affine", "markov"],
                        help="guide of the trained models (sections 1 and 2)")
    parser.add_argument("--co2-steps", type=int, default=None, help="(300)")
    parser.add_argument("--co2-seeds", type=int, default=None, help="(3)")
    parser.add_argument("--co2-window", type=int, default=None, help="(520; --quick: 104)")
    parser.add_argument("--co2-latent-dim", type=int, default=1)
    parser.add_argument("--co2-hidden-dim", type=int, default=32)
    parser.add_argument("--co2-flow-layers", type=int, default=0)
    parser.add_argument("--co2-observation", default="linear_gaussian",
                        choices=["flow", "linear_gaussian"])
    parser.add_argument("--co2-lr", type=float, default=3e-2)
    parser.add_argument("--co2-exact-steps", type=int, default=None,
                        help="Adam steps of the exact fit (100)")
    parser.add_argument("--co2-exact-lr", type=float, default=5e-2)
    parser.add_argument("--co2-bases", nargs="+", default=[b for b, _ in CO2_BASES],
                        choices=[b for b, _ in CO2_BASES])
    parser.add_argument("--samples", type=int, default=None, help="CO2 forecast draws (500)")
    parser.add_argument("--lorenz-steps", type=int, default=None, help="(200)")
    parser.add_argument("--fine-points", type=int, default=None, help="(10001)")
    parser.add_argument("--fine-paths", type=int, default=None, help="(256)")
    parser.add_argument("--sampling-points", type=int, nargs="+", default=None,
                        help="(101 1001 10001 100001)")
    parser.add_argument("--sampling-paths", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="timed sampler runs (5)")
    parser.add_argument("--step-repeats", type=int, default=None, help="timed SVI steps (10)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed SVI steps (2)")
    parser.add_argument("--latent-dim", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--flow-layers", type=int, default=4)
    parser.add_argument("--obs-flow-layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr-factor", type=float, default=0.1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    args = parser.parse_args(argv)
    for key, full, fast in (("co2_steps", 300, 10), ("co2_exact_steps", 100, 10),
                            ("co2_seeds", 3, 1), ("samples", 500, 50),
                            ("co2_window", 520, 104),
                            ("lorenz_steps", 200, 10), ("fine_points", 10001, 1001),
                            ("fine_paths", 256, 32),
                            ("sampling_points", [101, 1001, 10001, 100001], [101, 1001, 10001]),
                            ("repeats", 5, 1), ("step_repeats", 10, 2), ("warmup_steps", 2, 1)):
        if getattr(args, key) is None:
            setattr(args, key, fast if args.quick else full)
    if args.fine_points < 1001:
        parser.error("--fine-points must be at least 1001")
    names = args.bases or DEFAULT_BASES
    torch.set_default_dtype(torch.float32)

    start = time.perf_counter()
    train = None
    if {"fine", "step"} & set(args.parts):
        train, _ = stochastic_lorenz(1280, LORENZ_POINTS, LORENZ_END, seed=args.seed)
    sections = {"co2": lambda: co2_rows(args), "fine": lambda: fine_rows(args, train, names),
                "sampling": lambda: sampling_rows(args, names),
                "step": lambda: step_rows(args, train, names)}
    results, seconds = {}, {}
    for part, run in sections.items():
        tic = time.perf_counter()
        results[part] = run() if part in args.parts else []
        seconds[part] = time.perf_counter() - tic
    co2, fine, sampling, step = (results[part] for part in PARTS)
    summary = co2_summary(co2)

    print(f"\n{platform.platform()}, torch {torch.__version__}, {args.device}, "
          f"{torch.get_num_threads()} threads, float32")
    if summary:
        print_co2(summary, args)
    if fine:
        print_fine(fine, args)
    if sampling:
        print_sampling(sampling, args)
    if step:
        print_step(step, args)
    checks = targets(summary, fine, sampling)
    if checks:
        print(f"\n{'target':<52}{'measured':<22}{'target':<17}met")
        for name, value, bound, met in checks:
            print(f"{name:<52}{value:<22}{bound:<17}{'yes' if met else 'NO'}")
    print("seconds: " + ", ".join(f"{part} {seconds[part]:.0f}" for part in args.parts)
          + f"; total {time.perf_counter() - start:.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"co2": co2, "co2_summary": summary, "fine": fine, "sampling": sampling,
                       "step": step, "section_seconds": seconds,
                       "targets": [{"name": n, "measured": v, "target": b, "met": m}
                                   for n, v, b, m in checks],
                       "args": vars(args), "torch": torch.__version__,
                       "python": platform.python_version(), "machine": platform.platform(),
                       "threads": torch.get_num_threads()}, f, indent=2)


if __name__ == "__main__":
    main()
