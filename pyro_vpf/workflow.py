"""Train, sample and evaluate the VPF on stochastic Lorenz data, with figures and a summary.

The functions behind ``python -m pyro_vpf train|sample|evaluate|demo``. Everything a run
produces goes into one output directory: ``config.json``, ``checkpoint.pt``, ``loss.png``,
``samples.png``, ``reconstruction.png`` and ``summary.json``.
"""

import json
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace

import torch

__all__ = [
    "TrainConfig", "build", "evaluate", "load_data", "load_run", "prior_demo", "sample", "train",
]


@dataclass
class TrainConfig:
    """Every setting of a run; saved as ``config.json`` next to its results."""

    # data
    num_sequences: int = 1280
    num_points: int = 41
    t_end: float = 1.0
    obs_noise: float = 0.01
    irregular: bool = False
    missing_rate: float = 0.0
    test_fraction: float = 0.2
    # model and guide
    latent_dim: int = 4
    hidden_dim: int = 64
    num_flow_layers: int = 4
    num_obs_flow_layers: int = 4
    conditioner_layers: int = 1
    base: str = "ou"
    guide: str = "affine"
    # optimisation
    num_steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    num_particles: int = 1
    elbo: str = "trace"
    kl_anneal_steps: int = 0
    clip_norm: float = 10.0
    checkpoint_every: int = 250
    eval_particles: int = 16
    seed: int = 0
    device: str = "cpu"
    # data-parallel training (pyro_vpf.infer.lightning.fit_distributed, `distributed` extra)
    devices: int = 1
    num_nodes: int = 1
    strategy: str = ""

    def __post_init__(self):
        for name in ("devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def distributed(self):
        """Whether the run trains with :func:`~pyro_vpf.infer.lightning.fit_distributed`:
        more than one device or node, or a Lightning strategy named."""
        return self.devices > 1 or self.num_nodes > 1 or bool(self.strategy)

    @classmethod
    def fast(cls, **overrides):
        """Tiny sizes for tests: seconds, not minutes."""
        small = dict(num_sequences=24, num_points=9, hidden_dim=16, num_flow_layers=2,
                     num_obs_flow_layers=2, num_steps=6, batch_size=8, checkpoint_every=3,
                     eval_particles=2)
        small.update(overrides)
        return cls(**small)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**values)


def load_data(config):
    """The (train, test) split of stochastic Lorenz sequences that ``config`` describes."""
    from pyro_vpf.data import stochastic_lorenz

    train, test = stochastic_lorenz(
        config.num_sequences, config.num_points, config.t_end, obs_noise=config.obs_noise,
        irregular=config.irregular, missing_rate=config.missing_rate,
        test_fraction=config.test_fraction, seed=config.seed,
    )
    device = torch.device(config.device)
    return train.to(device), test.to(device)


#: bases that need the Markov guide: with independent marginals (affine, flow guides) their
#: trained priors' draws are far from the data (matern32, matern52, trend+cycle measured)
SMOOTHING_BASES = ("matern32", "matern52", "matern32+ou", "trend+cycle")


def build(config, obs_dim):
    """A fresh ``(VPF, guide)`` pair for ``config`` on its device; ``config.guide`` is
    ``"affine"``, ``"markov"`` or ``"flow"``, ``config.base`` a name of
    :data:`pyro_vpf.processes.BASES`. With a structured base the Markov guide's smoother
    takes the model's base as its reference (``MarkovGuide(..., base=model.prior.base)``)."""
    from pyro_vpf.guides import GUIDES
    from pyro_vpf.models import VPF

    if config.guide not in GUIDES:
        raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {config.guide!r}")

    from pyro_vpf.processes import make_base

    if config.base in SMOOTHING_BASES and not config.guide.startswith("markov"):
        warnings.warn(
            f"base {config.base!r} with the {config.guide!r} guide: a guide with independent "
            "marginals drags a structured prior toward rough paths (its prior draws were "
            "measured orders of magnitude off, benchmarks/bench_bases.py); use --guide markov, "
            "whose smoother takes the base as its reference", UserWarning, stacklevel=2)
    model = VPF(obs_dim, config.latent_dim, config.hidden_dim, config.num_flow_layers,
                config.num_obs_flow_layers, time_scale=config.t_end,
                conditioner_layers=config.conditioner_layers,
                base=make_base(config.base, config.t_end))
    if config.guide == "markov" and config.base != "ou":  # the smoother's reference: the base
        guide = GUIDES["markov"](obs_dim, config.latent_dim, config.hidden_dim,
                                 base=model.prior.base)
    else:
        guide = GUIDES[config.guide](obs_dim, config.latent_dim, config.hidden_dim)
    return model.to(config.device), guide.to(config.device)


def _paths(out_dir):
    return {name: os.path.join(out_dir, name) for name in
            ("config.json", "checkpoint.pt", "loss.png", "samples.png", "reconstruction.png",
             "summary.json")}


def load_run(out_dir, device=None):
    """Rebuild ``(config, model, guide, train, test, history)`` from a run's directory."""
    import pyro

    from pyro_vpf.infer import load_checkpoint

    paths = _paths(out_dir)
    for name in ("config.json", "checkpoint.pt"):
        if not os.path.exists(paths[name]):
            raise FileNotFoundError(f"{paths[name]} not found: run `python -m pyro_vpf train "
                                    f"--out-dir {out_dir}` first")
    with open(paths["config.json"]) as f:
        config = TrainConfig.from_dict(json.load(f))
    if device is not None:
        config.device = device
    train_data, test_data = load_data(config)
    model, guide = build(config, train_data.obs_dim)
    pyro.clear_param_store()
    _, history, _ = load_checkpoint(paths["checkpoint.pt"], model, guide,
                                    map_location=config.device)
    return config, model, guide, train_data, test_data, history


def train(config, out_dir, resume=False, progress=True):
    """Fit the VPF with the configured guide; write the checkpoint, figures and summary.

    With ``config.distributed`` the fit is :func:`~pyro_vpf.infer.lightning.fit_distributed`
    on ``config.devices`` × ``config.num_nodes`` processes of the accelerator of
    ``config.device`` (data and modules start on the CPU; each process moves its shards);
    only the process of global rank 0 writes files and evaluates.

    Returns:
        dict: the summary (also written to ``summary.json``); ``None`` in the other
        processes of a distributed run.
    """
    import pyro

    from pyro_vpf.infer import elbo_per_point, fit

    os.makedirs(out_dir, exist_ok=True)
    paths = _paths(out_dir)
    if resume and not os.path.exists(paths["checkpoint.pt"]):
        raise FileNotFoundError(f"nothing to resume: {paths['checkpoint.pt']} does not exist")
    placement = config
    if config.distributed:
        from pyro_vpf.infer.lightning import fit_distributed, is_global_zero

        placement = replace(config, device="cpu")
    if not config.distributed or is_global_zero():
        with open(paths["config.json"], "w") as f:
            json.dump(asdict(config), f, indent=2)
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    train_data, test_data = load_data(placement)
    model, guide = build(placement, train_data.obs_dim)
    evaluations = []
    eval_every = max(1, config.num_steps // 10)
    held_out = {}

    def evaluate_now(step, history):
        if (step + 1) % eval_every == 0 or step + 1 == config.num_steps:
            device = next(model.parameters()).device  # where the training process has it
            if device not in held_out:
                held_out[device] = test_data.to(device)
            data = held_out[device]
            state = torch.get_rng_state()  # evaluation draws must not change training's
            evaluations.append((step + 1, elbo_per_point(
                model, guide, data.x, data.times, data.mask, num_particles=4, batch_size=256)))
            torch.set_rng_state(state)

    settings = dict(
        num_steps=config.num_steps, lr=config.lr, num_particles=config.num_particles,
        elbo=config.elbo, clip_norm=config.clip_norm, kl_anneal_steps=config.kl_anneal_steps,
        checkpoint_path=paths["checkpoint.pt"], checkpoint_every=config.checkpoint_every,
        resume=paths["checkpoint.pt"] if resume else None, progress=progress,
        callback=evaluate_now,
    )
    start = time.perf_counter()
    if config.distributed:
        world = config.devices * config.num_nodes
        batch_size = min(config.batch_size, len(train_data))
        history = fit_distributed(
            model, guide, train_data.x, train_data.times, train_data.mask,
            batch_size=max(world, batch_size - batch_size % world), devices=config.devices,
            num_nodes=config.num_nodes, strategy=config.strategy or "ddp",
            accelerator=torch.device(config.device).type, seed=config.seed, **settings)
        if not is_global_zero():
            return None
        model.to(config.device)
        guide.to(config.device)
        train_data, test_data = train_data.to(config.device), test_data.to(config.device)
    else:
        history = fit(model, guide, train_data.x, train_data.times, train_data.mask,
                      batch_size=min(config.batch_size, len(train_data)), **settings)
    wall = time.perf_counter() - start
    summary = evaluate_run(config, model, guide, train_data, test_data, history)
    summary.update({"train_seconds": wall, "held_out_during_training": evaluations})
    _write_figures(config, model, guide, train_data, test_data, history, evaluations, out_dir)
    with open(paths["summary.json"], "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def evaluate_run(config, model, guide, train_data, test_data, history):
    """Final train and test ELBO per time point and step-time figures of a fitted run."""
    from pyro_vpf.infer import elbo_per_point

    def score(data):
        return elbo_per_point(model, guide, data.x, data.times, data.mask,
                              num_particles=config.eval_particles, batch_size=256)

    steps = history.step_seconds
    return {
        "config": asdict(config),
        "steps": len(history),
        "train_elbo_per_point": score(train_data),
        "test_elbo_per_point": score(test_data),
        "median_step_seconds": statistics.median(steps) if steps else None,
        "total_step_seconds": sum(steps),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def evaluate(out_dir, device=None, num_sequences=128, num_particles=100, num_samples=200):
    """Score a saved run on held-out sequences; writes ``evaluation.json``,
    ``interpolation.png`` and ``forecast.png`` and updates ``summary.json``.

    Figures (see :func:`pyro_vpf.evaluation.evaluate_sequences`): ELBO and IW log-likelihood
    per point, coverage and MSE of hidden points (interpolation) and of the last 10 points
    (forecast), in standardised units.
    """
    from pyro_vpf.evaluation import evaluate_sequences

    config, model, guide, train_data, test_data, history = load_run(out_dir, device)
    summary = evaluate_run(config, model, guide, train_data, test_data, history)
    path = _paths(out_dir)["summary.json"]
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        previous.update(summary)
        summary = previous
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    held_out = test_data[: min(num_sequences, len(test_data))]
    result = evaluate_sequences(model, guide, held_out.x, held_out.times, held_out.mask,
                                num_particles=num_particles, num_samples=num_samples,
                                forecast_points=max(1, config.num_points // 4),
                                seed=config.seed)
    figures = {k: v for k, v in result.items() if not isinstance(v, (torch.Tensor, int))}
    figures.update({"sequences": len(held_out), "particles": num_particles,
                    "samples": num_samples})
    with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
        json.dump(figures, f, indent=2)
    _evaluation_figures(held_out, result, out_dir)
    summary["evaluation"] = figures
    return summary


def _evaluation_figures(data, result, out_dir, num_sequences=2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_predictive

    times = data.times.cpu()
    observed = data.unstandardise(data.x).cpu()
    panels = [("interpolation.png", result["interpolation_draws"], 0, result["hidden"]),
              ("forecast.png", result.get("forecast_draws"), result.get("forecast_start"), None)]
    for name, draws, start, hidden in panels:
        if draws is None:
            continue
        draws = data.unstandardise(draws).cpu()
        dims = observed.shape[-1]
        fig, axes = plt.subplots(num_sequences, dims, figsize=(4.2 * dims, 2.6 * num_sequences),
                                 squeeze=False)
        for i in range(num_sequences):
            t = times[i] if times.dim() == 2 else times
            for d in range(dims):
                plot_predictive(t, observed[i, :, d], t[start:], draws[:, i, :, d],
                                ax=axes[i, d], hidden=None if hidden is None else hidden[i],
                                start_time=None if hidden is not None else t[start - 1])
        axes[0, 0].legend(frameon=False, fontsize=7)
        title = ("Interpolation of hidden points" if hidden is not None else
                 "Forecast through the prior after the dashed line")
        fig.suptitle(f"{title} (held-out sequences, original units)")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)


def sample(out_dir, num_points=1001, num_samples=200, device=None):
    """Prior samples of a saved run at ``num_points`` times; rewrites ``samples.png``."""
    config, model, _, train_data, _, _ = load_run(out_dir, device)
    path = _paths(out_dir)["samples.png"]
    _samples_figure(config, model, train_data, path, num_points, num_samples)
    return path


def _write_figures(config, model, guide, train_data, test_data, history, evaluations, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_elbo

    paths = _paths(out_dir)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_elbo(history, ax=ax, evaluations=evaluations)
    ax.set_title("VPF on stochastic Lorenz")
    fig.tight_layout()
    fig.savefig(paths["loss.png"], dpi=120)
    plt.close(fig)
    _samples_figure(config, model, train_data, paths["samples.png"],
                    num_points=max(1001, 25 * config.num_points), num_samples=200)
    _reconstruction_figure(model, guide, test_data, paths["reconstruction.png"])


def _samples_figure(config, model, data, path, num_points, num_samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_bands

    times = data.times if data.times.dim() == 1 else data.times[0]
    fine = torch.linspace(float(times[0]), float(times[-1]), num_points,
                          device=times.device, dtype=times.dtype)
    with torch.no_grad():
        _, x = model.sample_prior(fine, num_samples)
    x, observed = data.unstandardise(x).cpu(), data.unstandardise(data.x).cpu()
    grid = data.times.cpu()
    dims = x.shape[-1]
    fig, axes = plt.subplots(2, dims, figsize=(4.2 * dims, 6), sharex=True, squeeze=False)
    for d in range(dims):
        top, bottom = axes[0, d], axes[1, d]
        for i in range(3):
            t = grid if grid.dim() == 1 else grid[i]
            top.plot(t, observed[i, :, d], "o", color="0.3", ms=2.5,
                     label="data" if i == 0 else None)
            top.plot(fine.cpu(), x[i, :, d], color=f"C{i}", lw=0.7,
                     label=f"prior draws ({num_points} points)" if i == 0 else None)
        n = min(len(observed), num_samples)
        t = grid if grid.dim() == 1 else None
        if t is not None:
            plot_bands(t, observed[:n, :, d], ax=bottom, color="0.4", label="data 5-50-95%")
        plot_bands(fine.cpu(), x[..., d], ax=bottom, color="C0", label="prior 5-50-95%")
        top.set_title(f"channel {d}")
        bottom.set_xlabel("time")
    axes[0, 0].legend(frameon=False, fontsize=8)
    axes[1, 0].legend(frameon=False, fontsize=8)
    fig.suptitle("Prior samples at any resolution vs data (original units)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reconstruction_figure(model, guide, data, path, num_sequences=3, num_draws=200):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_bands

    rows = slice(0, min(num_sequences, len(data)))
    x = data.x[rows]
    times = data.times[rows] if data.times.dim() == 2 else data.times
    mask = None if data.mask is None else data.mask[rows]
    t0, t1 = times[..., 0], times[..., -1]
    unit = torch.linspace(0, 1, 201, device=x.device, dtype=x.dtype)
    query = t0.unsqueeze(-1) + (t1 - t0).unsqueeze(-1) * unit if times.dim() == 2 else (
        t0 + (t1 - t0) * unit)
    if not guide.continuous_time:  # a guide defined at the observation times only
        query = times
    with torch.no_grad():
        z = guide.marginal(x, times, query, mask).sample((num_draws,))
        draws = model.observation_distribution(z).sample()  # (S, n, Q, Dx)
    draws, observed = data.unstandardise(draws).cpu(), data.unstandardise(x).cpu()
    n, dims = x.shape[0], x.shape[-1]
    fig, axes = plt.subplots(n, dims, figsize=(4.2 * dims, 2.6 * n), squeeze=False,
                             sharex="row")
    for i in range(n):
        q = (query[i] if query.dim() == 2 else query).cpu()
        t = (times[i] if times.dim() == 2 else times).cpu()
        for d in range(dims):
            ax = axes[i, d]
            plot_bands(q, draws[:, i, :, d], ax=ax, color="C0",
                       label="posterior predictive 5-50-95%")
            ax.plot(t, observed[i, :, d], "o", color="k", ms=2.5, label="held-out data")
            if i == 0:
                ax.set_title(f"channel {d}")
    axes[0, 0].legend(frameon=False, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time")
    fig.suptitle("Posterior reconstruction of held-out sequences (original units)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prior_demo(num_samples=1000, points=(41, 10_001), latent_dim=2, out_dir="outputs", seed=0,
             device="cpu", hidden_dim=64, num_flow_layers=4):
    """Sample a latent path prior at several resolutions and show that they agree.

    The prior (an OU path pushed through a time-conditioned flow, with random weights) is
    drawn at each resolution in one pass; the law of :math:`z` at the last time must not
    depend on the resolution, which the demo checks and plots.

    Returns:
        dict: per resolution, the time taken and the mean and standard deviation of
        :math:`z(t_K)`; and the figure's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_marginals, plot_paths
    from pyro_vpf.prior import LatentPathPrior

    torch.manual_seed(seed)
    device = torch.device(device)
    prior = LatentPathPrior(latent_dim, hidden_dim, num_flow_layers, time_scale=1.0)
    with torch.no_grad():  # random, non-trivial flow weights: the prior is not just an OU path
        for p in prior.flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prior.to(device)

    results, finals, draws = {}, [], {}
    with torch.no_grad():
        for n in points:
            times = torch.linspace(0.0, 4.0, n, device=device)
            start = time.perf_counter()
            z = prior.sample(times, num_samples)
            elapsed = time.perf_counter() - start
            finals.append(z[:, -1])
            draws[n] = (times, z)
            results[n] = {"seconds": elapsed, "mean": z[:, -1].mean(0).tolist(),
                          "std": z[:, -1].std(0).tolist()}

    os.makedirs(out_dir, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
    coarse, fine = min(points), max(points)
    plot_paths(*draws[fine], ax=axes[0], max_paths=5, color="C0", alpha=0.6,
               label=f"{fine} points")
    plot_paths(*draws[coarse], ax=axes[0], max_paths=5, color="C3", marker="o", ms=2.5,
               lw=0.8, label=f"{coarse} points")
    axes[0].legend(frameon=False)
    axes[0].set_title("prior paths at two resolutions (independent draws)")
    plot_marginals(finals, [f"{n} points" for n in points], ax=axes[1])
    axes[1].set_title("z[0] at the last time: same law at every resolution")
    fig.tight_layout()
    figure = os.path.join(out_dir, "prior_samples.png")
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return {"resolutions": results, "figure": figure}
