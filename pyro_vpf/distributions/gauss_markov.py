r"""A Gauss--Markov path with full (or diagonal) transition and noise matrices."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_vpf.chain import choose_execution, covariance_combine, gaussian_combine, scan
from pyro_vpf.chain.condition import backward_information_filter
from pyro_vpf.ops import matrix_linear_recurrence

__all__ = ["GaussMarkovPath", "gauss_markov_evidence", "gauss_markov_marginals",
           "gauss_markov_posterior", "linear_gaussian_potentials"]


class GaussMarkovPath(TorchDistribution):
    r"""Gauss--Markov path :math:`z_{1:K}` given :math:`z_0`.

    :math:`z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k` with
    :math:`\varepsilon_k \sim \mathcal N(0, I)` and :math:`L_k` lower-triangular with a
    positive diagonal, so

    .. math::

        \log p(z_{1:K} \mid z_0) = \sum_{k=1}^K
            \log \mathcal N\big(z_k;\; A_k z_{k-1} + b_k,\; L_k L_k^\top\big),

    evaluated for all :math:`k` at once. :meth:`rsample` runs the recurrence as a parallel
    scan (:func:`~pyro_vpf.ops.matrix_linear_recurrence`): no loop over time. Scoring the
    distribution's own last draw (as an ELBO does) takes the whitened residuals
    :math:`L_k^{-1}(z_k - A_k z_{k-1} - b_k)` from the noise :math:`\varepsilon_k` it was drawn
    from, without the triangular solve; any other value is solved for. The family
    holds the exact posterior of a linear-Gaussian state-space model given its observations
    (a Markov chain run backwards-conditioned: each :math:`z_k \mid z_{k-1}, x` is Gaussian
    with a mean affine in :math:`z_{k-1}`).

    Args:
        z0 (torch.Tensor): ``(..., D)``.
        transition (torch.Tensor): :math:`A_k`, ``(..., K, D, D)``.
        shift (torch.Tensor): :math:`b_k`, ``(..., K, D)``.
        scale_tril (torch.Tensor): :math:`L_k`, ``(..., K, D, D)`` lower-triangular with a
            positive diagonal.

    ``event_shape == (K, D)``; the batch shape is the broadcast of the arguments' batches.
    """

    arg_constraints = {
        "z0": constraints.independent(constraints.real, 1),
        "transition": constraints.independent(constraints.real, 3),
        "shift": constraints.independent(constraints.real, 2),
        "scale_tril": constraints.independent(constraints.lower_cholesky, 1),
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, z0, transition, shift, scale_tril, validate_args=None):
        if shift.dim() < 2 or z0.shape[-1:] != shift.shape[-1:]:
            raise ValueError(f"shift must be (..., K, D) with D = z0's {z0.shape[-1:]}, "
                             f"got {tuple(shift.shape)}")
        K, D = shift.shape[-2:]
        for name, value in (("transition", transition), ("scale_tril", scale_tril)):
            if value.dim() < 3 or value.shape[-3:] != (K, D, D):
                raise ValueError(f"{name} must be (..., {K}, {D}, {D}), got {tuple(value.shape)}")
        try:
            batch_shape = torch.broadcast_shapes(z0.shape[:-1], transition.shape[:-3],
                                                 shift.shape[:-2], scale_tril.shape[:-3])
        except RuntimeError as err:
            raise ValueError("batch dimensions of z0, transition, shift, scale_tril do not "
                             "broadcast") from err
        self.z0, self.transition, self.shift, self.scale_tril = z0, transition, shift, scale_tril
        super().__init__(batch_shape, torch.Size((K, D)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GaussMarkovPath, _instance)
        batch_shape = torch.Size(batch_shape)
        K, D = self.event_shape
        new.z0 = self.z0.expand(batch_shape + (D,))
        new.transition = self.transition.expand(batch_shape + (K, D, D))
        new.shift = self.shift.expand(batch_shape + (K, D))
        new.scale_tril = self.scale_tril.expand(batch_shape + (K, D, D))
        super(GaussMarkovPath, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.shift.dtype, device=self.shift.device)
        noise = (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        increments = self.shift + noise
        start = (self.transition[..., 0, :, :] @ self.z0.unsqueeze(-1)).squeeze(-1)
        increments = torch.cat([increments[..., :1, :] + start.unsqueeze(-2),
                                increments[..., 1:, :]], dim=-2)
        value = matrix_linear_recurrence(self.transition, increments, dim=-2)
        self._last_draw = (value, eps)
        return value

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        draw = getattr(self, "_last_draw", None)
        if draw is not None and value is draw[0]:
            # this distribution's own last draw (as scored in an ELBO): its whitened residuals
            # L_k^{-1}(z_k - A_k z_{k-1} - b_k) are the noise it was drawn from, whose total
            # derivative in the parameters along the draw is zero, so the triangular solve is
            # skipped -- as a transform with a cache skips its inverse on its own output
            residual = draw[1]
        else:
            z0 = self.z0.unsqueeze(-2).expand(value.shape[:-2] + (1, value.shape[-1]))
            previous = torch.cat([z0, value[..., :-1, :]], dim=-2)
            predicted = (self.transition @ previous.unsqueeze(-1)).squeeze(-1) + self.shift
            residual = torch.linalg.solve_triangular(
                self.scale_tril, (value - predicted).unsqueeze(-1), upper=False
            ).squeeze(-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        D = value.shape[-1]
        per_step = -0.5 * residual.square().sum(-1) - log_det - 0.5 * D * math.log(2 * math.pi)
        return per_step.sum(-1)


def gauss_markov_marginals(loc0, cov0, transition, shift, scale_tril, *, execution="auto"):
    r"""Marginal means and covariances of a Gauss--Markov path with a Gaussian start.

    For :math:`z_0 \sim \mathcal N(\mu_0, P_0)` and
    :math:`z_k = A_k z_{k-1} + b_k + L_k \varepsilon_k`,

    .. math::

        \mu_k = A_k \mu_{k-1} + b_k, \qquad
        P_k = A_k P_{k-1} A_k^\top + L_k L_k^\top,

    both linear recurrences, evaluated by parallel odd-even reductions: the means by
    :func:`~pyro_vpf.ops.matrix_linear_recurrence`, the covariances by composing pairs of
    steps, :math:`P \mapsto A_2 (A_1 P A_1^\top + S_1) A_2^\top + S_2`, with
    :math:`S_k = L_k L_k^\top` (:math:`D \times D` products only, no
    :math:`\mathrm{vec}(P_k)` with :math:`D^2 \times D^2` blocks).

    Args:
        loc0: ``(..., D)``; cov0: ``(..., D, D)``; transition, shift, scale_tril: as for
            :class:`GaussMarkovPath`.

    Returns:
        tuple: ``(loc, cov)`` of :math:`z_{0:K}`, ``(..., K+1, D)`` and ``(..., K+1, D, D)``.
    """
    loc = _mean_path(loc0, transition, shift, execution)
    noise = scale_tril @ scale_tril.transpose(-1, -2)
    batch = torch.broadcast_shapes(transition.shape[:-3], noise.shape[:-3], cov0.shape[:-2])
    transition, noise = (t.expand(batch + t.shape[-3:]) for t in (transition, noise))
    cov0 = cov0.expand(batch + cov0.shape[-2:])
    first = transition[..., 0, :, :] @ cov0 @ transition[..., 0, :, :].transpose(-1, -2)
    noise = torch.cat([(noise[..., 0, :, :] + first).unsqueeze(-3), noise[..., 1:, :, :]], -3)
    cov = scan(covariance_combine, [transition.movedim(-3, 0), noise.movedim(-3, 0)],
               execution=execution, state_dim=transition.shape[-1])[1]
    cov = torch.cat([cov0.unsqueeze(0), cov]).movedim(0, -3)
    return loc, 0.5 * (cov + cov.transpose(-1, -2))


def _matvec(matrix, vector):
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def _mean_path(loc0, transition, shift, execution="auto"):
    r""":math:`\mu_{0:K}` of :math:`\mu_k = A_k \mu_{k-1} + b_k`, ``(..., K+1, D)``, by the
    parallel scan."""
    start = _matvec(transition[..., :1, :, :], loc0.unsqueeze(-2))
    loc = matrix_linear_recurrence(
        transition, torch.cat([shift[..., :1, :] + start, shift[..., 1:, :]], -2), dim=-2,
        execution=execution)
    loc0 = loc0.expand(loc.shape[:-2] + loc0.shape[-1:])
    return torch.cat([loc0.unsqueeze(-2), loc], -2)


def linear_gaussian_potentials(weight, bias, noise_scale, value, mask=None):
    r"""The potentials :math:`(J, h)` of a masked linear-Gaussian observation of :math:`z`.

    For :math:`x = W z + d + \mathcal N(0, \operatorname{diag} r^2)` with only the entries
    :math:`o_i = 1` observed,

    .. math::

        \sum_i o_i \log \mathcal N(x_i;\; (W z + d)_i,\; r_i^2)
        = -\tfrac12 z^\top J z + h^\top z + \text{const}, \qquad
        J = W^\top \operatorname{diag}(o / r^2)\, W, \quad
        h = W^\top \operatorname{diag}(o / r^2)(x - d),

    so a missing entry contributes nothing (a step with no entry observed has
    :math:`J = 0, h = 0`), whatever it holds (NaN included). The potentials of
    :func:`gauss_markov_posterior` and :func:`gauss_markov_evidence`.

    Args:
        weight (torch.Tensor): :math:`W`, ``(..., Dx, D)``.
        bias (torch.Tensor): :math:`d`, ``(..., Dx)``.
        noise_scale (torch.Tensor): :math:`r`, ``(..., Dx)``, positive.
        value (torch.Tensor): :math:`x`, ``(..., Dx)``.
        mask (torch.Tensor): boolean :math:`o`, broadcastable to ``value`` (``True`` =
            observed), or ``None`` for all observed.

    Returns:
        tuple: ``(J, h)``, ``(..., D, D)`` and ``(..., D)``, both with the broadcast batch of
        the arguments (``J`` expanded where it does not depend on ``value``).

    Raises:
        ValueError: if ``value`` does not have ``Dx`` entries, or ``mask`` is not boolean.
    """
    Dx = weight.shape[-2]
    if value.shape[-1:] != (Dx,):
        raise ValueError(f"value must be (..., {Dx}) for a weight of shape "
                         f"{tuple(weight.shape)}, got {tuple(value.shape)}")
    precision = noise_scale.square().reciprocal()  # (..., Dx)
    residual = (value - bias) * precision
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("mask must be a boolean tensor (True = observed)")
        precision = torch.where(mask, precision, 0.0)
        residual = torch.where(mask, residual, 0.0)
    weight_t = weight.transpose(-1, -2)
    information = _matvec(weight_t, residual)
    precision = (weight_t * precision.unsqueeze(-2)) @ weight
    return precision.expand(information.shape[:-1] + precision.shape[-2:]), information


def _inverse_cholesky(matrix):
    r"""Lower-triangular :math:`R` with :math:`R R^\top = G^{-1}` for SPD :math:`G`.

    With :math:`\Pi` the order reversal and :math:`\Pi G \Pi = U U^\top` (Cholesky),
    :math:`G^{-1} = (\Pi U^{-\top} \Pi)(\Pi U^{-1} \Pi)`, and :math:`\Pi U^{-\top}\Pi`
    is lower-triangular with a positive diagonal: no Cholesky of the inverse itself.
    """
    U = torch.linalg.cholesky(matrix.flip(-1, -2))
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    U_inv = torch.linalg.solve_triangular(U, eye.expand_as(U), upper=False)
    return U_inv.transpose(-1, -2).flip(-1, -2)


def _left(matrix, other, diagonal):
    """``matrix @ other``, where ``matrix`` may be given by its diagonal ``(..., D)``."""
    return matrix.unsqueeze(-1) * other if diagonal else matrix @ other


def _right(other, matrix, diagonal):
    """``other @ matrix``, where ``matrix`` may be given by its diagonal ``(..., D)``."""
    return other * matrix.unsqueeze(-2) if diagonal else other @ matrix


def _transposed(matrix, diagonal):
    return matrix if diagonal else matrix.transpose(-1, -2)


def _condition_on_potential(loc, scale_tril, precision, information, diagonal=False):
    r"""``N(loc, C C^T)`` times :math:`\exp(-\tfrac12 z^\top J z + h^\top z)`, normalised
    (:math:`C` given by its diagonal if ``diagonal``).

    Returns :math:`G = I + C^\top J C \succeq I` (well conditioned whatever the rank of
    :math:`J`), the covariance :math:`S = C G^{-1} C^\top` and the mean
    :math:`\text{loc} + S (h - J\,\text{loc})`; :func:`_scale` gives a triangular root of
    :math:`S` from :math:`G` where one is needed.
    """
    D = loc.shape[-1]
    eye = torch.eye(D, dtype=loc.dtype, device=loc.device)
    Ct = _transposed(scale_tril, diagonal)
    gram = eye + _right(_left(Ct, precision, diagonal), scale_tril, diagonal)
    cov = _right(_left(scale_tril, torch.linalg.inv(gram), diagonal), Ct, diagonal)
    return gram, cov, loc + _matvec(cov, information - _matvec(precision, loc))


def _scale(scale_tril, gram, diagonal=False):
    r"""Lower-triangular :math:`C R` with :math:`R R^\top = G^{-1}`: a root of
    :math:`C G^{-1} C^\top` with a positive diagonal."""
    return _left(scale_tril, _inverse_cholesky(0.5 * (gram + gram.transpose(-1, -2))),
                 diagonal)


def gauss_markov_posterior(loc0, scale_tril0, transition, shift, scale_tril, precision,
                           information, *, diagonal=False, execution="auto"):
    r"""A Gauss--Markov chain conditioned on Gaussian potentials at every step.

    The prior chain is :math:`z_0 \sim \mathcal N(\mu_0, C_0 C_0^\top)`,
    :math:`z_k = F_k z_{k-1} + c_k + C_k \varepsilon_k` (:math:`k = 1..K`); the potentials
    are :math:`\phi_k(z_k) = \exp(-\tfrac12 z_k^\top J_k z_k + h_k^\top z_k)`,
    :math:`k = 0..K`, with :math:`J_k \succeq 0` of any rank (a linear-Gaussian
    observation :math:`x_k = W z_k + d + \text{noise}(R)` gives
    :math:`J_k = W^\top R^{-1} W`, :math:`h_k = W^\top R^{-1}(x_k - d)`). The normalised
    product is again a Gauss--Markov chain, returned in the same parametrisation, with

    .. math::

        q(z_k \mid z_{k-1}) \propto p(z_k \mid z_{k-1})\, \beta_k(z_k), \qquad
        \beta_k(z) = \phi_k(z) \int p(z' \mid z)\, \beta_{k+1}(z')\, dz'
        \propto \exp(-\tfrac12 z^\top \Lambda_k z + \eta_k^\top z),

    the backward information filter. With :math:`S_k = C_k G_k^{-1} C_k^\top`,
    :math:`G_k = I + C_k^\top \Lambda_k C_k`:

    .. math::

        A_k = (I - S_k \Lambda_k) F_k, \quad
        b_k = c_k + S_k(\eta_k - \Lambda_k c_k), \quad L_k L_k^\top = S_k, \\
        \Lambda_{k-1} = J_{k-1} + F_k^\top \Lambda_k A_k, \quad
        \eta_{k-1} = h_{k-1} + F_k^\top(\eta_k - \Lambda_k b_k),

    starting from :math:`(\Lambda_K, \eta_K) = (J_K, h_K)`; the start is conditioned the
    same way on :math:`\beta_0`. The recursion is not run step by step: the information that
    the potentials after :math:`z_k` carry about :math:`z_k` is the suffix product of the
    transitions' elements under the associative operator of the parallel Kalman filter
    (Särkkä & García-Fernández, 2021), evaluated by odd-even reduction in
    :math:`2\lceil\log_2 K\rceil` batched levels; everything else is batched over
    :math:`k`. No loop over time, as for sampling and scoring the result
    (:class:`GaussMarkovPath`). Only :math:`G_k \succeq I` and :math:`I + C J` (real
    eigenvalues :math:`\ge 1`, :math:`C J` being a product of PSD matrices) are inverted, never
    :math:`\Lambda_k` or :math:`S_k`, so steps with no information (:math:`J_k = 0`) and
    nearly deterministic transitions are both safe.

    Args:
        loc0, scale_tril0: :math:`\mu_0` ``(..., D)``, :math:`C_0` ``(..., D, D)``.
        transition, shift, scale_tril: :math:`F_k, c_k, C_k`, ``(..., K, D, D)``,
            ``(..., K, D)``, ``(..., K, D, D)`` (lower-triangular, positive diagonal).
        precision, information: :math:`J_k, h_k`, ``(..., K+1, D, D)`` and ``(..., K+1, D)``.
        diagonal (bool): ``transition`` and ``scale_tril`` are diagonal matrices given by
            their diagonals, ``(..., K, D)`` (a prior of independent coordinates, such as a
            diagonal OU process): every product with them is then elementwise, which removes
            most of the batched matrix products outside the scan (at the demo's sizes, those
            over all 4 600 steps' ``4 x 4`` matrices drop from 51 to 15 per forward and
            backward pass).

    Returns:
        tuple: ``(loc0, scale_tril0, transition, shift, scale_tril)`` of the posterior chain,
        shaped like the arguments (broadcast), ready for ``MultivariateNormal`` and
        :class:`GaussMarkovPath`.
    """
    m0, gram0, A, b, gram, _, _ = _condition_chain(loc0, scale_tril0, transition, shift,
                                                   scale_tril, precision, information,
                                                   diagonal, execution)
    return m0, _scale(scale_tril0, gram0), A, b, _scale(scale_tril, gram, diagonal)


def gauss_markov_evidence(loc0, scale_tril0, transition, shift, scale_tril, precision,
                          information, *, execution="auto"):
    r"""The posterior mean path of :func:`gauss_markov_posterior` and what, added to the
    potentials there, gives the log-normaliser
    :math:`\log Z = \log \int p(z_{0:K}) \prod_k \phi_k(z_k)\, dz_{0:K}`.

    In the noise coordinates of the prior chain, :math:`z_0 = \mu_0 + C_0 \varepsilon_0`,
    :math:`z_k = F_k z_{k-1} + c_k + C_k \varepsilon_k`, the prior is
    :math:`\varepsilon_k \sim \mathcal N(0, I)` and the posterior
    :math:`q(\varepsilon) = p(\varepsilon) \prod_k \phi_k(z_k) / Z` is again a chain,

    .. math::

        q(\varepsilon_k \mid \varepsilon_{<k}) \propto
            \mathcal N(\varepsilon_k; 0, I)\, \beta_k(m_k + C_k \varepsilon_k)
        = \mathcal N\big(\varepsilon_k;\; \nu_k,\; G_k^{-1}\big), \qquad
        \nu_k = G_k^{-1} C_k^\top (\eta_k - \Lambda_k m_k),

    with :math:`m_k = F_k z_{k-1} + c_k` (:math:`m_0 = \mu_0`) and :math:`\beta_k`,
    :math:`(\Lambda_k, \eta_k)`, :math:`G_k` as in :func:`gauss_markov_posterior`. The
    identity :math:`\log Z = \log p(\varepsilon) + \sum_k \log \phi_k(z_k)
    - \log q(\varepsilon)` holds at every :math:`\varepsilon`; at the posterior mean
    (:math:`\hat\varepsilon_k = \hat\nu_k`, the :math:`\nu_k` of the mean path
    :math:`\hat z`) each factor of :math:`q` is at its mode, so

    .. math::

        \log Z = \sum_{k=0}^K \log \phi_k(\hat z_k)
            - \tfrac12 \sum_{k=0}^K \big(\lVert \hat\nu_k \rVert^2 + \log\det G_k\big).

    This is :math:`\log p(\hat z) - \log q(\hat z)` written without the densities of the
    state path, which do not exist where :math:`C_k` is singular (a noiseless block, one
    noise driving several states); only :math:`G_k \succeq I` is factorised. The potentials
    are left to the caller, who evaluates them at :math:`\hat z` in a stable form: for the
    linear-Gaussian observations of :func:`linear_gaussian_potentials`,
    :math:`\log p(x) = \sum_k \sum_i o_{k,i} \log \mathcal N(x_{k,i};\,
    (W \hat z_k + d)_i,\, r_i^2) - \tfrac12 \sum_k (\lVert \hat\nu_k \rVert^2 +
    \log\det G_k)`, the exact marginal likelihood. No loop over time: the mean path is a
    parallel linear recurrence (:func:`~pyro_vpf.ops.matrix_linear_recurrence`) and the
    rest is batched over :math:`k`.

    Args:
        loc0, scale_tril0, transition, shift, scale_tril, precision, information: as for
            :func:`gauss_markov_posterior`; the roots :math:`C_0, C_k` may be any square
            roots of the noise covariances, singular ones included.

    Returns:
        tuple: ``(loc, log_ratio)``: :math:`\hat z_{0:K}` ``(..., K+1, D)`` and
        :math:`-\tfrac12 \sum_k (\lVert \hat\nu_k \rVert^2 + \log\det G_k)` ``(...)``.
    """
    m0, gram0, A, b, gram, Lam, eta = _condition_chain(loc0, scale_tril0, transition, shift,
                                                       scale_tril, precision, information,
                                                       execution=execution)
    loc = _mean_path(m0, A, b, execution)
    predicted = _matvec(transition, loc[..., :-1, :]) + shift
    start = _noise_penalty(scale_tril0, gram0, Lam[..., 0, :, :], eta[..., 0, :], loc0)
    steps = _noise_penalty(scale_tril, gram, Lam[..., 1:, :, :], eta[..., 1:, :], predicted)
    return loc, -0.5 * (start + steps.sum(-1))


def _noise_penalty(scale_tril, gram, precision, information, predicted):
    r""":math:`\lVert \nu \rVert^2 + \log\det G` with
    :math:`\nu = G^{-1} C^\top (\eta - \Lambda m)`."""
    chol = torch.linalg.cholesky(0.5 * (gram + gram.transpose(-1, -2)))
    projected = _matvec(scale_tril.transpose(-1, -2),
                        information - _matvec(precision, predicted))
    nu = torch.cholesky_solve(projected.unsqueeze(-1), chol).squeeze(-1)
    return nu.square().sum(-1) + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _condition_chain(loc0, scale_tril0, transition, shift, scale_tril, precision, information,
                     diagonal=False, execution="auto"):
    r"""The work of :func:`gauss_markov_posterior`: the posterior start mean :math:`m_0`,
    Gram matrix :math:`G_0`, transitions :math:`A_k, b_k`, Gram matrices :math:`G_k` and the
    backward information :math:`(\Lambda_k, \eta_k)`, ``k = 0..K``."""
    K, D = shift.shape[-2:]
    if precision.shape[-3:] != (K + 1, D, D) or information.shape[-2:] != (K + 1, D):
        raise ValueError(f"precision must be (..., {K + 1}, {D}, {D}) and information "
                         f"(..., {K + 1}, {D}) for a chain of {K} transitions, got "
                         f"{tuple(precision.shape)} and {tuple(information.shape)}")
    prior = (K, D) if diagonal else (K, D, D)
    for name, value in (("transition", transition), ("scale_tril", scale_tril)):
        if value.shape[-len(prior):] != prior:
            raise ValueError(f"{name} must be (..., {', '.join(map(str, prior))})"
                             f"{' (diagonals)' if diagonal else ''}, got {tuple(value.shape)}")
    batch = torch.broadcast_shapes(transition.shape[:-len(prior)], shift.shape[:-2],
                                   scale_tril.shape[:-len(prior)], precision.shape[:-3],
                                   information.shape[:-2])
    transition, scale_tril = (t.expand(batch + prior) for t in (transition, scale_tril))
    precision = precision.expand(batch + precision.shape[-3:])
    chosen = choose_execution(K, D, shift.device, execution, work=batch.numel() * D ** 3)
    if chosen == "sequential":
        if diagonal:
            transition, scale_tril = torch.diag_embed(transition), torch.diag_embed(scale_tril)
        A, b, gram, _, Lam, eta = backward_information_filter(
            transition, shift.expand(batch + shift.shape[-2:]), scale_tril, precision,
            information.expand(batch + information.shape[-2:]))
        gram0, _, m0 = _condition_on_potential(loc0, scale_tril0, Lam[..., 0, :, :],
                                               eta[..., 0, :])
        return m0, gram0, A, b, gram, Lam, eta
    shift, information = (t.expand(batch + t.shape[-2:]).unsqueeze(-1)
                          for t in (shift, information))  # vectors as (..., D, 1) columns
    # one element per transition k, with the potential at its end z_{k+1}
    J, h = precision[..., 1:, :, :], information[..., 1:, :, :]
    elements = _transition_elements(transition, shift, scale_tril, J, h, diagonal)
    *_, eta_later, J_later = (t.movedim(0, -3) for t in scan(
        gaussian_combine, [t.movedim(-3, 0) for t in elements], reverse=True,
        execution=execution, state_dim=D))
    # beta_k = phi_k times the information from all later potentials (none after z_K)
    Lam = precision + torch.cat([J_later, torch.zeros_like(precision[..., :1, :, :])], -3)
    eta = information + torch.cat([eta_later, torch.zeros_like(information[..., :1, :, :])],
                                  -3)
    Lam = 0.5 * (Lam + Lam.transpose(-1, -2))
    gram, cov, b = _condition_on_potential(shift.squeeze(-1), scale_tril, Lam[..., 1:, :, :],
                                           eta[..., 1:, :, 0], diagonal)
    eye = torch.eye(D, dtype=cov.dtype, device=cov.device)
    A = _right(eye - cov @ Lam[..., 1:, :, :], transition, diagonal)  # (I - S Lambda) F
    gram0, _, m0 = _condition_on_potential(loc0, scale_tril0, Lam[..., 0, :, :],
                                           eta[..., 0, :, 0])
    return m0, gram0, A, b, gram, Lam, eta[..., 0]


def _transition_elements(transition, shift, scale_tril, precision, information, diagonal):
    r"""Scan elements :math:`(A, b, C, \eta, J)` of single transitions (vectors as columns).

    For :math:`p(z' \mid z) = \mathcal N(F z + c, Q)` and the potential
    :math:`(J^\phi, h^\phi)` at :math:`z'`: :math:`\mathcal N(z'; A z + b, C)` is
    :math:`z' \mid z` given the potential, :math:`\exp(-\tfrac12 z^\top J z +
    \eta^\top z)` what the potential says about :math:`z`.
    """
    _, cov, b = _condition_on_potential(shift.squeeze(-1), scale_tril, precision,
                                        information.squeeze(-1), diagonal)
    b = b.unsqueeze(-1)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    A = _right(eye - cov @ precision, transition, diagonal)  # (I - S J) F
    Ft = _transposed(transition, diagonal)
    return (A, b, cov, _left(Ft, information - precision @ b, diagonal),
            _left(Ft, precision @ A, diagonal))
