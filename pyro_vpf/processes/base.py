r"""Linear time-invariant SDEs with a scalar readout: the base processes of the latent path.

A process is :math:`ds = F s\,dt + L\,dW` on a small state :math:`s \in \mathbb R^S`, read out
as :math:`y = H s` (one coordinate of the latent path), started from
:math:`s(t_0) \sim \mathcal N(0, P_0)`. Between two times :math:`\Delta` apart the transition
is exact, with no discretisation:

.. math::

    s(t + \Delta) \mid s(t) \sim \mathcal N\big(A(\Delta)\, s(t),\; Q(\Delta)\big), \qquad
    A(\Delta) = e^{F\Delta}, \quad
    Q(\Delta) = \int_0^\Delta e^{Fu} L L^\top e^{F^\top u}\, du.

:class:`LTIProcess` evaluates :math:`(A, Q)` by Van Loan's block matrix exponential (Van Loan,
1978, *IEEE TAC* 23(3)); every process of the collection overrides it with a closed form,
which stays accurate where some entries of :math:`Q` are :math:`O(\Delta^5)`.

Parameters are batched: a process whose parameters have shape ``(D,)`` is ``D`` independent
processes of the same kind, one per latent coordinate (``batch_shape == (D,)``);
:meth:`LTIProcess.expand` turns scalar parameters into per-coordinate ones.
"""

import copy

import torch
from pyro.distributions import constraints
from torch import nn

from pyro_vpf.nn.constrained import ConstrainedParameters

__all__ = ["LTIProcess", "psd_root", "van_loan"]


def van_loan(drift, diffusion, dt):
    r"""Exact :math:`(A(\Delta), Q(\Delta))` of :math:`ds = F s\,dt + L\,dW` by Van Loan's method.

    .. math::

        \exp\left(\begin{bmatrix} -F & L L^\top \\ 0 & F^\top \end{bmatrix}\Delta\right)
        = \begin{bmatrix} \cdot & M_{12} \\ 0 & M_{22} \end{bmatrix}, \qquad
        A = M_{22}^\top, \quad Q = M_{22}^\top M_{12}.

    Accurate to rounding relative to the largest entry of :math:`Q`; entries far below it
    (a smooth process's readout variance at a small gap) lose relative precision, which is
    why the processes of the collection use closed forms.

    Args:
        drift (torch.Tensor): :math:`F`, ``(*batch, S, S)``.
        diffusion (torch.Tensor): :math:`L L^\top`, ``(*batch, S, S)``.
        dt (torch.Tensor): gaps :math:`\Delta \ge 0`, shape ``(...)``.

    Returns:
        tuple: ``(A, Q)``, each ``(..., *batch, S, S)``.
    """
    S = drift.shape[-1]
    top = torch.cat([-drift, diffusion], -1)
    bottom = torch.cat([torch.zeros_like(drift), drift.transpose(-1, -2)], -1)
    block = torch.cat([top, bottom], -2)
    scale = dt.reshape(dt.shape + (1,) * (block.dim() - 2) + (1, 1))
    M = torch.linalg.matrix_exp(block * scale)
    M12, M22 = M[..., :S, S:], M[..., S:, S:]
    A = M22.transpose(-1, -2)
    Q = A @ M12
    return A, 0.5 * (Q + Q.transpose(-1, -2))


def psd_root(cov, jitter=None):
    r"""A square root :math:`R` with :math:`R R^\top \approx` ``cov`` for a PSD matrix that may
    be singular or badly scaled.

    The Cholesky factor of the correlation matrix :math:`D^{-1} C D^{-1}`
    (:math:`D = \operatorname{diag}(C)^{1/2}`), rescaled: entries of a smooth process's noise
    covariance range over many orders of magnitude (:math:`\Delta^5` to :math:`\Delta`), its
    correlation matrix does not. A relative jitter (default: 100 machine epsilons) keeps
    rank-deficient matrices (one driving noise for several states, a noiseless block)
    factorisable; zero rows give exactly zero rows (not rows of the smallest normal number,
    whose products would be subnormal: arithmetic on subnormals is orders of magnitude slower
    on CPUs).
    """
    finfo = torch.finfo(cov.dtype)
    jitter = 100 * finfo.eps if jitter is None else jitter
    variance = cov.diagonal(dim1=-2, dim2=-1)
    d = variance.clamp_min(finfo.tiny).sqrt()
    corr = cov / (d.unsqueeze(-1) * d.unsqueeze(-2))
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    factor = torch.linalg.cholesky(corr + jitter * eye)
    return torch.where(variance > finfo.tiny, d, 0.0).unsqueeze(-1) * factor


class LTIProcess(ConstrainedParameters):
    r"""Base class of the linear time-invariant base processes.

    A subclass sets :attr:`state_dim` and implements :meth:`drift` (:math:`F`),
    :meth:`diffusion` (:math:`L L^\top`), :meth:`initial_covariance` (:math:`P_0`, the
    stationary covariance where there is one) and :meth:`readout` (:math:`H`); it may override
    :meth:`transition` with a closed form. Its parameters are registered with
    :meth:`~pyro_vpf.nn.ConstrainedParameters.register_constrained` (stored unconstrained
    as ``<name>_unconstrained``, a parameter or, when not learnable, a buffer) and read back
    as attributes or with :meth:`~pyro_vpf.nn.ConstrainedParameters.constrained`.

    Attributes:
        state_dim (int): :math:`S`.
        deterministic (bool): ``True`` when no noise reaches the readout (an exactly periodic
            season): such a process has no path density on its own and must be summed with
            one that has (:class:`~pyro_vpf.processes.Sum`).
    """

    state_dim = 1
    deterministic = False
    #: trailing dimensions of each parameter that are not batch dimensions
    _event_dims = {}

    # -- parameters ------------------------------------------------------------------------
    def _constrained(self, name, value, constraint, learnable=True):
        """:meth:`register_constrained` under its earlier name."""
        self.register_constrained(name, value, constraint, learnable)

    def _value(self, name):
        """:meth:`constrained` under its earlier name."""
        return self.constrained(name)

    @property
    def batch_shape(self):
        """The broadcast shape of the parameters' batch dimensions, ``()`` or ``(D,)``."""
        shapes = []
        for name in self.constrained_names():
            raw = self.unconstrained(name)
            event = self._event_dims.get(name, 0)
            shapes.append(raw.shape[:raw.dim() - event])
        return torch.broadcast_shapes(*shapes) if shapes else torch.Size()

    def expand(self, batch_shape):
        """A copy with every parameter repeated to ``batch_shape`` (e.g. one per latent
        coordinate); the copy's parameters are new leaves, learned independently."""
        batch_shape = torch.Size(batch_shape)
        try:
            torch.broadcast_shapes(self.batch_shape, batch_shape)
        except RuntimeError as err:
            raise ValueError(f"{type(self).__name__} with batch shape {tuple(self.batch_shape)} "
                             f"cannot expand to {tuple(batch_shape)}") from err
        new = copy.deepcopy(self)
        for name in new.constrained_names():
            attr = new._constrained_entry(name).unconstrained_name
            raw = getattr(new, attr)
            event = raw.shape[raw.dim() - self._event_dims.get(name, 0):]
            value = raw.detach().expand(batch_shape + event).clone()
            if isinstance(raw, nn.Parameter):
                setattr(new, attr, nn.Parameter(value))
            else:
                new.register_buffer(attr, value)
        return new

    @property
    def _like(self):
        for name in self.constrained_names():
            return self.unconstrained(name)
        raise NotImplementedError

    def _eye(self):
        like = self._like
        return torch.eye(self.state_dim, dtype=like.dtype, device=like.device)

    # -- the SDE ---------------------------------------------------------------------------
    def drift(self):
        r""":math:`F`, ``(*batch, S, S)``."""
        raise NotImplementedError

    def diffusion(self):
        r""":math:`L L^\top`, ``(*batch, S, S)``."""
        raise NotImplementedError

    def initial_covariance(self):
        r""":math:`P_0`, ``(*batch, S, S)``: the law of the state at the first time."""
        raise NotImplementedError

    def readout(self):
        r""":math:`H`, ``(*batch, S)``: the path's value is :math:`H s`."""
        raise NotImplementedError

    def transition(self, dt):
        r"""Exact :math:`(A(\Delta), Q(\Delta))` for gaps ``dt`` ``(...)``, each
        ``(..., *batch, S, S)`` (Van Loan unless a subclass has a closed form)."""
        return van_loan(self.drift(), self.diffusion(), dt)

    def noise_root(self, dt):
        r"""``(A, R)`` with :math:`R R^\top = Q(\Delta)` (:func:`psd_root`), for sampling."""
        A, Q = self.transition(dt)
        return A, psd_root(Q)

    def extra_repr(self):
        values = []
        for name in self.constrained_names():
            value = self.constrained(name).detach()
            text = f"{value.item():.4g}" if value.numel() == 1 else f"{tuple(value.shape)}"
            values.append(f"{name}={text}")
        return ", ".join(values)


def positive():
    """The constraint of rates and scales: positive through a softplus."""
    return constraints.softplus_positive
