r"""Exact densities of the readout of a Gauss--Markov state path, and of base-process paths.

A latent coordinate driven by a structured process (a Matérn path, a trend, a cycle) is the
readout :math:`y = H s` of a Gauss--Markov state :math:`s`; the readout alone is not Markov.
The latent site of the VPF carries the readout only (the path that the flow and the
likelihood see), so its density is that of a projected chain,

.. math::

    \log p(y_{1:K} \mid y_0) = \sum_{k=1}^K \log \mathcal N\big(y_k;\;
        H \hat s_{k \mid k-1},\; H P_{k \mid k-1} H^\top\big),

the prediction-error decomposition of a Kalman filter whose observations
:math:`y_k = H s_k` carry no noise. The filter is not run step by step: each step is an
element of the associative operator of the parallel Kalman filter (Särkkä &
García-Fernández, 2021, IEEE TAC 66(1)), and the prefix products give every filtered
moment in :math:`\lceil\log_2 K\rceil` batched levels. With a noiseless observation the
elements stay finite as long as the readout's one-step variance :math:`H Q_k H^\top` is
positive, which every non-:attr:`deterministic` base process guarantees.
"""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_vpf.chain import choose_execution
from pyro_vpf.chain.readout import (
    check_resolution,
    filtered_covariances,
    innovation_log_density,
    readout_gain,
)
from pyro_vpf.ops import matrix_linear_recurrence, matvec
from pyro_vpf.processes.base import psd_root
from pyro_vpf.processes.state_space import coordinate_parts

__all__ = ["GaussMarkovReadoutPath", "ProcessPath", "condition_on_readout", "draw_states"]


_mv = matvec


def condition_on_readout(loc, cov, readout, value):
    r""":math:`\mathcal N(m, P)` conditioned on the exact observation :math:`H s = y`.

    .. math::

        K = P H^\top (H P H^\top)^{-1}, \qquad m' = m + K (y - H m), \qquad
        P' = (I - K H) P (I - K H)^\top,

    the last form being symmetric and PSD by construction (for a noiseless observation it
    equals :math:`P - K H P`).

    Args:
        loc (torch.Tensor): :math:`m`, ``(..., S)``.
        cov (torch.Tensor): :math:`P`, ``(..., S, S)``.
        readout (torch.Tensor): :math:`H`, ``(..., R, S)``.
        value (torch.Tensor): :math:`y`, ``(..., R)``.

    Returns:
        tuple: ``(loc, cov, projection)`` with ``projection`` :math:`= I - K H`, so that
        ``projection @ R`` is a root of the conditioned covariance for any root ``R`` of
        :math:`P`.
    """
    _, gain, projection = readout_gain(cov, readout)
    new_loc = loc + _mv(gain, value - _mv(readout, loc))
    return new_loc, projection @ cov @ projection.transpose(-1, -2), projection


def draw_states(loc0, root0, transition, noise_root, shift=None, shape=None):
    r"""Reparameterised states :math:`s_{1:K}` of :math:`s_0 = m_0 + R_0\varepsilon_0`,
    :math:`s_k = A_k s_{k-1} + b_k + R_k \varepsilon_k`, by the parallel linear recurrence.

    Args:
        loc0, root0: :math:`m_0` ``(..., S)``, :math:`R_0` ``(..., S, S)``.
        transition, noise_root: :math:`A_k, R_k`, ``(..., K, S, S)``.
        shift: :math:`b_k` ``(..., K, S)`` or ``None``.
        shape: the batch shape of the draws (default: the arguments' broadcast batch).

    Returns:
        torch.Tensor: ``(*shape, K, S)``.
    """
    K, S = transition.shape[-3], transition.shape[-1]
    if shape is None:
        shape = torch.broadcast_shapes(loc0.shape[:-1], root0.shape[:-2],
                                       transition.shape[:-3], noise_root.shape[:-3])
    dtype, device = transition.dtype, transition.device
    s0 = loc0 + _mv(root0, torch.randn(tuple(shape) + (S,), dtype=dtype, device=device))
    increments = _mv(noise_root, torch.randn(tuple(shape) + (K, S), dtype=dtype, device=device))
    if shift is not None:
        increments = increments + shift
    first = increments[..., :1, :] + _mv(transition[..., :1, :, :], s0.unsqueeze(-2))
    return matrix_linear_recurrence(transition, torch.cat([first, increments[..., 1:, :]], -2),
                                    dim=-2)


class GaussMarkovReadoutPath(TorchDistribution):
    r"""Path :math:`y_{1:K}` of the noiseless readout :math:`y_k = H s_k` of a Gauss--Markov
    chain, given the readout :math:`y_0` at the start.

    .. math::

        s_0 \sim \mathcal N(m_0, P_0), \qquad
        s_k = A_k s_{k-1} + b_k + w_k, \quad w_k \sim \mathcal N(0, Q_k), \qquad
        y_k = H s_k,

    conditioned on :math:`H s_0 = y_0` (:func:`condition_on_readout`). :meth:`log_prob` is
    the exact prediction-error decomposition, evaluated as a parallel prefix scan (module
    docstring); :meth:`rsample` draws the state path by the parallel linear recurrence
    (:func:`~pyro_vpf.ops.matrix_linear_recurrence`) and reads it out. Neither loops over
    time. ``Q_k`` and ``P_0`` may be singular (a noiseless block, one noise driving several
    states) as long as :math:`H Q_k H^\top` is positive definite.

    Args:
        y0 (torch.Tensor): ``(..., R)``.
        loc0 (torch.Tensor): :math:`m_0`, ``(..., S)``.
        cov0 (torch.Tensor): :math:`P_0`, ``(..., S, S)``, with :math:`H P_0 H^\top \succ 0`.
        transition (torch.Tensor): :math:`A_k`, ``(..., K, S, S)``.
        shift (torch.Tensor): :math:`b_k`, ``(..., K, S)``.
        noise_cov (torch.Tensor): :math:`Q_k`, ``(..., K, S, S)``.
        readout (torch.Tensor): :math:`H`, ``(..., R, S)``.
        execution (str): how the chain's scans run: ``"auto"`` (the rule of
            :func:`~pyro_vpf.chain.associative.choose_execution`), ``"parallel"`` or
            ``"sequential"``.

    ``event_shape == (K, R)``; the batch shape is the broadcast of the arguments' batches.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, y0, loc0, cov0, transition, shift, noise_cov, readout,
                 validate_args=None, *, execution="auto"):
        if readout.dim() < 2 or y0.shape[-1:] != readout.shape[-2:-1]:
            raise ValueError(f"readout must be (..., R, S) with R = y0's {tuple(y0.shape[-1:])}, "
                             f"got {tuple(readout.shape)}")
        S = readout.shape[-1]
        if transition.dim() < 3 or transition.shape[-2:] != (S, S):
            raise ValueError(f"transition must be (..., K, {S}, {S}), got "
                             f"{tuple(transition.shape)}")
        K = transition.shape[-3]
        checks = (("loc0", loc0, (S,)), ("cov0", cov0, (S, S)), ("shift", shift, (K, S)),
                  ("noise_cov", noise_cov, (K, S, S)))
        for name, value, shape in checks:
            if value.shape[value.dim() - len(shape):] != shape:
                raise ValueError(f"{name} must end in {shape}, got {tuple(value.shape)}")
        try:
            batch_shape = torch.broadcast_shapes(
                y0.shape[:-1], loc0.shape[:-1], cov0.shape[:-2], transition.shape[:-3],
                shift.shape[:-2], noise_cov.shape[:-3], readout.shape[:-2])
        except RuntimeError as err:
            raise ValueError("batch dimensions of the arguments do not broadcast") from err
        self.y0, self.loc0, self.cov0 = y0, loc0, cov0
        self.transition, self.shift, self.noise_cov, self.readout = (
            transition, shift, noise_cov, readout)
        choose_execution(1, 1, y0.device, execution)  # a ValueError naming it if unknown
        self.execution = execution
        super().__init__(batch_shape, torch.Size((K, y0.shape[-1])), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GaussMarkovReadoutPath, _instance)
        batch_shape = torch.Size(batch_shape)
        for name, event in (("y0", 1), ("loc0", 1), ("cov0", 2), ("transition", 3),
                            ("shift", 2), ("noise_cov", 3), ("readout", 2)):
            value = getattr(self, name)
            setattr(new, name, value.expand(batch_shape + value.shape[value.dim() - event:]))
        new.execution = self.execution
        super(GaussMarkovReadoutPath, new).__init__(batch_shape, self.event_shape,
                                                    validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _start(self):
        """The start conditioned on ``y0``: ``(loc, cov, projection)``."""
        return condition_on_readout(self.loc0, self.cov0, self.readout, self.y0)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)  # (..., K, R)
        loc0, _, projection = self._start()
        states = draw_states(loc0, projection @ psd_root(self.cov0), self.transition,
                             psd_root(self.noise_cov), self.shift, shape[:-2])
        return _mv(self.readout.unsqueeze(-3), states)

    def filter(self, value):
        r"""Filtered moments :math:`E[s_k \mid y_{0:k}]`, :math:`\mathrm{Cov}[s_k \mid y_{0:k}]`
        of every step, ``(..., K+1, S)`` and ``(..., K+1, S, S)`` (step 0 included), and the
        log-density of ``value`` ``(...)``, by the engine's readout filter
        (:mod:`pyro_vpf.chain.readout`). The covariances do not depend on the values and
        keep the batch of the covariance arguments (shared by every path drawn at the same
        times)."""
        if self._validate_args:
            self._validate_sample(value)
        A, b, H = self.transition, self.shift, self.readout
        m0, P0, _ = self._start()
        covs, V, gain, projection = filtered_covariances(P0, A, self.noise_cov, H,
                                                         self.execution)
        check_resolution(V, value.detach().abs().max(), value.dtype,
                         f"{type(self).__name__}.log_prob")
        # the means: m_k = (I - G_k H)(A_k m_{k-1} + b_k) + G_k y_k, matrices shared by paths
        batch = torch.broadcast_shapes(value.shape[:-2], self.batch_shape)
        m0 = m0.expand(batch + m0.shape[-1:])
        M = projection @ A
        u = _mv(projection, b) + _mv(gain, value)
        first = u[..., :1, :] + _mv(M[..., :1, :, :], m0.unsqueeze(-2))
        means = matrix_linear_recurrence(M, torch.cat([first, u[..., 1:, :]], -2), dim=-2,
                                         execution=self.execution)
        means = torch.cat([m0.unsqueeze(-2), means], -2)
        predicted = _mv(A, means[..., :-1, :]) + b
        error = value - _mv(H.unsqueeze(-3), predicted)
        return means, covs, innovation_log_density(error, V)

    def log_prob(self, value):
        return self.filter(value)[2]


class ProcessPath(TorchDistribution):
    r"""Path :math:`y_{1:K}` of a base process's readout at given times, given :math:`y_0`.

    Each of the ``D`` coordinates is :math:`y = \mu + H s` for an independent state
    :math:`s` of the process (:mod:`pyro_vpf.processes`), started from its initial law
    :math:`\mathcal N(0, P_0)` conditioned on :math:`H s(t_0) = y_0 - \mu`, with exact
    transitions :math:`(A(\Delta_k), Q(\Delta_k))` for any (irregular, per-path) spacing. The
    event is the readout alone, ``(K, D)``: its density is exact
    (:class:`GaussMarkovReadoutPath`), the hidden state (velocity, the cycle's other
    coordinate, the slope) is integrated out, and the path is the one quantity the
    time-conditioned flow and the likelihood see — carrying the whole state instead would let
    the flow mix a rough derivative into the path and lose the smoothness the base was chosen
    for. A one-dimensional state has a Markov readout and is scored directly.

    Args:
        process (LTIProcess or list): one process with batch shape ``()`` (shared by every
            coordinate) or ``(D,)`` (one per coordinate), or a list of processes whose batch
            sizes (1 for ``()``) add up to ``D`` (different kinds per coordinate).
        y0 (torch.Tensor): ``(..., D)``.
        times (torch.Tensor): strictly increasing, ``(K+1,)`` or ``(..., K+1)``, ``K >= 1``.
        mean (float or torch.Tensor): :math:`\mu`, broadcastable to ``(D,)``.
        execution (str): how the chain's scans run (:class:`GaussMarkovReadoutPath`).

    ``event_shape == (K, D)``.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, process, y0, times, mean=0.0, validate_args=None, *, execution="auto"):
        if not isinstance(y0, torch.Tensor) or y0.dim() < 1:
            raise ValueError("ProcessPath argument 'y0' must be a tensor of shape (..., D)")
        if not isinstance(times, torch.Tensor) or times.dim() < 1 or times.shape[-1] < 2:
            raise ValueError("ProcessPath argument 'times' must be a tensor (..., K+1), K >= 1")
        if times.dtype != y0.dtype or times.device != y0.device:
            raise ValueError(f"ProcessPath argument 'times' has dtype {times.dtype} on "
                             f"{times.device}, but y0 has {y0.dtype} on {y0.device}")
        D = y0.shape[-1]
        parts, sizes = coordinate_parts(process, D, "ProcessPath argument 'process'")
        for p in parts:
            if p._like.dtype != y0.dtype or p._like.device != y0.device:
                raise ValueError(f"ProcessPath argument 'process' has dtype {p._like.dtype} on "
                                 f"{p._like.device}, but y0 has {y0.dtype} on {y0.device}")
        self.parts, self.sizes = parts, sizes
        choose_execution(1, 1, y0.device, execution)  # a ValueError naming it if unknown
        self.y0, self.times, self.execution = y0, times, execution
        self.loc = torch.as_tensor(mean, dtype=y0.dtype, device=y0.device)
        try:
            batch_shape = torch.broadcast_shapes(y0.shape[:-1], times.shape[:-1],
                                                 self.loc.shape[:-1])
        except RuntimeError as err:
            raise ValueError(f"batch dimensions do not broadcast: y0 {tuple(y0.shape)}, "
                             f"times {tuple(times.shape)}") from err
        super().__init__(batch_shape, torch.Size((times.shape[-1] - 1, D)),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        D = self.event_shape[-1]
        return ProcessPath(self.parts if len(self.parts) > 1 else self.parts[0],
                           self.y0.expand(batch_shape + (D,)),
                           self.times.expand(batch_shape + self.times.shape[-1:]), self.loc,
                           validate_args=self._validate_args, execution=self.execution)

    def _inner(self, part, y0):
        """The coordinate-batched readout path of one part: batch ``(..., d)``, event
        ``(K, 1)``."""
        A, Q = part.transition(self.times.diff(dim=-1))  # (..., K, *pb, S, S)
        if not len(part.batch_shape):
            A, Q = A.unsqueeze(-3), Q.unsqueeze(-3)
        A, Q = A.movedim(-3, -4), Q.movedim(-3, -4)  # (..., d, K, S, S)
        cov0 = part.initial_covariance()
        H = part.readout()
        if not len(part.batch_shape):
            cov0, H = cov0.unsqueeze(-3), H.unsqueeze(-2)
        S = part.state_dim
        zeros = A.new_zeros(A.shape[-3:-1])
        return GaussMarkovReadoutPath(y0.unsqueeze(-1), cov0.new_zeros(cov0.shape[:-1]), cov0,
                                      A, zeros, Q, H.unsqueeze(-2).expand(H.shape[:-1] + (1, S)),
                                      execution=self.execution)

    def _split(self, value):
        return value.split(self.sizes, dim=-1)

    def _centred_start(self):
        return self._split(self.y0 - self.loc)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        total = 0.0
        for part, y0, y in zip(self.parts, self._centred_start(), self._split(value - self.loc),
                               strict=True):
            if part.state_dim == 1:
                total = total + self._markov_log_prob(part, y0, y)
            else:
                inner = self._inner(part, y0)
                total = total + inner.log_prob(y.movedim(-1, -2).unsqueeze(-1)).sum(-1)
        return total

    def _markov_log_prob(self, part, y0, y):
        r"""A one-dimensional state: :math:`y_k \mid y_{k-1} \sim \mathcal N(A y_{k-1},
        h^2 Q)`."""
        A, Q = part.transition(self.times.diff(dim=-1))
        h = part.readout()
        if not len(part.batch_shape):
            A, Q, h = A.unsqueeze(-3), Q.unsqueeze(-3), h.unsqueeze(-2)
        A, Q, h = A[..., 0, 0], Q[..., 0, 0], h[..., 0]
        previous = torch.cat([y0.unsqueeze(-2).expand(y.shape[:-2] + (1, y.shape[-1])),
                              y[..., :-1, :]], -2)
        variance = h.square() * Q
        log_density = -0.5 * ((y - A * previous).square() / variance + variance.log()
                              + math.log(2 * math.pi))
        return log_density.sum((-1, -2))

    def rsample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        paths = []
        for part, y0 in zip(self.parts, self._centred_start(), strict=True):
            inner = self._inner(part, y0)
            draw = inner.rsample(sample_shape)  # (..., d, K, 1)
            paths.append(draw.squeeze(-1).movedim(-2, -1).expand(
                sample_shape + self.batch_shape + (self.event_shape[0], draw.shape[-3])))
        return torch.cat(paths, -1) + self.loc

    def filtered_state(self, value):
        r"""The state at the last time given the whole readout path, per part:
        a list of ``(loc, cov)``, ``(..., d, S)`` and ``(..., d, S, S)`` (means of the centred
        state :math:`s`, i.e. with :math:`\mu` removed)."""
        states = []
        for part, y0, y in zip(self.parts, self._centred_start(), self._split(value - self.loc),
                               strict=True):
            means, covs, _ = self._inner(part, y0).filter(y.movedim(-1, -2).unsqueeze(-1))
            states.append((means[..., -1, :], covs[..., -1, :, :]))
        return states

    def forecast(self, value, future_times):
        r"""Draws of the readout at ``future_times`` given the whole path ``value``.

        The state at the last time given :math:`y_{0:K}` (:meth:`filtered_state`: the slope of
        a trend, the phase of a cycle, the velocity of a Matérn path), then the exact
        transitions onwards: structure is carried forward, not only the last value.

        Args:
            value (torch.Tensor): :math:`y_{1:K}`, ``(..., K, D)``.
            future_times (torch.Tensor): ``(F,)`` or ``(..., F)``, after ``times[..., -1]``.

        Returns:
            torch.Tensor: ``(..., F, D)``, one draw per path.
        """
        last = self.times[..., -1:]
        batch = torch.broadcast_shapes(last.shape[:-1], future_times.shape[:-1])
        grid = torch.cat([last.expand(batch + (1,)),
                          future_times.expand(batch + future_times.shape[-1:])], -1)
        paths = []
        for part, (loc, cov) in zip(self.parts, self.filtered_state(value), strict=True):
            A, Q = part.transition(grid.diff(dim=-1))  # (..., F, *pb, S, S)
            H = part.readout()
            if not len(part.batch_shape):
                A, Q, H = A.unsqueeze(-3), Q.unsqueeze(-3), H.unsqueeze(-2)
            A, Q = A.movedim(-3, -4), Q.movedim(-3, -4)  # (..., d, F, S, S)
            states = draw_states(loc, psd_root(cov), A, psd_root(Q))
            paths.append((states * H.unsqueeze(-2)).sum(-1).movedim(-2, -1))  # (..., F, d)
        return torch.cat(paths, -1) + self.loc
