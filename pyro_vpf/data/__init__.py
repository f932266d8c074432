"""Data: sequence containers and generators."""

from pyro_vpf.data.lorenz import simulate_lorenz, stochastic_lorenz
from pyro_vpf.data.sequences import SequenceData

__all__ = ["SequenceData", "simulate_lorenz", "stochastic_lorenz"]
