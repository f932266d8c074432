r"""SDE matching: the continuous-time ELBO of a latent SDE, without simulating it."""

import pyro
import torch
from pyro import poutine
from pyro.infer.elbo import ELBO
from pyro.infer.util import torch_item
from pyro.util import check_model_guide_match, check_site_shape, warn_if_nan

from pyro_vpf.distributions import GaussianMarginals, SDEPath, posterior_drift
from pyro_vpf.sites import Z
from pyro_vpf.validation import check_integer

__all__ = ["SDEMatchingELBO", "posterior_drift"]  # posterior_drift: re-exported


class SDEMatchingELBO(ELBO):
    r"""The continuous-time ELBO of a latent SDE, estimated at random times (SDE matching).

    For a prior :math:`dz = f_\theta\,dt + g_\theta\,dW` observed at :math:`t_{0:K}` and a
    posterior SDE with the same diffusion whose marginals are the guide's
    :math:`q(z(t) \mid x) = \mathcal N(m(t), s(t)^2)`, Girsanov's theorem gives

    .. math::

        \mathcal L = \sum_k E_q \log p(x_k \mid z(t_k))
            + E_q\!\left[\log p(z_0) - \log q(z_0)\right]
            - \int_{t_0}^{t_K} E_{q(z(t))}\,
              \tfrac12 \big\| (f_q(z, t) - f_\theta(z, t)) / g_\theta(z, t) \big\|^2 dt
        \;\le\; \log p(x),

    with :math:`f_q` the drift that keeps the marginals (:func:`posterior_drift`). Nothing is
    simulated: the integral is estimated by ``num_time_samples`` times per sequence, uniform
    on :math:`[t_0, t_K]` (stratified: one in each of that many equal bins) with one
    :math:`z(t) = m(t) + s(t)\epsilon` each, and :math:`\dot m, \dot s` come from
    forward-mode differentiation of the guide in :math:`t`. The estimate is unbiased for
    :math:`\mathcal L` and reparameterised. Its variance falls with ``num_time_samples``
    (roughly as its inverse; stratification removes the part due to where in time the
    samples fall) and with ``num_particles``.

    The model's ``"z"`` site must be an :class:`~pyro_vpf.distributions.SDEPath` (as in
    :class:`~pyro_vpf.models.LatentSDE`) whose ``sde`` has ``drift(z, t)``,
    ``diffusion(z, t)`` and ``diffusion_depends_on_state``, and the guide's ``"z"`` site a
    :class:`~pyro_vpf.distributions.GaussianMarginals` (as in
    :class:`~pyro_vpf.guides.AffineGuide`). Every other site (``"z0"``, ``"x"``, users'
    factors) enters as in ``Trace_ELBO``; plates, subsampling and ``poutine.scale`` (the
    KL weight) scale the path term as they scale the ``"z"`` site. Works with ``SVI`` and
    :func:`~pyro_vpf.infer.fit` unchanged.

    Args:
        num_particles (int): independent draws of the whole estimate, averaged.
        num_time_samples (int): random times per sequence for the drift-matching integral.
        stratified (bool): stratified times (default) or i.i.d. uniform ones.
        path_site (str): the name of the path site.
        max_plate_nesting (int): as for Pyro's ELBOs (the collection's programs use 1).
    """

    def __init__(self, num_particles=1, num_time_samples=16, stratified=True, path_site=Z,
                 max_plate_nesting=1, **kwargs):
        num_time_samples = check_integer("num_time_samples", num_time_samples, 1)
        check_integer("num_particles", num_particles, 1)
        if kwargs.get("vectorize_particles"):
            raise ValueError("SDEMatchingELBO draws its particles one after another "
                             "(vectorize_particles=False)")
        kwargs.pop("vectorize_particles", None)
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         **kwargs)
        self.num_time_samples = int(num_time_samples)
        self.stratified = bool(stratified)
        self.path_site = path_site

    def _get_trace(self, model, guide, args, kwargs):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        if pyro.infer.util.is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        guide_trace = pyro.poutine.util.prune_subsample_sites(guide_trace)
        model_trace = pyro.poutine.util.prune_subsample_sites(model_trace)
        if self.path_site not in model_trace.nodes or self.path_site not in guide_trace.nodes:
            raise ValueError(f"SDEMatchingELBO needs a sample site {self.path_site!r} in both "
                             f"the model and the guide")
        keep = self._not_path
        model_trace.compute_log_prob(keep)
        guide_trace.compute_log_prob(keep)
        if pyro.infer.util.is_validation_enabled():
            for trace in (model_trace, guide_trace):
                for name, site in trace.nodes.items():
                    if site["type"] == "sample" and name != self.path_site:
                        check_site_shape(site, self.max_plate_nesting)
        return model_trace, guide_trace

    def _not_path(self, name, site):
        return name != self.path_site

    def path_term(self, model_trace, guide_trace):
        r"""The scaled estimate of :math:`\int E_q \tfrac12\|(f_q - f_\theta)/g\|^2 dt`."""
        prior_site = model_trace.nodes[self.path_site]
        posterior_site = guide_trace.nodes[self.path_site]
        prior, posterior = prior_site["fn"], posterior_site["fn"]
        if not isinstance(prior, SDEPath):
            raise ValueError(f"the model's {self.path_site!r} site must be an SDEPath (a latent "
                             f"SDE prior), got {type(prior).__name__}")
        if not isinstance(posterior, GaussianMarginals):
            raise ValueError(
                f"the guide's {self.path_site!r} site must be a GaussianMarginals, whose "
                f"marginals are defined at every time (AffineGuide), got "
                f"{type(posterior).__name__}")
        sde, times = prior.sde, prior.times
        batch = prior.batch_shape
        t0, t_end = times[..., :1], times[..., -1:]
        shape = batch + (self.num_time_samples,)
        u = torch.rand(shape, dtype=times.dtype, device=times.device)
        if self.stratified:
            u = (u + torch.arange(self.num_time_samples, dtype=times.dtype,
                                  device=times.device)) / self.num_time_samples
        t = t0 + u * (t_end - t0)  # (*batch, T)
        loc, scale, dloc, dscale = posterior.rates(t)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        diffusion, sq_grad = sde.diffusion(z, t), None
        if sde.diffusion_depends_on_state:  # d g_i^2 / d z_i: g_i sees z_i alone
            graph = torch.is_grad_enabled()
            with torch.enable_grad():
                z_in = z if z.requires_grad else z.detach().requires_grad_()
                diffusion = sde.diffusion(z_in, t)
                sq_grad = torch.autograd.grad(diffusion.square().sum(), z_in,
                                              create_graph=graph)[0]
        residual = (posterior_drift(eps, scale, dloc, dscale, diffusion, sq_grad)
                    - sde.drift(z, t)) / diffusion
        integrand = 0.5 * residual.square().sum(-1)  # (*batch, T)
        integral = (t_end - t0).squeeze(-1) * integrand.mean(-1)
        return (prior_site["scale"] * integral).sum()

    def _differentiable_elbo(self, model_trace, guide_trace):
        keep = self._not_path
        return (model_trace.log_prob_sum(keep) - guide_trace.log_prob_sum(keep)
                - self.path_term(model_trace, guide_trace))

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """Minus the ELBO estimate, differentiable in the parameters of model and guide."""
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - self._differentiable_elbo(model_trace, guide_trace) / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs):
        """Minus the ELBO estimate, a float (also under ``torch.no_grad``: the time
        derivatives are forward-mode)."""
        return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """Minus the ELBO estimate; its gradient is accumulated in the parameters."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)
