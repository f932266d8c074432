r"""Stochastic variational inference for any model/guide pair of the collection."""

import math
import numbers
import os
import pickle
import random
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_vpf.infer.core import (
    OptimSettings,
    all_finite,
    is_non_finite_error,
    make_elbo,
    stopped_message,
)
from pyro_vpf.validation import check_integer, check_program_data

__all__ = ["FitHistory", "atomic_save", "fit", "load_checkpoint", "read_checkpoint",
           "save_checkpoint"]

@dataclass
class FitHistory:
    """What :func:`fit` records, one entry per step.

    ``loss`` is Pyro's loss (minus the ELBO estimate of the whole data set, nats);
    ``elbo_per_point`` is the ELBO per observed time point; ``kl_weight`` the annealing
    weight used; ``step_seconds`` the wall time of each step; ``lr`` the learning rate of
    each step (empty for runs recorded before it was kept).
    """

    loss: list = field(default_factory=list)
    elbo_per_point: list = field(default_factory=list)
    kl_weight: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)
    lr: list = field(default_factory=list)

    def __len__(self):
        return len(self.loss)


def _module_params(name):
    return "$$$" in name  # parameters that pyro.module registered from an nn.Module


def save_checkpoint(path, model, guide, optimizer, step, history, config=None):
    """Write model, guide, optimiser, free params of the param store, RNG states and history.

    Written to a temporary file and renamed, so an interrupted save never corrupts the
    previous checkpoint.
    """
    store = pyro.get_param_store().get_state()
    state = {
        "step": step,
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optimizer": optimizer.get_state(),
        "param_store": {
            "params": {k: v for k, v in store["params"].items() if not _module_params(k)},
            "constraints": {k: v for k, v in store["constraints"].items()
                            if not _module_params(k)},
        },
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": _numpy_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "history": history.__dict__,
        "config": config or {},
    }
    atomic_save(state, path)


def atomic_save(obj, path):
    """``torch.save(obj)`` to ``path`` atomically: written to a new uniquely named file in the
    same directory (never an existing file or link), flushed to disk, then renamed over
    ``path``, so a reader sees the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


#: what every checkpoint written by :func:`save_checkpoint` holds
_CHECKPOINT_KEYS = {"step", "model", "guide", "optimizer", "param_store", "rng", "history",
                    "config"}


def _numpy_rng_state():
    """numpy's global RNG state as tensors and plain values (no arrays, see
    :func:`read_checkpoint`)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(state):
    if isinstance(state, dict):
        state = (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                 state["has_gauss"], state["cached_gaussian"])
    np.random.set_state(state)  # noqa: NPY002 - the global state is what we restore


def _safe_classes():
    """The classes a checkpoint may hold besides tensors and plain containers: the
    constraints of free parameters in Pyro's param store."""
    from pyro.distributions import constraints as pyro_constraints
    from torch.distributions import constraints as torch_constraints

    return [c for module in (torch_constraints, pyro_constraints) for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, torch_constraints.Constraint)]


def read_checkpoint(path, map_location=None, trusted=False):
    """The raw contents of a checkpoint of :func:`fit` or ``fit_distributed``: ``torch.load``
    that unpickles tensors, plain containers and constraints only (so a checkpoint cannot run
    code), or anything with ``trusted=True``; a clear ``ValueError`` naming the file for an
    empty, truncated or foreign one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"checkpoint {path} is empty (a write that never finished?)")
    try:
        if trusted:
            state = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(_safe_classes()):
                state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err).lower() and "unsupported global" not in str(err).lower():
            raise ValueError(f"checkpoint {path} is not a readable torch file: {err}") from err
        raise ValueError(
            f"{path} holds objects other than tensors, plain containers and constraints: "
            "unpickling it could run code, so it is refused. Pass trusted=True only for a file "
            "from a source you trust (e.g. a checkpoint of an earlier pyro_vpf, which stored "
            "numpy's RNG state as an array)") from err
    except (EOFError, OSError, RuntimeError) as err:  # truncated or not a torch file
        raise ValueError(f"checkpoint {path} is truncated or not a torch checkpoint: "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or not (_is_lightning_checkpoint(state) or _CHECKPOINT_KEYS
                                           <= set(state)):
        kind = type(state).__name__ if not isinstance(state, dict) else (
            f"a dict with keys {sorted(state)[:8]}")
        raise ValueError(f"{path} is not a checkpoint of pyro_vpf's fit or fit_distributed "
                         f"(it holds {kind})")
    return state


def _drop_module_params(store):
    for name in [n for n in store.keys() if _module_params(n)]:
        del store[name]


def _is_lightning_checkpoint(state):
    return "state_dict" in state and "pytorch-lightning_version" in state


def _load_lightning_state(state, model, guide):
    """Model, guide and history of a checkpoint of an ``SVIModule`` (Lightning's format)."""
    weights = state["state_dict"]
    for prefix, module in (("model.", model), ("guide.", guide)):
        module.load_state_dict({name[len(prefix):]: value for name, value in weights.items()
                                if name.startswith(prefix)})
    extra = weights.get("_extra_state", {})
    return state["global_step"], FitHistory(**extra.get("history", {})), extra.get("config", {})


def load_checkpoint(path, model, guide, optimizer=None, map_location=None, *, trusted=False):
    """Restore what :func:`save_checkpoint` wrote. Returns ``(step, history, config)``.

    The file is read with ``torch.load(weights_only=True)``: tensors, plain containers and
    the constraints of Pyro's free parameters only, so a checkpoint from elsewhere cannot run
    code (one holding anything else raises ``ValueError``); ``trusted=True`` lifts that for a
    file whose source you trust.

    Module parameters are copied into the existing tensors, which ``pyro.module``
    registers again on the next call; free parameters go back into the param store.
    A checkpoint of :func:`pyro_vpf.infer.lightning.fit_distributed` (Lightning's format)
    loads too, into model and guide (it has no optimiser state for ``optimizer``: resume
    such a run with ``fit_distributed(resume=path)``); this needs no Lightning install.
    """
    return _restore(read_checkpoint(path, map_location, trusted), path, model, guide, optimizer)


def _with_learning_rate(optimizer_state, lr):
    """The optimiser state with every parameter group's current learning rate set to
    ``lr``."""
    return {name: {**state, "param_groups": [{**group, "lr": lr}
                                             for group in state["param_groups"]]}
            for name, state in optimizer_state.items()}


def _restore(state, path, model, guide, optimizer=None):
    store = pyro.get_param_store()
    if _is_lightning_checkpoint(state):
        if optimizer is not None:
            raise ValueError(f"{path} was written by fit_distributed (a Lightning checkpoint):"
                             " resume it with fit_distributed(..., resume=path)")
        loaded = _load_lightning_state(state, model, guide)
        _drop_module_params(store)
        return loaded
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    _drop_module_params(store)
    for name, value in state["param_store"]["params"].items():
        store[name] = value
        store._constraints[name] = state["param_store"]["constraints"][name]
    if optimizer is not None:
        optimizer.set_state(state["optimizer"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    _set_numpy_rng_state(rng["numpy"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"], FitHistory(**state["history"]), state["config"]


class _Guard:
    r"""The divergence contract of :func:`fit`: a non-finite loss, a non-finite parameter
    after an update (a non-finite gradient) or a distribution's validation error caused by
    non-finite values becomes one ``FloatingPointError``, and the checkpoint on disk only
    ever holds parameters whose loss was evaluated finite.

    A checkpoint is first written beside the target (``<path>.pending``) and moved over it
    only once the loss at its parameters and the update from them are finite (the next
    step's, or an extra evaluation of loss and gradients after the last step); a pending
    checkpoint of parameters that diverged is deleted.
    """

    def __init__(self, model, guide, checkpoint_path, resume):
        self.model, self.guide = model, guide
        self.path = checkpoint_path
        self.pending = None if checkpoint_path is None else f"{checkpoint_path}.pending"
        self.last_saved = resume

    def _stop(self, step, message=""):
        if self.pending is not None and os.path.exists(self.pending):
            os.remove(self.pending)  # its parameters are the ones that diverged
        return FloatingPointError(message + stopped_message(step, self.last_saved))

    def _run(self, fn, step):
        try:
            loss = fn()
        except ValueError as err:
            if is_non_finite_error(err) or not all_finite(self.model, self.guide):
                raise self._stop(step, "a distribution met non-finite values: ") from err
            raise
        if not math.isfinite(loss):
            raise self._stop(step, f"the loss became {loss}: ")
        return loss

    def confirm(self):
        """The pending checkpoint's parameters gave a finite loss: it becomes the checkpoint."""
        if self.pending is not None and os.path.exists(self.pending):
            os.replace(self.pending, self.path)
            self.last_saved = self.path

    def step(self, svi, step, *args, **kwargs):
        loss = self._run(lambda: svi.step(*args, **kwargs), step)
        self.check_parameters(step + 1)
        self.confirm()  # the parameters saved before this step gave a finite loss and update
        return loss

    def evaluate(self, svi, step, *args, **kwargs):
        """The loss and gradients at the current parameters, without an update."""
        params = [p for m in (self.model, self.guide) for p in m.parameters()]
        try:
            loss = self._run(lambda: svi.loss_and_grads(svi.model, svi.guide, *args, **kwargs),
                             step)
            grads = [p.grad for p in params if p.grad is not None]
            if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
                raise self._stop(step, "the gradient became non-finite: ")
        finally:
            for p in params:
                p.grad = None
        return loss

    def check_parameters(self, step):
        if not all_finite(self.model, self.guide):  # a non-finite gradient reached them
            raise self._stop(step, "an update made parameters non-finite: ")


def fit(model, guide, x, times=None, mask=None, *, num_steps=1000, batch_size=None, lr=1e-3,
        num_particles=1, vectorize_particles=True, elbo="trace", clip_norm=10.0, lr_decay=1.0,
        beta=1.0, kl_anneal_steps=0, kl_start=0.1, checkpoint_path=None, checkpoint_every=None,
        resume=None, progress=True, callback=None, metadata=None):
    r"""Fit ``model`` and ``guide`` to sequences with SVI; no hand-written loss.

    Each step is one ``SVI.step`` of ``pyro.infer.Trace_ELBO`` (or
    ``TraceMeanField_ELBO``) with ``pyro.optim.ClippedAdam``, on ``batch_size`` sequences
    drawn by the model's plate (which rescales the likelihood, so the loss estimates the
    whole data set). The latent sites are scaled by :math:`\beta` (``poutine.scale`` inside
    the programs, through their ``kl_weight`` argument), i.e. the objective
    :math:`E_q[\log p(x|z)] - \beta\,\mathrm{KL}`; with ``kl_anneal_steps > 0``,
    :math:`\beta` rises linearly from ``kl_start`` to ``beta``.

    Args:
        model, guide: programs with signature ``(x, times, mask=None, *, batch_size,
            kl_weight)`` (sequence models), or ``(x, *, batch_size, kl_weight)`` for static
            models such as :class:`~pyro_vpf.models.FlowVAE` (then leave ``times`` and
            ``mask`` out).
        x (torch.Tensor): ``(B, K+1, Dx)`` sequences, or ``(N, D)`` data points.
        times (torch.Tensor): ``(K+1,)`` or ``(B, K+1)``; ``None`` for static models.
        mask (torch.Tensor): ``None``, ``(B, K+1)`` or ``(B, K+1, Dx)`` bool.
        num_steps (int): total steps (a resumed run continues up to this number).
        batch_size (int): sequences per step (default: all).
        lr (float): Adam learning rate; ``lr_decay`` its per-step decay factor.
        num_particles (int): ELBO particles, vectorised by default.
        beta (float): the final KL weight (1: the ELBO; other values: a beta-VAE objective).
        elbo (str or ELBO): ``"trace"``, ``"meanfield"`` or an ELBO instance.
        clip_norm (float): gradient clipping of ClippedAdam.
        checkpoint_path (str): where checkpoints go; ``checkpoint_every`` steps between them
            (and always at the end).
        resume (str): a checkpoint to continue from (optimiser, RNG and history included:
            the continued run equals an uninterrupted one).
        progress (bool): show a tqdm bar with the running ELBO per point.
        callback: called as ``callback(step, history)`` after every step.
        metadata (dict): plain values stored in every checkpoint (``config["metadata"]`` of
            :func:`load_checkpoint`), e.g. the settings of the run that wrote it, so that a
            checkpoint describes itself.

    Returns:
        FitHistory: the per-step record.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite; the last checkpoint on
            disk is left as it was (the last good state).
    """
    like = next(model.parameters())
    args, B, points = check_program_data(model, x, times, mask)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or not 1 <= batch_size <= B):
        raise ValueError(f"batch_size must be an integer in [1, {B}], got {batch_size!r}")
    check_integer("num_steps", num_steps, 0)
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs a checkpoint_path")
    batch_size = None if batch_size == B else batch_size
    settings = OptimSettings(lr=lr, clip_norm=clip_norm, lr_decay=lr_decay, beta=beta,
                             kl_anneal_steps=kl_anneal_steps, kl_start=kl_start,
                             num_particles=num_particles)
    observed_points = float(points.sum())
    if len(args) == 3 and args[2] is not None and not bool(args[2].any()):
        raise ValueError("mask marks no entry observed: there is nothing to fit")

    optimizer = pyro.optim.ClippedAdam(settings.adam_args())
    svi = SVI(model, guide, optimizer, make_elbo(elbo, num_particles, vectorize_particles))
    config = {"num_steps": num_steps, "batch_size": batch_size, "elbo": str(elbo),
              **settings.as_dict(), "metadata": dict(metadata or {})}
    start, history = 0, FitHistory()
    if resume is not None:
        state = read_checkpoint(resume, like.device)
        if not _is_lightning_checkpoint(state) and state["config"].get("lr") != lr:
            # a new learning rate on resume is honoured: the schedule continues from the
            # step reached, as if the run had started with it (lr * lr_decay**step)
            state["optimizer"] = _with_learning_rate(state["optimizer"],
                                                     lr * lr_decay ** state["step"])
        start, history, _ = _restore(state, resume, model, guide, optimizer)

    bar = tqdm(range(start, num_steps), initial=start, total=num_steps, disable=not progress,
               desc="SVI", dynamic_ncols=True)
    guard = _Guard(model, guide, checkpoint_path, resume)
    for step in bar:
        kl_weight = settings.kl_weight(step)
        tic = time.perf_counter()
        loss = guard.step(svi, step, *args, batch_size=batch_size, kl_weight=kl_weight)
        elapsed = time.perf_counter() - tic
        history.loss.append(loss)
        history.elbo_per_point.append(-loss / observed_points)
        history.kl_weight.append(kl_weight)
        history.step_seconds.append(elapsed)
        history.lr.append(lr * lr_decay ** (step + 1))  # ClippedAdam decays, then steps
        if progress:
            bar.set_postfix(elbo_per_point=f"{np.mean(history.elbo_per_point[-20:]):.3f}")
        if callback is not None:
            callback(step, history)
        done = step + 1
        if checkpoint_path and (
            done == num_steps or (checkpoint_every and done % checkpoint_every == 0)
        ):
            save_checkpoint(guard.pending, model, guide, optimizer, done, history, config)
            if done == num_steps:  # no next step to evaluate these parameters: do it here
                guard.evaluate(svi, done, *args, batch_size=batch_size, kl_weight=kl_weight)
                guard.confirm()
    bar.close()
    return history
