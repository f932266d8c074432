r"""Stochastic damped oscillators: quasi-periodic cycles, and exactly periodic seasons."""

import math

import torch

from pyro_vpf.processes.base import LTIProcess, positive

__all__ = ["Oscillator"]


def _block_diagonal(blocks):
    """``(..., n, s, s)`` -> ``(..., n s, n s)`` block-diagonal."""
    n, s = blocks.shape[-3], blocks.shape[-1]
    eye = torch.eye(n, dtype=blocks.dtype, device=blocks.device)
    return torch.einsum("...kij,kl->...kilj", blocks, eye).reshape(
        blocks.shape[:-3] + (n * s, n * s))


class Oscillator(LTIProcess):
    r"""A stochastic damped resonator: a cycle whose phase and amplitude wander.

    Each harmonic :math:`h = 1..H` is a rotating, decaying 2-D state
    (Solin & Särkkä, 2014, the state-space form of quasi-periodic kernels),

    .. math::

        d\begin{bmatrix}a_h \\ b_h\end{bmatrix} =
            \begin{bmatrix}-\gamma & -\omega_h \\ \omega_h & -\gamma\end{bmatrix}
            \begin{bmatrix}a_h \\ b_h\end{bmatrix} dt + \sqrt{2\gamma}\,\sigma_h\,dW_h,
        \qquad \omega_h = 2\pi h f, \qquad y = \sum_h a_h,

    stationary with :math:`P_\infty = \operatorname{diag}(\sigma_h^2 I_2)`, and exactly

    .. math::

        A_h(\Delta) = e^{-\gamma\Delta}\begin{bmatrix}\cos\omega_h\Delta & -\sin\omega_h\Delta
            \\ \sin\omega_h\Delta & \cos\omega_h\Delta\end{bmatrix}, \qquad
        Q_h(\Delta) = \sigma_h^2\,(-\operatorname{expm1}(-2\gamma\Delta))\, I_2.

    The readout's covariance is :math:`\sum_h \sigma_h^2 e^{-\gamma r}\cos(\omega_h r)`. As
    :math:`\gamma \to 0` the cycle keeps its phase for longer; ``periodic=True`` is the limit
    :math:`\gamma = 0`: an exactly periodic season of known frequency (not learned) with random
    amplitudes and phases, fixed along the path. It has no noise, so it is
    ``deterministic`` and needs a noisy process beside it in a
    :class:`~pyro_vpf.processes.Sum` (a trend, an OU) to make a base.

    Args:
        frequency (float or torch.Tensor): :math:`f > 0`, cycles per unit time (1.0 for a
            yearly cycle with times in years).
        damping (float or torch.Tensor): :math:`\gamma > 0` (1 / time); ignored with
            ``periodic=True``.
        scale (float or torch.Tensor): :math:`\sigma_1 > 0`, the first harmonic's standard
            deviation; harmonic :math:`h` starts at :math:`\sigma_1 / h`, each learned.
        periodic (bool): the exactly periodic season (:math:`\gamma = 0`, fixed frequency).
        num_harmonics (int): :math:`H \ge 1`.
        learn_frequency (bool): learn :math:`f` (default: unless ``periodic``).
    """

    _event_dims = {"scale": 1}

    def __init__(self, frequency=1.0, damping=0.1, scale=1.0, *, periodic=False,
                 num_harmonics=1, learn_frequency=None):
        super().__init__()
        if int(num_harmonics) != num_harmonics or num_harmonics < 1:
            raise ValueError(f"Oscillator argument 'num_harmonics' must be a positive integer, "
                             f"got {num_harmonics!r}")
        self.num_harmonics = int(num_harmonics)
        self.state_dim = 2 * self.num_harmonics
        self.periodic = bool(periodic)
        self.deterministic = self.periodic
        learn_frequency = not self.periodic if learn_frequency is None else learn_frequency
        self._constrained("frequency", frequency, positive(), learnable=learn_frequency)
        if not self.periodic:
            self._constrained("damping", damping, positive())
        scale = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        harmonics = torch.arange(1, self.num_harmonics + 1, dtype=scale.dtype)
        self._constrained("scale", scale.unsqueeze(-1) / harmonics, positive())

    @property
    def frequency(self):
        return self._value("frequency")

    @property
    def damping(self):
        if self.periodic:
            return torch.zeros_like(self.frequency)
        return self._value("damping")

    @property
    def scale(self):
        """Per-harmonic standard deviations, ``(*batch, H)``."""
        return self._value("scale")

    def _rates(self):
        """``(omega, gamma, sigma)`` broadcast to ``(*batch, H)``."""
        harmonics = torch.arange(1, self.num_harmonics + 1, dtype=self.scale.dtype,
                                 device=self.scale.device)
        omega = 2 * math.pi * self.frequency.unsqueeze(-1) * harmonics
        gamma = self.damping.unsqueeze(-1)
        return torch.broadcast_tensors(omega, gamma, self.scale)

    def drift(self):
        omega, gamma, _ = self._rates()
        blocks = torch.stack([torch.stack([-gamma, -omega], -1),
                              torch.stack([omega, -gamma], -1)], -2)
        return _block_diagonal(blocks)

    def _isotropic(self, variance):
        eye = torch.eye(2, dtype=variance.dtype, device=variance.device)
        return _block_diagonal(variance[..., None, None] * eye)

    def diffusion(self):
        _, gamma, sigma = self._rates()
        return self._isotropic(2 * gamma * sigma.square())

    def initial_covariance(self):
        _, _, sigma = self._rates()
        return self._isotropic(sigma.square())

    def readout(self):
        omega, _, _ = self._rates()
        H = torch.zeros(omega.shape[:-1] + (self.state_dim,), dtype=omega.dtype,
                        device=omega.device)
        H[..., 0::2] = 1.0
        return H

    def transition(self, dt):
        omega, gamma, sigma = self._rates()  # (*batch, H)
        d = dt.reshape(dt.shape + (1,) * omega.dim())
        angle = omega * d
        cos, sin = angle.cos(), angle.sin()
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        decay = torch.exp(-gamma * d)
        A = _block_diagonal(decay[..., None, None] * rotation)
        Q = self._isotropic(sigma.square() * (-torch.expm1(-2 * gamma * d)))
        return A, Q
