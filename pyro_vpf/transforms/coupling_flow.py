r"""An unconditional affine coupling flow :math:`z = h(\varepsilon)`, a learnable transform."""

from pyro.distributions.torch_transform import TransformModule
from torch.distributions import constraints

from pyro_vpf.transforms.coupling import coupling_stack

__all__ = ["CouplingFlow"]


class CouplingFlow(TransformModule):
    r"""A stack of unconditional affine couplings on the last dimension (RealNVP).

    Layer :math:`\ell` keeps half of the coordinates :math:`a` and maps the other half by
    :math:`b \mapsto b \odot e^{s_\ell(a)} + m_\ell(a)`, alternate layers swapping the halves, so

    .. math::

        \log p(z) = \log p_\varepsilon\big(h^{-1}(z)\big)
            - \sum_\ell \sum s_\ell\big(a_\ell\big)

    exactly, for any base density :math:`p_\varepsilon`. Use it as
    ``TransformedDistribution(base, [flow])``; it is an ``nn.Module`` (register it with
    ``pyro.module``). Each call keeps its log-determinant, so a log-density after a sample
    (or a sample's log-density) costs no second pass. With ``dim == 1`` each layer is a
    learned affine map.

    Args:
        dim (int): size of the transformed vector.
        num_layers (int): coupling layers (>= 1).
        hidden_dim (int): conditioner width.
        log_scale_bound (float): soft bound of each layer's log-scale.
        conditioner_layers (int): hidden layers of each conditioner MLP.
    """

    bijective = True
    sign = +1
    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, dim, num_layers=4, hidden_dim=128, log_scale_bound=3.0,
                 conditioner_layers=1):
        super().__init__(cache_size=1)
        if dim < 1 or num_layers < 1:
            raise ValueError(f"need dim and num_layers >= 1, got {dim}, {num_layers}")
        self.dim = dim
        self.couplings = coupling_stack(dim, 0, num_layers, hidden_dim, 1, log_scale_bound,
                                        conditioner_layers)
        self._saved = (None, None, None)  # (x, y, log-det) of the last call

    def _check(self, value, name):
        if value.shape[-1:] != (self.dim,):
            raise ValueError(f"{name} must have shape (..., {self.dim}), got {tuple(value.shape)}")

    def _run(self, value, layers, inverse):
        ladj = value.new_zeros(value.shape[:-1])
        for coupling in layers:
            transform = coupling.condition(None)
            out = transform.inv(value) if inverse else transform(value)
            x, y = (out, value) if inverse else (value, out)
            ladj = ladj + transform.log_abs_det_jacobian(x, y)
            value = out
        return value, ladj

    def _call(self, x):
        self._check(x, "x")
        y, ladj = self._run(x, self.couplings, inverse=False)
        self._saved = (x, y, ladj)
        return y

    def _inverse(self, y):
        self._check(y, "z")
        x, ladj = self._run(y, reversed(self.couplings), inverse=True)
        self._saved = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x, y):
        x_saved, y_saved, ladj = self._saved
        if x is x_saved and y is y_saved:
            return ladj
        return self._run(x, self.couplings, inverse=False)[1]
