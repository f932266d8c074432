r"""Local linear trend and integrated random walk: latent paths that extrapolate a slope."""

import torch

from pyro_vpf.processes.base import LTIProcess, positive

__all__ = ["IntegratedRandomWalk", "LocalLinearTrend"]


class LocalLinearTrend(LTIProcess):
    r"""Local linear trend: a level :math:`\ell` whose slope :math:`v` is a random walk.

    .. math::

        d\ell = v\,dt + \sigma_\ell\,dW_1, \qquad dv = \sigma_v\,dW_2, \qquad y = \ell,

    so :math:`F = \begin{bmatrix}0 & 1\\ 0 & 0\end{bmatrix}` and, exactly for any gap,

    .. math::

        A(\Delta) = \begin{bmatrix}1 & \Delta\\ 0 & 1\end{bmatrix}, \qquad
        Q(\Delta) = \begin{bmatrix}\sigma_\ell^2\Delta + \sigma_v^2\Delta^3/3 &
            \sigma_v^2\Delta^2/2 \\ \sigma_v^2\Delta^2/2 & \sigma_v^2\Delta\end{bmatrix}.

    With ``level_scale=0`` it is the integrated random walk (the cubic smoothing spline
    prior): a once-differentiable path. The process has no stationary law; it starts from
    :math:`\mathcal N(0, \operatorname{diag}(s_\ell^2, s_v^2))` (``init_level_scale``,
    ``init_slope_scale``, learned): conditioned on the path's first value, the slope keeps
    :math:`\mathcal N(0, s_v^2)`, and a forecast carries the slope the data imply forward.

    Args:
        level_scale (float or torch.Tensor): :math:`\sigma_\ell \ge 0` (0: integrated random
            walk, not learned).
        slope_scale (float or torch.Tensor): :math:`\sigma_v > 0`.
        init_level_scale, init_slope_scale (float or torch.Tensor): initial standard
            deviations, > 0.
    """

    state_dim = 2

    def __init__(self, level_scale=0.1, slope_scale=0.1, init_level_scale=1.0,
                 init_slope_scale=1.0):
        super().__init__()
        self.integrated = bool(torch.all(torch.as_tensor(level_scale) == 0))
        if not self.integrated:
            self._constrained("level_scale", level_scale, positive())
        self._constrained("slope_scale", slope_scale, positive())
        self._constrained("init_level_scale", init_level_scale, positive())
        self._constrained("init_slope_scale", init_slope_scale, positive())

    @property
    def level_scale(self):
        if self.integrated:
            return torch.zeros_like(self.slope_scale)
        return self._value("level_scale")

    @property
    def slope_scale(self):
        return self._value("slope_scale")

    def _scales(self):
        return torch.broadcast_tensors(self.level_scale, self.slope_scale,
                                       self._value("init_level_scale"),
                                       self._value("init_slope_scale"))

    def drift(self):
        level, *_ = self._scales()
        F = level.new_zeros(level.shape + (2, 2))
        F[..., 0, 1] = 1.0
        return F

    def diffusion(self):
        level, slope, *_ = self._scales()
        return torch.diag_embed(torch.stack([level.square(), slope.square()], -1))

    def initial_covariance(self):
        *_, init_level, init_slope = self._scales()
        return torch.diag_embed(torch.stack([init_level.square(), init_slope.square()], -1))

    def readout(self):
        level, *_ = self._scales()
        return torch.stack([torch.ones_like(level), torch.zeros_like(level)], -1)

    def transition(self, dt):
        level, slope, *_ = self._scales()
        d = dt.reshape(dt.shape + (1,) * level.dim())
        one, zero = torch.ones_like(d * level), torch.zeros_like(d * level)
        A = torch.stack([torch.stack([one, d * one], -1), torch.stack([zero, one], -1)], -2)
        qs, ql = slope.square(), level.square()
        Q01 = qs * d.square() / 2
        Q = torch.stack([torch.stack([ql * d + qs * d**3 / 3, Q01], -1),
                         torch.stack([Q01, qs * d], -1)], -2)
        return A, Q


def IntegratedRandomWalk(slope_scale=0.1, init_level_scale=1.0, init_slope_scale=1.0):
    r"""The integrated random walk :math:`\ddot y = \sigma_v \dot W`: a
    :class:`LocalLinearTrend` with no level noise (``level_scale=0``)."""
    return LocalLinearTrend(0.0, slope_scale, init_level_scale, init_slope_scale)
