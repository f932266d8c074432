"""Model programs of the collection, importable as ``pyro_vpf.models``.

A sequence model is a :class:`PathModel`: a prior over latent paths and an observation
likelihood (:mod:`pyro_vpf.models.likelihoods`), whose call runs one Pyro program,
``model(x, times, mask=None)``. :class:`VPF` and :class:`LatentSDE` build one;
:class:`FlowVAE` is a static model, ``model(x)``.
"""

from pyro_vpf.models.flow_vae import FlowVAE
from pyro_vpf.models.latent_sde import LatentSDE, LatentSDEPrior, NeuralSDE
from pyro_vpf.models.likelihoods import (
    BernoulliLikelihood,
    FlowLikelihood,
    Likelihood,
    LinearGaussianLikelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    StudentTLikelihood,
)
from pyro_vpf.models.observation import LinearGaussianObservation, ObservationModel
from pyro_vpf.models.path_model import PathModel, make_likelihood
from pyro_vpf.models.vpf import VPF

__all__ = ["VPF", "BernoulliLikelihood", "FlowLikelihood", "FlowVAE", "LatentSDE",
           "LatentSDEPrior", "Likelihood", "LinearGaussianLikelihood",
           "LinearGaussianObservation", "NegativeBinomialLikelihood", "NeuralSDE",
           "ObservationModel", "PathModel", "PoissonLikelihood", "StudentTLikelihood",
           "make_likelihood"]
