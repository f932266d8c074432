"""Checks of sequence data at the public boundary: ``ValueError`` naming the argument.

The entry points (:func:`~pyro_vpf.infer.fit`, the estimators, the predictive functions)
check their data completely, once, and then run the model and guide programs inside
:func:`inputs_checked`. A program called on its own checks shapes, dtypes and devices always
(they cost nothing) and the values (finite, strictly increasing times; finite observed
entries: host synchronisations on an accelerator) only under Pyro's validation switch
(``pyro.enable_validation``, on by default) and outside :func:`inputs_checked`.
"""

import contextlib
import contextvars
import math
import numbers

import torch
from pyro.distributions import constraints
from pyro.infer.util import is_validation_enabled

__all__ = [
    "check_integer",
    "check_positive",
    "check_program_data",
    "check_query_times",
    "check_sequences",
    "check_support",
    "check_times",
    "check_vectors",
    "inputs_checked",
    "program_checks_values",
]

_INPUTS_CHECKED = contextvars.ContextVar("pyro_vpf_inputs_checked", default=False)


@contextlib.contextmanager
def inputs_checked():
    """Run programs on inputs whose values an entry point has checked: inside, the programs'
    own :func:`check_sequences` skip the value checks (shapes are still checked)."""
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def program_checks_values():
    """Whether a model or guide program checks the values of its inputs: under Pyro's
    validation switch and outside :func:`inputs_checked`."""
    return is_validation_enabled() and not _INPUTS_CHECKED.get()


def check_integer(name, value, minimum):
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer >= ``minimum``
    (``bool`` is not); return it as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name, value):
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a positive finite number;
    return it as a ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_times(times, like, name="times", values=True):
    """Raise ``ValueError`` unless ``times`` is a finite, strictly increasing float tensor
    of shape ``(K+1,)`` or ``(B, K+1)`` with ``like``'s dtype and device (the values are
    checked when ``values`` is true)."""
    if not isinstance(times, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(times).__name__}")
    if times.dim() not in (1, 2) or times.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (K+1,) or (B, K+1), got {tuple(times.shape)}")
    if times.dtype != like.dtype or times.device != like.device:
        raise ValueError(
            f"{name} has dtype {times.dtype} on {times.device}; expected {like.dtype} on "
            f"{like.device} (the model's)"
        )
    if not values:
        return
    if not torch.isfinite(times).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if times.shape[-1] > 1 and not (times.diff(dim=-1) > 0).all():
        raise ValueError(f"{name} must be strictly increasing along its last dimension")


def check_sequences(x, times, mask=None, *, obs_dim, like, num_sequences=None, values=True):
    """Validate ``(x, times, mask)`` and return them with ``mask`` as ``(B, K+1, Dx)`` bool.

    Args:
        x: ``(B, K+1, Dx)`` observations or ``None`` (to sample them). Entries where ``mask``
            is ``False`` may hold anything, NaN included; they are never read.
        times: ``(K+1,)`` shared or ``(B, K+1)`` per sequence, strictly increasing.
        mask: ``None``, ``(B, K+1)`` or ``(B, K+1, Dx)`` boolean, ``True`` = observed.
        obs_dim: the model's ``Dx``.
        like: a tensor with the model's dtype and device.
        num_sequences: ``B`` when ``x`` is ``None`` and ``times`` is shared (default 1); when
            given with ``x`` or per-sequence ``times`` it must match them.
        values: check the values too (finite increasing times, finite observed entries),
            not only shapes, dtypes and devices; programs pass
            :func:`program_checks_values`.

    Returns:
        tuple: ``(x, times, mask, B)``; ``x`` with unobserved entries set to zero (a
        placeholder that the masked likelihood never counts), ``mask`` of shape
        ``(B, K+1, Dx)`` or ``None``.
    """
    check_times(times, like, values=values)
    if times.shape[-1] < 2:
        raise ValueError(f"times must hold at least two points (K >= 1), got {tuple(times.shape)}")
    K1 = times.shape[-1]
    if num_sequences is not None:
        num_sequences = check_integer("num_sequences", num_sequences, 1)
        if x is not None and x.shape[0] != num_sequences:
            raise ValueError(f"num_sequences={num_sequences} but x holds {x.shape[0]} sequences")
        if times.dim() == 2 and times.shape[0] != num_sequences:
            raise ValueError(f"num_sequences={num_sequences} but times has {times.shape[0]} "
                             "rows (one per sequence)")
    if x is None:
        B = times.shape[0] if times.dim() == 2 else (num_sequences or 1)
    else:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[1:] != (K1, obs_dim):
            raise ValueError(f"x must have shape (B, {K1}, {obs_dim}) to match times and "
                             f"obs_dim, got {tuple(x.shape)}")
        if x.dtype != like.dtype or x.device != like.device:
            raise ValueError(f"x has dtype {x.dtype} on {x.device}; the model expects "
                             f"{like.dtype} on {like.device}")
        B = x.shape[0]
    if B < 1:
        raise ValueError(f"x and times must hold at least one sequence, got B = {B}")
    if times.dim() == 2 and times.shape[0] != B:
        raise ValueError(f"times has {times.shape[0]} rows but there are {B} sequences")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("mask must be a boolean tensor (True = observed)")
        if mask.device != like.device:
            raise ValueError(f"mask is on {mask.device}; the model is on {like.device}")
        if mask.shape == (B, K1):
            mask = mask.unsqueeze(-1).expand(B, K1, obs_dim)
        elif mask.shape != (B, K1, obs_dim):
            raise ValueError(f"mask must have shape ({B}, {K1}) or ({B}, {K1}, {obs_dim}), "
                             f"got {tuple(mask.shape)}")
    if x is not None:
        if values and not torch.isfinite(x if mask is None else x[mask]).all():
            raise ValueError("x contains NaN or infinite values at observed entries "
                             "(mark missing entries False in mask)")
        if mask is not None:
            x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x, times, mask, B


def check_query_times(query_times, num_sequences, like, name="query_times"):
    """Raise ``ValueError`` unless ``query_times`` is a finite ``(Q,)`` or ``(B, Q)`` tensor
    with ``like``'s dtype and device (any order: a query is a set of times)."""
    B = num_sequences
    if not isinstance(query_times, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(query_times).__name__}")
    if query_times.dim() not in (1, 2) or (query_times.dim() == 2 and query_times.shape[0] != B):
        raise ValueError(f"{name} must have shape (Q,) or ({B}, Q), got {tuple(query_times.shape)}")
    if query_times.dtype != like.dtype or query_times.device != like.device:
        raise ValueError(f"{name} must have dtype {like.dtype} on {like.device}, got "
                         f"{query_times.dtype} on {query_times.device}")
    if not torch.isfinite(query_times).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_vectors(x, dim, like, name="x", values=True):
    """Raise ``ValueError`` unless ``x`` is a finite ``(N, dim)`` tensor with ``like``'s dtype
    and device (data points of a static model; finiteness checked when ``values`` is true);
    return it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(x.shape)}")
    if x.dtype != like.dtype or x.device != like.device:
        raise ValueError(f"{name} has dtype {x.dtype} on {x.device}; the model expects "
                         f"{like.dtype} on {like.device}")
    if values and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_support(model, x, mask=None, name="x"):
    """Raise ``ValueError`` naming ``name`` unless the observed entries of ``x`` lie in the
    support of ``model``'s likelihood: counts for a Poisson or negative binomial likelihood,
    0 or 1 for a Bernoulli one (real-valued likelihoods accept any finite value).

    ``x`` and ``mask`` as :func:`check_sequences` returns them (finite, ``mask`` ``None`` or
    ``(B, K+1, Dx)``); a model without a ``likelihood`` is not checked.
    """
    likelihood = getattr(model, "likelihood", None)
    if x is None or not callable(getattr(likelihood, "point_distribution", None)):
        return
    latent = x.new_zeros((1, 1, likelihood.latent_dim))
    with torch.no_grad():
        support = likelihood.point_distribution(latent).support
    if support is constraints.real or constraints.is_dependent(support):
        return
    inside = support.check(x)
    if mask is not None:
        observed = mask if inside.shape == x.shape else mask.all(-1)
        inside = inside | ~observed
    if not bool(inside.all()):
        raise ValueError(f"{name} holds values outside the support of the likelihood "
                         f"({type(likelihood).__name__}: {support}) at observed entries "
                         "(mark missing entries False in mask)")


def check_program_data(model, x, times=None, mask=None):
    """The arguments to call ``model`` (and its guide) with, for sequence or static models.

    Sequence models (with ``obs_dim``) take ``(x, times, mask)``, whose observed entries must
    lie in the support of the model's likelihood (:func:`check_support`); static models (with
    ``data_dim``, e.g. :class:`~pyro_vpf.models.FlowVAE`) take ``(x,)`` and no times.

    Returns:
        tuple: ``(args, num_items, points)``, with ``points`` ``(N,)`` the observed time
        points of each sequence, those with at least one observed entry (1 per data point of
        a static model): what every "per observed point" figure divides by.
    """
    like = next(model.parameters())
    if hasattr(model, "data_dim"):
        if times is not None or mask is not None:
            raise ValueError(f"{type(model).__name__} models unordered data points: "
                             "pass times=None and mask=None")
        x = check_vectors(x, model.data_dim, like)
        return (x,), x.shape[0], torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    if times is None:
        raise ValueError(f"times is required: {type(model).__name__} models sequences")
    if x is None:
        raise ValueError(f"x is required: {type(model).__name__} is scored on observed "
                         "sequences")
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim, like=like)
    check_support(model, x, mask)
    if mask is None:
        points = torch.full((B,), float(x.shape[1]), dtype=x.dtype, device=x.device)
    else:
        points = mask.any(-1).sum(-1).to(x.dtype)  # points with at least one observed entry
    return (x, times, mask), B, points
