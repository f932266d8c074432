r"""ArviZ ``InferenceData`` from a fitted model and guide (SVI, one chain)."""

import numpy as np
import torch

from pyro_vpf.evaluation.predictive import posterior_predictive
from pyro_vpf.times import expand_times
from pyro_vpf.validation import check_integer, check_program_data

__all__ = ["to_inference_data"]


def to_inference_data(model, guide, x, times, mask=None, num_samples=200):
    r"""Posterior, posterior predictive and observed data as ArviZ ``InferenceData``.

    Groups (one chain, ``num_samples`` draws):

    * ``posterior``: ``z`` with dims ``("sequence", "time", "latent")``;
    * ``posterior_predictive``: ``x`` with dims ``("sequence", "time", "channel")`` —
      replicated data from :func:`posterior_predictive`, not the observed values;
    * ``log_likelihood``: ``x``, :math:`\log p(x^{obs} \mid z)` per sequence;
    * ``observed_data``: ``x`` (NaN at unobserved entries);
    * ``constant_data``: ``times`` ``("sequence", "time")`` and the ``mask``.

    The ``time`` coordinate holds the real times when they are shared by all sequences,
    otherwise the index ``0..K`` (the per-sequence times are in ``constant_data``). So
    ``az.plot_ppc``, ``az.hdi`` and ``az.summary`` apply directly.
    """
    check_integer("num_samples", num_samples, 1)
    import arviz as az

    if not hasattr(model, "obs_dim"):
        raise ValueError(f"model must be a sequence model (with times); {type(model).__name__} "
                         "has no obs_dim")
    (x, times, mask), B, _ = check_program_data(model, x, times, mask)
    draws = posterior_predictive(model, guide, x, times, mask, num_samples)
    K1, Dx = x.shape[1:]
    observed = x if mask is None else torch.where(mask, x, torch.full_like(x, float("nan")))
    shared = times.dim() == 1

    def numpy(t):
        return t.detach().cpu().numpy()

    coords = {
        "sequence": np.arange(B),
        "time": numpy(times) if shared else np.arange(K1),
        "channel": np.arange(Dx),
        "latent": np.arange(model.latent_dim),
    }
    full_mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
    return az.from_dict(
        posterior={"z": numpy(draws["z"])[None]},
        posterior_predictive={"x": numpy(draws["x"])[None]},
        log_likelihood={"x": numpy(draws["log_likelihood"])[None]},
        observed_data={"x": numpy(observed)},
        constant_data={"times": numpy(expand_times(times, B)), "mask": numpy(full_mask)},
        coords=coords,
        dims={"z": ["sequence", "time", "latent"], "x": ["sequence", "time", "channel"],
              "times": ["sequence", "time"], "mask": ["sequence", "time", "channel"]},
    )
