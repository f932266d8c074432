r"""A conditional coupling flow :math:`y = h(u; c)` over a vector, given a context vector."""

import torch
from pyro.distributions.conditional import ConditionalTransformModule

from pyro_vpf.transforms.coupling import compose_couplings, coupling_stack

__all__ = ["ConditionalFlow"]


class ConditionalFlow(ConditionalTransformModule):
    r"""Invertible map :math:`y = h(u; c)` on the last dimension, conditioned on a context.

    A stack of :class:`~pyro_vpf.transforms.ContextAffineCoupling` layers over :math:`u`
    whose conditioners see :math:`c`, alternate layers transforming alternate halves, so

    .. math::

        \log p(y \mid c) = \log p_u\big(h^{-1}(y; c)\big)
            + \log\left|\det \frac{\partial h^{-1}}{\partial y}\right|

    for any base density :math:`p_u` (``TransformedDistribution(base, [flow.condition(c)])``).
    The conditioned transform broadcasts the context's batch shape into the distribution's
    batch shape. With ``dim == 1`` each layer is an affine map whose shift and scale depend
    on :math:`c`.

    Args:
        dim (int): size of the transformed variable.
        context_dim (int): size of the context's last dimension.
        num_layers (int): number of coupling layers (>= 1).
        hidden_dim (int): conditioner width.
        event_dim (int): 1 for one vector ``(..., dim)``; 2 for a whole sequence
            ``(..., K+1, dim)`` conditioned on a context ``(..., K+1, context_dim)``.
        log_scale_bound (float): soft bound of each layer's log-scale.
        conditioner_layers (int): hidden layers of each conditioner MLP.
    """

    context_name = "context"

    def __init__(self, dim, context_dim, num_layers=4, hidden_dim=128, event_dim=1,
                 log_scale_bound=5.0, conditioner_layers=1):
        super().__init__()
        if dim < 1 or context_dim < 1 or num_layers < 1:
            raise ValueError(
                "need dim, context_dim and num_layers >= 1, "
                f"got {dim}, {context_dim}, {num_layers}"
            )
        self.dim, self.context_dim, self.event_dim = dim, context_dim, event_dim
        self.couplings = coupling_stack(
            dim, context_dim, num_layers, hidden_dim, event_dim, log_scale_bound,
            conditioner_layers,
        )

    def condition(self, context):
        if not isinstance(context, torch.Tensor) or context.shape[-1:] != (self.context_dim,):
            shape = (tuple(context.shape) if isinstance(context, torch.Tensor)
                     else type(context).__name__)
            raise ValueError(
                f"{self.context_name} must have shape (..., {self.context_dim}), got {shape}")
        return compose_couplings(self.couplings, context)
