"""Guide programs of the collection, importable as ``pyro_vpf.guides``.

Each sequence guide is a :class:`SequenceGuide` (the program written once): it has the
signature ``guide(x, times, mask=None)`` of the models it serves, meets them only in
sample-site names and shapes (:mod:`pyro_vpf.sites`), and has
``marginal(x, times, query_times, mask=None)``: the posterior marginal of :math:`z(t)` as a
distribution with batch shape ``(B, Q)`` and event shape ``(Dz,)``, which forecasting and
interpolation use. The guides of static models (:class:`GaussianEncoderGuide`,
:class:`ConditionalFlowGuide`) take ``guide(x)`` and have ``posterior(x)``.
"""

from functools import partial

from pyro_vpf.guides.affine import AffineGuide
from pyro_vpf.guides.base import SequenceGuide
from pyro_vpf.guides.exact import ExactPosterior
from pyro_vpf.guides.flow import FlowGuide
from pyro_vpf.guides.markov import MarkovGuide
from pyro_vpf.guides.vae import ConditionalFlowGuide, GaussianEncoderGuide

#: The guides by the names the CLI and the training configuration use (``"markov-direct"``: the
#: Markov guide with its transitions straight from the encoder's heads).
GUIDES = {"affine": AffineGuide, "markov": MarkovGuide,
          "markov-direct": partial(MarkovGuide, parametrization="direct"), "flow": FlowGuide}

#: The guide that the command line and the training configuration use unless told otherwise:
#: the Markov guide (its smoother parametrisation). On linear-Gaussian data its 90 % predictive
#: intervals of hidden entries cover 0.90 against the affine guide's 0.83, with an ELBO 2.4 %
#: from the exact log-likelihood against 14.7 % (``benchmarks/bench_exact_gap.py --guide ...
#: --train-missing 0.2``); its step costs about 1.7-1.9x the affine guide's on a CPU
#: (``benchmarks/profile_step.py``). The latent SDE keeps the affine guide, whose
#: continuous-time marginals SDE matching needs.
DEFAULT_GUIDE = "markov"

#: Guides of static models (:class:`~pyro_vpf.models.FlowVAE`), by name.
VAE_GUIDES = {"meanfield": GaussianEncoderGuide, "flow": ConditionalFlowGuide}

__all__ = [
    "DEFAULT_GUIDE",
    "GUIDES",
    "VAE_GUIDES",
    "AffineGuide",
    "ConditionalFlowGuide",
    "ExactPosterior",
    "FlowGuide",
    "GaussianEncoderGuide",
    "MarkovGuide",
    "SequenceGuide",
]
