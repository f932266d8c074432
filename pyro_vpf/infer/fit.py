r"""Stochastic variational inference for any model/guide pair of the collection."""

import copy
import math
import numbers
import os
import time

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.infer.checkpoint import (
    PendingCheckpoint,
    atomic_save,
    is_lightning_checkpoint,
    load_checkpoint,
    read_checkpoint,
    restore,
    save_checkpoint,
    with_learning_rate,
)
from pyro_vpf.infer.core import (
    FitHistory,
    OptimSettings,
    all_finite,
    is_non_finite_error,
    make_elbo,
)
from pyro_vpf.infer.metrics import elbo_per_point
from pyro_vpf.validation import check_integer, check_program_data, inputs_checked

__all__ = ["FitHistory", "atomic_save", "fit", "load_checkpoint", "read_checkpoint",
           "save_checkpoint"]

class _Monitor:
    r"""Held-out scoring during :func:`fit`: the ELBO per observed point of the validation
    data every ``eval_every`` steps (:func:`~pyro_vpf.infer.elbo_per_point`, without
    gradients, leaving torch's RNG as it found it, so the training draws do not depend on
    it), the best parameters kept in memory and, with a checkpoint path, written to
    ``<path>.best``; ``patience`` evaluations without improvement stop training.
    """

    def __init__(self, model, guide, validation, eval_every, patience, num_particles,
                 checkpoint_path, history):
        self.model, self.guide, self.history = model, guide, history
        self.args = validation
        self.eval_every, self.patience = eval_every, patience
        self.num_particles = num_particles
        self.best_path = None if checkpoint_path is None else f"{checkpoint_path}.best"
        scores = history.validation_elbo_per_point
        self.best = max((v for v in scores if math.isfinite(v)), default=-math.inf)
        best_step = history.best_step
        self.waited = 0 if best_step is None else sum(
            s > best_step for s in history.validation_step)
        self.best_state = None

    def due(self, done, last):
        return done % self.eval_every == 0 or last

    def evaluate(self, done, optimizer, config):
        """Score the held-out data after step ``done``; whether training should stop."""
        rng = torch.get_rng_state()
        value = elbo_per_point(self.model, self.guide, *self.args,
                               num_particles=self.num_particles)
        torch.set_rng_state(rng)
        self.history.validation_step.append(done)
        self.history.validation_elbo_per_point.append(value)
        if value > self.best:
            self.best, self.waited = value, 0
            self.best_state = [copy.deepcopy(m.state_dict()) for m in (self.model, self.guide)]
            if self.best_path is not None:
                save_checkpoint(self.best_path, self.model, self.guide, optimizer, done,
                                self.history, config)
        else:
            self.waited += 1
        return self.patience is not None and self.waited >= self.patience

    def restore_best(self):
        """Put the best parameters seen back into the model and guide."""
        if self.best_state is not None:
            for module, state in zip((self.model, self.guide), self.best_state, strict=True):
                module.load_state_dict(state)
        elif self.best_path is not None and os.path.isfile(self.best_path):
            # a resumed run that did not improve on the best of its earlier part
            state = read_checkpoint(self.best_path, next(self.model.parameters()).device)
            self.model.load_state_dict(state["model"])
            self.guide.load_state_dict(state["guide"])


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
        self.checkpoint = PendingCheckpoint(checkpoint_path, last_saved=resume)
        self.checkpoint.discard_stale()  # what an interrupted run left there

    def _run(self, fn, step):
        try:
            loss = fn()
        except ValueError as err:
            if is_non_finite_error(err) or not all_finite(self.model, self.guide):
                raise self.checkpoint.stop(step, "a distribution met non-finite values: ") from err
            raise
        if not math.isfinite(loss):
            raise self.checkpoint.stop(step, f"the loss became {loss}: ")
        return loss

    def step(self, svi, step, *args, **kwargs):
        loss = self._run(lambda: svi.step(*args, **kwargs), step)
        self.check_parameters(step + 1)
        # the parameters saved before this step gave a finite loss and update
        self.checkpoint.confirm()
        return loss

    def evaluate(self, svi, step, *args, **kwargs):
        """The loss and gradients at the current parameters, without an update and without
        changing the modules' buffers (e.g. the time range a time embedding records), so
        the model and guide stay what the pending checkpoint holds."""
        params = [p for m in (self.model, self.guide) for p in m.parameters()]
        buffers = [(b, b.clone()) for m in (self.model, self.guide) for b in m.buffers()]
        try:
            loss = self._run(lambda: svi.loss_and_grads(svi.model, svi.guide, *args, **kwargs),
                             step)
            grads = [p.grad for p in params if p.grad is not None]
            if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
                raise self.checkpoint.stop(step, "the gradient became non-finite: ")
        finally:
            for p in params:
                p.grad = None
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
        return loss

    def check_parameters(self, step):
        if not all_finite(self.model, self.guide):  # a non-finite gradient reached them
            raise self.checkpoint.stop(step, "an update made parameters non-finite: ")


def fit(model, guide, x, times=None, mask=None, *, num_steps=1000, batch_size=None, lr=1e-3,
        num_particles=1, vectorize_particles=True, elbo="trace", clip_norm=10.0, lr_decay=1.0,
        beta=1.0, kl_anneal_steps=0, kl_start=0.1, checkpoint_path=None, checkpoint_every=None,
        resume=None, progress=True, callback=None, metadata=None, validation=None,
        eval_every=None, early_stopping=None, validation_particles=8):
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
            (and always at the end). A pending checkpoint (``<path>.pending``) or unfinished
            temporary file left there by an interrupted run is deleted when training starts.
        resume (str): a checkpoint to continue from (optimiser, RNG and history included:
            the continued run equals an uninterrupted one).
        progress (bool): show a tqdm bar with the running ELBO per point.
        callback: called as ``callback(step, history)`` after every step.
        metadata (dict): plain values stored in every checkpoint (``config["metadata"]`` of
            :func:`load_checkpoint`), e.g. the settings of the run that wrote it, so that a
            checkpoint describes itself.
        validation (SequenceData): held-out data, scored every ``eval_every`` steps (default
            50) and after the last one, by its ELBO per observed point with
            ``validation_particles`` draws (recorded in the history's ``validation_*`` lists
            and shown on the progress bar). The model
            and guide end with the parameters of the best score (also written to
            ``<checkpoint_path>.best``); the scoring leaves the training draws unchanged.
        early_stopping (int): stop after this many evaluations without a better held-out
            score (``None``: train all ``num_steps``); the checkpoint is written at the stop.

    Returns:
        FitHistory: the per-step record.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite; the last checkpoint on
            disk is left as it was (the last good state).
    """
    like = next(model.parameters())
    args, B, points = check_program_data(model, x, times, mask)
    if validation is None:
        if eval_every is not None or early_stopping is not None:
            raise ValueError("eval_every and early_stopping need validation data")
    else:
        if not isinstance(validation, SequenceData):
            raise ValueError("validation must be a SequenceData (x, times, mask), got "
                             f"{type(validation).__name__}")
        try:
            validation_args = check_program_data(model, validation.x, validation.times,
                                                 validation.mask)[0]
        except ValueError as err:
            raise ValueError(f"validation: {err}") from err
        eval_every = 50 if eval_every is None else check_integer("eval_every", eval_every, 1)
        if early_stopping is not None:
            early_stopping = check_integer("early_stopping", early_stopping, 1)
        check_integer("validation_particles", validation_particles, 1)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or not 1 <= batch_size <= B):
        raise ValueError(f"batch_size must be an integer in [1, {B}], got {batch_size!r}")
    check_integer("num_steps", num_steps, 0)
    if checkpoint_every is not None:
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs a checkpoint_path")
        check_integer("checkpoint_every", checkpoint_every, 1)
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
        if not is_lightning_checkpoint(state) and state["config"].get("lr") != lr:
            # a new learning rate on resume is honoured: the schedule continues from the
            # step reached, as if the run had started with it (lr * lr_decay**step)
            state["optimizer"] = with_learning_rate(state["optimizer"],
                                                     lr * lr_decay ** state["step"])
        start, history, _ = restore(state, resume, model, guide, optimizer)

    bar = tqdm(range(start, num_steps), initial=start, total=num_steps, disable=not progress,
               desc="SVI", dynamic_ncols=True)
    guard = _Guard(model, guide, checkpoint_path, resume)
    monitor = None if validation is None else _Monitor(
        model, guide, validation_args, eval_every, early_stopping, validation_particles,
        checkpoint_path, history)
    with inputs_checked():  # the data were checked once, above
        for step in bar:
            kl_weight = settings.kl_weight(step)
            tic = time.perf_counter()
            loss = guard.step(svi, step, *args, batch_size=batch_size, kl_weight=kl_weight)
            elapsed = time.perf_counter() - tic
            # ClippedAdam decays the rate, then steps
            history.record(loss, kl_weight=kl_weight, seconds=elapsed,
                           num_points=observed_points, lr=lr * lr_decay ** (step + 1))
            done = step + 1
            stop = monitor is not None and monitor.due(done, done == num_steps) and (
                monitor.evaluate(done, optimizer, config))
            if progress:
                shown = {"elbo_per_point": f"{np.mean(history.elbo_per_point[-20:]):.3f}"}
                if history.validation_elbo_per_point:
                    shown["held_out"] = f"{history.validation_elbo_per_point[-1]:.3f}"
                bar.set_postfix(shown)
            if callback is not None:
                callback(step, history)
            last = done == num_steps or stop
            if checkpoint_path and (last or (checkpoint_every and done % checkpoint_every == 0)):
                save_checkpoint(guard.checkpoint.pending, model, guide, optimizer, done,
                                history, config)
                if last:  # no next step to evaluate these parameters: do it here
                    guard.evaluate(svi, done, *args, batch_size=batch_size,
                                   kl_weight=kl_weight)
                    guard.checkpoint.confirm()
            if stop:
                break
    bar.close()
    if monitor is not None:
        monitor.restore_best()
    return history
