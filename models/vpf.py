r"""The Variational Path Flow as a Pyro model program."""

from pyro_vpf.models.path_model import PathModel, make_likelihood

from pyro_vpf.prior import LatentPathPrior
from pyro_vpf.refine import refine
from pyro_vpf.validation import check_integer, check_positive, check_times

__all__ = ["VPF"]


class VPF(PathModel):
    r"""Variational Path Flow: an exact-density latent path model with a flow likelihood.

    Generative program, for each sequence (a plate over sequences):

    .. math::

        z_0 &\sim \mathcal N(m_0, s_0^2), \qquad
        z_{1:K} \mid z_0 \sim f_{t}\#\,p_{\text{base}}(y_{1:K} \mid y_0 = f_{t_0}^{-1}(z_0)),
        \\
        x_k &= g(u_k; z_k), \quad u_k \sim \mathcal N(0, I), \qquad k = 0, \dots, K,

    with :math:`f_t` a :class:`~pyro_vpf.transforms.TimeConditionedFlow` and :math:`g` a
    :class:`~pyro_vpf.transforms.ConditionalObservationFlow`. Sample sites
    (:mod:`pyro_vpf.sites`): ``"z0"`` (event ``(Dz,)``), ``"z"`` (event ``(K, Dz)``, a
    ``TransformedDistribution`` of the base path: :class:`~pyro_vpf.distributions.OUPath` by
    default, :class:`~pyro_vpf.distributions.ProcessPath` for another ``base``) and ``"x"``
    (event ``(K+1, Dx)``), inside the plate ``"sequences"``.

    Calling the model runs the program: ``model(x, times, mask=None)``, with ``x=None`` to
    sample observations. Masked entries contribute nothing to the likelihood (a
    ``MaskedDistribution``); their values are never read.

    With ``observation="linear_gaussian"`` the likelihood is
    :math:`x_k = C z_k + d + \mathcal N(0, \operatorname{diag}(r^2))` (learned
    :math:`C, d, r`), channels independent given :math:`z_k`, so single missing entries are
    exact; with ``num_flow_layers=0`` as well the model is a linear-Gaussian state-space model
    whose :math:`\log p(x)` is exact (:func:`pyro_vpf.evaluation.exact_log_likelihood`). The
    flow likelihood couples channels, so it accepts masks of whole time points only.

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): width of every conditioner.
        num_flow_layers (int): couplings of the latent flow :math:`f_t` (0: identity).
        num_obs_flow_layers (int): couplings of the observation flow :math:`g`.
        time_embed_dim (int): size of the time embedding.
        time_scale (float): the data's time unit (e.g. the horizon of a training sequence).
        conditioner_layers (int): hidden layers of every coupling conditioner (width
            ``hidden_dim``).
        observation (str): ``"flow"`` (the conditional observation flow) or
            ``"linear_gaussian"``.
        time_periods (tuple of float): known periods of the data (e.g. ``(1.0,)`` for a
            yearly cycle with times in years), exact Fourier features of the latent flow.
        base (LTIProcess or list): the base process of the latent path
            (:mod:`pyro_vpf.processes`: ``OU`` by default, ``Matern``, ``LocalLinearTrend``,
            ``Oscillator``, ``Sum`` of them, ...), one for every coordinate or a list of
            ``latent_dim``; see :class:`~pyro_vpf.prior.LatentPathPrior`.
    """

    def __init__(self, obs_dim, latent_dim=4, hidden_dim=128, num_flow_layers=6,
                 num_obs_flow_layers=6, time_embed_dim=16, time_scale=1.0, conditioner_layers=1,
                 observation="flow", time_periods=(), base=None):
        prior = LatentPathPrior(latent_dim, hidden_dim, num_flow_layers, time_embed_dim,
                                time_scale, conditioner_layers, time_periods, base=base)
        likelihood = make_likelihood(observation, obs_dim, latent_dim,
                                     num_flow_layers=num_obs_flow_layers, hidden_dim=hidden_dim,
                                     conditioner_layers=conditioner_layers)
        super().__init__(prior, likelihood, name="vpf")

    def sample_prior(self, times, num_samples=1, *, refine_steps=0, refine_lr=0.05, anchor=0.1,
                     reward=None, backtrack=True):
        r"""Latent paths and observations at any increasing ``times`` ``(K+1,)``.

        One pass, no loop over time: :meth:`PathPrior.sample
        <pyro_vpf.prior.PathPrior.sample>` for :math:`z`, then :math:`x_k = g(u_k; z_k)`
        with fresh noise :math:`u_k \sim \mathcal N(0, I)` (real observation noise).

        With ``refine_steps > 0`` the paths are refined before decoding
        (:func:`~pyro_vpf.refine.refine`, ``event_dim=2``): anchored gradient ascent on the
        exact path density :math:`\log p(z_0) + \log p(z_{1:K} \mid z_0)` at ``times`` plus
        ``reward(z)`` (``z (num_samples, K+1, Dz) -> (num_samples,)``, e.g. a score of
        :meth:`~pyro_vpf.models.path_model.LikelihoodMixin.decode`), with anchor
        :math:`\lambda` = ``anchor``. Call :func:`~pyro_vpf.refine.refine` with
        ``self.prior.log_prob`` directly for the traces.

        Returns:
            tuple: ``(z, x)`` of shapes ``(num_samples, K+1, Dz)`` and
            ``(num_samples, K+1, Dx)``.
        """
        if check_integer("refine_steps", refine_steps, 0) == 0:
            return super().sample_prior(times, num_samples)
        check_positive("refine_lr", refine_lr)
        check_times(times, self.prior.init_loc)
        if times.dim() != 1:
            raise ValueError(f"times must be 1-D (K+1,), got {tuple(times.shape)}")
        z = self.prior.sample(times, num_samples)
        z = refine(lambda path: self.prior.log_prob(path, times), z.detach(),
                   steps=refine_steps, lr=refine_lr, anchor=anchor, reward=reward,
                   event_dim=2, backtrack=backtrack).z
        return z, self.observation_distribution(z).sample()
