r"""Base processes by name, scaled to the data's time unit (the CLI's ``--base``)."""

import math

from pyro_vpf.processes.fbm import MarkovFBM
from pyro_vpf.processes.matern import Matern
from pyro_vpf.processes.oscillator import Oscillator
from pyro_vpf.processes.ou import OU
from pyro_vpf.processes.sum import Sum
from pyro_vpf.processes.trend import LocalLinearTrend

__all__ = ["BASES", "make_base"]


def _ou(T):
    return OU(rate=1.0 / T, scale=(2.0 / T) ** 0.5)  # unit stationary variance


def _trend_and_cycle(T, period=None, harmonics=1):
    # a slowly wandering slope on the time unit T; a quasi-periodic cycle of one period per
    # time unit (its frequency learned) or of a known period P (fixed frequency, harmonics at
    # 1/P, 2/P, ...); a little rough noise on the cycle's time scale
    P = T if period is None else period
    return Sum(LocalLinearTrend(level_scale=0.05 / T**0.5, slope_scale=0.1 / T**1.5),
               Oscillator(frequency=1.0 / P, damping=0.1 / P, scale=1.0,
                          num_harmonics=harmonics, learn_frequency=period is None),
               OU(rate=4.0 / P, scale=0.3 * (8.0 / P) ** 0.5))


def _smooth_and_rough(T):
    # a once-differentiable path carrying the dynamics, and a small OU part for the roughness
    # that a differentiable path lacks at fine scales (stationary sd 0.1 to start with)
    return Sum(Matern(1.5, lengthscale=T / 2),
               OU(rate=4.0 / T, scale=0.1 * (8.0 / T) ** 0.5))


#: name -> factory of a process for the time unit ``T``
BASES = {
    "ou": _ou,
    "matern12": lambda T: Matern(0.5, lengthscale=T / 2),
    "matern32": lambda T: Matern(1.5, lengthscale=T / 2),
    "matern52": lambda T: Matern(2.5, lengthscale=T / 2),
    "matern32+ou": _smooth_and_rough,
    "trend+cycle": _trend_and_cycle,
    # Brownian to start with (H = 1/2), the Hurst index learned; built for the horizon T
    "fbm": lambda T: MarkovFBM(hurst=0.5, num_components=5, scale=1.0 / T**0.5, time_scale=T),
}


def make_base(name, time_scale=1.0, *, period=None, harmonics=1):
    r"""The base process called ``name`` (one of :data:`BASES`) for data whose time unit
    (e.g. horizon) is ``time_scale``.

    ``"trend+cycle"`` also takes a known season: ``period`` :math:`P` (in the data's time
    units, e.g. 1.0 for a yearly cycle with times in years) fixes the cycle's frequency at
    :math:`1/P` (not learned) and ``harmonics`` :math:`h` adds the harmonics
    :math:`2/P, \dots, h/P` (a non-sinusoidal season, as in a trigonometric seasonal model);
    the trend keeps the time unit ``time_scale`` (e.g. the length of a training window).
    """
    if name not in BASES:
        raise ValueError(f"base must be one of {sorted(BASES)}, got {name!r}")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    if int(harmonics) != harmonics or harmonics < 1:
        raise ValueError(f"harmonics must be a positive integer, got {harmonics!r}")
    if period is not None and not (math.isfinite(period) and period > 0):
        raise ValueError(f"period must be positive and finite, got {period}")
    if name != "trend+cycle":
        if period is not None or harmonics != 1:
            raise ValueError(f"period and harmonics belong to the 'trend+cycle' base, not to "
                             f"{name!r}")
        return BASES[name](float(time_scale))
    return _trend_and_cycle(float(time_scale),
                            None if period is None else float(period), int(harmonics))
