r"""Module parameters that live in a constrained set, learned in unconstrained space.

A parameter :math:`\theta` that must satisfy a constraint :math:`\mathcal C` (a positive
scale, a rate, a Cholesky factor) is stored as an unconstrained tensor :math:`u` and read
through the bijection :math:`T_{\mathcal C}` = ``transform_to(constraint)`` of
:mod:`torch.distributions` (with Pyro's registrations):

.. math::

    \theta = T_{\mathcal C}(u), \qquad u \in \mathbb R^n \text{ free}, \qquad
    u_{\text{init}} = T_{\mathcal C}^{-1}(\theta_{\text{init}}).

The optimiser updates :math:`u`; every read of :math:`\theta` applies :math:`T_{\mathcal C}`
afresh, so it is differentiable in :math:`u` and always satisfies the constraint. The default
is Pyro's ``constraints.softplus_positive``, whose transform is the softplus

.. math::

    \theta = \operatorname{softplus}(u) = \log(1 + e^u), \qquad
    u = \theta + \log\big(1 - e^{-\theta}\big),

linear rather than exponential for large :math:`u` (gradient steps do not blow a scale up).
This is the mechanism of Pyro's ``PyroParam`` (same ``<name>_unconstrained`` storage), without
Pyro's param store or the rest of ``PyroModule``'s machinery: a :class:`ConstrainedParameters`
module stays a plain ``nn.Module`` that :func:`pyro.module` registers as usual.
"""

import torch
from pyro.distributions import constraints
from torch import nn
from torch.distributions import transform_to
from torch.distributions.constraints import Constraint

__all__ = ["ConstrainedParameters"]


class _Entry:
    """What :meth:`ConstrainedParameters.register_constrained` records for one parameter."""

    __slots__ = ("constraint", "transform", "unconstrained_name")

    def __init__(self, constraint, transform, unconstrained_name):
        self.constraint = constraint
        self.transform = transform
        self.unconstrained_name = unconstrained_name


def _transform(constraint):
    """``transform_to(constraint)``, with a ``ValueError`` naming the argument for anything
    that is not a constraint with a registered transform."""
    if not isinstance(constraint, Constraint):
        raise ValueError(f"argument 'constraint' must be a torch.distributions Constraint, got "
                         f"{constraint!r}")
    try:
        return transform_to(constraint)
    except NotImplementedError as err:
        raise ValueError(f"argument 'constraint': no transform to {constraint} is registered "
                         "in torch.distributions.transform_to") from err


class ConstrainedParameters(nn.Module):
    r"""An ``nn.Module`` with parameters (or buffers) held in a constrained set.

    :meth:`register_constrained` stores the unconstrained tensor :math:`u` as the parameter
    (``learnable=True``) or buffer ``<name>_unconstrained``, so it appears in
    ``state_dict()``, ``parameters()`` and Pyro's param store under that name, and makes
    ``module.<name>`` the constrained value :math:`T_{\mathcal C}(u)`, recomputed on every
    read. Use it as a base class (or first base of a mixed class) of a module::

        class Noise(ConstrainedParameters):
            def __init__(self, dim):
                super().__init__()
                self.register_constrained("scale", torch.ones(dim))  # softplus_positive

            def forward(self, x):
                return x * self.scale  # softplus(self.scale_unconstrained)

    A registered name cannot be assigned to (as a read-only property could not): write the
    unconstrained tensor instead (``module.scale_unconstrained.copy_(...)``), or register
    the name again. A class attribute of the same name (a property documenting the value,
    returning ``self.constrained(name)``) takes precedence over the lookup.
    """

    # -- registration --------------------------------------------------------------------
    def register_constrained(self, name, value=None, constraint=constraints.softplus_positive,
                             learnable=True, *, unconstrained_value=None,
                             unconstrained_name=None):
        r"""Register the constrained parameter ``name``, read back as ``self.<name>``.

        Args:
            name (str): the attribute that returns the constrained value.
            value (torch.Tensor or float): the initial constrained value :math:`\theta`
                (converted to the default dtype); must be finite and satisfy ``constraint``.
                The stored tensor is :math:`u = T_{\mathcal C}^{-1}(\theta)`.
            constraint (Constraint): :math:`\mathcal C`, any constraint with a
                ``transform_to`` registration (default: ``constraints.softplus_positive``).
            learnable (bool): store :math:`u` as an ``nn.Parameter``; else as a (persistent)
                buffer, in the state dict but not trained.
            unconstrained_value (torch.Tensor or float): the initial :math:`u` itself, instead
                of ``value`` (exactly one of the two must be given).
            unconstrained_name (str): the attribute of :math:`u`, ``name + "_unconstrained"``
                by default (another name keeps older state-dict keys).

        Returns:
            torch.Tensor: the registered unconstrained tensor :math:`u`.

        Raises:
            ValueError: naming the argument, if ``constraint`` is not a constraint with a
                transform, ``value`` is not finite or violates it, ``unconstrained_value`` is
                not finite, both or neither of them is given, or a name is taken by another
                attribute.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"argument 'name' must be an identifier, got {name!r}")
        unconstrained_name = name + "_unconstrained" if unconstrained_name is None else (
            unconstrained_name)
        if not isinstance(unconstrained_name, str) or not unconstrained_name.isidentifier() or (
                unconstrained_name == name):
            raise ValueError(f"argument 'unconstrained_name' must be an identifier other than "
                             f"'{name}', got {unconstrained_name!r}")
        transform = _transform(constraint)
        if (value is None) == (unconstrained_value is None):
            raise ValueError(f"{type(self).__name__} '{name}': give exactly one of 'value' and "
                             "'unconstrained_value'")
        registry = self.__dict__.setdefault("_constrained_entries", {})
        previous = registry.get(name)
        for attr in (name, unconstrained_name):
            if previous is not None and attr in (name, previous.unconstrained_name):
                continue  # registering a name again replaces it
            if self._holds(attr) or (attr == unconstrained_name and hasattr(type(self), attr)):
                raise ValueError(f"{type(self).__name__} argument "
                                 f"'{'name' if attr == name else 'unconstrained_name'}': "
                                 f"attribute '{attr}' is already taken")
        if value is not None:
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
            if not torch.isfinite(value).all() or not constraint.check(value).all():
                raise ValueError(f"{type(self).__name__} argument '{name}' must satisfy "
                                 f"{constraint}, got {value.tolist()}")
            raw = transform.inv(value)
        else:
            raw = torch.as_tensor(unconstrained_value, dtype=torch.get_default_dtype())
            if not torch.isfinite(raw).all():
                raise ValueError(f"{type(self).__name__} argument 'unconstrained_value' of "
                                 f"'{name}' must be finite, got {raw.tolist()}")
        raw = raw.detach().clone()
        if previous is not None:
            self._parameters.pop(previous.unconstrained_name, None)
            self._buffers.pop(previous.unconstrained_name, None)
        if learnable:
            self.register_parameter(unconstrained_name, nn.Parameter(raw))
        else:
            self.register_buffer(unconstrained_name, raw)
        registry[name] = _Entry(constraint, transform, unconstrained_name)
        return getattr(self, unconstrained_name)

    # -- reading -------------------------------------------------------------------------
    def constrained_names(self):
        """The names registered on this module (not its submodules), in registration order."""
        return tuple(self.__dict__.get("_constrained_entries", ()))

    def constraint_of(self, name):
        """The constraint ``name`` was registered with."""
        return self._constrained_entry(name).constraint

    def unconstrained(self, name):
        r"""The stored unconstrained tensor :math:`u` of ``name`` (parameter or buffer)."""
        return getattr(self, self._constrained_entry(name).unconstrained_name)

    def constrained(self, name):
        r"""The constrained value :math:`T_{\mathcal C}(u)` of ``name`` (also ``self.<name>``)."""
        entry = self._constrained_entry(name)
        return entry.transform(getattr(self, entry.unconstrained_name))

    def _holds(self, attr):
        """Whether ``attr`` is an attribute of this instance (not of its class)."""
        return attr in self.__dict__ or any(
            attr in self.__dict__.get(store, ()) for store in ("_parameters", "_buffers",
                                                               "_modules"))

    def _constrained_entry(self, name):
        entry = self.__dict__.get("_constrained_entries", {}).get(name)
        if entry is None:
            raise KeyError(f"{type(self).__name__} has no constrained parameter {name!r}")
        return entry

    # -- attribute access ----------------------------------------------------------------
    def __getattr__(self, name):
        entry = self.__dict__.get("_constrained_entries", {}).get(name)
        if entry is not None:
            return entry.transform(getattr(self, entry.unconstrained_name))
        return super().__getattr__(name)

    def __setattr__(self, name, value):
        entry = self.__dict__.get("_constrained_entries", {}).get(name)
        if entry is not None:
            raise AttributeError(
                f"{type(self).__name__}.{name} is the constrained value of "
                f"'{entry.unconstrained_name}': set that tensor, or call register_constrained")
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.constrained_names()))

    def __delattr__(self, name):
        registry = self.__dict__.get("_constrained_entries", {})
        if name in registry:
            delattr(self, registry.pop(name).unconstrained_name)
        else:
            super().__delattr__(name)
