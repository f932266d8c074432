r"""The exact path density of a diagonal Ornstein--Uhlenbeck process."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import _standard_normal

from pyro_vpf.ops import exp_ratio, linear_recurrence

__all__ = ["OUPath", "ou_transition", "strictly_increasing"]


class _StrictlyIncreasing(constraints.Constraint):
    """Finite values, strictly increasing along the last dimension."""

    event_dim = 1

    def check(self, value):
        finite = torch.isfinite(value).all(-1)
        return finite & (value.diff(dim=-1) > 0).all(-1)

    def __repr__(self):
        return "StrictlyIncreasing()"


strictly_increasing = _StrictlyIncreasing()


def ou_transition(times, rate, scale):
    r"""Exact transition coefficients of a diagonal OU process between consecutive times.

    With :math:`\Delta_k = t_k - t_{k-1}`,

    .. math::

        A_k = e^{-\kappa \Delta_k}, \qquad
        Q_k = \sigma^2 \, \frac{1 - e^{-2\kappa\Delta_k}}{2\kappa}
            = \sigma^2 \, \frac{-\operatorname{expm1}(-2\kappa\Delta_k)}{2\kappa},

    computed as :math:`\sigma^2 \Delta_k\,\varphi(2\kappa\Delta_k)` with
    :math:`\varphi(x) = (1 - e^{-x})/x` (:func:`~pyro_vpf.ops.exp_ratio`), which keeps
    :math:`Q_k \to \sigma^2\Delta_k` and its derivatives accurate as
    :math:`\kappa\Delta_k \to 0`.

    Args:
        times (torch.Tensor): ``(..., K+1)``.
        rate (torch.Tensor): :math:`\kappa > 0`, ``(..., D)``.
        scale (torch.Tensor): :math:`\sigma > 0`, ``(..., D)``.

    Returns:
        tuple: ``(A, Q)``, each broadcast to ``(..., K, D)``.
    """
    dt = times.diff(dim=-1).unsqueeze(-1)
    rate = rate.unsqueeze(-2)
    decay = rate * dt
    transition = torch.exp(-decay)
    variance = scale.unsqueeze(-2).square() * dt * exp_ratio(2 * decay)
    return transition, variance


class OUPath(TorchDistribution):
    r"""Path :math:`y_{1:K}` of a diagonal Ornstein--Uhlenbeck process started at :math:`y_0`.

    Each dimension follows :math:`dy = \kappa(\mu - y)\,dt + \sigma\,dW` and is observed at
    strictly increasing times :math:`t_0 < t_1 < \dots < t_K` (irregular spacing allowed).
    The transitions are exact for any spacing (no discretisation):

    .. math::

        y_k \mid y_{k-1} \sim \mathcal N\!\left(\mu + A_k (y_{k-1} - \mu),\; Q_k\right),
        \qquad A_k = e^{-\kappa\Delta_k},\quad
        Q_k = \sigma^2 \frac{1 - e^{-2\kappa\Delta_k}}{2\kappa},

    so :math:`\log p(y_{1:K} \mid y_0) = \sum_k \log \mathcal N(y_k; \mu + A_k(y_{k-1}-\mu), Q_k)`.
    The whole path is one event of shape ``(K, D)``, as in
    :class:`pyro.distributions.GaussianHMM`: time is part of the event, not a plate.

    :meth:`rsample` draws the path as the linear recurrence
    :math:`y_k - \mu = A_k (y_{k-1} - \mu) + \sqrt{Q_k}\,\varepsilon_k` evaluated by a parallel
    scan (:func:`pyro_vpf.ops.linear_recurrence`): no loop over time steps, linear cost in
    ``K``, and only products of :math:`A_k \le 1` are formed, so large
    :math:`\kappa (t_K - t_0)` is safe.

    Args:
        y0 (torch.Tensor): the state at ``times[..., 0]``, shape ``(..., D)``.
        times (torch.Tensor): strictly increasing, ``(K+1,)`` shared by every path or
            ``(..., K+1)`` per path; ``K >= 1``.
        mean (torch.Tensor or float): long-run mean :math:`\mu`, broadcastable to ``(..., D)``.
        rate (torch.Tensor or float): mean-reversion rate :math:`\kappa > 0`, in units of
            1 / time, broadcastable to ``(..., D)``.
        scale (torch.Tensor or float): diffusion :math:`\sigma > 0` (a standard deviation
            per square-root time, not a variance), broadcastable to ``(..., D)``.
        validate_args (bool): check values (NaN, positivity, increasing times). Shapes,
            dtypes and devices are always checked.

    ``event_shape == (K, D)``; ``batch_shape`` is the broadcast of the batch dimensions of
    all arguments. The long-run mean is stored as ``loc``; :attr:`mean` and
    :attr:`variance` are the moments of the path given :math:`y_0`.

    Example:
        >>> d = OUPath(torch.zeros(2), torch.linspace(0, 1, 11), 0.0, 1.0, 0.5)
        >>> d.event_shape, d.rsample((3,)).shape
        (torch.Size([10, 2]), torch.Size([3, 10, 2]))
    """

    arg_constraints = {
        "y0": constraints.independent(constraints.real, 1),
        "times": strictly_increasing,
        "loc": constraints.real,
        "rate": constraints.positive,
        "scale": constraints.positive,
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, y0, times, mean, rate, scale, validate_args=None):
        y0, times, loc, rate, scale = _check_args(y0, times, mean, rate, scale)
        self.y0, self.times, self.loc, self.rate, self.scale = y0, times, loc, rate, scale
        try:
            batch_shape = torch.broadcast_shapes(
                y0.shape[:-1], times.shape[:-1], loc.shape[:-1], rate.shape[:-1], scale.shape[:-1]
            )
        except RuntimeError as err:
            raise ValueError(
                "batch dimensions do not broadcast: "
                f"y0 {tuple(y0.shape)}, times {tuple(times.shape)}, mean {tuple(loc.shape)}, "
                f"rate {tuple(rate.shape)}, scale {tuple(scale.shape)}"
            ) from err
        event_shape = torch.Size((times.shape[-1] - 1, y0.shape[-1]))
        super().__init__(batch_shape, event_shape, validate_args=False)
        if validate_args is None:
            validate_args = torch.distributions.Distribution._validate_args
        if validate_args:
            names = {"loc": "mean"}
            for param, constraint in self.arg_constraints.items():
                if not constraint.check(getattr(self, param)).all():
                    raise ValueError(
                        f"OUPath argument '{names.get(param, param)}' must satisfy {constraint}, "
                        f"got invalid values in {getattr(self, param)}"
                    )
        self._validate_args = validate_args

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(OUPath, _instance)
        batch_shape = torch.Size(batch_shape)
        new.y0 = self.y0.expand(batch_shape + self.y0.shape[-1:])
        new.times = self.times.expand(batch_shape + self.times.shape[-1:])
        new.loc, new.rate, new.scale = self.loc, self.rate, self.scale
        super(OUPath, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def transition(self):
        r"""The exact transition coefficients ``(A, Q)``, each ``(..., K, D)``."""
        return ou_transition(self.times, self.rate, self.scale)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.y0.dtype, device=self.y0.device)
        transition, variance = self.transition()
        increments = variance.sqrt() * eps
        # Fold the start into the first increment: x_1 = A_1 (y_0 - mu) + sqrt(Q_1) eps_1.
        start = transition[..., :1, :] * (self.y0 - self.loc).unsqueeze(-2)
        increments = torch.cat([increments[..., :1, :] + start, increments[..., 1:, :]], dim=-2)
        return linear_recurrence(transition, increments, dim=-2) + self.loc.unsqueeze(-2)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        transition, variance = self.transition()
        loc = self.loc.unsqueeze(-2)
        y0 = self.y0.unsqueeze(-2).expand(value.shape[:-2] + (1, value.shape[-1]))
        previous = torch.cat([y0, value[..., :-1, :]], dim=-2)
        predicted = loc + transition * (previous - loc)
        log_density = -0.5 * ((value - predicted).square() / variance + variance.log())
        return log_density.sum((-1, -2)) - 0.5 * math.log(2 * math.pi) * self.event_shape.numel()

    @property
    def mean(self):
        r""":math:`E[y_k \mid y_0] = \mu + e^{-\kappa(t_k - t_0)}(y_0 - \mu)`, ``(..., K, D)``."""
        elapsed = (self.times[..., 1:] - self.times[..., :1]).unsqueeze(-1)
        decay = torch.exp(-self.rate.unsqueeze(-2) * elapsed)
        loc = self.loc.unsqueeze(-2)
        mean = loc + decay * (self.y0.unsqueeze(-2) - loc)
        return mean.expand(self.batch_shape + self.event_shape)

    @property
    def variance(self):
        r"""The path's variance given :math:`y_0`,
        :math:`\sigma^2(1 - e^{-2\kappa(t_k-t_0)})/(2\kappa)`."""
        elapsed = (self.times[..., 1:] - self.times[..., :1]).unsqueeze(-1)
        rate = self.rate.unsqueeze(-2)
        var = self.scale.unsqueeze(-2).square() * (-torch.expm1(-2 * rate * elapsed)) / (2 * rate)
        return var.expand(self.batch_shape + self.event_shape)


def _check_args(y0, times, mean, rate, scale):
    """Shape, dtype and device checks that always run (they cost no device sync)."""
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise ValueError("OUPath argument 'y0' must be a floating-point tensor of shape (..., D)")
    if y0.dim() < 1:
        raise ValueError(f"OUPath argument 'y0' must have shape (..., D), got {tuple(y0.shape)}")
    if not isinstance(times, torch.Tensor):
        raise ValueError("OUPath argument 'times' must be a tensor of shape (K+1,) or (..., K+1)")
    if times.dim() < 1 or times.shape[-1] < 2:
        raise ValueError(
            "OUPath argument 'times' must have shape (..., K+1) with K >= 1, "
            f"got {tuple(times.shape)}"
        )
    if times.dtype != y0.dtype or times.device != y0.device:
        raise ValueError(
            f"OUPath argument 'times' has dtype {times.dtype} on {times.device}, "
            f"but y0 has {y0.dtype} on {y0.device}; they must match"
        )
    dim = y0.shape[-1]
    params = []
    for name, value in (("mean", mean), ("rate", rate), ("scale", scale)):
        if isinstance(value, torch.Tensor):
            if value.dtype != y0.dtype or value.device != y0.device:
                raise ValueError(
                    f"OUPath argument '{name}' has dtype {value.dtype} on {value.device}, "
                    f"but y0 has {y0.dtype} on {y0.device}; they must match"
                )
        else:
            value = torch.as_tensor(value, dtype=y0.dtype, device=y0.device)
        if value.dim() == 0:
            value = value.reshape(1)
        if value.shape[-1] not in (1, dim):
            raise ValueError(
                f"OUPath argument '{name}' must be broadcastable to (..., {dim}), "
                f"got shape {tuple(value.shape)}"
            )
        params.append(value)
    return (y0, times, *params)
