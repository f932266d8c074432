r"""Checkpoints of both training loops: written atomically, read without unpickling code.

:func:`save_checkpoint` writes what :func:`~pyro_vpf.infer.fit` needs to resume bit-exactly
(model, guide, optimiser, free parameters of Pyro's param store, every RNG state, the history
and the run's configuration); :func:`read_checkpoint` reads it, or a checkpoint of the
Lightning ``SVIModule`` (Lightning's own layout), with ``torch.load(weights_only=True)``;
:func:`load_checkpoint` restores either into a model and guide.
"""

import os
import pickle
import random
import tempfile

import numpy as np
import pyro
import torch

from pyro_vpf.infer.core import FitHistory, stopped_message

__all__ = ["PendingCheckpoint", "atomic_save", "is_lightning_checkpoint", "load_checkpoint",
           "read_checkpoint", "restore", "save_checkpoint", "with_learning_rate"]


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
    if not isinstance(state, dict) or not (is_lightning_checkpoint(state) or _CHECKPOINT_KEYS
                                           <= set(state)):
        kind = type(state).__name__ if not isinstance(state, dict) else (
            f"a dict with keys {sorted(state)[:8]}")
        raise ValueError(f"{path} is not a checkpoint of pyro_vpf's fit or fit_distributed "
                         f"(it holds {kind})")
    return state


def _drop_module_params(store):
    for name in [n for n in store.keys() if _module_params(n)]:
        del store[name]


def is_lightning_checkpoint(state):
    return "state_dict" in state and "pytorch-lightning_version" in state


def _load_lightning_state(state, model, guide, path):
    """Model, guide and history of a checkpoint of an ``SVIModule`` (Lightning's format)."""
    weights = state["state_dict"]
    for prefix, module in (("model.", model), ("guide.", guide)):
        _load_module(module, {name[len(prefix):]: value for name, value in weights.items()
                              if name.startswith(prefix)}, path, prefix[:-1])
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
    return restore(read_checkpoint(path, map_location, trusted), path, model, guide, optimizer)


def with_learning_rate(optimizer_state, lr):
    """The optimiser state with every parameter group's current learning rate set to
    ``lr``."""
    return {name: {**state, "param_groups": [{**group, "lr": lr}
                                             for group in state["param_groups"]]}
            for name, state in optimizer_state.items()}


def _load_module(module, weights, path, role):
    """``module.load_state_dict(weights)``, with a ``ValueError`` naming the file and the
    module when the checkpoint was written for another architecture."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{path} holds a {role} of another architecture than the "
                         f"{type(module).__name__} given (build it with the settings of the "
                         f"run that wrote the file): {err}") from err


def restore(state, path, model, guide, optimizer=None):
    store = pyro.get_param_store()
    if is_lightning_checkpoint(state):
        if optimizer is not None:
            raise ValueError(f"{path} was written by fit_distributed (a Lightning checkpoint):"
                             " resume it with fit_distributed(..., resume=path)")
        loaded = _load_lightning_state(state, model, guide, path)
        _drop_module_params(store)
        return loaded
    _load_module(model, state["model"], path, "model")
    _load_module(guide, state["guide"], path, "guide")
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


class PendingCheckpoint:
    r"""The checkpoint side of the divergence contract, shared by both training loops.

    A checkpoint is written beside its target, at ``<path>.pending``, and moved over
    ``path`` (:meth:`confirm`) only once the loss at its parameters and the update from them
    proved finite; when training stops on non-finite values the pending file, whose
    parameters are the ones that diverged, is deleted (:meth:`stop`). So ``path`` only ever
    holds parameters whose loss was evaluated finite. A run starts with :meth:`discard_stale`:
    a pending checkpoint found then was left by an interrupted run and never confirmed.

    Args:
        path (str): the checkpoint's path, or ``None`` (nothing is written).
        last_saved (str): the checkpoint a stop message names until the first confirmation
            (the one a run resumed from), or ``None``.
        writer (bool): whether this process moves and deletes files (one process of a
            data-parallel run does; every process keeps ``last_saved``).
    """

    def __init__(self, path, last_saved=None, writer=True):
        self.path = path
        self.pending = None if path is None else f"{path}.pending"
        self.last_saved = last_saved
        self.writer = writer

    def discard_stale(self):
        """Delete what an interrupted run (killed, say) left beside ``path``: its pending
        checkpoint, whose parameters were never shown to give a finite loss (confirming it
        with this run's first step would put them over ``path``), and the temporary files of
        its unfinished writes (:func:`atomic_save`'s)."""
        if not self.writer or self.pending is None:
            return
        directory = os.path.dirname(os.path.abspath(self.pending))
        prefix = f".{os.path.basename(self.pending)}."
        names = os.listdir(directory) if os.path.isdir(directory) else []
        stale = [os.path.join(directory, name) for name in names
                 if name.startswith(prefix) and name.endswith(".tmp")]
        for name in [self.pending, *stale]:
            if os.path.isfile(name):
                os.remove(name)

    def confirm(self):
        """The pending checkpoint's parameters gave a finite loss: it becomes the checkpoint."""
        if self.pending is not None and os.path.exists(self.pending):
            if self.writer:
                os.replace(self.pending, self.path)
            self.last_saved = self.path

    def stop(self, step, message=""):
        """Delete the pending checkpoint and return the ``FloatingPointError`` to raise."""
        if self.writer and self.pending is not None and os.path.exists(self.pending):
            os.remove(self.pending)
        return FloatingPointError(message + stopped_message(step, self.last_saved))
