r"""Data-parallel SVI with PyTorch Lightning: several processes, GPUs or nodes.

Needs the ``distributed`` extra (``pip install "pyro-vpf[distributed]"``, i.e. the
``lightning`` package); the rest of :mod:`pyro_vpf` never imports this module.

The sharded estimator. Let the data set hold :math:`N` sequences with per-sequence ELBO terms
:math:`\ell_i(\theta) = E_{q}[\log p(x_i, z_i) - \log q(z_i \mid x_i)]`, so that the
objective is :math:`L(\theta) = \sum_{i=1}^N \ell_i(\theta)`. Each of :math:`W` processes
draws a shard :math:`S_r` of :math:`b` sequences (a global batch of :math:`G = W b`), runs
model and guide on it under ``poutine.scale(N / b)`` (the programs are called with
``batch_size=None``, so their own plate has size :math:`b` and scale 1: no double scaling)
and back-propagates

.. math::

    \hat L_r = \frac{N}{b} \sum_{i \in S_r} \hat\ell_i,
    \qquad E[\hat L_r] = L \quad \text{(uniform shards, unbiased } \hat\ell_i).

DDP averages the gradients over the processes, so the update uses
:math:`\frac1W \sum_r \nabla \hat L_r = \frac{N}{G} \sum_{i \in S_1 \cup \dots \cup S_W}
\nabla \hat\ell_i`: exactly the single-process estimator of the same global batch, and
still an unbiased estimate of :math:`\nabla L`. The logged loss is the same average of the
:math:`\hat L_r` (all-reduced every step, so every process records the same history).
"""

import inspect
import math
import numbers
import os
import time
import warnings

import pyro
import torch
from pyro import poutine
from pyro.optim.clipped_adam import ClippedAdam
from pyro.poutine.messenger import Messenger
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.infer.checkpoint import (
    PendingCheckpoint,
    is_lightning_checkpoint,
    load_checkpoint,
    read_checkpoint,
)
from pyro_vpf.infer.core import (
    FitHistory,
    OptimSettings,
    all_finite,
    is_non_finite_error,
    make_elbo,
)
from pyro_vpf.optional import optional_import
from pyro_vpf.validation import check_integer, check_program_data

pl = optional_import("lightning.pytorch", needed_by="pyro_vpf.infer.lightning",
                     package="lightning", extra="distributed")

__all__ = [
    "SVIModule",
    "SequenceDataModule",
    "SequenceDataset",
    "collate_sequences",
    "fit_distributed",
    "is_global_zero",
    "load_lightning_checkpoint",
]

#: Lightning warnings that do not apply here: loader workers (the data are in-memory
#: tensors, indexed in the training process: workers would only add start-up time); the
#: mid-epoch caution on resuming (parameters, optimiser, step and history are restored);
#: and a deprecation inside Lightning's own use of torch's pytree (newer torch releases).
_KNOWN_WARNINGS = (
    (r".*does not have many workers.*", Warning),
    (r".*resuming from a checkpoint that ended before the epoch ended.*", Warning),
    (r".*LeafSpec.* is deprecated.*", FutureWarning),
)


def _quiet_known_warnings():
    for message, category in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def _safe_loading(method):
    """``weights_only=True`` for Lightning releases that take it: a checkpoint to resume
    from is unpickled as tensors and plain containers only, so it cannot run code."""
    if "weights_only" in inspect.signature(method).parameters:
        return {"weights_only": True}
    return {}


def _full_checkpoints(method):
    """``weights_only=False`` for Lightning releases that take it (our own checkpoints hold
    optimiser state and the history, not weights only); nothing for older ones."""
    if "weights_only" in inspect.signature(method).parameters:
        return {"weights_only": False}
    return {}


class SequenceDataset(Dataset):
    """A :class:`~pyro_vpf.data.SequenceData` as a torch ``Dataset``: one item per sequence.

    Item ``i`` is ``(x[i], times_i, mask_i)``: ``times_i`` is row ``i`` of per-sequence times
    ``(N, K+1)``, or the shared ``(K+1,)`` times themselves (the same tensor for every
    item, which :func:`collate_sequences` passes through once); ``mask_i`` is ``mask[i]`` or
    ``None``. Static data (``times=None``, e.g. for :class:`~pyro_vpf.models.FlowVAE`) give
    ``(x[i], None, None)``.

    Args:
        x (torch.Tensor): ``(N, K+1, Dx)`` sequences (or ``(N, D)`` static data points), or a
            :class:`~pyro_vpf.data.SequenceData` (then without ``times`` and ``mask``).
        times (torch.Tensor): ``(K+1,)`` shared, ``(N, K+1)`` per sequence, or ``None``.
        mask (torch.Tensor): ``None``, ``(N, K+1)`` or ``(N, K+1, Dx)`` bool.
    """

    def __init__(self, x, times=None, mask=None):
        data = x if isinstance(x, SequenceData) else None
        if data is not None:
            if times is not None or mask is not None:
                raise ValueError("pass a SequenceData alone: its times and mask are its own")
            x, times, mask = data.x, data.times, data.mask
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
            raise ValueError("x must be a tensor with at least one sequence along dim 0")
        N = x.shape[0]
        if times is not None and (times.dim() not in (1, 2) or
                                  (times.dim() == 2 and times.shape[0] != N)):
            raise ValueError(f"times must have shape (K+1,) or ({N}, K+1), "
                             f"got {tuple(times.shape)}")
        if mask is not None and mask.shape[0] != N:
            raise ValueError(f"mask must have {N} rows like x, got {tuple(mask.shape)}")
        self.data = SequenceData(x, times, mask) if data is None else data

    x = property(lambda self: self.data.x)
    times = property(lambda self: self.data.times)
    mask = property(lambda self: self.data.mask)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        item = self.data[index]
        return item.x, item.times, item.mask


def collate_sequences(items):
    """Stack items of :class:`SequenceDataset` into a batch ``(x, times, mask)``.

    ``x`` becomes ``(b, K+1, Dx)``; times shared by every item (the same tensor) stay
    ``(K+1,)`` (shared times keep the models' once-per-time-point work), per-sequence rows
    become ``(b, K+1)``; ``mask`` is stacked, or ``None`` when the items have none.
    """
    xs, times, masks = zip(*items, strict=True)
    first = times[0]
    if first is None or all(t is first for t in times):
        batch_times = first
    else:
        batch_times = torch.stack(times)
    batch_mask = None if masks[0] is None else torch.stack(masks)
    return torch.stack(xs), batch_times, batch_mask


class SequenceDataModule(pl.LightningDataModule):
    """Shards of a :class:`SequenceDataset` for data-parallel training.

    Every epoch, a permutation of the :math:`N` sequences (seeded by ``seed`` and the epoch)
    is cut into global batches of ``batch_size`` sequences; process :math:`r` of :math:`W`
    gets every :math:`W`-th sequence of each (a ``DistributedSampler``), so the shards of
    one step partition that step's global batch, whatever :math:`W` is. The last
    incomplete batch is dropped: every shard has exactly ``batch_size / W`` sequences.

    Args:
        dataset (SequenceDataset): the sequences.
        batch_size (int): the global batch per step, a multiple of the number of processes.
        seed (int): seed of the permutations.
    """

    def __init__(self, dataset, batch_size, seed=0):
        super().__init__()
        if not 1 <= batch_size <= len(dataset):
            raise ValueError(f"batch_size must lie in [1, {len(dataset)}], got {batch_size}")
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)

    def train_dataloader(self):
        world = self.trainer.world_size
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} (the global batch) must be a "
                             f"multiple of the number of processes, {world}")
        sampler = DistributedSampler(self.dataset, num_replicas=world,
                                     rank=self.trainer.global_rank, shuffle=True,
                                     seed=self.seed, drop_last=True)
        return DataLoader(self.dataset, batch_size=self.batch_size // world, sampler=sampler,
                          drop_last=True, collate_fn=collate_sequences, num_workers=0)


class _ServeModuleParameters(Messenger):
    """Answer ``pyro.module``'s param statements with the modules' own parameters.

    The modules, not Pyro's global param store, then hold the parameters: nothing is
    registered there, so no stale entry of an earlier model can be met, and what DDP and
    the optimiser see (``module.parameters()``) is all that the programs use. Param sites
    whose value is not a parameter of the modules (free ``pyro.param`` statements) are
    recorded in ``free``.
    """

    def __init__(self, module):
        super().__init__()
        self._ids = {id(p) for p in module.parameters()}
        self.free = set()

    def _pyro_param(self, msg):
        args = msg["args"]
        if len(args) > 1 and id(args[1]) in self._ids:
            msg["value"] = args[1]
        else:
            self.free.add(msg["name"])


class SVIModule(pl.LightningModule):
    r"""A ``LightningModule`` that fits a Pyro model/guide pair by SVI on shards of data.

    ``model`` and ``guide`` are registered as submodules (so DDP and the optimiser see all
    their parameters) and run with Pyro's own machinery: the loss of a batch of :math:`b`
    sequences is

    .. math::

        \hat L = \texttt{elbo.differentiable\_loss}(\text{scale}_{N/b}(\text{model}),
                 \text{scale}_{N/b}(\text{guide}), x, t, m, \beta),

    an unbiased estimate of minus the ELBO of all :math:`N` sequences (see the module
    docstring for the average over processes). Any ``pyro.infer.ELBO`` that has
    ``differentiable_loss(model, guide, *args, **kwargs)`` works: ``Trace_ELBO``,
    ``TraceMeanField_ELBO`` or a custom one. The latent sites are scaled by :math:`\beta`
    through the programs' ``kl_weight`` argument; with ``kl_anneal_steps > 0``, :math:`\beta`
    rises linearly from ``kl_start`` to ``beta`` as in :func:`~pyro_vpf.infer.fit`. The
    optimiser is Pyro's ``ClippedAdam`` (element-wise gradient clipping to ``clip_norm``,
    learning-rate decay ``lr_decay`` per step), the one :func:`~pyro_vpf.infer.fit` uses.

    Parameters must be ``nn.Parameter`` s of the modules (``pyro.module``, as every program
    of the collection does); a free ``pyro.param`` raises ``ValueError``, since DDP could
    not average its gradient. The param store is left untouched.

    Args:
        model, guide: programs ``(x, times, mask=None, *, kl_weight)`` (or ``(x, *,
            kl_weight)`` for static models), ``nn.Module`` s.
        elbo (str or ELBO): ``"trace"``, ``"meanfield"`` or an ELBO instance.
        num_sequences (int): :math:`N`, the size of the whole data set.
        num_points (float): observed time points of the whole data set (for
            ``elbo_per_point``; default: none recorded).
        lr, clip_norm, lr_decay: ``ClippedAdam``'s settings.
        beta, kl_anneal_steps, kl_start: the KL weight and its schedule.
        num_particles, vectorize_particles: for a string ``elbo``.
        seed (int): each process seeds Pyro's RNGs with ``seed + rank`` when training starts
            (plus ``world_size * step`` when it resumes at ``step``: the shards need
            different noise); ``None`` leaves them alone.
        num_steps (int): the last step (where the final checkpoint is written).
        checkpoint_path (str): where :meth:`on_train_batch_end` writes Lightning checkpoints,
            every ``checkpoint_every`` steps and at ``num_steps``.
        callback: ``callback(step, history)`` after every step, in the process of global
            rank 0 when it is the caller's (it is not sent to spawned workers).

    Attributes:
        history (FitHistory): ``loss`` (mean over processes), ``elbo_per_point``,
            ``kl_weight`` and ``step_seconds`` per step; saved in the module's state, so it
            travels with checkpoints and back from spawned workers.
    """

    def __init__(self, model, guide, elbo="trace", *, num_sequences, num_points=None, lr=1e-3,
                 clip_norm=10.0, lr_decay=1.0, beta=1.0, kl_anneal_steps=0, kl_start=0.1,
                 num_particles=1, vectorize_particles=True, seed=0, num_steps=None,
                 checkpoint_path=None, checkpoint_every=None, callback=None):
        super().__init__()
        if int(num_sequences) < 1:
            raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
        self.settings = OptimSettings(lr=lr, clip_norm=clip_norm, lr_decay=lr_decay, beta=beta,
                                      kl_anneal_steps=kl_anneal_steps, kl_start=kl_start,
                                      num_particles=num_particles)
        if checkpoint_every is not None and checkpoint_path is None:
            raise ValueError("checkpoint_every needs a checkpoint_path")
        self.model, self.guide = model, guide
        self.elbo = make_elbo(elbo, num_particles, vectorize_particles)
        self.num_sequences = int(num_sequences)
        self.num_points = None if num_points is None else float(num_points)
        self.lr, self.clip_norm, self.lr_decay = lr, clip_norm, lr_decay
        self.beta, self.kl_anneal_steps, self.kl_start = beta, kl_anneal_steps, kl_start
        self.seed = seed
        self.num_steps, self.checkpoint_path = num_steps, checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.config = {"elbo": str(elbo), **self.settings.as_dict(),
                       "num_sequences": self.num_sequences, "seed": seed}
        self.history = FitHistory()
        self._callback = callback
        self._caller_pid = os.getpid()
        self._checkpoint = PendingCheckpoint(checkpoint_path)
        self._pending = None
        self._tic = None

    # -- state that travels with checkpoints and back from spawned workers -----------------

    def get_extra_state(self):
        return {"history": {k: [float(v) for v in values]
                            for k, values in self.history.__dict__.items()},
                "config": dict(self.config)}

    def set_extra_state(self, state):
        self.history = FitHistory(**state["history"])

    def __getstate__(self):
        state = super().__getstate__()
        state["_callback"] = None  # a callback stays in the caller's process
        return state

    # -- the loss --------------------------------------------------------------------------

    def kl_weight_at(self, step):
        r""":math:`\beta` at optimiser step ``step`` (0-based)."""
        return self.settings.kl_weight(step)

    def forward(self, x, times=None, mask=None, *, kl_weight=1.0):
        r"""The sharded loss :math:`\hat L` of a batch: minus the ELBO of the batch scaled by
        :math:`N / b`, differentiable in the parameters of model and guide."""
        args = (x,) if times is None else (x, times, mask)
        scale = self.num_sequences / x.shape[0]
        served = _ServeModuleParameters(self)
        with served:
            loss = self.elbo.differentiable_loss(
                poutine.scale(self.model, scale=scale), poutine.scale(self.guide, scale=scale),
                *args, kl_weight=kl_weight)
        if served.free:
            raise ValueError(
                f"the programs use pyro.param sites that are not parameters of the model or "
                f"guide modules: {sorted(served.free)}. Data-parallel training averages the "
                f"gradients of module parameters only: make them nn.Parameter attributes")
        return loss

    def _mean_over_processes(self, value):
        if self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value.clone(), reduce_op="mean")

    def training_step(self, batch, batch_idx):
        x, times, mask = batch
        step = self.global_step
        kl_weight = self.kl_weight_at(step)
        try:
            loss = self(x, times, mask, kl_weight=kl_weight)
        except ValueError as err:  # distribution validation meeting non-finite values
            if not is_non_finite_error(err) and all_finite(self.model, self.guide):
                raise
            raise self._stop(step, "a distribution met non-finite values: ") from err
        value = float(self._mean_over_processes(loss.detach()))
        if not math.isfinite(value):  # the same mean on every process: all stop together
            raise self._stop(step, f"the loss became {value}: ")
        self._pending = (value, kl_weight)
        if self.num_points is not None:
            recent = self.history.elbo_per_point[-19:] + [-value / self.num_points]
            self.log("elbo_per_point", sum(recent) / len(recent), prog_bar=True, on_step=True,
                     on_epoch=False, batch_size=x.shape[0])
        return loss

    # -- optimiser, seeds, history, checkpoints --------------------------------------------

    def configure_optimizers(self):
        return ClippedAdam(self.parameters(), lr=self.lr, clip_norm=self.clip_norm,
                           lrd=self.lr_decay)

    def setup(self, stage):
        if os.getpid() != self._caller_pid:  # a worker process started for this training
            _quiet_known_warnings()

    def on_fit_start(self):
        self._checkpoint.writer = self.trainer.is_global_zero
        self._checkpoint.discard_stale()  # what an interrupted run left there
        if self.seed is not None:
            world = self.trainer.world_size
            pyro.set_rng_seed(int(self.seed) + self.global_rank + world * self.global_step)

    def on_train_batch_start(self, batch, batch_idx):
        self._tic = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        elapsed = time.perf_counter() - self._tic
        value, kl_weight = self._pending
        history = self.history
        done = self.global_step
        # ClippedAdam decays the rate, then steps
        history.record(value, kl_weight=kl_weight, seconds=elapsed, num_points=self.num_points,
                       lr=self.lr * self.lr_decay ** done)
        if (self._callback is not None and self.trainer.is_global_zero
                and os.getpid() == self._caller_pid):
            self._callback(done - 1, history)
        if not all_finite(self.model, self.guide):  # a non-finite gradient reached them
            raise self._stop(done, "an update made parameters non-finite: ")
        self._confirm()  # the pending checkpoint's parameters gave a finite loss and update
        if self.checkpoint_path and (
            done == self.num_steps or (self.checkpoint_every and done % self.checkpoint_every == 0)
        ):
            # the divergence contract of fit: written beside the target, moved over it only
            # once the loss and the update at its parameters proved finite
            self.trainer.save_checkpoint(self._checkpoint.pending,
                                         **_full_checkpoints(self.trainer.save_checkpoint))
            if done == self.num_steps:  # no next step: evaluate loss and gradients here
                self._check_final(batch, done)
                self._confirm()

    def _stop(self, step, message):
        self._checkpoint.writer = self.trainer.is_global_zero
        return self._checkpoint.stop(step, message)

    def _confirm(self):
        self._checkpoint.writer = self.trainer.is_global_zero
        self._checkpoint.confirm()

    def _check_final(self, batch, step):
        """Loss and gradients at the final parameters, on every process, without an update."""
        x, times, mask = batch
        params = [p for p in self.parameters() if p.requires_grad]
        try:
            with torch.enable_grad():
                loss = self(x, times, mask, kl_weight=self.kl_weight_at(step))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(g).all()) for g in grads if g is not None)
        except ValueError as err:
            if not is_non_finite_error(err):
                raise
            finite = False
        flag = torch.tensor(float(finite), device=params[0].device)
        if float(self._mean_over_processes(flag)) < 1.0:
            raise self._stop(step, "the loss or gradient at the final parameters is "
                                   "non-finite: ")

    def on_load_checkpoint(self, checkpoint):
        # a new learning rate on resume is honoured, as in fit: the schedule continues from
        # the step reached, as if the run had started with it
        saved = checkpoint.get("state_dict", {}).get("_extra_state", {}).get("config", {})
        if saved.get("lr") not in (None, self.lr):
            rate = self.lr * self.lr_decay ** checkpoint.get("global_step", 0)
            for state in checkpoint.get("optimizer_states", []):
                for group in state.get("param_groups", []):
                    group["lr"] = rate


def is_global_zero():
    """Whether this process has global rank 0: the caller's process with ``strategy="ddp"``
    (the other ranks re-run the caller's script), the main process with spawn strategies.

    Code after :func:`fit_distributed` that writes files or figures should run only there.
    """
    return getattr(pl.utilities.rank_zero_only, "rank", 0) == 0


def fit_distributed(model, guide, x, times=None, mask=None, *, num_steps=1000, batch_size=None,
                    lr=1e-3, num_particles=1, vectorize_particles=True, elbo="trace",
                    clip_norm=10.0, lr_decay=1.0, beta=1.0, kl_anneal_steps=0, kl_start=0.1,
                    devices=1, num_nodes=1, strategy="ddp", accelerator="auto",
                    checkpoint_path=None, checkpoint_every=None, resume=None, seed=None,
                    progress=True, callback=None, **trainer_kwargs):
    r"""Fit ``model`` and ``guide`` with SVI on ``devices`` × ``num_nodes`` processes.

    The data-parallel counterpart of :func:`~pyro_vpf.infer.fit`, with the same objective,
    optimiser and arguments: every step, a global batch of ``batch_size`` sequences is split
    into equal shards, one per process; each process computes the sharded loss of
    :class:`SVIModule` (its shard's ELBO scaled by :math:`N / b`) and DDP averages the
    gradients, which gives the gradient of the single-process estimator
    :math:`\frac{N}{G}\sum_{i \in \text{batch}} \nabla\hat\ell_i` of the same global batch —
    unbiased for the full-data ELBO, whatever the number of processes.

    A separate function, not an option of :func:`~pyro_vpf.infer.fit`: ``fit`` keeps no
    dependency on Lightning, and its checkpoints resume *exactly* (RNG states included),
    which a multi-process run cannot promise (each process has its own RNG streams and
    Lightning's loop state). ``fit_distributed`` resumes the parameters, optimiser, step and
    history. With ``devices=1`` (one process) it trains in the calling process.

    The trained weights end up in the caller's ``model`` and ``guide``: with
    ``strategy="ddp"`` the calling process is rank 0 and trains them in place (the other
    ranks re-run the calling script, which must therefore be importable and must reach
    this call; guard what follows with :func:`is_global_zero`); with the strategies that
    start worker processes (``"ddp_spawn"``; ``"ddp_notebook"`` or ``"ddp_fork"`` from a
    notebook, CPU or before CUDA is initialised) rank 0's final weights and history are
    loaded back into them. The modules are returned to their original device.

    Args:
        model, guide: programs with signature ``(x, times, mask=None, *, batch_size,
            kl_weight)``, as for :func:`~pyro_vpf.infer.fit`.
        x (torch.Tensor): ``(N, K+1, Dx)`` sequences (pass CPU tensors to train on several
            GPUs: each process moves its shards to its device).
        times (torch.Tensor): ``(K+1,)`` or ``(N, K+1)``; mask: ``None``, ``(N, K+1)`` or
            ``(N, K+1, Dx)`` bool.
        num_steps (int): optimiser steps in all (a resumed run continues up to it).
        batch_size (int): the global batch per step (as in ``fit``), split evenly over the
            processes; a multiple of ``devices * num_nodes`` in ``[1, N]``. Default: all
            sequences, rounded down to such a multiple.
        lr, clip_norm, lr_decay, num_particles, vectorize_particles: as for
            :func:`~pyro_vpf.infer.fit`.
        elbo, beta, kl_anneal_steps, kl_start: as for :func:`~pyro_vpf.infer.fit`.
        devices (int): processes per node (GPUs, or CPU processes with
            ``accelerator="cpu"``).
        num_nodes (int): nodes (launched by ``torchrun`` or SLURM's ``srun``; see the
            documentation's "Scaling out" page, ``docs/guide/scaling.md``).
        strategy (str or lightning Strategy): ``"ddp"``, ``"ddp_spawn"``, ... (one process:
            ``"ddp"`` falls back to a plain single-device run).
        accelerator (str): ``"auto"``, ``"cpu"``, ``"gpu"``, ...
        checkpoint_path (str): a Lightning checkpoint written every ``checkpoint_every``
            steps and at the end; :func:`load_lightning_checkpoint` (or
            :func:`~pyro_vpf.infer.load_checkpoint`) loads it into a plain model and guide.
        resume (str): a checkpoint of this function to continue from.
        seed (int): process ``r`` seeds Pyro with ``seed + r`` (default: one drawn from
            torch's RNG, so ``pyro.set_rng_seed`` before the call makes runs repeatable); it
            also seeds the shuffling of the batches.
        progress (bool): Lightning's progress bar, with the running ELBO per point.
        callback: ``callback(step, history)`` after every step, on rank 0 when that is the
            calling process (not with spawn strategies, whose workers train).
        **trainer_kwargs: passed on to ``lightning.pytorch.Trainer`` (e.g. ``precision``,
            ``callbacks``).

    Returns:
        FitHistory: per step, ``loss`` (the mean of the processes' sharded losses),
        ``elbo_per_point`` and ``kl_weight``, the same in every process, and ``step_seconds``,
        each process's own (rank 0's in the caller with spawn strategies).

    Raises:
        ValueError: on bad arguments (``devices < 1``, ``batch_size`` outside ``[1, N]`` or
            not a multiple of the number of processes, ...).
        FloatingPointError: when the loss becomes NaN or infinite; the last checkpoint on
            disk is left as it was.
    """
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    check_integer("num_steps", num_steps, 0)
    check_integer("num_particles", num_particles, 1)
    if checkpoint_every is not None:
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs a checkpoint_path")
        check_integer("checkpoint_every", checkpoint_every, 1)
    if resume is not None and not is_lightning_checkpoint(read_checkpoint(resume)):
        raise ValueError(f"{resume} was written by fit (not fit_distributed): resume it with "
                         "pyro_vpf.infer.fit(..., resume=path)")
    world = devices * num_nodes
    args, N, points = check_program_data(model, x, times, mask)
    if batch_size is None:
        batch_size = N - N % world
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or not (
            1 <= batch_size <= N):
        raise ValueError(f"batch_size must be an integer in [1, {N}], got {batch_size!r}")
    if batch_size % world:
        raise ValueError(f"batch_size must be a multiple of devices * num_nodes = {world} "
                         f"(each process gets an equal shard), got {batch_size}")
    if seed is None:
        seed = int(torch.randint(2**31 - 1, ()))
    x, times, mask = args if len(args) == 3 else (args[0], None, None)
    device = next(model.parameters()).device
    module = SVIModule(model, guide, elbo, num_sequences=N, num_points=float(points.sum()),
                       lr=lr, clip_norm=clip_norm, lr_decay=lr_decay, beta=beta,
                       kl_anneal_steps=kl_anneal_steps, kl_start=kl_start,
                       num_particles=num_particles, vectorize_particles=vectorize_particles,
                       seed=seed, num_steps=num_steps, checkpoint_path=checkpoint_path,
                       checkpoint_every=checkpoint_every, callback=callback)
    data = SequenceDataModule(SequenceDataset(x, times, mask), batch_size, seed=seed)
    if world == 1 and strategy == "ddp":
        strategy = "auto"
    options = dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                   strategy=strategy, max_steps=num_steps, max_epochs=-1, logger=False,
                   enable_checkpointing=False, enable_model_summary=False,
                   enable_progress_bar=progress, num_sanity_val_steps=0, limit_val_batches=0,
                   use_distributed_sampler=False, log_every_n_steps=1)
    options.update(trainer_kwargs)
    with warnings.catch_warnings():
        _quiet_known_warnings()
        trainer = pl.Trainer(**options)
        trainer.fit(module, datamodule=data, ckpt_path=resume,
                    **(_safe_loading(trainer.fit) if resume is not None else {}))
    model.to(device)  # Lightning's teardown leaves the modules on the CPU
    guide.to(device)
    return module.history


def load_lightning_checkpoint(path, model, guide, map_location=None):
    """Load a checkpoint of :func:`fit_distributed` (or of a Trainer fitting an
    :class:`SVIModule`) into a plain ``model`` and ``guide``.

    Afterwards the modules are ordinary ones: ``model.sample_prior``, the functions of
    :mod:`pyro_vpf.evaluation` and the posterior predictive work as after
    :func:`~pyro_vpf.infer.fit`. Pyro's param store entries of modules are dropped (the
    programs register the loaded parameters on their next call).

    Returns:
        tuple: ``(step, history, config)`` as :func:`~pyro_vpf.infer.load_checkpoint`.
    """
    return load_checkpoint(path, model, guide, map_location=map_location)
