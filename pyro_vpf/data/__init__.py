"""Data: sequence containers, generators, real data sets and masks."""

from pyro_vpf.data.basic_motions import BasicMotions, load_basic_motions
from pyro_vpf.data.co2 import CO2, load_co2
from pyro_vpf.data.digits import load_digits
from pyro_vpf.data.lorenz import simulate_lorenz, stochastic_lorenz
from pyro_vpf.data.masking import hide_blocks, hide_entries
from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.data.series import SeriesSplit, split_series
from pyro_vpf.data.toy2d import TOY_2D, checkerboard, eight_gaussians, toy_2d, two_moons
from pyro_vpf.data.trend import PolynomialTrend

__all__ = [
    "BasicMotions",
    "CO2",
    "PolynomialTrend",
    "SequenceData",
    "SeriesSplit",
    "TOY_2D",
    "checkerboard",
    "eight_gaussians",
    "hide_blocks",
    "hide_entries",
    "load_basic_motions",
    "load_co2",
    "load_digits",
    "simulate_lorenz",
    "split_series",
    "stochastic_lorenz",
    "toy_2d",
    "two_moons",
]
