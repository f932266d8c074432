r"""The time-conditioned flow :math:`z_t = f_t(y_t)` of the VPF latent path."""

from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import ComposeTransform

from pyro_vpf.transforms.coupling import compose_couplings, coupling_stack
from pyro_vpf.transforms.time_embedding import FourierTimeEmbedding

__all__ = ["TimeConditionedFlow", "time_conditioned_flow"]


class TimeConditionedFlow(ConditionalTransformModule):
    r"""Invertible map :math:`z_t = f_t(y)` of a path, conditioned on each point's time.

    A stack of :class:`~pyro_vpf.transforms.ContextAffineCoupling` layers whose conditioner
    sees a learned :class:`~pyro_vpf.transforms.FourierTimeEmbedding` of :math:`t_k`, with
    alternate layers transforming alternate halves of the coordinates. Acting on a path
    ``y (..., K, D)`` at times ``(..., K)``, point :math:`k` is mapped by :math:`f_{t_k}`, so

    .. math::

        \log\left|\det\frac{\partial z_{1:K}}{\partial y_{1:K}}\right|
            = \sum_k \log\left|\det \frac{\partial f_{t_k}}{\partial y}(y_k)\right|.

    ``condition(times)`` embeds the times once and gives each layer its time projection
    once, so the per-time cost is paid per time point, not per path and layer. With
    ``dim == 1`` each layer is a time-dependent affine map; with ``num_layers == 0`` the
    flow is the identity.

    Use it as ``TransformedDistribution(OUPath(y0, times, ...), flow.condition(times[..., 1:]))``.

    Args:
        dim (int): latent dimension :math:`D`.
        num_layers (int): number of coupling layers.
        hidden_dim (int): conditioner width.
        time_embed_dim (int): size of the time embedding.
        time_scale (float): time unit for the embedding (e.g. the training horizon).
        time_periods (tuple of float): known periods added to the embedding as fixed
            Fourier features (see :class:`~pyro_vpf.transforms.FourierTimeEmbedding`).
        log_scale_bound (float): soft bound of each layer's log-scale.
        conditioner_layers (int): hidden layers of each conditioner MLP.
    """

    def __init__(
        self,
        dim,
        num_layers=6,
        hidden_dim=128,
        time_embed_dim=16,
        time_scale=1.0,
        log_scale_bound=3.0,
        conditioner_layers=1,
        time_periods=(),
    ):
        super().__init__()
        if dim < 1 or num_layers < 0:
            raise ValueError(f"need dim >= 1 and num_layers >= 0, got {dim}, {num_layers}")
        self.dim = dim
        # The identity flow (num_layers == 0) holds no parameters at all, not unused ones.
        self.embedding = (FourierTimeEmbedding(time_embed_dim, time_scale, periods=time_periods)
                          if num_layers else None)
        context_dim = time_embed_dim + 2 * len(tuple(time_periods))
        self.couplings = coupling_stack(
            dim, context_dim, num_layers, hidden_dim, 2, log_scale_bound, conditioner_layers
        )

    def condition(self, times):
        if times.dim() < 1:
            raise ValueError("times must have shape (..., K) matching the path (..., K, D)")
        if self.embedding is None:
            return ComposeTransform([])
        return compose_couplings(self.couplings, self.embedding(times))


def time_conditioned_flow(dim, num_layers=6, hidden_dim=128, **kwargs):
    """A :class:`TimeConditionedFlow` with default settings."""
    return TimeConditionedFlow(dim, num_layers, hidden_dim, **kwargs)
