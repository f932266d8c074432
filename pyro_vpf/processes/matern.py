r"""Matérn Gaussian processes of half-integer order in state-space form."""

import math
from fractions import Fraction

import torch

from pyro_vpf.processes.base import LTIProcess, positive

__all__ = ["Matern"]


def _polynomial_tables(p):
    r"""Rational coefficient tables of the closed-form transition of Matérn :math:`p + 1/2`.

    With :math:`x = \lambda\Delta`, :math:`A_{ij} = e^{-x}\lambda^{i-j} \sum_n V_{ijn} x^n` and
    :math:`Q_{ij} = \sigma^2 \lambda^{i+j} \sum_n W_{ijn}\, P(n+1, 2x)` (:math:`P` the
    regularised lower incomplete gamma function). Derivation: the state is
    :math:`(f, f', \dots, f^{(p)})` with :math:`(D + \lambda)^{p+1} f = 0`, so column
    :math:`j` of :math:`e^{Fu}` is :math:`e^{-\lambda u}(D_u - \lambda)^i g_j(u)` with
    :math:`g_j(u) = \sum_{m \ge j}\binom{m}{j}\lambda^{m-j}u^m/m!` (the polynomial that meets
    the initial conditions :math:`e_j`), i.e. :math:`\lambda^{i-j}(D_x - 1)^i G_j(x)`; and
    :math:`Q = q\int_0^\Delta e^{Fu}e_p e_p^\top e^{F^\top u}du` with
    :math:`\int_0^x v^n e^{-2v}dv = n!\,2^{-n-1}P(n+1, 2x)` and the spectral density
    :math:`q = \sigma^2\lambda^{2p+1}\, 2\cdot 4^p (p!)^2/(2p)!`.
    Exact rational arithmetic: coefficients that cancel are exactly zero.
    """
    S = p + 1

    def derivative_minus_one(poly):  # (D_x - 1) on coefficient lists
        out = [Fraction(0)] * len(poly)
        for n, c in enumerate(poly):
            out[n] -= c
            if n:
                out[n - 1] += n * c
        return out

    V = [[None] * S for _ in range(S)]
    for j in range(S):
        poly = [Fraction(math.comb(m, j), math.factorial(m)) if m >= j else Fraction(0)
                for m in range(S)]
        for i in range(S):
            V[i][j] = poly
            poly = derivative_minus_one(poly)
    c_p = Fraction(2 * 4**p * math.factorial(p) ** 2, math.factorial(2 * p))
    N = 2 * p + 1
    W = [[[Fraction(0)] * N for _ in range(S)] for _ in range(S)]
    for i in range(S):
        for j in range(S):
            for n, a in enumerate(V[i][p]):
                for m, b in enumerate(V[j][p]):
                    W[i][j][n + m] += c_p * a * b * math.factorial(n + m) / 2 ** (n + m + 1)
    V = torch.tensor([[[float(c) for c in V[i][j]] for j in range(S)] for i in range(S)],
                     dtype=torch.float64)
    W = torch.tensor([[[float(c) for c in W[i][j]] for j in range(S)] for i in range(S)],
                     dtype=torch.float64)
    return V, W


class Matern(LTIProcess):
    r"""Matérn Gaussian process of order :math:`\nu = p + \tfrac12` in state-space form
    (Hartikainen & Särkkä, 2010).

    Stationary covariance kernel, :math:`r = |t - t'|`, :math:`\lambda = \sqrt{2\nu}/\ell`:
    :math:`\sigma^2 e^{-\lambda r}` (:math:`\nu = \tfrac12`, the OU),
    :math:`\sigma^2(1 + \lambda r)e^{-\lambda r}` (:math:`\tfrac32`),
    :math:`\sigma^2(1 + \lambda r + \lambda^2 r^2/3)e^{-\lambda r}` (:math:`\tfrac52`). The
    state is the path and its first :math:`p` derivatives, :math:`s = (f, \dots, f^{(p)})`,

    .. math::

        ds = F s\,dt + e_p\sqrt q\,dW, \qquad
        F = \begin{bmatrix} 0 & 1 & \\ & \ddots & 1 \\
            -\binom{p+1}{0}\lambda^{p+1} & \cdots & -\binom{p+1}{p}\lambda \end{bmatrix},

    started from the stationary covariance :math:`P_\infty`; paths are :math:`p` times
    differentiable. The transition :math:`(A, Q)` is in closed form (polynomials in
    :math:`\lambda\Delta` times :math:`e^{-\lambda\Delta}`), accurate entry by entry down to
    gaps of :math:`10^{-6}\ell`, where Van Loan's matrix exponential would lose the
    :math:`O(\Delta^{2p+1})` readout variance to rounding.

    Args:
        nu (float): 0.5, 1.5 or 2.5.
        lengthscale (float or torch.Tensor): :math:`\ell > 0` (time).
        scale (float or torch.Tensor): marginal standard deviation :math:`\sigma > 0`.
    """

    def __init__(self, nu=1.5, lengthscale=1.0, scale=1.0):
        super().__init__()
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"Matern argument 'nu' must be 0.5, 1.5 or 2.5, got {nu!r}")
        self.nu = float(nu)
        self.order = int(nu - 0.5)
        self.state_dim = self.order + 1
        self._constrained("lengthscale", lengthscale, positive())
        self._constrained("scale", scale, positive())
        # exact rational tables kept in float64 outside the module's buffers, cast to the
        # parameters' dtype and device where used: Matern(...).double() must not inherit
        # coefficients rounded to the default dtype
        V, W = _polynomial_tables(self.order)
        p = self.order
        companion = torch.tensor([float(math.comb(p + 1, j)) for j in range(p + 1)],
                                 dtype=torch.float64)
        self._tables = {"V": V.to(torch.float64), "W": W.to(torch.float64),
                        "companion": companion,
                        "index": torch.arange(self.state_dim, dtype=torch.float64)}

    def _table(self, name):
        like = self._like
        return self._tables[name].to(dtype=like.dtype, device=like.device)

    @property
    def _V(self):
        return self._table("V")

    @property
    def _W(self):
        return self._table("W")

    @property
    def _companion(self):
        return self._table("companion")

    @property
    def _index(self):
        return self._table("index")

    @property
    def lengthscale(self):
        return self._value("lengthscale")

    @property
    def scale(self):
        return self._value("scale")

    @property
    def _lam(self):
        lengthscale, _ = torch.broadcast_tensors(self.lengthscale, self.scale)
        return math.sqrt(2 * self.nu) / lengthscale

    def _powers(self, lam, offsets):
        return lam[..., None, None] ** offsets  # (*batch, S, S)

    def drift(self):
        lam = self._lam
        S, p = self.state_dim, self.order
        F = lam.new_zeros(lam.shape + (S, S))
        if S > 1:
            F[..., torch.arange(S - 1), torch.arange(1, S)] = 1.0
        F[..., p, :] = -self._companion * lam.unsqueeze(-1) ** (p + 1 - self._index)
        return F

    def _spectral(self):
        p = self.order
        c_p = 2 * 4**p * math.factorial(p) ** 2 / math.factorial(2 * p)
        return c_p * self._broadcast_scale().square() * self._lam ** (2 * p + 1)

    def _broadcast_scale(self):
        _, scale = torch.broadcast_tensors(self.lengthscale, self.scale)
        return scale

    def diffusion(self):
        S = self.state_dim
        q = self._spectral()
        LLt = q.new_zeros(q.shape + (S, S))
        LLt[..., S - 1, S - 1] = q
        return LLt

    def initial_covariance(self):
        lam = self._lam
        offsets = self._index[:, None] + self._index[None, :]
        return (self._broadcast_scale().square()[..., None, None] * self._powers(lam, offsets)
                * self._W.sum(-1))

    def readout(self):
        H = self._lam.new_zeros(self._lam.shape + (self.state_dim,))
        H[..., 0] = 1.0
        return H

    def transition(self, dt):
        lam = self._lam
        x = dt.reshape(dt.shape + (1,) * lam.dim()) * lam  # (..., *batch)
        n_A = torch.arange(self.state_dim, dtype=x.dtype, device=x.device)
        A_poly = torch.einsum("ijn,...n->...ij", self._V, x.unsqueeze(-1) ** n_A)
        A = torch.exp(-x)[..., None, None] * self._powers(lam, self._index[:, None]
                                                          - self._index[None, :]) * A_poly
        n_Q = torch.arange(2 * self.order + 1, dtype=x.dtype, device=x.device)
        gamma = torch.special.gammainc(n_Q + 1, 2 * x.unsqueeze(-1))
        Q = torch.einsum("ijn,...n->...ij", self._W, gamma)
        Q = (self._broadcast_scale().square()[..., None, None]
             * self._powers(lam, self._index[:, None] + self._index[None, :]) * Q)
        return A, 0.5 * (Q + Q.transpose(-1, -2))

    def extra_repr(self):
        return f"nu={self.nu}, " + super().extra_repr()
