r"""The exact posterior of a linear-Gaussian VPF, as a guide program."""

from pyro_vpf.guides.base import SequenceGuide, chain_marginals, grid_index, readout_sites

from pyro_vpf.distributions import gauss_markov_posterior
from pyro_vpf.distributions.linear_gaussian import conditioned_chain, linear_gaussian_parameters

__all__ = ["ExactPosterior"]


class ExactPosterior(SequenceGuide):
    r"""The exact posterior :math:`p(z_{0:K} \mid x)` of a linear-Gaussian VPF
    (``VPF(..., num_flow_layers=0, observation="linear_gaussian")``), with no parameters of
    its own.

    The model is a linear-Gaussian state-space model in the stacked state :math:`s` of its
    base (:mod:`pyro_vpf.distributions.linear_gaussian`); its prior chain conditioned on the
    observations' Gaussian potentials (:func:`~pyro_vpf.distributions.gauss_markov_posterior`:
    the backward information filter, masks and per-sequence irregular times allowed) is again
    a Gauss--Markov chain, and the sites are its readout :math:`z = \mu + H s`
    (the state's start conditioned on :math:`z_0`, then the chain, scored exactly). Because
    :math:`q` is the posterior itself, :math:`\log p(x, z) - \log q(z) = \log p(x)` at every
    draw: the ELBO with this guide is the
    exact evidence with no Monte Carlo variance, and forecasts
    (:func:`~pyro_vpf.evaluation.forecast`), posterior predictive draws and interpolation
    (:meth:`~pyro_vpf.guides.SequenceGuide.marginal`: the Rauch--Tung--Striebel marginals at
    the grid times) use the exact
    smoother where another guide would use its approximation. It is the guide of a model fitted
    by :func:`~pyro_vpf.infer.fit_exact`, and it follows the model's current parameters.

    Args:
        model: a linear-Gaussian VPF. It is referred to, not owned: the guide's
            ``state_dict`` is empty and the model's parameters stay the model's.

    Raises:
        ValueError: if ``model`` is not linear-Gaussian.
    """

    name = "exact_posterior"
    continuous_time = False  # marginal() takes grid times only

    def __init__(self, model):
        linear_gaussian_parameters(model)  # a ValueError naming the model if it is not one
        super().__init__(model.obs_dim, model.latent_dim)
        self._model = (model,)  # a tuple, not a submodule: no parameters of the guide's own

    @property
    def model(self):
        """The linear-Gaussian VPF whose posterior this is."""
        return self._model[0]

    def _like(self):
        return next(self.model.parameters())

    def posterior_chain(self, x, times, mask=None):
        r"""The posterior chain of the stacked state, ``(m0, L0, A, b, L)``
        (:func:`~pyro_vpf.distributions.gauss_markov_posterior`), with its readout
        ``(H, mean)``, for checked sequences."""
        chain, _, _, _, readout = conditioned_chain(self.model, x, times, mask)
        return gauss_markov_posterior(*chain), readout

    def sample_sites(self, x, times, mask):
        (m0, L0, A, b, L), (H, mean) = self.posterior_chain(x, times, mask)
        readout_sites(m0, L0, A, b, L, H, mean)

    def marginal_distribution(self, x, times, query_times, mask):
        r"""The exact marginals :math:`p(z(t) \mid x)` at ``query_times``, which must be times
        of the sequences' grids (put a time to interpolate on the grid with its entries
        masked), batch ``(B, Q)``, event ``(Dz,)``."""
        index = grid_index(times, query_times, x.shape[0])
        chain, (H, mean) = self.posterior_chain(x, times, mask)
        return chain_marginals(chain, index, H, mean)

    def extra_repr(self):
        return f"model={type(self.model).__name__}"

