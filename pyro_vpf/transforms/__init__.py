"""Transforms of pyro_vpf: time-conditioned and conditional affine couplings."""

from pyro_vpf.transforms.conditional_flow import ConditionalFlow
from pyro_vpf.transforms.coupling import (
    ContextAffineCoupling,
    ContextAffineCouplingTransform,
    context_affine_coupling,
)
from pyro_vpf.transforms.coupling_flow import CouplingFlow
from pyro_vpf.transforms.observation_flow import (
    ConditionalObservationFlow,
    conditional_observation_flow,
)
from pyro_vpf.transforms.time_embedding import FourierTimeEmbedding
from pyro_vpf.transforms.time_flow import TimeConditionedFlow, time_conditioned_flow

__all__ = [
    "ConditionalFlow",
    "ConditionalObservationFlow",
    "ContextAffineCoupling",
    "CouplingFlow",
    "ContextAffineCouplingTransform",
    "FourierTimeEmbedding",
    "TimeConditionedFlow",
    "conditional_observation_flow",
    "context_affine_coupling",
    "time_conditioned_flow",
]
