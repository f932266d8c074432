r"""Posterior predictive draws, forecasts and interval coverage."""

import pyro
import torch
from pyro import poutine
from pyro.distributions import Normal

from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.distributions import GaussianMarginals, PosteriorSDE, solve_sde
from pyro_vpf.evaluation.scores import check_levels, interval_scores, scored_entries
from pyro_vpf.sites import Z0, X, Z
from pyro_vpf.times import expand_times, last_observed, select_times
from pyro_vpf.validation import (
    check_integer,
    check_sequences,
    check_support,
    check_times,
    inputs_checked,
)

__all__ = [
    "forecast",
    "forecast_series",
    "interpolate",
    "posterior_predictive",
    "predictive_coverage",
    "sample_posterior_sde",
]


def _check_sequence_guide(guide, needs_marginal=False):
    """Refuse guides that cannot read new sequences, with what to use instead."""
    from pyro.infer.autoguide import AutoGuide

    if isinstance(guide, AutoGuide):
        raise ValueError(
            f"{type(guide).__name__} (a Pyro autoguide) learns one posterior per training "
            "sequence and cannot read new sequences: use a sequence guide of "
            "pyro_vpf.guides (AffineGuide, MarkovGuide, FlowGuide), which encodes x")
    if needs_marginal and not callable(getattr(guide, "marginal", None)):
        raise ValueError(
            f"{type(guide).__name__} has no marginal(x, times, query_times, mask): "
            "interpolation reads the posterior marginal of z(t); the guides of "
            "pyro_vpf.guides have one")


@torch.no_grad()
def posterior_predictive(model, guide, x, times, mask=None, num_samples=100):
    r"""Replicated sequences :math:`x^{rep} \sim p(x \mid z)`, :math:`z \sim q(z \mid x)`.

    The guide is run on the observed data, then the model is replayed on its draws with
    ``x=None``, so every entry — masked or held out ones included — is a fresh draw. (Pyro's
    ``Predictive`` with the data passed in would hand the observed values back.)

    Returns:
        dict: ``"z"`` ``(S, B, K+1, Dz)`` and ``"x"`` ``(S, B, K+1, Dx)``, plus
        ``"log_likelihood"`` ``(S, B)``: :math:`\log p(x^{obs} \mid \text{latents})` of the
        observed entries under each draw, read from the model's own trace (so a model whose
        likelihood depends on latents besides ``z`` is scored with them).
    """
    check_integer("num_samples", num_samples, 1)
    _check_sequence_guide(guide)
    like = next(model.parameters())
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim, like=like)
    check_support(model, x, mask)
    with pyro.plate("samples", num_samples, dim=-2), inputs_checked():
        guide_trace = poutine.trace(guide).get_trace(x, times, mask)
        replayed = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            None, times, num_sequences=B)
        # the model's own law of the observed data given every latent of the same draw (its
        # own latents too, not only z), from its trace with the data: any model's likelihood
        observed = poutine.trace(poutine.replay(model, trace=replayed)).get_trace(
            x, times, mask)
    z = torch.cat([replayed.nodes[Z0]["value"].unsqueeze(-2), replayed.nodes[Z]["value"]], -2)
    log_lik = observed.nodes[X]["fn"].log_prob(x)
    return {"z": z, "x": replayed.nodes[X]["value"], "log_likelihood": log_lik}


def _decode(model, z):
    return model.observation_distribution(z).sample()


@torch.no_grad()
def interpolate(model, guide, x, times, query_times, mask=None, num_samples=100):
    r"""Predictive draws of :math:`x` at ``query_times`` from the guide's marginals.

    :math:`z(t) \sim q(z(t) \mid x)` (the guide's ``marginal``), then
    :math:`x(t) \sim p(x \mid z(t))`. Per-time marginals only: intervals are exact for each
    time point, but draws are not joint paths. Continuous-time guides (affine, flow) take any
    query times; the Markov guide takes times of the grid.

    Returns:
        torch.Tensor: ``(S, B, Q, Dx)``.
    """
    check_integer("num_samples", num_samples, 1)
    _check_sequence_guide(guide, needs_marginal=True)
    x, times, mask, _ = check_sequences(x, times, mask, obs_dim=model.obs_dim,
                                        like=next(model.parameters()))
    check_support(model, x, mask)
    with inputs_checked():
        z = guide.marginal(x, times, query_times, mask).sample((num_samples,))
    return _decode(model, z)


@torch.no_grad()
def forecast(model, guide, x, times, future_times, mask=None, num_samples=100):
    r"""Forecast after each sequence's last observation through the model's own prior
    dynamics.

    Posterior paths :math:`z_{0:L} \sim q(z \mid x)` from the guide, then the model's prior
    continuation :math:`p(z_{future} \mid z_{0:L})` at ``future_times`` (``prior.forecast``: one
    pass, any spacing; for a structured base the state at :math:`t_L` given the whole path,
    so a trend's slope and a cycle's phase are carried forward), then :math:`x \sim p(x \mid z)`.

    :math:`t_L` is each sequence's last *observed* time point: in a ragged panel (sequences
    padded at the end with unobserved points, e.g.
    :meth:`~pyro_vpf.data.SequenceData.from_arrays`) the padding is not history. Sequences
    are grouped by :math:`L` and the guide reads each group's points up to :math:`t_L` only,
    so the padding cannot leak into the posterior either.

    Args:
        future_times: ``(F,)`` shared or ``(B, F)`` per sequence, strictly increasing, all
            after the sequence's last observed time.

    Returns:
        dict: ``"z"`` ``(S, B, F, Dz)`` and ``"x"`` ``(S, B, F, Dx)``.
    """
    check_integer("num_samples", num_samples, 1)
    _check_sequence_guide(guide)
    like = next(model.parameters())
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim, like=like)
    check_support(model, x, mask)
    check_times(future_times, like, name="future_times")
    if future_times.dim() == 2 and future_times.shape[0] != B:
        raise ValueError(f"future_times must have shape (F,) or ({B}, F), got "
                         f"{tuple(future_times.shape)}")
    K1 = times.shape[-1]
    last = last_observed(mask, K1)
    # at least two points of history (the guide's smallest sequence)
    last = torch.full((B,), K1 - 1, device=x.device) if last is None else last.clamp_min(1)
    end = expand_times(times, B).gather(-1, last.unsqueeze(-1)).squeeze(-1)
    if not bool((expand_times(future_times, B)[:, 0] > end).all()):
        raise ValueError("future_times must all lie after the last observed time of each "
                         "sequence")
    ends = last.unique().tolist()
    if ends == [K1 - 1]:  # nothing trails the last observation
        return _forecast_from(model, guide, x, times, future_times, mask, num_samples)
    out = None
    for L in ends:
        rows = (last == L).nonzero().squeeze(-1)
        part = _forecast_from(model, guide, x[rows, :L + 1], select_times(times, rows)[..., :L + 1],
                              select_times(future_times, rows),
                              None if mask is None else mask[rows, :L + 1], num_samples)
        if out is None:
            out = {k: v.new_empty(v.shape[:1] + (B,) + v.shape[2:]) for k, v in part.items()}
        for k, v in part.items():
            out[k][:, rows] = v
    return out


def _forecast_from(model, guide, x, times, future_times, mask, num_samples):
    """:func:`forecast` for checked sequences that end with their last observation."""
    with pyro.plate("samples", num_samples, dim=-2), inputs_checked():
        guide_trace = poutine.trace(guide).get_trace(x, times, mask)
    path = torch.cat([guide_trace.nodes[Z0]["value"].unsqueeze(-2),
                      guide_trace.nodes[Z]["value"]], -2)  # (S, B, K+1, Dz)
    z = model.prior.forecast(path, times, future_times)  # (S, B, F, Dz)
    return {"z": z, "x": _decode(model, z)}


@torch.no_grad()
def forecast_series(model, guide, history, future_times, *, context=None, num_samples=500):
    r"""Forecast one long series, in its original units, from its most recent stretch.

    The guide conditions on the last ``context`` points of ``history`` (all of it by default;
    a model trained on windows is best conditioned on one window's length), then
    :func:`forecast` runs the model's prior dynamics to ``future_times``; draws are mapped
    back with ``history.unstandardise``. Missing points of the history stay masked.

    Args:
        history (SequenceData): one sequence, ``x (1, T, Dx)`` with ``(T,)`` or ``(1, T)``
            times and an optional mask.
        future_times (torch.Tensor): ``(F,)``, after the history.
        context (int): number of final history points the guide sees.
        num_samples (int): predictive draws.

    Returns:
        torch.Tensor: ``(num_samples, F, Dx)`` in original units.
    """
    check_integer("num_samples", num_samples, 1)
    if not isinstance(history, SequenceData):
        raise ValueError("history must be a SequenceData (e.g. split_series(...).history), "
                         f"got {type(history).__name__}")
    if history.x.dim() != 3 or history.x.shape[0] != 1:
        raise ValueError(f"history must hold one sequence (1, T, Dx), got {tuple(history.x.shape)}")
    T = history.x.shape[1]
    context = T if context is None else check_integer("context", context, 2)
    if not 2 <= context <= T:
        raise ValueError(f"context must lie in [2, {T}], got {context}")
    times = history.times.reshape(1, -1)[:, T - context:]
    mask = None if history.mask is None else history.mask[:, T - context:]
    draws = forecast(model, guide, history.x[:, T - context:], times, future_times, mask=mask,
                     num_samples=num_samples)["x"][:, 0]
    return history.unstandardise(draws)


@torch.no_grad()
def sample_posterior_sde(model, guide, x, times, query_times, mask=None, num_samples=1,
                         **solver_options):
    r"""Posterior latent paths of a :class:`~pyro_vpf.models.LatentSDE` at ``query_times``, by
    solving its :class:`~pyro_vpf.distributions.PosteriorSDE`.

    The guide (one with a :class:`~pyro_vpf.distributions.GaussianMarginals` ``"z"`` site,
    such as :class:`~pyro_vpf.guides.AffineGuide`) reads ``x``; paths start from its
    marginal at ``query_times[0]`` and follow the drift that keeps its marginals, with the
    prior's diffusion. Unlike draws from the marginals alone, these are whole paths:
    neighbouring times are correlated as the SDE implies.

    Args:
        x, times, mask: the sequences, as for the model.
        query_times (torch.Tensor): ``(Q,)`` increasing, shared by the sequences.
        num_samples (int): paths per sequence.
        solver_options: ``method``, ``dt``, ``adaptive``, ``rtol``, ``atol``.

    Returns:
        tuple: ``(z, x)`` of shapes ``(S, B, Q, Dz)`` and ``(S, B, Q, Dx)``.
    """
    if not hasattr(getattr(model, "prior", None), "solver_options"):
        raise ValueError(f"model: sample_posterior_sde solves a latent SDE's posterior SDE; "
                         f"{type(model).__name__} has no SDE prior (use forecast or "
                         "posterior_predictive)")
    like = model.prior.init_loc
    x, times, mask, B = check_sequences(x, times, mask, obs_dim=model.obs_dim, like=like)
    check_times(query_times, like, name="query_times")
    if query_times.dim() != 1:
        raise ValueError(f"query_times must be 1-D (Q,), got {tuple(query_times.shape)}")
    check_integer("num_samples", num_samples, 1)
    with inputs_checked():
        marginals = poutine.trace(guide).get_trace(x, times, mask).nodes[Z]["fn"]
    if not isinstance(marginals, GaussianMarginals):
        raise ValueError("sample_posterior_sde needs a guide whose 'z' site is a "
                         "GaussianMarginals (e.g. AffineGuide), got "
                         f"{type(marginals).__name__}")
    start = marginals.marginal(query_times[:1].expand(B, 1))
    z0 = Normal(start[0][:, 0], start[1][:, 0]).sample((int(num_samples),))  # (S, B, Dz)
    z = z0.unsqueeze(-2)
    if query_times.shape[0] > 1:
        options = {**model.prior.solver_options, **solver_options}
        if options.get("dt") is None and not options.get("adaptive"):
            options["dt"] = _stable_step(model.sde, marginals, times, query_times, B)
        path = solve_sde(PosteriorSDE(model.sde, marginals, B), z0.reshape(-1, z0.shape[-1]),
                         query_times, **options)  # (Q, S * B, Dz)
        z = path.movedim(0, 1).reshape(z0.shape[:2] + path.shape[:1] + z0.shape[-1:])
    return z, model.observation_distribution(z).sample()


def _stable_step(sde, marginals, times, query_times, num_sequences, max_steps=100_000):
    r"""An explicit solver step for the posterior SDE: its drift pulls towards the guide's
    mean at the rate :math:`\lambda = g^2 / (2 s^2)` (:math:`s` the guide's scale), and
    Euler steps are stable for :math:`\Delta t\,\lambda < 2`. The step is
    :math:`\min(s^2 / g^2)` (half the bound) over the observation and query times (:math:`g` at
    the guide's mean there, in one batched call), at most a hundredth of the span (the
    solver's default) and at least the span over ``max_steps``."""
    grid = torch.cat([expand_times(times, num_sequences),
                      query_times.expand(num_sequences, -1)], -1)
    loc, scale = marginals.marginal(grid)  # (B, G, Dz)
    diffusion = sde.diffusion(loc, grid)  # g at each point's mean and time, (B, G, Dz)
    span = float(query_times[-1] - query_times[0])
    step = float((scale / diffusion).square().amin())
    return min(span / 100, max(step, span / max_steps))


def predictive_coverage(draws, truth, held_out, levels=(0.5, 0.9)):
    r"""Share of held-out entries inside the central predictive intervals.

    The coverage part of :func:`~pyro_vpf.evaluation.forecast_scores`.

    Args:
        draws: ``(S, ..., Dx)`` predictive draws.
        truth: ``(..., Dx)`` true values.
        held_out: boolean mask of the entries to score, broadcastable to ``truth``.
        levels: central interval probabilities.

    Returns:
        dict: ``{level: coverage}``.
    """
    levels = check_levels(levels)
    draws, truth, _ = scored_entries(draws, truth, held_out, names=("draws", "truth", "held_out"))
    with torch.no_grad():
        return interval_scores(draws, truth, levels)[0]
