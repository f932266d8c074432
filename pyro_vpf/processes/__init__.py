r"""Base processes of the latent path: linear time-invariant SDEs with exact transitions.

:class:`OU` (the VPF's original base), :class:`Matern` (smooth paths), :class:`LocalLinearTrend`
and :class:`IntegratedRandomWalk` (trends that extrapolate), :class:`Oscillator` (quasi-periodic
cycles and exactly periodic seasons) and their superposition :class:`Sum`. The path density of
any of them is :class:`~pyro_vpf.distributions.ProcessPath`; :class:`JointStateSpace` stacks
the processes of all latent coordinates into one state-space model.
"""

from pyro_vpf.processes.base import LTIProcess, psd_root, van_loan
from pyro_vpf.processes.fbm import MarkovFBM
from pyro_vpf.processes.matern import Matern
from pyro_vpf.processes.oscillator import Oscillator
from pyro_vpf.processes.ou import OU
from pyro_vpf.processes.registry import BASES, make_base
from pyro_vpf.processes.state_space import JointStateSpace, coordinate_parts, per_coordinate
from pyro_vpf.processes.sum import Sum
from pyro_vpf.processes.trend import IntegratedRandomWalk, LocalLinearTrend

__all__ = ["BASES", "OU", "IntegratedRandomWalk", "JointStateSpace", "LTIProcess",
           "LocalLinearTrend", "MarkovFBM", "Matern", "Oscillator", "Sum", "coordinate_parts",
           "make_base", "per_coordinate", "psd_root", "van_loan"]
