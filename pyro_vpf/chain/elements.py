r"""The associative operators of the linear-Gaussian chain, for
:mod:`pyro_vpf.chain.associative`.

Each operator takes two lists of tensors, ``earlier`` and ``later`` (the elements of two
adjacent segments, batched over a leading element index and any batch after it), and returns
the element of the joined segment. Vectors are carried as columns ``(..., S, C)``: several
recurrences that share their matrices sit side by side in ``C``, so each matrix product of a
combine multiplies a matrix once for all of them.
"""

import torch

__all__ = ["affine_combine", "covariance_combine", "gaussian_combine",
           "gaussian_covariance_combine", "scalar_affine_combine"]


def scalar_affine_combine(earlier, later, needed=None):
    r"""Elementwise affine maps :math:`x \mapsto a x + b`:
    :math:`(a_1, b_1) \otimes (a_2, b_2) = (a_2 a_1,\; a_2 b_1 + b_2)` (only the second
    with ``needed=(1,)``: it does not read :math:`a_1`)."""
    (a1, b1), (a2, b2) = earlier, later
    b = torch.addcmul(b2, a2, b1)
    return [None, b] if needed == (1,) else [a2 * a1, b]


def affine_combine(earlier, later, needed=None):
    r"""Affine maps :math:`x \mapsto A x + b` with matrices :math:`A` ``(..., S, S)`` and
    vectors as columns ``(..., S, C)``: :math:`(A_2 A_1,\; A_2 b_1 + b_2)` (only the second
    with ``needed=(1,)``: it does not read :math:`A_1`)."""
    (A1, b1), (A2, b2) = earlier, later
    b = torch.baddbmm(b2, A2, b1) if _bmm_able(A2, b1, b2) else A2 @ b1 + b2
    return [None, b] if needed == (1,) else [A2 @ A1, b]


def _bmm_able(*tensors):
    return all(t.dim() == 3 for t in tensors) and len({t.shape[0] for t in tensors}) == 1


def covariance_combine(earlier, later):
    r"""The maps :math:`P \mapsto A P A^\top + S` (the covariance of a Gauss--Markov
    chain): :math:`(A_2 A_1,\; A_2 S_1 A_2^\top + S_2)`."""
    (A1, S1), (A2, S2) = earlier, later
    return [A2 @ A1, A2 @ S1 @ A2.transpose(-1, -2) + S2]


def gaussian_combine(earlier, later):
    r"""The elements :math:`(A, b, C, \eta, J)` of the parallel Kalman filter (Särkkä &
    García-Fernández, 2021, IEEE TAC 66(1)).

    An element describes a segment of the chain with the potentials inside it:
    :math:`z_{\text{end}} \mid z_{\text{start}} \sim \mathcal N(A z_{\text{start}} + b, C)`
    given them, and :math:`\exp(-\tfrac12 z^\top J z + \eta^\top z)` is what they say about
    :math:`z_{\text{start}}`. With :math:`M = (I + C_1 J_2)^{-1}`:

    .. math::

        A = A_2 M A_1, \quad b = A_2 M (b_1 + C_1 \eta_2) + b_2, \quad
        C = A_2 M C_1 A_2^\top + C_2, \\
        \eta = A_1^\top M^\top (\eta_2 - J_2 b_1) + \eta_1, \quad
        J = A_1^\top M^\top J_2 A_1 + J_1.

    :math:`C_1 J_2` is a product of positive semi-definite matrices, so its eigenvalues are
    :math:`\ge 0` and :math:`I + C_1 J_2` is invertible; it is solved against, never
    inverted (it can be badly conditioned where a nearly deterministic step meets precise
    information).
    """
    A1, b1, C1, eta1, J1 = earlier
    A2, b2, C2, eta2, J2 = later
    P, R = _weights(A1, C1, A2, J2)
    A, C, J = _matrices(P, R, A1, C1, A2, C2, J1, J2)
    return [A, P @ (b1 + C1 @ eta2) + b2, C, R @ (eta2 - J2 @ b1) + eta1, J]


def gaussian_covariance_combine(earlier, later):
    r"""The matrix part :math:`(A, C, J)` of :func:`gaussian_combine`: the elements of a
    chain's covariances, which do not depend on the observed values."""
    (A1, C1, J1), (A2, C2, J2) = earlier, later
    P, R = _weights(A1, C1, A2, J2)
    return list(_matrices(P, R, A1, C1, A2, C2, J1, J2))


def _weights(A1, C1, A2, J2):
    """:math:`A_2 M` and :math:`A_1^\top M^\top` of :func:`gaussian_combine`."""
    eye = torch.eye(A1.shape[-1], dtype=A1.dtype, device=A1.device)
    X = eye + C1 @ J2
    return torch.linalg.solve(X, A2, left=False), torch.linalg.solve(X, A1).transpose(-1, -2)


def _matrices(P, R, A1, C1, A2, C2, J1, J2):
    return P @ A1, P @ C1 @ A2.transpose(-1, -2) + C2, R @ J2 @ A1 + J1
