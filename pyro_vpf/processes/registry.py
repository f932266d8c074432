r"""Base processes by name, scaled to the data's time unit (the CLI's ``--base``)."""

from pyro_vpf.processes.fbm import MarkovFBM
from pyro_vpf.processes.matern import Matern
from pyro_vpf.processes.oscillator import Oscillator
from pyro_vpf.processes.ou import OU
from pyro_vpf.processes.sum import Sum
from pyro_vpf.processes.trend import LocalLinearTrend

__all__ = ["BASES", "make_base"]


def _ou(T):
    return OU(rate=1.0 / T, scale=(2.0 / T) ** 0.5)  # unit stationary variance


def _trend_and_cycle(T):
    # a slowly wandering slope, one quasi-periodic cycle per time unit, a little rough noise
    return Sum(LocalLinearTrend(level_scale=0.05 / T**0.5, slope_scale=0.1 / T**1.5),
               Oscillator(frequency=1.0 / T, damping=0.1 / T, scale=1.0),
               OU(rate=4.0 / T, scale=0.3 * (8.0 / T) ** 0.5))


#: name -> factory of a process for the time unit ``T``
BASES = {
    "ou": _ou,
    "matern12": lambda T: Matern(0.5, lengthscale=T / 2),
    "matern32": lambda T: Matern(1.5, lengthscale=T / 2),
    "matern52": lambda T: Matern(2.5, lengthscale=T / 2),
    "trend+cycle": _trend_and_cycle,
    # Brownian to start with (H = 1/2), the Hurst index learned; built for the horizon T
    "fbm": lambda T: MarkovFBM(hurst=0.5, num_components=5, scale=1.0 / T**0.5, time_scale=T),
}


def make_base(name, time_scale=1.0):
    """The base process called ``name`` (one of :data:`BASES`) for data whose time unit
    (e.g. horizon) is ``time_scale``."""
    if name not in BASES:
        raise ValueError(f"base must be one of {sorted(BASES)}, got {name!r}")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    return BASES[name](float(time_scale))
