r"""All latent coordinates' base processes as one linear-Gaussian state-space model.

The latent path has :math:`D` coordinates, each the readout :math:`y_d = \mu_d + H_d s_d` of its
own state :math:`s_d \in \mathbb R^{S_d}` (one process per coordinate, independent a priori).
Stacking the states, :math:`s = (s_1, \dots, s_D) \in \mathbb R^N` with
:math:`N = \sum_d S_d`, gives one Gauss--Markov chain with block-diagonal transitions and a
:math:`D \times N` readout,

.. math::

    s_k = A(\Delta_k)\, s_{k-1} + w_k, \quad w_k \sim \mathcal N(0, Q(\Delta_k)), \qquad
    y_k = \mu + H s_k,

which is what a Kalman filter over the whole latent vector (the exact likelihood of a
linear-Gaussian VPF) and a structured guide over it (:class:`~pyro_vpf.guides.MarkovGuide`
with ``base=``) need. :class:`JointStateSpace` builds these matrices from a base as the prior
holds it (:func:`per_coordinate`).
"""

import torch
from torch import nn

from pyro_vpf.processes.base import LTIProcess

__all__ = ["JointStateSpace", "coordinate_parts", "per_coordinate"]


def _check_noisy(parts, name):
    for p in parts:
        if p.deterministic:
            raise ValueError(f"{name}: {type(p).__name__} puts no noise on its readout, so its "
                             "path has no density (an exactly periodic season alone); add a "
                             "noisy process with processes.Sum, e.g. Sum(season, OU(...))")


def coordinate_parts(process, latent_dim, name="process"):
    """The parts of a base and how many coordinates each covers.

    A single process with batch shape ``()`` covers every coordinate with shared parameters;
    otherwise each part covers its batch size (1 for batch ``()``).

    Returns:
        tuple: ``(parts, sizes)``, lists of :class:`LTIProcess` and ints summing to
        ``latent_dim``.

    Raises:
        ValueError: naming ``name``, if ``process`` is not a process or a list of them, covers
            the wrong number of coordinates, or has a part with no readout noise.
    """
    if isinstance(process, LTIProcess):
        parts = [process]
    elif (isinstance(process, (list, tuple, nn.ModuleList)) and len(process)
          and all(isinstance(p, LTIProcess) for p in process)):
        parts = list(process)
    else:
        kind = ([type(p).__name__ for p in process]
                if isinstance(process, (list, tuple, nn.ModuleList)) else type(process).__name__)
        raise ValueError(f"{name} must be an LTIProcess (pyro_vpf.processes) or a non-empty "
                         f"list of them, got {kind}")
    if len(parts) == 1 and tuple(parts[0].batch_shape) in ((), (1,)):
        sizes = [latent_dim]  # shared by every coordinate
    else:
        sizes = [max(p.batch_shape.numel(), 1) for p in parts]
    if len(parts) == 1 and tuple(parts[0].batch_shape) not in ((), (1,), (latent_dim,)):
        raise ValueError(f"{name} has parameters for {tuple(parts[0].batch_shape)} "
                         f"coordinates, but latent_dim is {latent_dim}")
    if sum(sizes) != latent_dim:
        raise ValueError(f"{name} covers {sum(sizes)} coordinates ({sizes}), but "
                         f"latent_dim is {latent_dim}")
    _check_noisy(parts, name)
    return parts, sizes


def per_coordinate(base, latent_dim, name="base"):
    """The base as one module with a process per coordinate: a single process is expanded to
    batch ``(latent_dim,)`` (its parameters repeated, then learned separately); a list becomes
    an ``nn.ModuleList``. ``ValueError`` naming ``name`` as :func:`coordinate_parts`."""
    parts, _ = coordinate_parts(base, latent_dim, name)
    if isinstance(base, LTIProcess):
        return base if tuple(base.batch_shape) == (latent_dim,) else base.expand((latent_dim,))
    return nn.ModuleList(parts)


def _blocks(matrix, d):
    """``(..., d, R, C)`` per-coordinate blocks as one block-diagonal ``(..., d R, d C)``."""
    eye = torch.eye(d, dtype=matrix.dtype, device=matrix.device)
    R, C = matrix.shape[-2:]
    out = torch.einsum("...irc,ij->...irjc", matrix, eye)
    return out.reshape(matrix.shape[:-3] + (d * R, d * C))


def _block_diagonal(matrices):
    """Block-diagonal matrix of rectangular ``(..., r_i, c_i)`` blocks with broadcastable
    batches."""
    batch = torch.broadcast_shapes(*(m.shape[:-2] for m in matrices))
    total = sum(m.shape[-1] for m in matrices)
    rows, offset = [], 0
    for m in matrices:
        r, c = m.shape[-2:]
        m = m.expand(batch + (r, c))
        rows.append(torch.cat([m.new_zeros(batch + (r, offset)), m,
                               m.new_zeros(batch + (r, total - offset - c))], -1))
        offset += c
    return torch.cat(rows, -2)


class JointStateSpace:
    r"""The stacked state-space model of a per-coordinate base (module docstring).

    Args:
        base (LTIProcess or list): as :class:`~pyro_vpf.prior.LatentPathPrior` takes it.
        latent_dim (int): :math:`D`.

    Attributes:
        state_dim (int): :math:`N`.
        markov (bool): every coordinate's state is one-dimensional (:math:`H` is diagonal
            and invertible: the readout path is itself Markov).
    """

    def __init__(self, base, latent_dim):
        self.parts, self.sizes = coordinate_parts(base, latent_dim, "base")
        self.latent_dim = latent_dim
        self.state_dim = sum(p.state_dim * d for p, d in zip(self.parts, self.sizes, strict=True))
        self.markov = all(p.state_dim == 1 for p in self.parts)

    def _per_part(self, matrices, event):
        """Expand each part's ``(..., *pb, R, C)`` to ``(..., d, R, C)`` and stack."""
        blocks = []
        for part, d, m in zip(self.parts, self.sizes, matrices, strict=True):
            if not len(part.batch_shape):
                m = m.unsqueeze(-event - 1)
            m = m.expand(m.shape[:-event - 1] + (d,) + m.shape[-event:])
            blocks.append(_blocks(m if event == 2 else m.unsqueeze(-2), d))
        return _block_diagonal(blocks)

    def transition(self, dt):
        r""":math:`(A(\Delta), Q(\Delta))` for gaps ``dt`` ``(...)``: ``(..., N, N)`` each."""
        pairs = [p.transition(dt) for p in self.parts]
        return (self._per_part([a for a, _ in pairs], 2),
                self._per_part([q for _, q in pairs], 2))

    def initial_covariance(self):
        r""":math:`P_0`, ``(N, N)``."""
        return self._per_part([p.initial_covariance() for p in self.parts], 2)

    def readout(self):
        r""":math:`H`, ``(D, N)``: row :math:`d` reads coordinate :math:`d`'s state."""
        return self._per_part([p.readout() for p in self.parts], 1)

    def start(self, loc, scale):
        r"""The law of :math:`s_0` when :math:`H s_0 \sim \mathcal N(\text{loc},
        \operatorname{diag}(\text{scale}^2))` and the rest of the state follows the
        process's initial law given its readout.

        With :math:`G = P_0 H^\top (H P_0 H^\top)^{-1}`,
        :math:`s_0 = G\, y_0 + r` where :math:`r \sim \mathcal N(0, P_0 - G H P_0)` is
        independent of :math:`y_0 = H s_0`, so

        .. math::

            s_0 \sim \mathcal N\big(G\,\text{loc},\;
                P_0 - G H P_0 + G \operatorname{diag}(\text{scale}^2) G^\top\big).

        Args:
            loc, scale (torch.Tensor): ``(..., D)``.

        Returns:
            tuple: mean ``(..., N)`` and covariance ``(..., N, N)``.
        """
        P0, H = self.initial_covariance(), self.readout()
        HP = H @ P0
        gain = torch.linalg.solve(HP @ H.T, HP).transpose(-1, -2)  # (N, D)
        mean = (gain @ loc.unsqueeze(-1)).squeeze(-1)
        cov = P0 - gain @ HP + (gain * scale.square().unsqueeze(-2)) @ gain.transpose(-1, -2)
        return mean, 0.5 * (cov + cov.transpose(-1, -2))
