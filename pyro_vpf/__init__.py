"""pyro_vpf: continuous-time latent sequence models written as Pyro programs.

The layers, in the order data flows through them: :mod:`pyro_vpf.data` (sequence containers
and data sets), :mod:`pyro_vpf.processes` (base processes of the latent path),
:mod:`pyro_vpf.distributions` (exact path densities), :mod:`pyro_vpf.transforms`
(time-conditioned and conditional couplings), :mod:`pyro_vpf.prior` (latent path priors,
sampled at any resolution), :mod:`pyro_vpf.models` and :mod:`pyro_vpf.guides` (model and guide
programs), :mod:`pyro_vpf.infer` (training), :mod:`pyro_vpf.evaluation` (likelihoods,
predictive checks, forecasts) and :mod:`pyro_vpf.plotting`; :mod:`pyro_vpf.cli` is the command
line built on them.
"""

__version__ = "0.1.0"
