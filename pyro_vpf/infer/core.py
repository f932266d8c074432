r"""What both training loops share (:func:`~pyro_vpf.infer.fit` and the Lightning
``SVIModule``): the checked optimisation settings, the KL schedule, the ELBO by name and the
non-finite guard's tests and message, and the history both record."""

import math
import numbers
from dataclasses import asdict, dataclass, field

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBO

from pyro_vpf.validation import check_integer

__all__ = ["ELBOS", "FitHistory", "OptimSettings", "all_finite", "check_integer", "make_elbo",
           "stopped_message"]

#: ELBOs by name
ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class OptimSettings:
    r"""The optimisation settings of a training run, checked once for both loops.

    ``ClippedAdam`` with learning rate ``lr``, per-step decay factor ``lr_decay`` (in
    :math:`(0, 1]`: the rate after :math:`n` steps is ``lr * lr_decay**n``) and gradient
    clipping at ``clip_norm``; the KL weight :math:`\beta` of the latent sites rises linearly
    from ``kl_start`` to ``beta`` over ``kl_anneal_steps`` steps (constant ``beta`` when 0);
    ``num_particles`` ELBO particles.
    """

    lr: float = 1e-3
    clip_norm: float = 10.0
    lr_decay: float = 1.0
    beta: float = 1.0
    kl_anneal_steps: int = 0
    kl_start: float = 0.1
    num_particles: int = 1

    def __post_init__(self):
        for name in ("lr", "clip_norm", "lr_decay", "beta"):
            _positive_number(name, getattr(self, name))
        if self.lr_decay > 1:
            raise ValueError(f"lr_decay must lie in (0, 1] (a per-step decay factor), "
                             f"got {self.lr_decay}")
        check_integer("kl_anneal_steps", self.kl_anneal_steps, 0)
        if isinstance(self.kl_start, bool) or not isinstance(self.kl_start, numbers.Real) or not (
                math.isfinite(self.kl_start) and 0 <= self.kl_start):
            raise ValueError(f"kl_start must be a finite number >= 0, got {self.kl_start!r}")
        check_integer("num_particles", self.num_particles, 1)

    def kl_weight(self, step):
        r""":math:`\beta` at step ``step`` (0-based)."""
        if self.kl_anneal_steps <= 0:
            return self.beta
        return self.kl_start + (self.beta - self.kl_start) * min(1.0, step / self.kl_anneal_steps)

    def adam_args(self):
        """The arguments of ``pyro.optim.ClippedAdam``."""
        return {"lr": self.lr, "clip_norm": self.clip_norm, "lrd": self.lr_decay}

    def as_dict(self):
        return asdict(self)


def make_elbo(elbo, num_particles=1, vectorize_particles=True):
    """``elbo`` itself when it is a ``pyro.infer.ELBO``, else the ELBO of that name
    (:data:`ELBOS`) with the particles and one plate of nesting (the sequences')."""
    if isinstance(elbo, ELBO):
        return elbo
    if elbo not in ELBOS:
        raise ValueError(f"elbo must be one of {sorted(ELBOS)} or a pyro.infer.ELBO, got {elbo!r}")
    return ELBOS[elbo](num_particles=num_particles, vectorize_particles=vectorize_particles,
                       max_plate_nesting=1)


def all_finite(*modules):
    """Whether every parameter of ``modules`` is finite."""
    flags = [torch.isfinite(p.detach()).all() for m in modules for p in m.parameters()]
    return bool(torch.stack(flags).all()) if flags else True  # one host synchronisation


def is_non_finite_error(err):
    """Whether a ``ValueError`` raised in a step is a distribution's validation meeting
    non-finite values (NaN or infinite parameters of a distribution)."""
    return "found invalid values" in str(err)  # torch.distributions' validation message


def stopped_message(step, last_saved):
    """What a ``FloatingPointError`` of a stopped run says."""
    where = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint yet"
    return f"training stopped at step {step} with non-finite values; {where}"


@dataclass
class FitHistory:
    """What :func:`fit` records, one entry per step.

    ``loss`` is Pyro's loss (minus the ELBO estimate of the whole data set, nats);
    ``elbo_per_point`` is the ELBO per observed time point; ``kl_weight`` the annealing
    weight used; ``step_seconds`` the wall time of each step; ``lr`` the learning rate of
    each step (empty for runs recorded before it was kept). With held-out data,
    ``validation_step`` holds the steps after which it was scored and
    ``validation_elbo_per_point`` its ELBO per observed point there (:attr:`best_step`: the
    best of them).
    """

    loss: list = field(default_factory=list)
    elbo_per_point: list = field(default_factory=list)
    kl_weight: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    validation_step: list = field(default_factory=list)
    validation_elbo_per_point: list = field(default_factory=list)

    def __len__(self):
        return len(self.loss)

    @property
    def best_step(self):
        """The step with the best held-out ELBO (``None`` without held-out scores); the
        earliest of equal ones."""
        scores = self.validation_elbo_per_point
        finite = [i for i, v in enumerate(scores) if math.isfinite(v)]
        if not finite:
            return None
        return int(self.validation_step[max(finite, key=lambda i: (scores[i], -i))])

    def record(self, loss, *, kl_weight, seconds, num_points=None, lr=None):
        """Append one step: its loss, ``-loss / num_points`` when the number of observed
        points is known, the KL weight, the wall time and the learning rate (if given)."""
        self.loss.append(float(loss))
        if num_points is not None:
            self.elbo_per_point.append(-float(loss) / num_points)
        self.kl_weight.append(float(kl_weight))
        self.step_seconds.append(float(seconds))
        if lr is not None:
            self.lr.append(float(lr))
