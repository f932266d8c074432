r"""The Variational Path Flow as a Pyro model program."""

import pyro
from pyro_vpf.models.observation import ObservationModel

from pyro_vpf.plates import sequence_plate
from pyro_vpf.prior import LatentPathPrior
from pyro_vpf.refine import refine
from pyro_vpf.sites import X
from pyro_vpf.validation import check_sequences, check_times

__all__ = ["VPF"]


class VPF(ObservationModel):
    r"""Variational Path Flow: an exact-density latent path model with a flow likelihood.

    Generative program, for each sequence (a plate over sequences):

    .. math::

        z_0 &\sim \mathcal N(m_0, s_0^2), \qquad
        z_{1:K} \mid z_0 \sim f_{t}\#\,p_{\text{base}}(y_{1:K} \mid y_0 = f_{t_0}^{-1}(z_0)),
        \\
        x_k &= g(u_k; z_k), \quad u_k \sim \mathcal N(0, I), \qquad k = 0, \dots, K,

    with :math:`f_t` a :class:`~pyro_vpf.transforms.TimeConditionedFlow` and :math:`g` a
    :class:`~pyro_vpf.transforms.ConditionalObservationFlow` (DESIGN §2). Sample sites
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
        super().__init__()
        self.prior = LatentPathPrior(latent_dim, hidden_dim, num_flow_layers, time_embed_dim,
                                     time_scale, conditioner_layers, time_periods, base=base)
        self._init_observation(obs_dim, latent_dim, observation, num_obs_flow_layers, hidden_dim,
                               conditioner_layers)

    def _like(self):
        return self.prior.init_loc

    def forward(self, x, times, mask=None, *, batch_size=None, num_sequences=None,
                kl_weight=1.0):
        """The model program (see the class docstring). Returns ``z_{0:K}``.

        Args:
            x: ``(B, K+1, Dx)`` or ``None``.
            times: ``(K+1,)`` or ``(B, K+1)``, strictly increasing.
            mask: ``None``, ``(B, K+1)`` or ``(B, K+1, Dx)`` bool (``True`` = observed).
            batch_size: subsample this many sequences (the plate rescales the likelihood).
            num_sequences: ``B`` when sampling (``x=None``) with shared times.
            kl_weight: :math:`\\beta` scaling the latent sites (KL annealing).
        """
        x, times, mask, B = check_sequences(x, times, mask, obs_dim=self.obs_dim,
                                            like=self._like(), num_sequences=num_sequences)
        pyro.module("vpf", self)
        with sequence_plate(x, times, mask, B, batch_size) as (xb, tb, mb):
            z = self.prior.pyro_sample(tb, kl_weight)
            pyro.sample(X, self.observation_distribution(z, mb), obs=xb)
        return z

    def sample_prior(self, times, num_samples=1, *, refine_steps=0, refine_lr=0.05, anchor=0.1,
                     reward=None, backtrack=True):
        r"""Latent paths and observations at any increasing ``times`` ``(K+1,)``.

        One pass, no loop over time: :meth:`LatentPathPrior.sample
        <pyro_vpf.prior.LatentPathPrior.sample>` for :math:`z`, then :math:`x_k = g(u_k; z_k)`
        with fresh noise :math:`u_k \sim \mathcal N(0, I)` (real observation noise).

        With ``refine_steps > 0`` the paths are refined before decoding
        (:func:`~pyro_vpf.refine.refine`, ``event_dim=2``): anchored gradient ascent on the
        exact path density :math:`\log p(z_0) + \log p(z_{1:K} \mid z_0)` at ``times`` plus
        ``reward(z)`` (``z (num_samples, K+1, Dz) -> (num_samples,)``, e.g. a score of
        :meth:`decode`), with anchor :math:`\lambda` = ``anchor``. Call
        :func:`~pyro_vpf.refine.refine` with ``self.prior.log_prob`` directly for the traces.

        Returns:
            tuple: ``(z, x)`` of shapes ``(num_samples, K+1, Dz)`` and
            ``(num_samples, K+1, Dx)``.
        """
        check_times(times, self._like())
        if times.dim() != 1:
            raise ValueError(f"times must be 1-D (K+1,), got {tuple(times.shape)}")
        z = self.prior.sample(times, num_samples)
        if refine_steps:
            z = refine(lambda path: self.prior.log_prob(path, times), z.detach(),
                       steps=refine_steps, lr=refine_lr, anchor=anchor, reward=reward,
                       event_dim=2, backtrack=backtrack).z
        x = self.observation_distribution(z).sample()
        return z, x
