r"""Conditioning a chain on Gaussian potentials, one step at a time: the backward information
filter.

For the chain :math:`z_k = F_k z_{k-1} + c_k + C_k \varepsilon_k` and potentials
:math:`\phi_k(z) = \exp(-\tfrac12 z^\top J_k z + h_k^\top z)`, :math:`k = 0..K`, what the
potentials from :math:`k` on say about :math:`z_k` is
:math:`\beta_k(z) \propto \exp(-\tfrac12 z^\top \Lambda_k z + \eta_k^\top z)`, with
:math:`(\Lambda_K, \eta_K) = (J_K, h_K)` and, going backwards, with
:math:`G_k = I + C_k^\top \Lambda_k C_k = L_k L_k^\top` (Cholesky) and
:math:`S_k = C_k G_k^{-1} C_k^\top = V_k^\top V_k`, :math:`V_k = L_k^{-1} C_k^\top`:

.. math::

    A_k = (I - S_k \Lambda_k) F_k, \qquad
    b_k = c_k + S_k (\eta_k - \Lambda_k c_k), \\
    \Lambda_{k-1} = J_{k-1} + F_k^\top \Lambda_k A_k, \qquad
    \eta_{k-1} = h_{k-1} + F_k^\top (\eta_k - \Lambda_k b_k),

where :math:`(A_k, b_k, S_k)` is the conditioned transition
:math:`q(z_k \mid z_{k-1}) \propto p(z_k \mid z_{k-1})\, \beta_k(z_k)`. Only
:math:`G_k \succeq I` is factorised, so steps with no information (:math:`J = 0`) and nearly
deterministic transitions are both safe. This is the sequential execution of the suffix scan
that :func:`~pyro_vpf.distributions.gauss_markov_posterior` runs in parallel with
:func:`~pyro_vpf.chain.elements.gaussian_combine`: the same quantities, one step of seven
small matrix products, a Cholesky factorisation and a triangular solve at a time, batched over
everything but time, with no per-step scan elements built beforehand.
"""

import torch

__all__ = ["backward_information_filter"]


def _mv(matrix, vector):
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def backward_information_filter(transition, shift, scale_tril, precision, information):
    r"""The backward information filter (module docstring), one step at a time.

    Args:
        transition (torch.Tensor): :math:`F_k`, ``(..., K, D, D)``.
        shift (torch.Tensor): :math:`c_k`, ``(..., K, D)``.
        scale_tril (torch.Tensor): :math:`C_k`, ``(..., K, D, D)``, any square roots of the
            noise covariances (singular ones included).
        precision (torch.Tensor): :math:`J_k`, ``(..., K+1, D, D)``, positive semi-definite.
        information (torch.Tensor): :math:`h_k`, ``(..., K+1, D)``.

    All arguments share one batch shape ``(...)``.

    Returns:
        tuple: ``(A, b, gram, cov, Lam, eta)``: the conditioned transitions :math:`A_k`
        ``(..., K, D, D)`` and shifts :math:`b_k` ``(..., K, D)``, :math:`G_k` and
        :math:`S_k` ``(..., K, D, D)``, and :math:`\Lambda_k` ``(..., K+1, D, D)``,
        :math:`\eta_k` ``(..., K+1, D)`` for :math:`k = 0..K`.
    """
    K, D = shift.shape[-2:]
    eye = torch.eye(D, dtype=shift.dtype, device=shift.device)
    # unbind once: the backward pass of a slice per step would write a full-size gradient
    # per step
    Fs, cs, Cs = transition.unbind(-3), shift.unbind(-2), scale_tril.unbind(-3)
    Js, hs = precision.unbind(-3), information.unbind(-2)
    Lam = 0.5 * (Js[K] + Js[K].transpose(-1, -2))
    eta = hs[K]
    out = {name: [None] * K for name in ("A", "b", "gram", "cov")}
    Lams, etas = [None] * (K + 1), [None] * (K + 1)
    Lams[K], etas[K] = Lam, eta
    for k in range(K - 1, -1, -1):
        F, c, C = Fs[k], cs[k], Cs[k]
        Ct = C.transpose(-1, -2)
        gram = eye + Ct @ Lam @ C
        chol = torch.linalg.cholesky(0.5 * (gram + gram.transpose(-1, -2)))
        V = torch.linalg.solve_triangular(chol, Ct, upper=False)
        S = V.transpose(-1, -2) @ V
        SLam = S @ Lam
        A = F - SLam @ F
        b = c + _mv(S, eta - _mv(Lam, c))
        Ft = F.transpose(-1, -2)
        Lam = Js[k] + Ft @ Lam @ A
        Lam = 0.5 * (Lam + Lam.transpose(-1, -2))
        eta = hs[k] + _mv(Ft, eta - _mv(Lams[k + 1], b))
        Lams[k], etas[k] = Lam, eta
        for name, value in (("A", A), ("b", b), ("gram", gram), ("cov", S)):
            out[name][k] = value
    stacked = [torch.stack(out[name], -3 if name != "b" else -2)
               for name in ("A", "b", "gram", "cov")]
    return (*stacked, torch.stack(Lams, -3), torch.stack(etas, -2))
