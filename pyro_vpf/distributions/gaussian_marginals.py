r"""Independent Gaussian marginals of a posterior defined at every time."""

import warnings

import torch
from pyro.distributions import Independent, Normal

__all__ = ["GaussianMarginals"]


class GaussianMarginals(Independent):
    r"""Independent :math:`\mathcal N(m(t_k), s(t_k)^2)` at grid times, event ``(K, Dz)``,
    of a Gaussian family :math:`q(z(t)) = \mathcal N(m(t), s(t)^2)` defined for every
    :math:`t`.

    As a distribution it is the ``Normal(loc, scale).to_event(2)`` at the grid. It also
    carries ``marginal``, the map from any query times to :math:`(m(t), s(t))`, so that
    :class:`~pyro_vpf.infer.SDEMatchingELBO` can evaluate the family and its time
    derivatives :math:`\dot m(t), \dot s(t)` (:meth:`rates`) between the grid points.

    Args:
        loc, scale (torch.Tensor): ``(..., K, Dz)``, the marginals at the grid.
        marginal: ``query (..., Q) -> (loc, scale)``, each ``(..., Q, Dz)``, differentiable
            in the query times (batch dimensions as ``loc``'s).
    """

    def __init__(self, loc, scale, marginal, validate_args=None):
        super().__init__(Normal(loc, scale), 2, validate_args=validate_args)
        self.marginal = marginal

    def expand(self, batch_shape, _instance=None):
        # ``marginal`` keeps its own batch shape, which broadcasts against the new one.
        shape = torch.Size(batch_shape) + self.event_shape
        return GaussianMarginals(self.base_dist.loc.expand(shape),
                                 self.base_dist.scale.expand(shape), self.marginal)

    def rates(self, query):
        r""":math:`(m, s, \dot m, \dot s)` at ``query (..., Q)``, each ``(..., Q, Dz)``.

        The derivatives are exact, by forward-mode differentiation in the query times
        (``torch.func.jvp`` with a tangent of ones: every output depends on its own query
        time only); they stay differentiable in the parameters.
        """
        with warnings.catch_warnings():
            # torch's first forward-mode call compiles its decompositions with torch.jit.script,
            # which announces its own deprecation; nothing the caller can act on
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                                    category=DeprecationWarning)
            query = query.contiguous()  # forward mode writes tangents into its primal
            (loc, scale), (dloc, dscale) = torch.func.jvp(self.marginal, (query,),
                                                          (torch.ones_like(query),))
        return loc, scale, dloc, dscale
