r"""Latent search: anchored gradient ascent on an exact prior log-density (plus a reward)."""

import math
import numbers
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pyro_vpf.validation import check_integer, check_positive

__all__ = ["Refinement", "refine"]


class Refinement(NamedTuple):
    """What :func:`refine` returns.

    ``z`` has the shape of ``z_init``; the traces have shape ``(steps + 1, *batch)`` (entry 0
    at ``z_init``), ``batch = z_init.shape[:-event_dim]``; ``reward`` is ``None`` without a
    reward; ``step_size`` is each sample's final step size ``(*batch)``.
    """

    z: torch.Tensor
    objective: torch.Tensor
    log_density: torch.Tensor
    reward: torch.Tensor | None
    step_size: torch.Tensor


def _check_scores(value, batch, name):
    if not isinstance(value, torch.Tensor) or value.shape != batch:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"{name}(z) must return one value per sample, shape {tuple(batch)}, got {shape}")
    return value


def refine(log_density, z_init, *, steps=10, lr=0.1, anchor=0.1, reward=None, event_dim=1,
           backtrack=True, progress=False):
    r"""Move samples uphill on :math:`\log p(z) + r(z)` while an anchor keeps them near the start.

    Each sample :math:`z` (the last ``event_dim`` dimensions of ``z_init``; the others are a
    batch, refined independently) climbs

    .. math::

        J(z) = \log p(z) + r(z) - \lambda \lVert z - z_{\text{init}} \rVert^2 ,

    with :math:`\log p` an exact log-density (a flow prior, or a latent path's
    :math:`\log p(z_0) + \log p(z_{1:K} \mid z_0)`), :math:`r` an optional differentiable
    reward and :math:`\lambda \ge 0` the anchor. The smooth part :math:`g = \log p + r`
    takes a gradient step and the quadratic anchor is solved exactly (a proximal step),

    .. math::

        z \leftarrow \frac{z + \eta \nabla g(z) + 2 \eta \lambda z_{\text{init}}}
            {1 + 2 \eta \lambda},

    so a large anchor cannot make the iteration unstable: ``anchor=math.inf`` returns
    ``z_init``, and for :math:`\eta` below the inverse Lipschitz constant of
    :math:`\nabla g` every step increases :math:`J`. With ``backtrack=True`` that holds for any
    ``lr``: a step that does not increase a sample's :math:`J` (or makes it non-finite) is
    undone and that sample's step size halved. One forward and backward pass per step.

    Ascent on :math:`\log p` moves samples towards high-density regions (for a Gaussian, the
    mode); the anchor bounds how far, which keeps them typical.

    Args:
        log_density (callable): ``z -> (*batch)``, differentiable in ``z``.
        z_init (torch.Tensor): starting points, ``(*batch, *event)``.
        steps (int): number of steps (0 returns ``z_init``).
        lr (float): initial step size :math:`\eta`.
        anchor (float): :math:`\lambda` (``math.inf``: no movement).
        reward (callable): optional ``z -> (*batch)``, differentiable in ``z``.
        event_dim (int): how many trailing dimensions of ``z_init`` form one sample
            (1 for vectors, 2 for paths ``(K+1, Dz)``).
        backtrack (bool): per-sample step-size control (see above).
        progress (bool): show a progress bar.

    Returns:
        Refinement: refined ``z`` (detached) and the traces of :math:`J`,
        :math:`\log p` and :math:`r`.

    Raises:
        FloatingPointError: without ``backtrack``, when the objective becomes non-finite.
    """
    if not isinstance(z_init, torch.Tensor) or not z_init.is_floating_point():
        raise ValueError("z_init must be a floating-point tensor")
    if check_integer("event_dim", event_dim, 0) > z_init.dim():
        raise ValueError(f"event_dim must lie in [0, {z_init.dim()}], got {event_dim}")
    if not torch.isfinite(z_init).all():
        raise ValueError("z_init contains NaN or infinite values")
    steps = check_integer("steps", steps, 0)
    lr = check_positive("lr", lr)
    if isinstance(anchor, bool) or not isinstance(anchor, numbers.Real) or not anchor >= 0:
        raise ValueError(f"anchor must be a number >= 0 (math.inf allowed), got {anchor!r}")
    if not callable(log_density) or (reward is not None and not callable(reward)):
        raise ValueError("log_density and reward must be callables z -> (*batch)")
    event_dim = int(event_dim)
    batch = z_init.shape[: z_init.dim() - event_dim]
    event_sum = tuple(range(-event_dim, 0))
    z0 = z_init.detach()

    def evaluate(z):
        """(J, log p, r, grad of log p + r) at z, all detached."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = _check_scores(log_density(z), batch, "log_density")
            r = None if reward is None else _check_scores(reward(z), batch, "reward")
            smooth = log_p if r is None else log_p + r
            (grad,) = torch.autograd.grad(smooth.sum(), z)
        objective = smooth.detach()
        if anchor > 0 and math.isfinite(anchor):
            objective = objective - anchor * (z.detach() - z0).square().sum(event_sum)
        return objective, log_p.detach(), None if r is None else r.detach(), grad

    objective, log_p, r, grad = evaluate(z0)
    step_size = torch.full(batch, float(lr), dtype=z0.dtype, device=z0.device)
    traces = ([objective], [log_p], [r])
    z = z0
    if math.isinf(anchor):  # the proximal step returns z_init exactly: constant traces
        for trace, value in zip(traces, (objective, log_p, r), strict=True):
            trace.extend([value] * steps)
        steps = 0
    for step in tqdm(range(steps), disable=not progress, desc="refine"):
        eta = step_size.reshape(batch + (1,) * event_dim)
        candidate = (z + eta * grad + 2 * eta * anchor * z0) / (1 + 2 * eta * anchor)
        new = evaluate(candidate)
        if backtrack:
            accept = torch.isfinite(new[0]) & (new[0] >= objective)
            keep = accept.reshape(eta.shape)
            z = torch.where(keep, candidate, z)
            grad = torch.where(keep, new[3], grad)
            objective, log_p = (torch.where(accept, n, o) for n, o in
                                zip(new[:2], (objective, log_p), strict=True))
            if r is not None:
                r = torch.where(accept, new[2], r)
            step_size = torch.where(accept, step_size, step_size / 2)
        else:
            if not torch.isfinite(new[0]).all():
                raise FloatingPointError(
                    f"the refinement objective became non-finite at step {step + 1}; lower lr "
                    "or pass backtrack=True")
            z, (objective, log_p, r, grad) = candidate, new
        for trace, value in zip(traces, (objective, log_p, r), strict=True):
            trace.append(value)
    return Refinement(
        z=z.detach(),
        objective=torch.stack(traces[0]),
        log_density=torch.stack(traces[1]),
        reward=None if reward is None else torch.stack(traces[2]),
        step_size=step_size,
    )
