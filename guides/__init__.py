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
from pyro_vpf.guides.flow import FlowGuide
from pyro_vpf.guides.markov import MarkovGuide
from pyro_vpf.guides.vae import ConditionalFlowGuide, GaussianEncoderGuide

#: The guides by the names the CLI and the training configuration use (``"markov-direct"``: the
#: Markov guide with its transitions straight from the encoder's heads).
GUIDES = {"affine": AffineGuide, "markov": MarkovGuide,
          "markov-direct": partial(MarkovGuide, parametrization="direct"), "flow": FlowGuide}

#: Guides of static models (:class:`~pyro_vpf.models.FlowVAE`), by name.
VAE_GUIDES = {"meanfield": GaussianEncoderGuide, "flow": ConditionalFlowGuide}

__all__ = [
    "GUIDES",
    "VAE_GUIDES",
    "AffineGuide",
    "ConditionalFlowGuide",
    "FlowGuide",
    "GaussianEncoderGuide",
    "MarkovGuide",
    "SequenceGuide",
]
