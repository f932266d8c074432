r"""Runs of the command line: train, evaluate and sample, each in one output directory.

Everything a run produces goes into it: ``config.json``, ``checkpoint.pt``, ``loss.png``,
``samples.png``, ``reconstruction.png`` and ``summary.json`` (``evaluate`` adds
``evaluation.json``, ``interpolation.png`` and ``forecast.png``).
"""

import json
import os
import statistics
import time
from dataclasses import asdict, replace

import torch

from pyro_vpf.cli.config import TrainConfig, build, load_data, make_elbo
from pyro_vpf.cli.figures import evaluation_figures, samples_figure, write_figures

__all__ = ["ARCHITECTURE", "evaluate", "evaluate_run", "load_run", "sample", "train"]


def _paths(out_dir):
    return {name: os.path.join(out_dir, name) for name in
            ("config.json", "checkpoint.pt", "loss.png", "samples.png", "reconstruction.png",
             "summary.json")}


#: The settings that fix the shapes of a run's model and guide; a resumed run must keep them.
ARCHITECTURE = ("model", "likelihood", "latent_dim", "hidden_dim", "num_flow_layers",
                "num_obs_flow_layers", "conditioner_layers", "base", "guide")


def _stored_config(paths):
    """The settings of the run in a directory: ``config.json``, or those its checkpoint
    carries."""
    if os.path.exists(paths["config.json"]):
        with open(paths["config.json"]) as f:
            return TrainConfig.from_dict(json.load(f))
    from pyro_vpf.infer.checkpoint import read_checkpoint

    config = read_checkpoint(paths["checkpoint.pt"]).get("config", {})
    stored = config.get("metadata", {}).get("run")
    if stored is None:
        raise FileNotFoundError(f"{paths['config.json']} not found and the checkpoint does "
                                "not carry its run's settings")
    return TrainConfig.from_dict(stored)


def _write_json(path, value):
    """Write ``value`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def load_run(out_dir, device=None):
    """Rebuild ``(config, model, guide, train, test, history)`` from a run's directory."""
    import pyro

    from pyro_vpf.infer import load_checkpoint

    paths = _paths(out_dir)
    if not os.path.exists(paths["checkpoint.pt"]):
        raise FileNotFoundError(f"{paths['checkpoint.pt']} not found: run `python -m pyro_vpf "
                                f"train --out-dir {out_dir}` first")
    config = _stored_config(paths)
    if device is not None:
        config.device = device
    train_data, test_data = load_data(config)
    model, guide = build(config, train_data.obs_dim)
    pyro.clear_param_store()
    _, history, _ = load_checkpoint(paths["checkpoint.pt"], model, guide,
                                    map_location=config.device)
    return config, model, guide, train_data, test_data, history


def check_run(config, out_dir, resume=False):
    """Refuse, before anything is written, a run that :func:`train` could not start: a resume
    without a checkpoint (``FileNotFoundError``) or with another architecture, or a new run
    of no steps (``ValueError``)."""
    paths = _paths(out_dir)
    if resume:
        if not os.path.exists(paths["checkpoint.pt"]):
            raise FileNotFoundError(f"nothing to resume: {paths['checkpoint.pt']} does not "
                                    "exist")
        stored = _stored_config(paths)
        changed = {k: (getattr(stored, k), getattr(config, k)) for k in ARCHITECTURE
                   if getattr(stored, k) != getattr(config, k)}
        if changed:
            raise ValueError(f"--resume needs the run's architecture; changed (saved, given): "
                             f"{changed}. Train into a new --out-dir instead")
    elif config.num_steps < 1:
        raise ValueError("a new run needs num_steps >= 1 (--steps): it would write no "
                         "checkpoint")


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

    check_run(config, out_dir, resume)
    os.makedirs(out_dir, exist_ok=True)
    paths = _paths(out_dir)
    placement = config
    if config.distributed:
        from pyro_vpf.infer.lightning import fit_distributed, is_global_zero

        placement = replace(config, device="cpu")
    writer = not config.distributed or is_global_zero()
    if writer and not resume:  # a new run replaces an old one in this directory, whole
        for name in ("config.json", "checkpoint.pt", "summary.json"):
            if os.path.exists(paths[name]):
                os.remove(paths[name])
    config_written = [False]

    def write_config():  # with the run's first checkpoint: the directory stays consistent
        if writer and not config_written[0] and os.path.exists(paths["checkpoint.pt"]):
            _write_json(paths["config.json"], asdict(config))
            config_written[0] = True

    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    train_data, test_data = load_data(placement)
    model, guide = build(placement, train_data.obs_dim)
    evaluations = []
    eval_every = max(1, config.num_steps // 10)
    held_out = {}

    def evaluate_now(step, history):
        write_config()
        if (step + 1) % eval_every == 0 or step + 1 == config.num_steps:
            device = next(model.parameters()).device  # where the training process has it
            if device not in held_out:
                held_out[device] = test_data.to(device)
            data = held_out[device]
            state = torch.get_rng_state()  # evaluation draws must not change training's
            evaluations.append((step + 1, elbo_per_point(
                model, guide, data.x, data.times, data.mask, num_particles=4, batch_size=256,
                elbo=_score_elbo(config, 4))))
            torch.set_rng_state(state)

    settings = dict(
        num_steps=config.num_steps, lr=config.lr, num_particles=config.num_particles,
        elbo=make_elbo(config), clip_norm=config.clip_norm, kl_anneal_steps=config.kl_anneal_steps,
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
                      batch_size=min(config.batch_size, len(train_data)),
                      metadata={"run": asdict(config)}, **settings)
    write_config()
    wall = time.perf_counter() - start
    summary = evaluate_run(config, model, guide, train_data, test_data, history)
    summary.update({"train_seconds": wall, "held_out_during_training": evaluations})
    write_figures(config, model, guide, train_data, test_data, history, evaluations, paths)
    _write_json(paths["summary.json"], summary)
    return summary


def _score_elbo(config, particles):
    """The ELBO estimator that scores a run (``None``: ``elbo_per_point``'s Trace_ELBO)."""
    if config.model == "sde":
        from pyro_vpf.infer import SDEMatchingELBO

        return SDEMatchingELBO(num_particles=particles, num_time_samples=64)
    return None


def evaluate_run(config, model, guide, train_data, test_data, history):
    """Final train and test ELBO per time point and step-time figures of a fitted run."""
    from pyro_vpf.infer import elbo_per_point

    device = torch.device(config.device)
    cuda = [] if device.type != "cuda" else [
        device.index if device.index is not None else torch.cuda.current_device()]

    def score(data):  # seeded: the same run scores the same after training and in evaluate
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(config.seed)
            return elbo_per_point(model, guide, data.x, data.times, data.mask,
                                  num_particles=config.eval_particles, batch_size=256,
                                  elbo=_score_elbo(config, config.eval_particles))

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
    if config.model == "sde":
        raise ValueError("evaluate scores log-likelihoods by importance sampling, which needs "
                         "a path density: the latent SDE (model 'sde') has none; its train "
                         "summary holds its SDE-matching ELBO")
    summary = evaluate_run(config, model, guide, train_data, test_data, history)
    path = _paths(out_dir)["summary.json"]
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        previous.update(summary)
        summary = previous
    _write_json(path, summary)
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
    evaluation_figures(held_out, result, out_dir)
    summary["evaluation"] = figures
    return summary


def sample(out_dir, num_points=1001, num_samples=200, device=None):
    """Prior samples of a saved run at ``num_points`` times; rewrites ``samples.png``."""
    config, model, _, train_data, _, _ = load_run(out_dir, device)
    path = _paths(out_dir)["samples.png"]
    samples_figure(config, model, train_data, path, num_points, num_samples)
    return path
