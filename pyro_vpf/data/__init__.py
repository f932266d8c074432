"""Data: sequence containers and generators."""

from pyro_vpf.data.digits import load_digits
from pyro_vpf.data.lorenz import simulate_lorenz, stochastic_lorenz
from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.data.toy2d import TOY_2D, checkerboard, eight_gaussians, toy_2d, two_moons

__all__ = [
    "SequenceData",
    "TOY_2D",
    "checkerboard",
    "eight_gaussians",
    "load_digits",
    "simulate_lorenz",
    "stochastic_lorenz",
    "toy_2d",
    "two_moons",
]
