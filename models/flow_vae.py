r"""A variational autoencoder with a normalizing-flow prior, as a Pyro model program."""

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions import Bernoulli, Normal, TransformedDistribution
from torch import nn

from pyro_vpf.nn import MLP
from pyro_vpf.params import register
from pyro_vpf.refine import refine
from pyro_vpf.sites import DATA, X, Z
from pyro_vpf.transforms import CouplingFlow
from pyro_vpf.validation import check_vectors, program_checks_values

__all__ = ["FlowVAE"]

_LIKELIHOODS = ("gaussian", "bernoulli")


class FlowVAE(nn.Module):
    r"""VAE whose prior is a coupling flow over a standard normal.

    Generative program, for each data point (a plate ``"data"``):

    .. math::

        \varepsilon \sim \mathcal N(0, I), \qquad z = h(\varepsilon), \qquad
        x \mid z \sim \mathcal N\big(d(z), \gamma^{-1} I\big)
        \ \text{or}\ \operatorname{Bernoulli}\big(\sigma(d(z))\big),

    with :math:`h` a :class:`~pyro_vpf.transforms.CouplingFlow` (the identity when
    ``num_prior_layers=0``), :math:`d` an MLP decoder and :math:`\gamma` a learned or fixed
    precision. The prior density is exact,

    .. math::

        \log p(z) = \log \mathcal N\big(h^{-1}(z); 0, I\big)
            + \log\left|\det \partial h^{-1} / \partial z\right| ,

    which is what :meth:`sample` climbs when it refines samples
    (:func:`~pyro_vpf.refine.refine`). Sites (:mod:`pyro_vpf.sites`): ``"z"`` (event ``(Dz,)``)
    and ``"x"`` (event ``(D,)``) in the plate ``"data"``; ``"z"`` is scaled by ``kl_weight``
    (``poutine.scale``), giving the :math:`\beta`-weighted objective
    :math:`E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}(q \,\|\, p)` under ``Trace_ELBO``
    (:func:`~pyro_vpf.infer.fit` passes and anneals it).

    Args:
        data_dim (int): :math:`D`.
        latent_dim (int): :math:`D_z`.
        hidden_dim (int): width of the decoder and of the prior flow's conditioners.
        num_prior_layers (int): couplings of the prior flow (0: a standard normal prior).
        likelihood (str): ``"gaussian"`` or ``"bernoulli"`` (binary data; the decoder gives
            logits).
        precision (float): a fixed :math:`\gamma` for the Gaussian likelihood; ``None``
            learns one precision per data dimension (starting at 1).
        decoder_layers (int): hidden layers of the decoder.
        log_scale_bound (float): soft bound of each prior coupling's log-scale.
    """

    def __init__(self, data_dim, latent_dim=2, hidden_dim=128, num_prior_layers=4,
                 likelihood="gaussian", precision=None, decoder_layers=2, log_scale_bound=3.0):
        super().__init__()
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
        if data_dim < 1 or latent_dim < 1 or num_prior_layers < 0:
            raise ValueError("need data_dim, latent_dim >= 1 and num_prior_layers >= 0, got "
                             f"{data_dim}, {latent_dim}, {num_prior_layers}")
        if precision is not None and (likelihood != "gaussian" or not precision > 0):
            raise ValueError("precision must be None or a positive float, and only for the "
                             f"Gaussian likelihood; got {precision!r} with {likelihood!r}")
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        self.prior_flow = (CouplingFlow(latent_dim, num_prior_layers, hidden_dim,
                                        log_scale_bound) if num_prior_layers else None)
        self.decoder = MLP(latent_dim, hidden_dim, data_dim, decoder_layers)
        self.log_precision = None
        if likelihood == "gaussian":
            if precision is None:
                self.log_precision = nn.Parameter(torch.zeros(data_dim))
            else:
                self.register_buffer("fixed_log_precision",
                                     torch.full((data_dim,), math.log(precision)))

    def _like(self):
        return self.decoder[0].weight

    @property
    def precision(self):
        r""":math:`\gamma` ``(D,)`` of the Gaussian likelihood (``None`` for Bernoulli)."""
        if self.likelihood != "gaussian":
            return None
        log_precision = (self.log_precision if self.log_precision is not None
                         else self.fixed_log_precision)
        return log_precision.exp()

    def prior(self):
        r""":math:`p(z)`, event shape ``(Dz,)``: the flow prior (or :math:`\mathcal N(0, I)`)."""
        like = self._like()
        base = Normal(like.new_zeros(()), like.new_ones(())).expand([self.latent_dim]).to_event(1)
        if self.prior_flow is None:
            return base
        return TransformedDistribution(base, [self.prior_flow])

    def log_prior(self, z):
        r"""Exact :math:`\log p(z)` for ``z (..., Dz)``, shape ``(...)``."""
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.latent_dim,):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (..., {self.latent_dim}), got {shape}")
        return self.prior().log_prob(z)

    def decode(self, z):
        r""":math:`p(x \mid z)`, batch ``z.shape[:-1]``, event ``(D,)``."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return Bernoulli(logits=out).to_event(1)
        return Normal(out, self.precision.rsqrt()).to_event(1)

    def forward(self, x=None, *, num_data=None, batch_size=None, kl_weight=1.0):
        """The model program (see the class docstring). Returns ``z`` of the subsample.

        Args:
            x: ``(N, D)`` data, or ``None`` to sample ``num_data`` points.
            num_data: ``N`` when ``x`` is ``None``.
            batch_size: subsample this many points (the plate rescales the log-densities).
            kl_weight: :math:`\\beta`, the scale of the latent site.
        """
        like = self._like()
        if x is None:
            if num_data is None or int(num_data) < 1:
                raise ValueError("pass x, or num_data >= 1 to sample without data")
            N = int(num_data)
        else:
            values = program_checks_values()
            N = check_vectors(x, self.data_dim, like, values=values).shape[0]
            if values and self.likelihood == "bernoulli" and not ((x == 0) | (x == 1)).all():
                raise ValueError("x must hold 0/1 values for the Bernoulli likelihood")
        register(self, "flow_vae")
        with pyro.plate(DATA, N, subsample_size=batch_size, dim=-1) as idx:
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(Z, self.prior())
            pyro.sample(X, self.decode(z), obs=None if x is None else x[idx])
        return z

    def sample(self, num_samples, *, refine_steps=0, refine_lr=0.1, anchor=0.1, reward=None,
               backtrack=True, noise=True):
        r"""Draw ``(z, x)`` from the prior, optionally refined by latent search.

        :math:`z \sim p(z)`, then ``refine_steps`` steps of
        :func:`~pyro_vpf.refine.refine` on :math:`\log p(z) + r(z) - \lambda\lVert z -
        z_{\text{init}}\rVert^2` (``anchor`` :math:`= \lambda`, ``reward`` :math:`= r`), then
        :math:`x \sim p(x \mid z)` (``noise=False``: the decoder's mean, probabilities for
        Bernoulli).

        Returns:
            tuple: ``z (num_samples, Dz)`` and ``x (num_samples, D)``.
        """
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        with torch.no_grad():
            z = self.prior().sample((int(num_samples),))
        if refine_steps:
            z = refine(self.log_prior, z, steps=refine_steps, lr=refine_lr, anchor=anchor,
                       reward=reward, backtrack=backtrack).z
        with torch.no_grad():
            likelihood = self.decode(z)
            x = likelihood.sample() if noise else likelihood.mean
        return z, x
