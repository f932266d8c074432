"""Guide programs of the collection, importable as ``pyro_vpf.guides``.

Each guide has the signature ``guide(x, times, mask=None)`` of the models it serves and
meets them only in sample-site names and shapes (:mod:`pyro_vpf.sites`).
"""

from pyro_vpf.guides.affine import AffineGuide
from pyro_vpf.guides.markov import MarkovGuide

__all__ = ["AffineGuide", "MarkovGuide"]
