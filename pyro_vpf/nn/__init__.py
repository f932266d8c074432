"""Neural network building blocks (encoders, attention, MLPs)."""

from pyro_vpf.nn.encoders import GRUEncoder, LocalTimeAttention, normalised_time
from pyro_vpf.nn.mlp import MLP

__all__ = ["MLP", "GRUEncoder", "LocalTimeAttention", "normalised_time"]
