r"""Paths of an Itô SDE at given times, drawn with a ``torchsde`` solver."""

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

__all__ = ["SDE_METHODS", "SDEPath", "solve_sde"]

#: Solvers for diagonal Itô noise, with their strong orders of convergence.
SDE_METHODS = {"euler": 0.5, "milstein": 1.0, "srk": 1.5}
#: the Levy area approximation a method needs of the Brownian motion (diagonal noise)
_LEVY_AREA = {"srk": "space-time"}


class _TimeChanged(nn.Module):
    r"""The SDE in the clock :math:`u` with :math:`t = t_s + c\,u` (a constant factor :math:`c`).

    :math:`dz = c f(z, t_s + cu)\,du + \sqrt c\, g(z, t_s + cu)\,dW_u` has the same law as the
    original SDE. Solving on the integer lattice of :math:`u` makes the solver's own clock
    exact in floating point, so every output time is hit by a step (``torchsde``
    interpolates linearly between steps otherwise, which would shrink the variance).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde, start, factor):
        super().__init__()
        self.sde, self.start, self.factor = sde, start, factor

    def f(self, u, z):
        return self.factor * self.sde.f(self.start + self.factor * u, z)

    def g(self, u, z):
        return math.sqrt(self.factor) * self.sde.g(self.start + self.factor * u, z)


def _runs(gaps, tolerance):
    """Split consecutive gaps into runs of equal length (within ``tolerance``):
    ``[(first, last_exclusive), ...]``."""
    runs, first = [], 0
    for k in range(1, len(gaps) + 1):
        if k == len(gaps) or abs(gaps[k] - gaps[first]) > tolerance:
            runs.append((first, k))
            first = k
    return runs


def solve_sde(sde, z0, times, *, method="euler", dt=None, adaptive=False, rtol=1e-3, atol=1e-3):
    r"""Solve :math:`dz = f(z, t)\,dt + g(z, t)\,dW` from ``z0`` at ``times[0]`` with ``torchsde``.

    Every interval between consecutive output times is split into
    :math:`\lceil \Delta t_k / dt \rceil` equal steps (an interval up to 0.1 % longer than
    ``dt`` is one step), and runs of equal intervals are solved by one ``torchsde.sdeint``
    call on an exact integer clock (the SDE rescaled in time so that each step is one unit),
    so the outputs are solver states, never interpolations (a uniform grid is a single call;
    irregular grids cost one call per interval). With ``adaptive=True`` ``torchsde`` chooses
    the steps (``rtol``, ``atol``) and interpolates linearly to the outputs between accepted
    steps.

    Args:
        sde: an ``nn.Module`` with ``noise_type = "diagonal"``, ``sde_type = "ito"``,
            ``f(t, z)`` and ``g(t, z)`` (``torchsde``'s protocol; ``t`` a scalar tensor).
        z0 (torch.Tensor): ``(N, Dz)`` states at ``times[0]``.
        times (torch.Tensor): ``(T,)`` strictly increasing output times.
        method (str): ``"euler"`` (Euler–Maruyama, strong order 0.5), ``"milstein"`` (1.0) or
            ``"srk"`` (stochastic Runge–Kutta, 1.5).
        dt (float): the largest step, in the data's time units (default: a hundredth of
            ``times[-1] - times[0]``).
        adaptive (bool): adaptive steps (``"milstein"`` and ``"srk"`` only: an Euler error
            estimate does not converge for state-dependent noise).

    Returns:
        torch.Tensor: ``(T, N, Dz)``, ``z0`` first.
    """
    import torchsde  # imported here: only latent SDE sampling needs it

    if method not in SDE_METHODS:
        raise ValueError(f"method must be one of {sorted(SDE_METHODS)}, got {method!r}")
    if adaptive and method == "euler":
        raise ValueError("adaptive=True needs method='milstein' or 'srk' (an Euler step-doubling "
                         "error estimate does not converge for state-dependent noise)")
    span = float(times[-1] - times[0])
    dt = span / 100 if dt is None else float(dt)
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    gaps = times.diff().tolist()
    # gaps equal up to the resolution of the times themselves (a float32 linspace's gaps
    # differ in their last bits) are one run, solved on one clock
    resolution = 16 * torch.finfo(times.dtype).eps * float(times.abs().max())
    states = [z0]
    with torch.no_grad():
        for first, last in _runs(gaps, resolution + 1e-6 * min(gaps)):
            steps = max(1, math.ceil(gaps[first] / dt - 1e-3))  # 0.1 % over dt is one step
            factor = float(times[last] - times[first]) / ((last - first) * steps)
            clock = torch.arange(0, (last - first) * steps + 1, steps, dtype=times.dtype,
                                 device=times.device)
            # the Brownian motion told the step (one clock unit): a balanced tree of
            # intervals, whose depth grows as log(steps) (without the hint it grows with the
            # number of steps, and a long horizon exceeds Python's recursion limit)
            bm = torchsde.BrownianInterval(
                t0=clock[0], t1=clock[-1], size=states[-1].shape, dtype=states[-1].dtype,
                device=states[-1].device, dt=1.0,
                levy_area_approximation=_LEVY_AREA.get(method, "none"))
            path = torchsde.sdeint(_TimeChanged(sde, times[first], factor), states[-1], clock,
                                   method=method, dt=1.0, adaptive=adaptive, rtol=rtol,
                                   atol=atol, bm=bm)
            states.extend(path[1:].unbind(0))
    return torch.stack(states, 0)


class SDEPath(TorchDistribution):
    r"""The path :math:`z_{1:K}` of an Itô SDE started at :math:`z_0` at ``times[..., 0]``.

    .. math:: dz = f(z, t)\,dt + g(z, t)\,dW, \qquad z(t_0) = z_0,

    observed at :math:`t_1 < \dots < t_K`; event shape ``(K, Dz)``. Samples come from a
    ``torchsde`` solver (:func:`solve_sde`); rows of ``times`` that differ are solved apart.

    A nonlinear SDE has no closed-form transition density, so :meth:`log_prob` raises:
    latent SDE models are trained with :class:`~pyro_vpf.infer.SDEMatchingELBO`, which needs
    only the drift and diffusion (the ``sde`` attribute) and never evaluates a path density.

    Args:
        z0 (torch.Tensor): ``(..., Dz)``.
        times (torch.Tensor): ``(K+1,)`` or ``(..., K+1)``, strictly increasing, ``K >= 1``.
        sde: the dynamics, ``torchsde``'s protocol (see :func:`solve_sde`); for
            :class:`~pyro_vpf.infer.SDEMatchingELBO` also ``drift(z, t)``,
            ``diffusion(z, t)`` and ``diffusion_depends_on_state``.
        method, dt, adaptive, rtol, atol: solver options of :func:`solve_sde`.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = False

    def __init__(self, z0, times, sde, *, method="euler", dt=None, adaptive=False, rtol=1e-3,
                 atol=1e-3, validate_args=None):
        if times.shape[-1] < 2:
            raise ValueError("times must hold the start and at least one more time")
        self.z0, self.times, self.sde = z0, times, sde
        self.solver_options = {"method": method, "dt": dt, "adaptive": adaptive, "rtol": rtol,
                               "atol": atol}
        batch_shape = torch.broadcast_shapes(z0.shape[:-1], times.shape[:-1])
        event_shape = (times.shape[-1] - 1, z0.shape[-1])
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        z0 = self.z0.expand(batch_shape + self.z0.shape[-1:])
        times = self.times if self.times.dim() == 1 else self.times.expand(
            batch_shape + self.times.shape[-1:])
        return SDEPath(z0, times, self.sde, **self.solver_options)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        Dz = self.z0.shape[-1]
        z0 = self.z0.expand(shape + (Dz,)).reshape(-1, Dz)
        if self.times.dim() == 1:
            path = solve_sde(self.sde, z0, self.times, **self.solver_options)[1:]
            return path.movedim(0, 1).reshape(shape + self.event_shape)
        rows = self.times.expand(shape + self.times.shape[-1:]).reshape(-1, self.times.shape[-1])
        unique, which = torch.unique(rows, dim=0, return_inverse=True)
        out = z0.new_empty((rows.shape[0],) + self.event_shape)
        for r in range(unique.shape[0]):
            members = (which == r).nonzero().squeeze(-1)
            path = solve_sde(self.sde, z0[members], unique[r], **self.solver_options)[1:]
            out[members] = path.movedim(0, 1)
        return out.reshape(shape + self.event_shape)

    def log_prob(self, value):
        raise NotImplementedError(
            "a latent SDE has no closed-form path density: train it with "
            "pyro_vpf.infer.SDEMatchingELBO and compare it by samples and forecasts, not by "
            "importance-weighted likelihoods")
