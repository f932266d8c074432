"""Neural network building blocks (encoders, attention)."""

from pyro_vpf.nn.encoders import GRUEncoder, LocalTimeAttention, normalised_time

__all__ = ["GRUEncoder", "LocalTimeAttention", "normalised_time"]
