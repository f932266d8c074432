"""Model programs of the collection, importable as ``pyro_vpf.models``.

Each model is a callable object holding its networks whose call runs a Pyro program:
``model(x, times, mask=None)`` for sequence models, ``model(x)`` for static ones.
"""

from pyro_vpf.models.flow_vae import FlowVAE
from pyro_vpf.models.latent_sde import LatentSDE, LatentSDEPrior, NeuralSDE
from pyro_vpf.models.observation import LinearGaussianObservation, ObservationModel
from pyro_vpf.models.vpf import VPF

__all__ = ["VPF", "FlowVAE", "LatentSDE", "LatentSDEPrior", "LinearGaussianObservation",
           "NeuralSDE", "ObservationModel"]
