r"""Observation likelihoods :math:`p(x_{0:K} \mid z_{0:K})` of the sequence models.

A likelihood is a module with one job: :meth:`Likelihood.distribution` ``(z, mask=None)``
returns the law of the observations given a latent path, event ``(K+1, Dx)``, with the
unobserved entries (``mask`` False) dropped from its log-density. A
:class:`~pyro_vpf.models.PathModel` pairs one with a prior over latent paths; a new
observation model is a subclass of a few lines.

Given :math:`z_k` every likelihood here is independent across time points. All but the flow
are also independent across channels (``entrywise = True``), so masks of single entries are
exact; the flow couples the channels of a time point and accepts masks of whole time points.
"""

import torch
from pyro.distributions import (
    Bernoulli,
    NegativeBinomial,
    Normal,
    Poisson,
    StudentT,
    TransformedDistribution,
)
from torch import nn
from torch.nn.functional import softplus

from pyro_vpf.nn.constrained import ConstrainedParameters
from pyro_vpf.transforms import ConditionalObservationFlow
from pyro_vpf.validation import check_integer

__all__ = [
    "BernoulliLikelihood",
    "FlowLikelihood",
    "Likelihood",
    "LinearGaussianLikelihood",
    "NegativeBinomialLikelihood",
    "PoissonLikelihood",
    "StudentTLikelihood",
]


class Likelihood(ConstrainedParameters):
    r"""Base of the observation likelihoods: :math:`p(x_k \mid z_k)`, independent over
    :math:`k`.

    A subclass defines :meth:`point_distribution` (the law of each entry, or of each time
    point for a likelihood that couples channels) and :meth:`decode`; this base masks and
    batches it into :meth:`distribution`. Positive parameters are registered with
    :meth:`~pyro_vpf.nn.ConstrainedParameters.register_constrained` (a softplus of an
    unconstrained ``<name>_unconstrained``).

    Args:
        obs_dim (int): :math:`D_x`.
        latent_dim (int): :math:`D_z`.
    """

    #: channels independent given :math:`z_k` (masks of single entries are exact)
    entrywise = True

    def __init__(self, obs_dim, latent_dim):
        super().__init__()
        self.obs_dim = check_integer("obs_dim", obs_dim, 1)
        self.latent_dim = check_integer("latent_dim", latent_dim, 1)

    def point_distribution(self, z):
        r"""Law of the observations at each latent ``z (..., K+1, Dz)``: batch
        ``(..., K+1, Dx)`` for an entrywise likelihood, else batch ``(..., K+1)`` and event
        ``(Dx,)``."""
        raise NotImplementedError

    def distribution(self, z, mask=None):
        r""":math:`p(x_{0:K} \mid z_{0:K})`, event ``(K+1, Dx)``, for ``z (..., K+1, Dz)``.

        ``mask`` (``(..., K+1, Dx)`` bool, ``True`` = observed, as
        :func:`~pyro_vpf.validation.check_sequences` returns it) drops unobserved entries
        from the log-density; their values are never read.
        """
        self._check_latent(z)
        point = self.point_distribution(z)
        if self.entrywise:
            return (point if mask is None else point.mask(mask)).to_event(2)
        return (point if mask is None else point.mask(_point_mask(mask))).to_event(1)

    def decode(self, z, noise=None):
        r"""A smooth summary of :math:`p(x_k \mid z_k)` for latents ``z (..., Dz)``: the mean
        (the location for the Student-t), differentiable in ``z``. Location-scale likelihoods
        also take standard ``noise`` ``(..., Dx)``: then the draw ``loc + scale * noise``."""
        raise NotImplementedError

    def _check_latent(self, z):
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.latent_dim,):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (..., {self.latent_dim}), got {shape}")

    def _check_noise(self, z, noise):
        shape = z.shape[:-1] + (self.obs_dim,)
        if noise is not None and noise.shape != shape:
            raise ValueError(f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")

    def _no_noise(self, noise):
        if noise is not None:
            raise ValueError(f"{type(self).__name__} has no location-scale noise to decode: "
                             "call decode(z) for the mean")


class _LinearReadout(Likelihood):
    r"""A learned affine map :math:`\eta_k = C z_k + d` (``weight`` :math:`C` ``(Dx, Dz)``,
    ``bias`` :math:`d` ``(Dx,)``) to the likelihood's natural parameter."""

    def __init__(self, obs_dim, latent_dim):
        super().__init__(obs_dim, latent_dim)
        self.weight = nn.Parameter(torch.randn(obs_dim, latent_dim) / latent_dim**0.5)
        self.bias = nn.Parameter(torch.zeros(obs_dim))

    def linear(self, z):
        return nn.functional.linear(z, self.weight, self.bias)


class _LocationScale(_LinearReadout):
    r"""A location :math:`C z_k + d` and a learned scale :math:`r > 0` per channel
    (``noise_scale`` :math:`r = \operatorname{softplus}(u)` of the parameter
    ``noise_unconstrained`` :math:`u`, which starts at :math:`-1`); :meth:`decode` maps
    standard noise :math:`\epsilon` to :math:`C z_k + d + r \odot \epsilon`."""

    def __init__(self, obs_dim, latent_dim):
        super().__init__(obs_dim, latent_dim)
        self.register_constrained("noise_scale", unconstrained_value=torch.full((obs_dim,), -1.0),
                                  unconstrained_name="noise_unconstrained")

    def decode(self, z, noise=None):
        self._check_latent(z)
        self._check_noise(z, noise)
        loc = self.linear(z)
        return loc if noise is None else loc + noise * self.noise_scale


class LinearGaussianLikelihood(_LocationScale):
    r"""Linear-Gaussian: :math:`x_k = C z_k + d + \mathcal N(0, \operatorname{diag}(r^2))`.

    :math:`C, d` and :math:`r > 0` (``noise_scale``, a softplus) are learned. With an identity
    latent flow the model is a linear-Gaussian state-space model whose likelihood is exact
    (:func:`pyro_vpf.evaluation.exact_log_likelihood`).
    """

    def point_distribution(self, z):
        return Normal(self.linear(z), self.noise_scale)


class StudentTLikelihood(_LocationScale):
    r"""Heavy-tailed: :math:`x_{k,i} = (C z_k + d)_i + r_i\,\epsilon`, :math:`\epsilon \sim
    t_\nu`, for series with outliers; :meth:`decode` gives the location.

    Args:
        df (float): :math:`\nu > 0` to start from; learned (a softplus of the parameter
            ``df_unconstrained``) unless ``learn_df=False`` (then a buffer).
    """

    def __init__(self, obs_dim, latent_dim, df=4.0, learn_df=True):
        super().__init__(obs_dim, latent_dim)
        if not float(df) > 0:
            raise ValueError(f"df must be positive, got {df}")
        self.register_constrained("df", torch.full((obs_dim,), float(df)), learnable=learn_df)

    def point_distribution(self, z):
        loc = self.linear(z)
        return StudentT(self.df.to(loc.dtype), loc, self.noise_scale)


class PoissonLikelihood(_LinearReadout):
    r"""Counts: :math:`x_{k,i} \sim \operatorname{Poisson}(\lambda_{k,i})`,
    :math:`\lambda_k = \operatorname{softplus}(C z_k + d)` (a softplus rather than an
    exponential keeps rates from exploding along an extrapolated path)."""

    def rate(self, z):
        return softplus(self.linear(z))

    def point_distribution(self, z):
        return Poisson(self.rate(z))

    def decode(self, z, noise=None):
        self._check_latent(z)
        self._no_noise(noise)
        return self.rate(z)


class BernoulliLikelihood(_LinearReadout):
    r"""Binary events: :math:`x_{k,i} \sim \operatorname{Bernoulli}(\sigma((C z_k + d)_i))`."""

    def point_distribution(self, z):
        return Bernoulli(logits=self.linear(z))

    def decode(self, z, noise=None):
        self._check_latent(z)
        self._no_noise(noise)
        return torch.sigmoid(self.linear(z))


class NegativeBinomialLikelihood(_LinearReadout):
    r"""Overdispersed counts: mean :math:`\mu_k = \operatorname{softplus}(C z_k + d)`, learned
    concentration :math:`r_i > 0` per channel, variance :math:`\mu + \mu^2 / r`
    (:math:`r \to \infty`: Poisson).

    Args:
        concentration (float): :math:`r` to start from (learned as a softplus of the
            parameter ``concentration_unconstrained``).
    """

    def __init__(self, obs_dim, latent_dim, concentration=10.0):
        super().__init__(obs_dim, latent_dim)
        if not float(concentration) > 0:
            raise ValueError(f"concentration must be positive, got {concentration}")
        self.register_constrained("concentration", torch.full((obs_dim,), float(concentration)))

    def mean(self, z):
        return softplus(self.linear(z))

    def point_distribution(self, z):
        mean, r = self.mean(z), self.concentration
        # pyro's NegativeBinomial(total_count=r, logits=l) has mean r * exp(l)
        return NegativeBinomial(total_count=r.expand_as(mean), logits=mean.log() - r.log())

    def decode(self, z, noise=None):
        self._check_latent(z)
        self._no_noise(noise)
        return self.mean(z)


class FlowLikelihood(Likelihood):
    r"""The conditional observation flow: :math:`x_k = g(u_k; z_k)`, :math:`u_k \sim
    \mathcal N(0, I)`, with :math:`g` a :class:`~pyro_vpf.transforms.ConditionalObservationFlow`
    (attribute ``flow``). It couples the channels of a time point: masks of whole time points
    only.

    Args:
        num_layers (int): couplings of :math:`g`.
        hidden_dim (int): width of every conditioner.
        conditioner_layers (int): hidden layers of every conditioner.
    """

    entrywise = False

    def __init__(self, obs_dim, latent_dim, num_layers=6, hidden_dim=128, conditioner_layers=1):
        super().__init__(obs_dim, latent_dim)
        check_integer("num_layers", num_layers, 0)
        check_integer("hidden_dim", hidden_dim, 1)
        self.flow = ConditionalObservationFlow(obs_dim, latent_dim, num_layers, hidden_dim,
                                               conditioner_layers=conditioner_layers)

    def point_distribution(self, z):
        base = Normal(z.new_zeros(()), z.new_ones(())).expand([self.obs_dim]).to_event(1)
        return TransformedDistribution(base, self.flow.condition(z))

    def decode(self, z, noise=None):
        self._check_latent(z)
        self._check_noise(z, noise)
        if noise is None:
            noise = z.new_zeros(z.shape[:-1] + (self.obs_dim,))
        return self.flow.condition(z)(noise)


def _point_mask(mask):
    """Reduce an entry mask ``(..., K+1, Dx)`` to observed time points ``(..., K+1)``."""
    observed = mask.all(-1)
    if bool((mask.any(-1) & ~observed).any()):
        raise ValueError(
            "mask marks some channels of a time point observed and others missing: the "
            "observation flow couples channels, so a subset of them has no tractable density. "
            "Mark whole time points missing (mask of shape (B, K+1)).")
    return observed
