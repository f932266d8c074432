r"""Registering a module's parameters in Pyro's global param store under a name of its own.

``pyro.module(name, module)`` keys each parameter as ``name$$$parameter``. When that key
already holds another module's tensor (a second model of the same class in the process, a
copy of a model, a model built again in a notebook), Pyro keeps the stored tensor and the new
module's own parameters are never trained. :func:`register` gives each module a name whose
entries are its own: the class's name for the first, then ``name_1``, ``name_2``, ...
"""

import itertools

import pyro

__all__ = ["register"]

_COUNTERS = {}


def _owns(store, name, module):
    """Whether every entry of ``name`` in the store is ``module``'s own parameter (or absent)."""
    for parameter_name, parameter in module.named_parameters():
        stored = store._params.get(f"{name}$$${parameter_name}")
        if stored is not None and stored is not parameter:
            return False
    return True


def register(module, name):
    """``pyro.module`` under ``name``, or under ``name_k`` (the first free ``k``) when the
    store holds another module's parameters under ``name``; the name used is remembered on
    ``module`` (attribute ``_pyro_name``) so that later calls keep it. Returns the module."""
    store = pyro.get_param_store()
    chosen = module.__dict__.get("_pyro_name", name)
    if not _owns(store, chosen, module):
        counter = _COUNTERS.setdefault(name, itertools.count(1))
        chosen = next(f"{name}_{k}" for k in counter if _owns(store, f"{name}_{k}", module))
    module.__dict__["_pyro_name"] = chosen
    return pyro.module(chosen, module)
