r"""Tensor operations shared by the distributions and guides.

The central one is :func:`linear_recurrence`, which evaluates the first-order linear
recurrence

.. math::

    h_k = a_k \odot h_{k-1} + b_k, \qquad k = 0, \dots, K-1, \qquad h_{-1} = 0,

along one dimension without a Python loop over its :math:`K` steps. The elements
:math:`(a_k, b_k)` are affine maps :math:`x \mapsto a_k x + b_k`, and :math:`h_k` is the
composition of the first :math:`k+1` of them applied to zero, so the recurrence is an
inclusive scan under the associative operator

.. math::

    (a_l, b_l) \oplus (a_r, b_r) = (a_r a_l,\; a_r b_l + b_r).

It is evaluated by the library's one associative scan
(:func:`pyro_vpf.chain.associative.scan`: a parallel odd--even reduction of
:math:`2\lceil\log_2 K\rceil` batched levels, or a sequential loop, as
:func:`~pyro_vpf.chain.associative.choose_execution` picks), :math:`O(K)` work either way.
Only products of the :math:`a_k` are ever formed, never their inverses, so nothing grows like
:math:`\exp(+\kappa t)` and the result agrees with the sequential recurrence to rounding.

The backward pass is the adjoint recurrence, itself a reversed linear recurrence:
:math:`\lambda_k = g_k + a_{k+1}\lambda_{k+1}`, :math:`\partial L/\partial b_k = \lambda_k`,
:math:`\partial L/\partial a_k = \lambda_k h_{k-1}`.
"""

import torch

from pyro_vpf.chain import affine_combine, scalar_affine_combine, scan

__all__ = ["exp_ratio", "from_columns", "inverse_softplus", "linear_recurrence",
           "matrix_linear_recurrence", "matvec", "sequential_linear_recurrence", "shared_dims",
           "to_columns"]


#: 1 / (n + 1)! for n = 0..8: the Taylor coefficients of (1 - exp(-x)) / x in powers of -x
_EXP_RATIO_SERIES = (1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320,
                     1 / 362880)


def exp_ratio(x):
    r""":math:`\varphi(x) = (1 - e^{-x}) / x` (:math:`\varphi(0) = 1`), elementwise, with an
    accurate derivative everywhere.

    The direct form ``-expm1(-x) / x`` is accurate in value, but its autograd derivative
    subtracts two nearly equal terms when :math:`x` is small (a relative error of about
    machine epsilon / :math:`x`: 1e-3 at :math:`x = 10^{-4}` in float32). Below
    :math:`x = 0.1` the Taylor series :math:`\sum_{n=0}^{8} (-x)^n / (n+1)!` is used
    instead (its truncation error is below :math:`3 \cdot 10^{-16}` relative there), so
    value and derivative are accurate to the dtype's precision at any :math:`x \ge 0`.
    """
    small = x.abs() < 0.1
    safe = torch.where(small, torch.ones_like(x), x)  # no 0 / 0 in the unused branch
    direct = -torch.expm1(-safe) / safe
    series = torch.zeros_like(x)
    for coefficient in reversed(_EXP_RATIO_SERIES):  # Horner's scheme in -x
        series = series * -x + coefficient
    return torch.where(small, series, direct)


def inverse_softplus(value):
    r""":math:`u = \operatorname{softplus}^{-1}(v) = v + \log(1 - e^{-v})` for ``value``
    :math:`v > 0` (a tensor): the unconstrained start of a parameter kept positive by a
    softplus, stable for small and large :math:`v`. The same operations, hence the same
    numbers, as ``transform_to(constraints.softplus_positive).inv``, which
    :class:`~pyro_vpf.nn.ConstrainedParameters` applies to initial values."""
    value = torch.as_tensor(value, dtype=torch.get_default_dtype()) if not isinstance(
        value, torch.Tensor) else value
    return value + torch.log(-torch.expm1(-value))


def _check_recurrence_args(a, b, dim):
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("a and b must be tensors")
    if b.dim() == 0:
        raise ValueError("b must have at least one dimension (the recurrence dimension)")
    dim = dim % b.dim()
    if a.dim() > b.dim():
        raise ValueError(f"a has shape {tuple(a.shape)}, more dimensions than b {tuple(b.shape)}")
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as err:
        raise ValueError(
            f"a with shape {tuple(a.shape)} does not broadcast to b with shape {tuple(b.shape)}"
        ) from err
    if shape != b.shape:
        raise ValueError(
            f"a with shape {tuple(a.shape)} must broadcast to b's shape {tuple(b.shape)}"
        )
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(
            f"a ({a.dtype}, {a.device}) and b ({b.dtype}, {b.device}) must share dtype and device"
        )
    # Align a to b's rank so that a time dimension can be addressed at the same index.
    a = a.reshape((1,) * (b.dim() - a.dim()) + a.shape)
    if a.shape[dim] != b.shape[dim]:
        a = a.expand(a.shape[:dim] + (b.shape[dim],) + a.shape[dim + 1 :])
    return a, b, dim


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, execution):
        # a, b have the recurrence dimension first; a broadcasts against b.
        with torch.no_grad():
            h = scan(scalar_affine_combine, [a, b], execution=execution, needed=(1,))[1]
        ctx.execution = execution
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        # Adjoint: lambda_k = g_k + a_{k+1} lambda_{k+1}, a reversed linear recurrence.
        a_next = torch.cat([a[1:], torch.zeros_like(a[:1])])
        lam = _apply(a_next.flip(0), grad_h.flip(0), ctx.execution).flip(0)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
            grad_a = (lam * h_prev).sum_to_size(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = lam
        return grad_a, grad_b, None


def _apply(a, b, execution="auto"):
    return _LinearRecurrence.apply(a, b, execution)


def linear_recurrence(a, b, dim=0, execution="auto"):
    r"""Evaluate :math:`h_k = a_k h_{k-1} + b_k` (with :math:`h_{-1} = 0`) along ``dim``.

    The associative scan of :mod:`pyro_vpf.chain` (parallel or sequential, ``execution`` as
    :func:`~pyro_vpf.chain.associative.choose_execution` takes it): :math:`O(K)` work,
    differentiable in ``a`` and ``b`` (twice, via the adjoint recurrence).
    Fold an initial state :math:`h_{-1} = c` in by adding :math:`a_0 c` to :math:`b_0`.

    Args:
        a (torch.Tensor): multipliers, broadcastable to ``b``'s shape (typically shared
            across samples, which keeps the products cheap).
        b (torch.Tensor): increments, shape ``(..., K, ...)`` with ``K`` at ``dim``.
        dim (int): the recurrence dimension.
        execution (str): ``"auto"``, ``"parallel"`` or ``"sequential"``.

    Returns:
        torch.Tensor: ``h`` with ``b``'s shape.

    Raises:
        ValueError: if ``a`` does not broadcast to ``b`` or their dtypes/devices differ.

    Example:
        >>> a = torch.full((4,), 0.5); b = torch.ones(4)
        >>> linear_recurrence(a, b)
        tensor([1.0000, 1.5000, 1.7500, 1.8750])
    """
    a, b, dim = _check_recurrence_args(a, b, dim)
    h = _apply(a.movedim(dim, 0), b.movedim(dim, 0), execution)
    return h.movedim(0, dim)


def sequential_linear_recurrence(a, b, dim=0):
    r"""The same recurrence as :func:`linear_recurrence`, one step at a time.

    A reference implementation (a Python loop over ``K``) for tests and benchmarks; use
    :func:`linear_recurrence` in models.
    """
    a, b, dim = _check_recurrence_args(a, b, dim)
    a, b = a.movedim(dim, 0), b.movedim(dim, 0)
    out = torch.empty_like(b, memory_format=torch.contiguous_format)
    h = torch.zeros_like(b[0])
    for k in range(b.shape[0]):
        h = torch.addcmul(b[k], a[k], h)
        out[k] = h
    return out.movedim(0, dim)


def matrix_linear_recurrence(A, b, dim=-2, execution="auto"):
    r"""Evaluate :math:`h_k = A_k h_{k-1} + b_k` (:math:`h_{-1} = 0`) with matrices :math:`A_k`.

    The matrix counterpart of :func:`linear_recurrence` (e.g. for Gauss--Markov guides with
    full transition matrices): the associative scan of :mod:`pyro_vpf.chain` (a parallel
    odd--even reduction, :math:`O(K)` matrix products in :math:`O(\log K)` levels, or a
    sequential loop; ``execution`` as
    :func:`~pyro_vpf.chain.associative.choose_execution` takes it), differentiable by autograd.

    Args:
        A (torch.Tensor): ``(..., K, D, D)``, broadcastable against ``b``'s batch.
        b (torch.Tensor): ``(..., K, D)``; ``dim`` is the recurrence dimension of ``b``
            (negative, counted from the right of ``b``).

    Returns:
        torch.Tensor: ``h`` with ``b``'s shape.
    """
    if b.dim() < 2 or A.dim() < 3 or A.shape[-2:] != (b.shape[-1], b.shape[-1]):
        raise ValueError(f"A must be (..., K, D, D) and b (..., K, D), got {tuple(A.shape)} "
                         f"and {tuple(b.shape)}")
    if dim >= 0 or dim == -1:
        raise ValueError("dim must be a negative index other than -1 (the state dimension)")
    batch = torch.broadcast_shapes(A.shape[:-2], b.shape[:-1])
    n = len(batch)
    A = A.reshape((1,) * (n + 2 - A.dim()) + A.shape)
    time_dim = n + 1 + dim  # of the recurrence, in b (and A)
    A = A.expand(A.shape[:time_dim] + (batch[time_dim],) + A.shape[time_dim + 1:])
    # dimensions along which the matrices are shared (many paths at the same times) become
    # columns of one right-hand side: each matrix is multiplied once, not once per path
    shared, own = shared_dims(A.shape[:-2], batch)
    columns = to_columns(b, batch, shared, own)  # (..., D, C)
    A = own_dims(A, n, own)
    step = own.index(time_dim)
    h = scan(affine_combine, [A.movedim(step, 0), columns.movedim(step, 0)], execution=execution,
             state_dim=b.shape[-1], needed=(1,))[1].movedim(0, step)
    return from_columns(h, batch, shared, own)


def shared_dims(matrix_batch, batch):
    """Split the dimensions of ``batch`` into those along which matrices of batch shape
    ``matrix_batch`` are shared (size 1 there, more than 1 in ``batch``) and their own.

    Returns:
        tuple: ``(shared, own)``, lists of dimension indices of ``batch``.
    """
    n = len(batch)
    padded = (1,) * (n - len(matrix_batch)) + tuple(matrix_batch)
    shared = [i for i in range(n) if padded[i] == 1 and batch[i] > 1]
    return shared, [i for i in range(n) if i not in shared]


def to_columns(vector, batch, shared, own):
    """``vector`` ``(..., S)``, expanded to ``batch + (S,)``, as columns ``(*own, S, C)``: the
    shared dimensions side by side in ``C``."""
    n = len(batch)
    v = vector.expand(tuple(batch) + vector.shape[-1:]).permute(own + [n] + shared)
    return v.reshape(v.shape[:len(own) + 1] + (-1,))


def from_columns(columns, batch, shared, own):
    """The inverse of :func:`to_columns`: ``(*own, S, C)`` -> ``batch + (S,)``."""
    n = len(batch)
    h = columns.reshape(columns.shape[:-1] + tuple(batch[i] for i in shared))
    order = own + [n] + shared
    return h.permute([order.index(i) for i in range(n + 1)]).contiguous()


def matvec(matrix, vector):
    r""":math:`M v` for ``matrix`` ``(..., R, S)`` and ``vector`` ``(..., S)`` with broadcast
    batches, returning ``(..., R)``. Where the matrices are shared by many vectors (one
    transition for a batch of paths), the vectors become the columns of one product instead
    of the matrix being copied once per vector."""
    batch = torch.broadcast_shapes(matrix.shape[:-2], vector.shape[:-1])
    shared, own = shared_dims(matrix.shape[:-2], batch)
    out = own_dims(matrix, len(batch), own) @ to_columns(vector, batch, shared, own)
    return from_columns(out, batch, shared, own)


def own_dims(matrix, n, own):
    """``matrix`` ``(..., R, S)`` with a batch of rank at most ``n``, keeping only the batch
    dimensions ``own`` (the others have size 1)."""
    matrix = matrix.reshape((1,) * (n + 2 - matrix.dim()) + matrix.shape)
    return matrix.reshape(tuple(matrix.shape[i] for i in own) + matrix.shape[-2:])
