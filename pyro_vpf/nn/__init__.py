"""Neural network building blocks (encoders, attention, MLPs) and constrained parameters."""

from pyro_vpf.nn.constrained import ConstrainedParameters
from pyro_vpf.nn.encoders import GRUEncoder, LocalTimeAttention, normalised_time
from pyro_vpf.nn.mlp import MLP

__all__ = ["MLP", "ConstrainedParameters", "GRUEncoder", "LocalTimeAttention", "normalised_time"]
