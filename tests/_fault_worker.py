"""The training worker of ``test_fault_injection.py``: a fixed small VPF + AffineGuide problem,
fitted with checkpoints after every step, resuming from the checkpoint when one exists.

Run as ``python _fault_worker.py --checkpoint PATH --steps N --out FILE [options]``. It
prints ``ready`` once everything is imported and built, then ``step k`` after every step
(from fit's callback, before that step's checkpoint is written), and at the end writes the
final model and guide parameters and the history to ``FILE``. Single-threaded and seeded:
two runs give bit-identical results.

Options: ``--wait`` waits, after ``ready``, for a line on stdin before it looks for a
checkpoint and trains (so that a worker can start while another one still runs);
``--record DIR`` saves the model and guide parameters after every step ``k`` to
``DIR/k.pt`` (the reference run); ``--slow-fsync S`` makes every ``os.fsync`` take ``S``
seconds more (a slow disk: the window of a checkpoint write is wide enough to be hit);
``--kill-after-pending k`` makes the worker SIGKILL itself as soon as the pending checkpoint
of step ``k`` is in place (before anything confirms it).
"""

import argparse
import os
import signal
import sys
import time

if __name__ == "__main__":
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro_vpf.guides import AffineGuide  # noqa: E402
from pyro_vpf.models import VPF  # noqa: E402

from pyro_vpf.infer import fit  # noqa: E402
from pyro_vpf.infer.checkpoint import atomic_save  # noqa: E402

SEED = 20240611
#: what fit is called with, besides data and checkpoints: subsampled batches, two particles,
#: a decaying learning rate and KL annealing, so that a resumed run must restore the RNG,
#: the optimiser and the schedules to continue exactly
SETTINGS = dict(batch_size=4, lr=1e-2, lr_decay=0.995, num_particles=2, kl_anneal_steps=10,
                kl_start=0.2)


def configure():
    """One thread, deterministic algorithms: the process-wide settings of the worker."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def problem():
    """``(model, guide, x, times, mask)``: 6 sequences of 8 irregular, partly missing points,
    the modules initialised from a fixed seed (the global RNGs are seeded here too)."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    B, K1 = 6, 8
    gaps = 0.05 + 0.3 * torch.rand(B, K1 - 1, generator=gen)
    times = torch.cat([torch.zeros(B, 1), gaps.cumsum(-1)], -1)
    x = torch.stack([times.sin(), times.cos()], -1) + 0.1 * torch.randn(B, K1, 2, generator=gen)
    mask = torch.rand(B, K1, generator=gen) > 0.2
    mask[:, 0] = True
    x = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, float("nan")))
    model = VPF(2, 2, 16, num_flow_layers=1, num_obs_flow_layers=1)
    guide = AffineGuide(2, 2, 16)
    return model, guide, x, times, mask


def parameters(model, guide):
    return {"model": model.state_dict(), "guide": guide.state_dict()}


def inject_faults(checkpoint, slow_fsync, kill_after_pending):
    """Wrap ``os.fsync`` and ``os.replace`` (what the checkpoint writes call)."""
    fsync, replace = os.fsync, os.replace
    pending = f"{checkpoint}.pending"
    written = []

    def slow(fd):
        time.sleep(slow_fsync)
        fsync(fd)

    def replace_then_maybe_die(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        if str(dst) == pending:
            written.append(dst)
            if len(written) == kill_after_pending:
                os.kill(os.getpid(), signal.SIGKILL)

    if slow_fsync:
        os.fsync = slow
    if kill_after_pending is not None:
        os.replace = replace_then_maybe_die


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", default=None)
    parser.add_argument("--slow-fsync", type=float, default=0.0)
    parser.add_argument("--kill-after-pending", type=int, default=None)
    parser.add_argument("--wait", action="store_true")
    args = parser.parse_args(argv)
    configure()
    inject_faults(args.checkpoint, args.slow_fsync, args.kill_after_pending)
    model, guide, x, times, mask = problem()

    def callback(step, history):
        if args.record:
            torch.save(parameters(model, guide), os.path.join(args.record, f"{step + 1}.pt"))
        print(f"step {step + 1}", flush=True)

    print("ready", flush=True)
    if args.wait:
        sys.stdin.readline()
    resume = args.checkpoint if os.path.exists(args.checkpoint) else None
    history = fit(model, guide, x, times, mask, num_steps=args.steps,
                  checkpoint_path=args.checkpoint, checkpoint_every=1, resume=resume,
                  progress=False, callback=callback, **SETTINGS)
    atomic_save({**parameters(model, guide), "history": dict(history.__dict__),
                 "resumed_from": resume}, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
