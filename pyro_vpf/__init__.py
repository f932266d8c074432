"""pyro_vpf: continuous-time latent sequence models written as Pyro programs.

Submodules: :mod:`pyro_vpf.distributions` (the exact OU path density),
:mod:`pyro_vpf.transforms` (time-conditioned and conditional couplings),
:mod:`pyro_vpf.prior` (the latent path prior, sampled at any resolution),
:mod:`pyro_vpf.models` and :mod:`pyro_vpf.guides` (model and guide programs).
"""

__version__ = "0.1.0"
