r"""Fitting a linear-Gaussian VPF by its exact evidence: no guide to train, no Monte Carlo."""

import torch
from pyro.infer.elbo import ELBO

from pyro_vpf.distributions.linear_gaussian import exact_log_evidence
from pyro_vpf.guides import ExactPosterior
from pyro_vpf.infer.fit import fit
from pyro_vpf.params import register
from pyro_vpf.times import select_times

__all__ = ["ExactEvidence", "fit_exact"]


class ExactEvidence(ELBO):
    r"""The objective :math:`-\log p(x)` of a linear-Gaussian VPF, as a ``pyro.infer.ELBO``.

    With an identity latent flow and the linear-Gaussian likelihood the marginal likelihood is
    exact (:func:`~pyro_vpf.distributions.linear_gaussian.exact_log_evidence`: the backward
    information filter of the stacked base state, masks and per-sequence irregular times
    allowed), so it is maximised directly: the loss is deterministic and its gradient exact,
    as in the maximum-likelihood fit of a structural time-series model. The guide passed to
    SVI is not run (the exact posterior, :class:`~pyro_vpf.guides.ExactPosterior`, follows
    from the model); the model's parameters are registered with Pyro so that ``SVI`` updates
    them. ``batch_size`` draws that many sequences without replacement and scales their
    evidence to the whole data set, as the model's plate does.

    Raises:
        ValueError: at the first step, for a model that is not linear-Gaussian or a KL weight
            other than 1 (the exact evidence has no KL term to weight).
    """

    def __init__(self):
        super().__init__(num_particles=1, max_plate_nesting=1)

    def _evidence(self, model, x, times, mask=None, *, batch_size=None, kl_weight=1.0):
        if float(kl_weight) != 1.0:
            raise ValueError(f"kl_weight must be 1 for the exact evidence (beta and KL "
                             f"annealing weight a KL term it does not have), got {kl_weight}")
        B = x.shape[0]
        scale = 1.0
        if batch_size is not None and batch_size < B:
            rows = torch.randperm(B, device=x.device)[:batch_size]
            x, times = x[rows], select_times(times, rows)
            mask = None if mask is None else mask[rows]
            scale = B / batch_size
        evidence = exact_log_evidence(model, x, times, mask).sum()  # refuses other models
        register(model, model.name)  # SVI updates the parameters it sees registered
        return scale * evidence

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("ExactEvidence runs no model or guide trace")

    def loss(self, model, guide, *args, **kwargs):
        """:math:`-\\log p(x)` (a float), without gradients."""
        with torch.no_grad():
            return -float(self._evidence(model, *args, **kwargs))

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """:math:`-\\log p(x)` as a tensor."""
        return -self._evidence(model, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """:math:`-\\log p(x)` (a float), its gradients accumulated into the parameters."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


def fit_exact(model, x, times, mask=None, *, num_steps=300, lr=0.02, **fit_options):
    r"""Fit a linear-Gaussian VPF by maximising its exact evidence :math:`\log p(x)`.

    :func:`~pyro_vpf.infer.fit` with the objective :class:`ExactEvidence` and the exact
    posterior (:class:`~pyro_vpf.guides.ExactPosterior`) as the guide: the same checkpoints,
    resumption, held-out scoring (the held-out ELBO with the exact posterior *is* the held-out
    evidence, with no Monte Carlo noise), early stopping and divergence guard, with Adam on a
    deterministic, exact gradient. This is the fit a structural time-series model gets from
    statsmodels: seconds, not the minutes of training a guide. Forecast and interpolate
    afterwards with ``ExactPosterior(model)`` as the guide.

    Args:
        model: ``VPF(..., num_flow_layers=0, observation="linear_gaussian")``, any base.
        x, times, mask: the sequences, as for :func:`~pyro_vpf.infer.fit`.
        num_steps (int): Adam steps.
        lr (float): Adam's learning rate (larger than SVI's default: the gradient is exact).
        **fit_options: any other option of :func:`~pyro_vpf.infer.fit` (``batch_size``,
            ``checkpoint_path``, ``resume``, ``validation``, ``early_stopping``, ``lr_decay``,
            ``clip_norm``, ``progress``, ``callback``, ``metadata``, ...), except the ones that
            choose the objective (``elbo``, ``num_particles``, ``beta``, ``kl_anneal_steps``).

    Returns:
        FitHistory: as :func:`~pyro_vpf.infer.fit`'s (its ``elbo_per_point`` is the exact
        log-likelihood per observed point).

    Raises:
        ValueError: if ``model`` is not linear-Gaussian, or an option chooses another
            objective.
    """
    chosen = sorted({"elbo", "num_particles", "vectorize_particles", "beta", "kl_anneal_steps",
                     "kl_start"} & set(fit_options))
    if chosen:
        raise ValueError(f"fit_exact maximises the exact evidence: {', '.join(chosen)} "
                         "choose another objective; use fit() for those")
    guide = ExactPosterior(model)
    return fit(model, guide, x, times, mask, num_steps=num_steps, lr=lr, elbo=ExactEvidence(),
               **fit_options)
