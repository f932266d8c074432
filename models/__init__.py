"""Model programs of the collection, importable as ``pyro_vpf.models``.

Each model is a callable object holding its networks whose call runs a Pyro program with
the signature ``model(x, times, mask=None)``.
"""

from pyro_vpf.models.vpf import VPF

__all__ = ["VPF"]
