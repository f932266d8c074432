r"""Seeded two-dimensional toy densities: eight Gaussians, two moons and a checkerboard.

Every generator draws from a private :class:`torch.Generator` seeded with ``seed`` (the
global random state is neither read nor changed), samples on the CPU in ``float64`` and then
casts to ``dtype`` and moves to ``device``: the same seed gives the same points, up to
rounding, whatever the dtype or device.
"""

import math
import numbers

import torch

__all__ = ["TOY_2D", "checkerboard", "eight_gaussians", "toy_2d", "two_moons"]


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _check_nonnegative(value, name, *, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return value


def _generator(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _resolve_dtype(dtype):
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _finish(points, dtype, device):
    """Cast ``float64`` CPU samples to the requested dtype and device."""
    return points.to(dtype=_resolve_dtype(dtype), device=device)


def eight_gaussians(n, *, radius=2.0, scale=0.1, seed=0, dtype=None, device=None):
    r"""Equal-weight mixture of eight isotropic Gaussians centred on a circle.

    .. math::

        p(x) = \frac{1}{8} \sum_{k=0}^{7} \mathcal{N}\big(x \mid r(\cos\tfrac{k\pi}{4},
        \sin\tfrac{k\pi}{4}),\, s^2 I_2\big),

    with :math:`r` = ``radius`` and :math:`s` = ``scale``. The mean is 0 and
    :math:`\mathbb{E}\lVert x\rVert^2 = r^2 + 2 s^2`.

    Args:
        n (int): number of points.
        radius (float): radius :math:`r > 0` of the circle of centres.
        scale (float): standard deviation :math:`s \ge 0` of each component, per coordinate.
        seed (int): seed of the private generator.
        dtype (torch.dtype): floating-point dtype of the result (default: torch's default).
        device (torch.device or str): device of the result (default: CPU).

    Returns:
        torch.Tensor: ``(n, 2)`` points.
    """
    n = _check_count(n)
    radius = _check_nonnegative(radius, "radius", strict=True)
    scale = _check_nonnegative(scale, "scale")
    g = _generator(seed)
    component = torch.randint(0, 8, (n,), generator=g)
    angle = component.to(torch.float64) * (math.pi / 4)
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=-1)
    noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _finish(centres + scale * noise, dtype, device)


def two_moons(n, *, noise=0.1, seed=0, dtype=None, device=None):
    r"""Two interleaving half circles with Gaussian noise, centred at the origin.

    The upper moon holds ``n - n // 2`` points and the lower one ``n // 2``; with
    :math:`\theta \sim \mathcal{U}[0, \pi]` per point,

    .. math::

        x_{upper} = (\cos\theta,\ \sin\theta), \qquad
        x_{lower} = (1 - \cos\theta,\ \tfrac12 - \sin\theta),

    then :math:`\varepsilon \sim \mathcal{N}(0, \sigma^2 I_2)` with :math:`\sigma` = ``noise``
    is added and the constant :math:`(\tfrac12, \tfrac14)` -- the mean of the noiseless
    construction -- is subtracted, so the data are centred but not rescaled: the noiseless
    curves span :math:`[-1.5, 1.5] \times [-0.75, 0.75]`, with standard deviations about
    0.87 and 0.49 per coordinate. The rows are shuffled, so the two moons are interleaved in
    the output.

    The angles, the shuffle and the standard normal noise are drawn in the same order for every
    ``noise``: for one seed, the output is the noiseless output plus ``noise`` times a fixed
    standard normal draw.

    Args:
        n (int): number of points.
        noise (float): standard deviation :math:`\sigma \ge 0` of the noise, per coordinate.
        seed (int): seed of the private generator.
        dtype (torch.dtype): floating-point dtype of the result (default: torch's default).
        device (torch.device or str): device of the result (default: CPU).

    Returns:
        torch.Tensor: ``(n, 2)`` points.
    """
    n = _check_count(n)
    noise = _check_nonnegative(noise, "noise")
    g = _generator(seed)
    theta = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    lower = torch.arange(n) >= n - n // 2
    cos, sin = theta.cos(), theta.sin()
    x = torch.where(lower, 1.0 - cos, cos)
    y = torch.where(lower, 0.5 - sin, sin)
    points = torch.stack([x - 0.5, y - 0.25], dim=-1)
    points = points[torch.randperm(n, generator=g)]
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _finish(points + noise * eps, dtype, device)


def checkerboard(n, *, seed=0, dtype=None, device=None):
    r"""Uniform density on the eight black squares of a 4x4 checkerboard on :math:`[-2, 2]^2`.

    The unit square :math:`[i - 2, i - 1) \times [j - 2, j - 1)`, :math:`i, j \in
    \{0, 1, 2, 3\}`, is black when :math:`i + j` is even (so the bottom-left square
    :math:`[-2, -1)^2` is black). The density is :math:`1/8` on the black squares and 0
    elsewhere: a square is picked uniformly, then a point uniformly inside it.

    Args:
        n (int): number of points.
        seed (int): seed of the private generator.
        dtype (torch.dtype): floating-point dtype of the result (default: torch's default).
        device (torch.device or str): device of the result (default: CPU).

    Returns:
        torch.Tensor: ``(n, 2)`` points.
    """
    n = _check_count(n)
    g = _generator(seed)
    square = torch.randint(0, 8, (n,), generator=g)
    # The black squares of row j are the columns i = (j % 2) + 2 * k, k in {0, 1}.
    row = square // 2
    column = (row % 2) + 2 * (square % 2)
    corner = torch.stack([column, row], dim=-1).to(torch.float64) - 2.0
    offset = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return _finish(corner + offset, dtype, device)


TOY_2D = {
    "8gaussians": eight_gaussians,
    "moons": two_moons,
    "checkerboard": checkerboard,
}


def toy_2d(name, n, **kwargs):
    r"""Draw ``n`` points from the toy density named ``name``.

    Args:
        name (str): a key of :data:`TOY_2D`: ``"8gaussians"``, ``"moons"`` or
            ``"checkerboard"``.
        n (int): number of points.
        **kwargs: keyword arguments of the generator (``seed``, ``dtype``, ``device``, and
            its own parameters).

    Returns:
        torch.Tensor: ``(n, 2)`` points.
    """
    if not isinstance(name, str) or name not in TOY_2D:
        valid = ", ".join(repr(key) for key in TOY_2D)
        raise ValueError(f"name must be one of {valid}, got {name!r}")
    return TOY_2D[name](n, **kwargs)
