r"""What every sequence guide shares: the program template and the marginal's contract."""

import pyro
from pyro import poutine
from pyro.distributions import MultivariateNormal, TransformedDistribution
from pyro.distributions.transforms import AffineTransform
from torch import nn

from pyro_vpf.distributions import GaussMarkovReadoutPath, gauss_markov_marginals
from pyro_vpf.params import register
from pyro_vpf.plates import sequence_plate
from pyro_vpf.sites import Z0, Z
from pyro_vpf.validation import (
    check_integer,
    check_query_times,
    check_sequences,
    program_checks_values,
)

__all__ = ["SequenceGuide", "chain_marginals", "grid_index", "readout_sites"]


class SequenceGuide(nn.Module):
    r"""Base of the sequence guides :math:`q(z_{0:K} \mid x)`.

    The program (:meth:`forward`, the model's signature ``guide(x, times, mask=None)``) is
    written here once: it checks the sequences, registers the parameters
    (``pyro.module(name, self)``), opens the plate ``"sequences"`` (subsampled as the model's,
    with the same ``batch_size``) and, scaled by ``kl_weight``, lets :meth:`sample_sites` write
    ``"z0"`` (event ``(Dz,)``) and ``"z"`` (event ``(K, Dz)``). :meth:`marginal` checks its
    arguments and returns :meth:`marginal_distribution`, the posterior marginal of
    :math:`z(t)` at query times (batch ``(B, Q)``, event ``(Dz,)``), which forecasts and
    interpolation read.

    A subclass sets ``name`` (its parameters' name in Pyro's param store) and
    ``continuous_time`` (``True`` when :meth:`marginal_distribution` answers at any time,
    ``False`` when only at the sequence's own times), and defines :meth:`sample_sites` and
    :meth:`marginal_distribution`.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
    """

    name = "sequence_guide"
    continuous_time = True

    def __init__(self, obs_dim, latent_dim):
        super().__init__()
        self.obs_dim = check_integer("obs_dim", obs_dim, 1)
        self.latent_dim = check_integer("latent_dim", latent_dim, 1)

    def _like(self):
        """A parameter: the dtype and device the guide expects its inputs on."""
        return next(self.parameters())

    def forward(self, x, times, mask=None, *, batch_size=None, kl_weight=1.0):
        """The guide program: sites ``"z0"`` and ``"z"`` in the plate over sequences."""
        if x is None:
            raise ValueError(
                f"{type(self).__name__} reads the observations to propose z: it was called "
                "with x=None. Pass the data to the guide (e.g. Predictive(model, guide=guide)"
                "(x, times, mask)); to sample new sequences, run the model alone")
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim,
                                            like=self._like(),
                                            values=program_checks_values())
        register(self, self.name)
        with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
            with poutine.scale(scale=kl_weight):
                self.sample_sites(xb, tb, mb)

    def sample_sites(self, x, times, mask):
        """Write the sites ``"z0"`` and ``"z"`` for the checked subsample ``(x, times, mask)``
        (inside the plate)."""
        raise NotImplementedError

    def marginal(self, x, times, query_times, mask=None):
        r"""The posterior marginal :math:`q(z(t) \mid x)` at ``query_times`` (``(Q,)`` or
        ``(B, Q)``), batch shape ``(B, Q)``, event shape ``(Dz,)``."""
        return self.marginal_distribution(*self.checked_query(x, times, query_times, mask))

    def checked_query(self, x, times, query_times, mask=None):
        """``(x, times, query_times, mask)`` of a query of the posterior at ``query_times``,
        checked (values under Pyro's validation switch, as in the programs)."""
        like = self._like()
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim, like=like,
                                            values=program_checks_values())
        check_query_times(query_times, B, like)
        return x, times, query_times, mask

    def marginal_distribution(self, x, times, query_times, mask):
        """:meth:`marginal` for checked arguments."""
        raise NotImplementedError


def readout_sites(m0, L0, A, b, L, readout, mean):
    r"""The sites ``"z0"`` and ``"z"`` of the readout :math:`z = \mu + H s` of a Gauss--Markov
    chain over a state :math:`s`: :math:`s_0 \sim \mathcal N(m_0, L_0 L_0^\top)`,
    :math:`s_k = A_k s_{k-1} + b_k + L_k \varepsilon_k`.

    ``"z0"`` is :math:`\mathcal N(H m_0 + \mu, H L_0 L_0^\top H^\top)` and ``"z"`` the readout
    path given it (:class:`~pyro_vpf.distributions.GaussMarkovReadoutPath`: the state's start
    conditioned on :math:`H s_0 = z_0 - \mu`, then the chain; exact density).

    Args:
        m0, L0, A, b, L: the chain, ``(..., S)``, ``(..., S, S)``, ``(..., K, S, S)``,
            ``(..., K, S)``, ``(..., K, S, S)``.
        readout (torch.Tensor): :math:`H`, ``(Dz, S)``.
        mean (torch.Tensor): :math:`\mu`, ``(Dz,)``.

    Returns:
        torch.Tensor: the draw of ``"z"``.
    """
    cov0 = L0 @ L0.transpose(-1, -2)
    start = readout @ cov0 @ readout.T
    z0 = pyro.sample(Z0, MultivariateNormal(m0 @ readout.T + mean,
                                            0.5 * (start + start.transpose(-1, -2))))
    path = GaussMarkovReadoutPath(z0 - mean, m0, cov0, A, b, L @ L.transpose(-1, -2), readout)
    return pyro.sample(Z, TransformedDistribution(path, AffineTransform(mean, 1.0, event_dim=2)))


def grid_index(times, query_times, num_sequences):
    r"""The index on each sequence's grid of every query time, ``(B, Q)``, for guides that
    define :math:`q(z \mid x)` at the grid times only.

    A query matches a grid time when it lies within :math:`10^{-6}` of the sequence's smallest
    spacing of it (relative to the spacing, not to the times' magnitude, so no off-grid time
    is ever snapped to a neighbour).

    Raises:
        ValueError: if a query time is not a time of its sequence's grid.
    """
    grid = times.expand(num_sequences, -1)
    query = query_times.expand(num_sequences, -1)
    distance, index = (grid.unsqueeze(1) - query.unsqueeze(-1)).abs().min(-1)  # (B, Q)
    spacing = grid.diff(dim=-1).min(-1, keepdim=True).values if grid.shape[-1] > 1 else (
        grid.abs().clamp_min(1.0))
    if not (distance <= 1e-6 * spacing).all():
        raise ValueError("query_times must be times of the grid: this guide defines "
                         "q(z | x) at the observation times only")
    return index


def chain_marginals(chain, index, readout=None, mean=None):
    r"""The marginals of a Gauss--Markov chain ``(m0, L0, A, b, L)`` at the grid positions
    ``index`` ``(B, Q)`` (:func:`grid_index`), as a ``MultivariateNormal`` with batch
    ``(B, Q)``: of the state itself, or of its readout :math:`\mu + H s` given ``readout``
    :math:`H` and ``mean`` :math:`\mu` (:func:`~pyro_vpf.distributions.gauss_markov_marginals`
    for every grid point, then gathered)."""
    m0, L0, A, b, L = chain
    loc, cov = gauss_markov_marginals(m0, L0 @ L0.transpose(-1, -2), A, b, L)
    if readout is not None:
        loc, cov = loc @ readout.T + mean, readout @ cov @ readout.T
    D = loc.shape[-1]
    loc = loc.gather(1, index.unsqueeze(-1).expand(-1, -1, D))
    cov = cov.gather(1, index[..., None, None].expand(-1, -1, D, D))
    return MultivariateNormal(loc, 0.5 * (cov + cov.transpose(-1, -2)))
