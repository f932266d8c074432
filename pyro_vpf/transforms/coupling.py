r"""Affine coupling over the last dimension, conditioned on a context vector.

One mechanism serves both flows of the VPF: the time-conditioned latent flow (context = a
time embedding of :math:`t_k`) and the observation flow (context = the latent :math:`z_k`).
The event may be a vector (``event_dim=1``) or a whole path ``(K, D)`` (``event_dim=2``),
the coupling acting on the last dimension at every time point with that point's context.
"""

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import ComposeTransform
from torch import nn
from torch.distributions import Transform, constraints

__all__ = ["ContextAffineCoupling", "ContextAffineCouplingTransform", "context_affine_coupling"]


class ContextAffineCoupling(ConditionalTransformModule):
    r"""Conditional affine coupling :math:`y = f(x; c)` on the last dimension.

    Split :math:`x = (x_a, x_b)` with :math:`x_a` the first ``split_dim`` coordinates (the
    last ones when ``reverse``, so that alternating layers transform every coordinate), then

    .. math::

        y_a = x_a, \qquad y_b = x_b \odot e^{s(x_a, c)} + m(x_a, c), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum s(x_a, c),

    with :math:`(m, s)` from an MLP (SiLU activations) whose first layer is
    :math:`W_x x_a + W_c c + b`. The context part :math:`W_c c + b` is computed once, when
    the module is conditioned, and broadcast over every input sharing that context (e.g.
    a time embedding shared by all sample paths). The log-scale is soft-bounded,
    :math:`s = B \tanh(\tilde s / B)`, so the map stays well conditioned without the zero
    gradients of a hard clamp.

    For ``dim == 1`` there is nothing to split: ``split_dim`` is 0 and the layer is the
    context-dependent affine map :math:`y = x e^{s(c)} + m(c)` (for the observation flow,
    a heteroscedastic Gaussian given :math:`z`).

    Args:
        dim (int): size of the last dimension of the input.
        context_dim (int): size of the context's last dimension; 0 for an unconditional
            layer (the context term of the first layer is then a learned bias, and
            ``condition(None)`` gives the transform).
        hidden_dim (int): width of the conditioner's two hidden layers.
        event_dim (int): 1 for vector events, 2 for path events ``(K, dim)``.
        split_dim (int): coordinates passed through unchanged; default ``dim // 2``.
        log_scale_bound (float): :math:`B`, the bound of the log-scale.
        reverse (bool): pass the last ``split_dim`` coordinates through instead of the first.
        hidden_layers (int): hidden layers of the conditioner (1: the usual RealNVP
            conditioner ``in -> hidden -> out``; each extra one adds a ``hidden x hidden``
            layer, the dominant cost).

    ``condition(context)`` with ``context (..., context_dim)`` broadcastable to
    ``x.shape[:-1] + (context_dim,)`` returns a :class:`ContextAffineCouplingTransform`.
    """

    def __init__(
        self, dim, context_dim, hidden_dim=128, event_dim=1, split_dim=None, log_scale_bound=3.0,
        hidden_layers=1, reverse=False,
    ):
        super().__init__()
        if split_dim is None:
            split_dim = dim // 2
        if not 0 <= split_dim < dim:
            raise ValueError(f"split_dim must lie in [0, {dim}), got {split_dim}")
        if event_dim not in (1, 2):
            raise ValueError(f"event_dim must be 1 or 2, got {event_dim}")
        self.dim, self.context_dim, self.event_dim = dim, context_dim, event_dim
        self.split_dim = split_dim
        self.reverse = bool(reverse)
        self.log_scale_bound = float(log_scale_bound)
        out_dim = dim - split_dim
        if context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {context_dim}")
        self.input_layer = nn.Linear(split_dim, hidden_dim, bias=False) if split_dim else None
        if context_dim:
            self.context_layer, self.context_bias = nn.Linear(context_dim, hidden_dim), None
        else:
            self.context_layer = None
            self.context_bias = nn.Parameter(torch.zeros(hidden_dim))
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1, got {hidden_layers}")
        self.hidden = nn.ModuleList(
            nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layers - 1)
        )
        self.output_layer = nn.Linear(hidden_dim, 2 * out_dim)
        # Start near the identity, but not at it: a zero last layer would give every other
        # weight a zero gradient at the first step.
        with torch.no_grad():
            self.output_layer.weight.mul_(1e-2)
            self.output_layer.bias.zero_()

    def condition(self, context):
        if self.context_layer is None:
            if context is not None:
                raise ValueError("this coupling is unconditional (context_dim=0): pass None")
            return ContextAffineCouplingTransform(self, self.context_bias)
        if not isinstance(context, torch.Tensor) or context.shape[-1:] != (self.context_dim,):
            raise ValueError(
                f"context must have shape (..., {self.context_dim}), got "
                f"{tuple(context.shape) if isinstance(context, torch.Tensor) else context!r}"
            )
        return ContextAffineCouplingTransform(self, self.context_layer(context))

    #: Without autograd, inputs with more rows than this are conditioned in blocks of points
    #: so that the hidden activations stay small enough to be reused from cache.
    rows_per_block = 65536

    def conditioner(self, x_a, context_hidden):
        """Shift and log-scale for the transformed part, given the passed-through part."""
        if torch.is_grad_enabled() or x_a.dim() < 2:
            return self._mlp(x_a, context_hidden, inplace=False)
        batch = torch.broadcast_shapes(x_a.shape[:-1], context_hidden.shape[:-1])
        points = batch[-1]
        per_point = batch.numel() // max(points, 1)
        step = max(1, self.rows_per_block // max(per_point, 1))
        # Blocks along dim -2 (time points of a path, or the last batch dimension).
        ctx_blocks = context_hidden.dim() >= 2 and context_hidden.shape[-2] == points
        x_blocks = x_a.shape[-2] == points and self.input_layer is not None
        if step >= points or not (ctx_blocks or x_blocks):
            return self._mlp(x_a, context_hidden, inplace=True)
        pieces = [
            self._mlp(
                x_a[..., i : i + step, :] if x_blocks else x_a,
                context_hidden[..., i : i + step, :] if ctx_blocks else context_hidden,
                inplace=True,
            )
            for i in range(0, points, step)
        ]
        return tuple(torch.cat(parts, dim=-2) for parts in zip(*pieces, strict=True))

    def _mlp(self, x_a, context_hidden, inplace):
        # Without autograd (sampling) the hidden activations are updated in place. The
        # context is added in place in any case: the matmul's backward does not need its
        # output, so this saves an allocation the size of the hidden layer.
        if self.input_layer is None:
            h = nn.functional.silu(context_hidden)
        else:
            h = self.input_layer(x_a)
            if h.shape == torch.broadcast_shapes(h.shape, context_hidden.shape):
                h = nn.functional.silu(h.add_(context_hidden), inplace=inplace)
            else:
                h = nn.functional.silu(h + context_hidden)
        for layer in self.hidden:
            h = nn.functional.silu(layer(h), inplace=inplace)
        shift, raw_scale = self.output_layer(h).chunk(2, dim=-1)
        bound = self.log_scale_bound
        return shift, bound * torch.tanh(raw_scale / bound)


class ContextAffineCouplingTransform(Transform):
    """A :class:`ContextAffineCoupling` conditioned on one context (see there)."""

    bijective = True
    sign = +1

    def __init__(self, module, context_hidden, cache_size=1):
        super().__init__(cache_size=cache_size)
        self.module = module
        self.context_hidden = context_hidden
        self.domain = constraints.independent(constraints.real, module.event_dim)
        self.codomain = constraints.independent(constraints.real, module.event_dim)
        self._saved = (None, None, None)  # (x, y, log_scale) of the last call, for the log-det

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ContextAffineCouplingTransform(self.module, self.context_hidden, cache_size)

    def _split(self, value):
        """(passed-through part, transformed part)."""
        k = self.module.split_dim
        if self.module.reverse:
            cut = value.shape[-1] - k
            return value[..., cut:], value[..., :cut]
        return value[..., :k], value[..., k:]

    def _merge(self, kept, changed):
        kept = kept.expand(changed.shape[:-1] + kept.shape[-1:])
        parts = [changed, kept] if self.module.reverse else [kept, changed]
        return torch.cat(parts, dim=-1)

    def _call(self, x):
        x_a, x_b = self._split(x)
        shift, log_scale = self.module.conditioner(x_a, self.context_hidden)
        y = self._merge(x_a, x_b * log_scale.exp() + shift)
        self._saved = (x, y, log_scale)
        return y

    def _inverse(self, y):
        y_a, y_b = self._split(y)
        shift, log_scale = self.module.conditioner(y_a, self.context_hidden)
        x = self._merge(y_a, (y_b - shift) * torch.exp(-log_scale))
        self._saved = (x, y, log_scale)
        return x

    def log_abs_det_jacobian(self, x, y):
        x_saved, y_saved, log_scale = self._saved
        if x is not x_saved or y is not y_saved:
            _, log_scale = self.module.conditioner(self._split(x)[0], self.context_hidden)
        batch = torch.broadcast_shapes(x.shape[:-1], log_scale.shape[:-1])
        ladj = log_scale.sum(-1).expand(batch)
        return ladj.sum(-1) if self.module.event_dim == 2 else ladj

    def forward_shape(self, shape):
        batch = torch.broadcast_shapes(shape[:-1], self.context_hidden.shape[:-1])
        return batch + shape[-1:]

    inverse_shape = forward_shape


def coupling_stack(dim, context_dim, num_layers, hidden_dim, event_dim, log_scale_bound,
                   hidden_layers=1):
    """``num_layers`` couplings sharing one context, alternating which part they transform.

    Alternating the split plays the role of a reversing permutation between layers, without
    a separate transform (whose uncached output would make the composed log-determinant
    recompute every later layer).
    """
    return nn.ModuleList(
        ContextAffineCoupling(
            dim, context_dim, hidden_dim, event_dim=event_dim, log_scale_bound=log_scale_bound,
            hidden_layers=hidden_layers, reverse=bool(i % 2),
        )
        for i in range(num_layers)
    )


def compose_couplings(couplings, context):
    """Condition every coupling on ``context`` and compose them."""
    return ComposeTransform([coupling.condition(context) for coupling in couplings])


def context_affine_coupling(dim, context_dim, hidden_dim=128, **kwargs):
    """A :class:`ContextAffineCoupling` with default settings."""
    return ContextAffineCoupling(dim, context_dim, hidden_dim, **kwargs)
