"""Command line: ``python -m pyro_vpf {train,sample,evaluate,demo,prior} --help``."""

import argparse
import json
import sys
from dataclasses import fields

import torch

__all__ = ["main"]

_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Command-line flags for the TrainConfig fields a user is most likely to change.
_TRAIN_FLAGS = {
    "steps": "num_steps", "batch_size": "batch_size", "lr": "lr", "latent_dim": "latent_dim",
    "hidden_dim": "hidden_dim", "flow_layers": "num_flow_layers",
    "obs_flow_layers": "num_obs_flow_layers", "conditioner_layers": "conditioner_layers",
    "num_sequences": "num_sequences", "num_points": "num_points", "t_end": "t_end",
    "missing_rate": "missing_rate", "particles": "num_particles", "elbo": "elbo",
    "kl_anneal_steps": "kl_anneal_steps", "checkpoint_every": "checkpoint_every",
    "seed": "seed", "devices": "devices", "num_nodes": "num_nodes", "strategy": "strategy",
}

# Help of the flags whose default alone does not say what they do.
_HELP = {
    "devices": "processes per node (GPUs with --device cuda, else CPU processes); more than 1 "
               "trains with Lightning's DDP (the `distributed` extra); default 1",
    "num_nodes": "nodes of a multi-node run (launched by torchrun or srun); default 1",
    "strategy": "Lightning strategy, e.g. ddp or ddp_spawn; naming one trains through "
                "pyro_vpf.infer.lightning.fit_distributed (default: ddp when --devices > 1)",
}


def _add_train_arguments(parser):
    from pyro_vpf.cli.config import TrainConfig
    from pyro_vpf.guides import DEFAULT_GUIDE, GUIDES

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for flag, name in _TRAIN_FLAGS.items():
        default = defaults[name]
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=name, type=type(default),
                            default=None, help=_HELP.get(flag, f"default {default}"))
    from pyro_vpf.cli.config import MODELS
    from pyro_vpf.models.path_model import LIKELIHOODS

    parser.add_argument("--model", dest="model", choices=list(MODELS), default=None,
                        help=f"the model: the VPF or the latent neural SDE (trained by SDE "
                             f"matching, with the affine guide); default {defaults['model']}")
    parser.add_argument("--likelihood", dest="likelihood", choices=list(LIKELIHOODS),
                        default=None, help=f"observation likelihood (default "
                                           f"{defaults['likelihood']})")
    parser.add_argument("--guide", dest="guide", choices=list(GUIDES),
                        default=None, help=f"posterior family (default {DEFAULT_GUIDE}; "
                                           "affine for --model sde)")
    from pyro_vpf.processes import BASES

    parser.add_argument("--base", dest="base", choices=list(BASES), default=None,
                        help=f"base process of the latent path (default {defaults['base']})")
    parser.add_argument("--irregular", action="store_true",
                        help="per-sequence irregular observation times")
    parser.add_argument("--device", default=_DEVICE)
    parser.add_argument("--fast", action="store_true", help="tiny sizes (seconds; for tests)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --out-dir")


def _config(args):
    from pyro_vpf.cli.config import TrainConfig

    overrides = {name: getattr(args, name) for name in _TRAIN_FLAGS.values()
                 if getattr(args, name) is not None}
    overrides["device"] = args.device
    if args.irregular:
        overrides["irregular"] = True
    if args.guide is not None:
        overrides["guide"] = args.guide
    for name in ("base", "model", "likelihood"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return TrainConfig.fast(**overrides) if args.fast else TrainConfig(**overrides)


def _print_summary(summary):
    keys = ("steps", "train_elbo_per_point", "test_elbo_per_point", "median_step_seconds",
            "train_seconds")
    for key in keys:
        if key in summary and summary[key] is not None:
            value = summary[key]
            print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else
                  f"{key:>22}: {value}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pyro_vpf",
        description="Train, sample and evaluate the VPF (or the latent SDE) on stochastic "
                    "Lorenz data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fit a model; writes checkpoint, figures, summary")
    train.add_argument("--out-dir", default="outputs/train")
    _add_train_arguments(train)

    demo = sub.add_parser(
        "demo", help="train with the default configuration into outputs/demo, then evaluate")
    demo.add_argument("--out-dir", default="outputs/demo")
    _add_train_arguments(demo)

    sample = sub.add_parser("sample", help="prior samples of a trained run at any resolution")
    sample.add_argument("--out-dir", default="outputs/train")
    sample.add_argument("--points", type=int, default=1001)
    sample.add_argument("--num-samples", type=int, default=200)
    sample.add_argument("--device", default=None)

    evaluate = sub.add_parser(
        "evaluate", help="ELBO, IW log-likelihood, coverage and forecast error of a run")
    evaluate.add_argument("--out-dir", default="outputs/train")
    evaluate.add_argument("--device", default=None)

    prior = sub.add_parser("prior", help="sample an untrained latent prior at two resolutions")
    prior.add_argument("--num-samples", type=int, default=1000)
    prior.add_argument("--points", type=int, nargs="+", default=[41, 10_001])
    prior.add_argument("--out-dir", default="outputs/prior")
    prior.add_argument("--seed", type=int, default=0)
    prior.add_argument("--device", default=_DEVICE)
    prior.add_argument("--fast", action="store_true", help="small sizes (for tests)")

    args = parser.parse_args(argv)
    from pyro_vpf.cli import figures, run

    if args.command in ("train", "demo"):
        try:
            config = _config(args)
            run.check_run(config, args.out_dir, resume=args.resume)
        except (ValueError, FileNotFoundError) as err:  # a usage error, exit status 2
            (train if args.command == "train" else demo).error(str(err))
        summary = run.train(config, args.out_dir, resume=args.resume)
        if summary is None:  # another process of a distributed run: rank 0 reports
            return 0
        _print_summary(summary)
        written = "loss.png samples.png reconstruction.png summary.json checkpoint.pt config.json"
        if args.command == "demo":
            evaluation = run.evaluate(args.out_dir, args.device)["evaluation"]
            print(json.dumps(evaluation, indent=1))
            written += " evaluation.json interpolation.png forecast.png"
        print(f"outputs in {args.out_dir}: {written}")
    elif args.command == "sample":
        if args.points < 2 or args.num_samples < 1:
            parser.error("--points must be >= 2 and --num-samples >= 1")
        print(run.sample(args.out_dir, args.points, args.num_samples, args.device))
    elif args.command == "evaluate":
        summary = run.evaluate(args.out_dir, args.device)
        _print_summary(summary)
        print(json.dumps(summary["evaluation"], indent=1))
        print(f"written: {args.out_dir}/evaluation.json interpolation.png forecast.png")
    elif args.command == "prior":
        points = [11, 201] if args.fast else args.points
        num_samples = 32 if args.fast else args.num_samples
        if any(p < 2 for p in points) or num_samples < 2:
            parser.error("--points must be >= 2 and --num-samples >= 2")
        out = figures.prior_demo(num_samples, points, out_dir=args.out_dir, seed=args.seed,
                                  device=args.device)
        print(f"{'points':>8} {'seconds':>9}   mean of z(t_K)        std of z(t_K)")
        for n, r in out["resolutions"].items():
            mean = ", ".join(f"{v:+.3f}" for v in r["mean"])
            std = ", ".join(f"{v:.3f}" for v in r["std"])
            print(f"{n:>8} {r['seconds']:>9.3f}   [{mean}]   [{std}]")
        print(f"figure: {out['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
