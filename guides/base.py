r"""What every sequence guide shares: the program template and the marginal's contract."""

from pyro import poutine
from torch import nn

from pyro_vpf.params import register
from pyro_vpf.plates import sequence_plate
from pyro_vpf.validation import (
    check_integer,
    check_query_times,
    check_sequences,
    program_checks_values,
)

__all__ = ["SequenceGuide"]


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
