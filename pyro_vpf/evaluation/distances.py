r"""Sample-based distances between distributions: energy distance, MMD and the ensemble CRPS.

The two-sample statistics take ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (a 1-D tensor ``(n,)`` is
read as ``n`` points with ``d = 1``) and return unbiased U-statistic estimates as 0-d tensors.
Pairwise distances are computed in blocks of rows, so memory stays bounded (a few million
distances at a time) however large ``n`` and ``m`` are; each block uses the direct
(difference-based) Euclidean distance, which is exact for identical points, rather than the
faster but cancellation-prone matrix-product form.
"""

import numbers

import torch

__all__ = ["crps_ensemble", "energy_distance", "mmd"]

#: Pairwise distances held in memory at once, per block of rows.
_BLOCK_ELEMENTS = 2**22
#: Points of the pooled sample used by the median heuristic of :func:`mmd`.
_MEDIAN_POINTS = 2048
_EXACT = "donot_use_mm_for_euclid_dist"


def _check_tensor(value, name):
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")


def _check_finite(value, name):
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_like(value, like, name, like_name):
    if value.dtype != like.dtype or value.device != like.device:
        raise ValueError(f"{name} has dtype {value.dtype} on {value.device}; expected "
                         f"{like.dtype} on {like.device} (as {like_name})")


def _as_points(value, name):
    """Check a sample set's type and shape and return it as ``(n, d)``."""
    _check_tensor(value, name)
    if value.dim() == 1:
        value = value.unsqueeze(-1)
    if value.dim() != 2 or value.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (n,) or (n, d) with d >= 1, "
                         f"got {tuple(value.shape)}")
    if value.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 samples, got {value.shape[0]}")
    return value


def _check_pair(x, y):
    x, y = _as_points(x, "x"), _as_points(y, "y")
    _check_like(y, x, "y", "x")
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"y has dimension {y.shape[-1]} but x has {x.shape[-1]}")
    _check_finite(x, "x")
    _check_finite(y, "y")
    return x, y


def _rows_per_block(columns):
    return max(1, _BLOCK_ELEMENTS // columns)


def _cross_sum(a, b, fn):
    r""":math:`\sum_{i, j} f(\lVert a_i - b_j \rVert)`, in blocks of rows of ``a``."""
    rows = _rows_per_block(b.shape[0])
    total = a.new_zeros(())
    for start in range(0, a.shape[0], rows):
        total = total + fn(torch.cdist(a[start:start + rows], b, compute_mode=_EXACT)).sum()
    return total


def _within_sum(a, fn):
    r""":math:`\sum_{i \ne j} f(\lVert a_i - a_j \rVert)`, visiting each pair once.

    Row block :math:`[s, e)` is paired with the points from :math:`s` on: the square part
    (both points in the block) is summed without its diagonal, the rest counts twice.
    """
    n = a.shape[0]
    rows = _rows_per_block(n)
    total = a.new_zeros(())
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        values = fn(torch.cdist(a[start:stop], a[start:], compute_mode=_EXACT))
        square, rest = values[:, : stop - start], values[:, stop - start:]
        total = total + (square.sum() - square.diagonal().sum()) + 2 * rest.sum()
    return total


def _identity(distance):
    return distance


def energy_distance(x, y):
    r"""Unbiased estimate of the energy distance between the laws of two samples.

    .. math::

        \mathcal{E}(X, Y) = 2\,\mathbb{E}\lVert X - Y\rVert - \mathbb{E}\lVert X - X'\rVert
            - \mathbb{E}\lVert Y - Y'\rVert,

    estimated by the U-statistic

    .. math::

        \hat{\mathcal{E}} = \frac{2}{nm} \sum_{i, j} \lVert x_i - y_j\rVert
            - \frac{1}{n(n-1)} \sum_{i \ne j} \lVert x_i - x_j\rVert
            - \frac{1}{m(m-1)} \sum_{i \ne j} \lVert y_i - y_j\rVert,

    with Euclidean norms. For laws with finite means, :math:`\mathcal{E} \ge 0`, with equality
    only for equal laws; the unbiased estimate can be slightly negative when they are equal or
    close.

    Args:
        x (torch.Tensor): ``(n,)`` or ``(n, d)`` samples of :math:`X`, ``n >= 2``.
        y (torch.Tensor): ``(m,)`` or ``(m, d)`` samples of :math:`Y`, ``m >= 2``, same
            dtype, device and ``d`` as ``x``.

    Returns:
        torch.Tensor: 0-d estimate, in ``x``'s dtype.
    """
    x, y = _check_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    cross = _cross_sum(x, y, _identity) / (n * m)
    within_x = _within_sum(x, _identity) / (n * (n - 1))
    within_y = _within_sum(y, _identity) / (m * (m - 1))
    return 2 * cross - within_x - within_y


def _median_heuristic(x, y):
    pooled = torch.cat([x, y])
    if pooled.shape[0] > _MEDIAN_POINTS:
        index = torch.linspace(0, pooled.shape[0] - 1, _MEDIAN_POINTS, dtype=torch.float64)
        pooled = pooled[index.round().long().to(pooled.device)]
    distance = torch.cdist(pooled, pooled, compute_mode=_EXACT)
    i, j = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1, device=pooled.device)
    bandwidth = torch.quantile(distance[i, j].detach(), 0.5)
    if not bool(bandwidth > 0):
        raise ValueError("bandwidth: the median heuristic gave 0 (most pooled points coincide); "
                         "pass a positive bandwidth")
    return bandwidth


def mmd(x, y, bandwidth=None):
    r"""Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel.

    With :math:`k(a, b) = \exp\!\big(-\lVert a - b\rVert^2 / (2h^2)\big)`,

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
            + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j)
            - \frac{2}{nm} \sum_{i, j} k(x_i, y_j),

    unbiased for :math:`\mathrm{MMD}^2 = \mathbb{E}k(X, X') + \mathbb{E}k(Y, Y')
    - 2\,\mathbb{E}k(X, Y)` (Gretton et al., 2012), which is 0 exactly when the laws are
    equal; the estimate can be slightly negative.

    ``bandwidth=None`` selects :math:`h` by the median heuristic: the median of the distances
    :math:`\lVert z_i - z_j\rVert`, :math:`i < j`, over the pooled sample
    :math:`z = (x_1, \dots, x_n, y_1, \dots, y_m)` (the mean of the two middle distances when
    their number is even). When :math:`n + m > 2048`, the median is taken over 2048 evenly
    spaced points of the pooled sample, so it stays cheap and deterministic. The heuristic
    bandwidth is a constant for autograd: gradients do not flow through it.

    Args:
        x (torch.Tensor): ``(n,)`` or ``(n, d)`` samples of :math:`X`, ``n >= 2``.
        y (torch.Tensor): ``(m,)`` or ``(m, d)`` samples of :math:`Y`, ``m >= 2``, same
            dtype, device and ``d`` as ``x``.
        bandwidth (float or torch.Tensor): kernel bandwidth :math:`h > 0`, or ``None`` for
            the median heuristic.

    Returns:
        torch.Tensor: 0-d estimate of :math:`\mathrm{MMD}^2`, in ``x``'s dtype.
    """
    x, y = _check_pair(x, y)
    if bandwidth is None:
        bandwidth = _median_heuristic(x, y)
    elif isinstance(bandwidth, torch.Tensor):
        if bandwidth.numel() != 1 or not bandwidth.is_floating_point():
            raise ValueError("bandwidth must be a positive number or a one-element float tensor")
        bandwidth = bandwidth.reshape(()).to(dtype=x.dtype, device=x.device)
    elif isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
        raise ValueError(f"bandwidth must be a positive number or None, got {bandwidth!r}")
    if not bool(torch.isfinite(torch.as_tensor(bandwidth))) or not bool(bandwidth > 0):
        raise ValueError(f"bandwidth must be finite and > 0, got {bandwidth!r}")
    scale = -0.5 / bandwidth**2

    def kernel(distance):
        return torch.exp(distance.square() * scale)

    n, m = x.shape[0], y.shape[0]
    within_x = _within_sum(x, kernel) / (n * (n - 1))
    within_y = _within_sum(y, kernel) / (m * (m - 1))
    cross = _cross_sum(x, y, kernel) / (n * m)
    return within_x + within_y - 2 * cross


def crps_ensemble(samples, y):
    r"""Continuous ranked probability score of a sample ensemble, elementwise.

    In its energy form, for a forecast law :math:`F` and an observation :math:`y`,

    .. math::

        \mathrm{CRPS}(F, y) = \mathbb{E}\lvert X - y\rvert
            - \tfrac12\,\mathbb{E}\lvert X - X'\rvert, \qquad X, X' \sim F
            \text{ independent},

    estimated from the ensemble :math:`x_1, \dots, x_S` by

    .. math::

        \widehat{\mathrm{CRPS}} = \frac{1}{S} \sum_{s} \lvert x_s - y\rvert
            - \frac{1}{2S(S-1)} \sum_{s \ne t} \lvert x_s - x_t\rvert .

    The spread term excludes :math:`s = t` (divides by :math:`S(S-1)`, not :math:`S^2`): this
    "fair" form is unbiased for the CRPS of the law the members are drawn from, whatever
    :math:`S`, whereas the :math:`S^2` form (the CRPS of the empirical distribution)
    overstates it by :math:`\mathbb{E}\lvert X - X'\rvert / (2S)`. The pair sum is computed
    in :math:`O(S \log S)` from the sorted members,
    :math:`\sum_{s \ne t} \lvert x_s - x_t\rvert = 2 \sum_k (2k - S - 1)\, x_{(k)}`. Lower
    is better; the score is in the units of :math:`y`.

    Args:
        samples (torch.Tensor): ``(S, ...)`` ensemble, ``S >= 2`` members along dim 0.
        y (torch.Tensor): ``(...)`` observations, the shape of one member, same dtype and
            device as ``samples``.

    Returns:
        torch.Tensor: ``(...)`` scores, one per observation.
    """
    _check_tensor(samples, "samples")
    if samples.dim() < 1 or samples.shape[0] < 2:
        raise ValueError(f"samples must have shape (S, ...) with S >= 2 members, got "
                         f"{tuple(samples.shape)}")
    _check_tensor(y, "y")
    _check_like(y, samples, "y", "samples")
    if y.shape != samples.shape[1:]:
        raise ValueError(f"y must have shape {tuple(samples.shape[1:])} (one ensemble member), "
                         f"got {tuple(y.shape)}")
    _check_finite(samples, "samples")
    _check_finite(y, "y")
    num = samples.shape[0]
    # Centring on y changes no difference and keeps the weighted sum below well conditioned.
    error = samples - y
    ordered = error.sort(dim=0).values
    rank = torch.arange(1, num + 1, dtype=samples.dtype, device=samples.device)
    weight = (2 * rank - num - 1).reshape((num,) + (1,) * y.dim())
    pair_sum = 2 * (weight * ordered).sum(0)
    return error.abs().mean(0) - pair_sum / (2 * num * (num - 1))
