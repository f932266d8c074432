r"""A polynomial trend fitted to the observed part of a series, to remove before modelling."""

import torch

__all__ = ["PolynomialTrend"]


class PolynomialTrend:
    r"""Least-squares polynomial :math:`p(t) = \sum_{j \le q} c_j \tilde t^{\,j}` through the
    observed points of a series, with :math:`\tilde t = (t - t_0) / s` centred and scaled for
    conditioning.

    Stationary latent models (an OU path is mean-reverting) cannot extrapolate a trend that
    never turns; fitting it on the history alone, modelling the residual and adding
    :math:`p(t)` back to every forecast draw keeps the test period out of the fit.

    Args:
        degree (int): :math:`q \ge 0`.

    Example::

        trend = PolynomialTrend(2).fit(times, values, mask)
        residual = values - trend(times)
    """

    def __init__(self, degree=2):
        if int(degree) != degree or degree < 0:
            raise ValueError(f"degree must be a non-negative integer, got {degree}")
        self.degree = int(degree)
        self.coefficients = self.origin = self.span = None

    def _design(self, times):
        scaled = (times.double() - self.origin) / self.span
        return scaled.unsqueeze(-1) ** torch.arange(self.degree + 1, dtype=torch.float64,
                                                    device=times.device)

    def fit(self, times, values, mask=None):
        """Fit to ``values (T,)`` at ``times (T,)`` where ``mask (T,)`` is ``True``."""
        if times.dim() != 1 or values.shape != times.shape:
            raise ValueError(f"times and values must both be (T,), got {tuple(times.shape)} and "
                             f"{tuple(values.shape)}")
        keep = torch.ones_like(times, dtype=torch.bool) if mask is None else mask.reshape(-1)
        if int(keep.sum()) <= self.degree:
            raise ValueError(f"need more than {self.degree} observed points to fit the trend")
        t = times[keep].double()
        self.origin, self.span = t.mean(), t.std().clamp_min(1e-12)
        design = self._design(times[keep])
        solution = torch.linalg.lstsq(design, values[keep].double().unsqueeze(-1)).solution
        self.coefficients = solution.squeeze(-1)
        return self

    def __call__(self, times):
        """:math:`p(t)` at ``times``, in ``times``' dtype."""
        if self.coefficients is None:
            raise ValueError("fit the trend first")
        return (self._design(times) @ self.coefficients).to(times.dtype)
