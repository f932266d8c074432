r"""The Ornstein--Uhlenbeck process: the default base of the VPF's latent path."""

import torch

from pyro_vpf.ops import exp_ratio
from pyro_vpf.processes.base import LTIProcess, positive

__all__ = ["OU"]


class OU(LTIProcess):
    r"""Ornstein--Uhlenbeck process :math:`ds = -\kappa s\,dt + \sigma\,dW`, read out as is.

    .. math::

        A(\Delta) = e^{-\kappa\Delta}, \qquad
        Q(\Delta) = \sigma^2\,\frac{-\operatorname{expm1}(-2\kappa\Delta)}{2\kappa}, \qquad
        P_0 = P_\infty = \frac{\sigma^2}{2\kappa}.

    Its readout is Markov, so the latent path prior scores it with
    :class:`~pyro_vpf.distributions.OUPath` exactly as before base processes existed.

    Args:
        rate (float or torch.Tensor): :math:`\kappa > 0` (1 / time).
        scale (float or torch.Tensor): :math:`\sigma > 0` (per square-root time; a standard
            deviation, not a variance).
    """

    state_dim = 1

    def __init__(self, rate=1.0, scale=1.0):
        super().__init__()
        self._constrained("rate", rate, positive())
        self._constrained("scale", scale, positive())

    @property
    def rate(self):
        return self._value("rate")

    @property
    def scale(self):
        return self._value("scale")

    def drift(self):
        return -self.rate[..., None, None]

    def diffusion(self):
        return self.scale.square()[..., None, None]

    def initial_covariance(self):
        return (self.scale.square() / (2 * self.rate))[..., None, None]

    def readout(self):
        return torch.ones_like(self.rate).unsqueeze(-1)

    def transition(self, dt):
        rate, scale = torch.broadcast_tensors(self.rate, self.scale)
        d = dt.reshape(dt.shape + (1,) * rate.dim())
        x = d * rate
        A = torch.exp(-x)
        Q = scale.square() * d * exp_ratio(2 * x)  # accurate derivatives as x -> 0
        return A[..., None, None], Q[..., None, None]
