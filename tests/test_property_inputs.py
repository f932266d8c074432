"""Property-based inputs for the public entry points: valid input gives finite output of the
documented shape; invalid input raises ValueError whose message names the argument, never
another exception type and never a silent result.

The entry points, every public one of ``pyro_vpf.models``, ``pyro_vpf.guides``,
``pyro_vpf.infer`` and ``pyro_vpf.evaluation``: the sequence models (the VPF, ``PathModel``
with each likelihood, the latent SDE) with every sequence guide, the estimators, the predictive
functions and the report, the exact Kalman functions of the linear-Gaussian VPF, the scores
and sample distances, the baselines, the data entry points that feed them
(``SequenceData.from_arrays``, ``split_series``), ``backtest``, ``refine``, the constructors,
the static model :class:`FlowVAE` with its guides and diagnostics, and both training loops
(``fit`` and ``fit_distributed``), which must train a step or two on any valid data and refuse
invalid data or settings before they take a step or write a file.

A message "names the argument" when the argument's name appears in it as a whole word
(:func:`_names`: ``times`` is not named by ``future_times``). Inputs that once broke the
contract stay as cases of :func:`test_former_defects_stay_fixed`, each with where it lay.
"""

import contextlib
import importlib
import math
import os
import re

import numpy as np
import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro import poutine
from pyro_vpf.guides import (
    VAE_GUIDES,
    AffineGuide,
    ConditionalFlowGuide,
    FlowGuide,
    GaussianEncoderGuide,
    MarkovGuide,
)
from pyro_vpf.models import (
    VPF,
    BernoulliLikelihood,
    FlowLikelihood,
    FlowVAE,
    LatentSDE,
    LatentSDEPrior,
    NegativeBinomialLikelihood,
    NeuralSDE,
    PathModel,
    PoissonLikelihood,
    StudentTLikelihood,
    make_likelihood,
)

from pyro_vpf.data import SequenceData, split_series
from pyro_vpf.evaluation import (
    active_units,
    backtest,
    crps_ensemble,
    elbo,
    energy_distance,
    evaluate_sequences,
    exact_log_likelihood,
    forecast,
    forecast_scores,
    forecast_series,
    gaussian_hmm,
    importance_log_likelihood,
    interpolate,
    kalman_log_likelihood,
    kalman_observation_marginals,
    kalman_smoother,
    linear_gaussian_parameters,
    linear_interpolation,
    log_weights,
    mmd,
    posterior_mean,
    posterior_predictive,
    predictive_coverage,
    sample_posterior_sde,
    structural_forecast,
    to_inference_data,
)
from pyro_vpf.infer import (
    SDEMatchingELBO,
    elbo_per_point,
    fit,
    load_checkpoint,
    posterior_drift,
    read_checkpoint,
    refine,
)
from pyro_vpf.prior import LatentPathPrior


def _names(argument):
    """A pattern that finds ``argument`` named in a message, as a whole word (``"sequence"``
    also as ``"sequences"``)."""
    if argument == "sequence":
        return r"(?<!\w)sequences?(?!\w)"
    return rf"(?<!\w){re.escape(argument)}(?!\w)"


DX, DZ = 2, 2
MODEL = VPF(DX, DZ, 8, num_flow_layers=1, observation="linear_gaussian")  # entry masks
GUIDES = {"affine": AffineGuide(DX, DZ, 8), "markov": MarkovGuide(DX, DZ, 8),
          "markov-direct": MarkovGuide(DX, DZ, 8, parametrization="direct"),
          "flow": FlowGuide(DX, DZ, 8, num_flow_layers=1)}
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sequences(draw, channels=DX, masks=("none", "points", "entries"), max_sequences=4,
              values=None):
    """Valid ``(x, times, mask)``: shared or per-sequence irregular times (gaps from 1e-3 to
    1e2), entry or time-point masks with at least one observed point per sequence; ``values``
    maps standard normal draws into a likelihood's support (counts, 0/1)."""
    B = draw(st.integers(1, max_sequences))
    K1 = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    per_sequence = draw(st.booleans())
    shape = (B, K1 - 1) if per_sequence else (K1 - 1,)
    log_gaps = torch.empty(shape).uniform_(-3, 2, generator=gen)  # resolvable in float32
    gaps = 10.0 ** log_gaps
    start = torch.zeros(shape[:-1] + (1,))
    times = torch.cat([start, gaps.cumsum(-1)], -1)
    x = torch.randn(B, K1, channels, generator=gen)
    if values is not None:
        x = values(x)
    kind = draw(st.sampled_from(masks))
    mask = None
    if kind == "points":
        mask = torch.rand(B, K1, generator=gen) > 0.3
        mask[:, 0] = True
    elif kind == "entries":
        mask = torch.rand(B, K1, channels, generator=gen) > 0.3
        mask[:, 0] = True
        x = torch.where(mask, x, torch.full_like(x, float("nan")))  # never read
    return x, times, mask


def _with_nan(tensor, index):
    tensor = tensor.clone()
    tensor[index] = float("nan")
    return tensor


CORRUPTIONS = {
    "duplicate time": ("times", lambda x, t, m: (x, torch.cat([t[..., :1], t[..., :-1]], -1), m)),
    "NaN time": ("times", lambda x, t, m: (x, _with_nan(t, (..., -1)), m)),
    "decreasing times": ("times", lambda x, t, m: (x, t.flip(-1), m)),
    "NaN observed": ("x", lambda x, t, m: (_with_nan(torch.nan_to_num(x), (0, 0, 0)), t,
                                           None)),
    "float64 x": ("x", lambda x, t, m: (x.double(), t, m)),
    "float64 times": ("times", lambda x, t, m: (x, t.double(), m)),
    "wrong channels": ("x", lambda x, t, m: (torch.randn(x.shape[0], x.shape[1], DX + 1), t,
                                             None)),
    "wrong mask shape": ("mask", lambda x, t, m: (torch.nan_to_num(x), t,
                                                  torch.ones(x.shape[0] + 1, x.shape[1],
                                                             dtype=torch.bool))),
    "float mask": ("mask", lambda x, t, m: (torch.nan_to_num(x), t,
                                            torch.ones(x.shape[:2]))),
    "no sequences": ("sequence", lambda x, t, m: (x[:0], t if t.dim() == 1 else t[:0],
                                                  None if m is None else m[:0])),
}


def _corrupted(corruption, data):
    """The argument that ``corruption`` breaks, and the corrupted ``(x, times, mask)``."""
    argument, corrupt = CORRUPTIONS[corruption]
    return (argument, *corrupt(*data))


FUTURE = torch.tensor([1e4, 2e4])  # after the last time of every valid sequence


def _sequence_entry_points(model, guide):
    """The entry points that take sequences ``(x, times, mask)``, as functions of them, for
    one model and guide (each returns a tensor or a tuple of tensors)."""

    def predictive(x, t, m):
        out = posterior_predictive(model, guide, x, t, m, num_samples=2)
        return out["x"], out["z"], out["log_likelihood"]

    return {
        "model": lambda x, t, m: poutine.trace(model).get_trace(x, t, m).nodes["x"]["fn"]
        .log_prob(torch.nan_to_num(x)),
        "guide": lambda x, t, m: poutine.trace(guide).get_trace(x, t, m).nodes["z"]["value"],
        "guide.marginal": lambda x, t, m: guide.marginal(x, t, t, m).sample(),
        "elbo": lambda x, t, m: elbo(model, guide, x, t, m, num_particles=2),
        "log_weights": lambda x, t, m: log_weights(model, guide, x, t, m, num_particles=2),
        "importance_log_likelihood": lambda x, t, m: importance_log_likelihood(
            model, guide, x, t, m, num_particles=3, chunk_size=2),
        "elbo_per_point": lambda x, t, m: torch.tensor(elbo_per_point(
            model, guide, x, t, m, num_particles=2, batch_size=1)),
        "posterior_predictive": predictive,
        "forecast": lambda x, t, m: tuple(forecast(
            model, guide, x, t, FUTURE, m, num_samples=2).values()),
        "interpolate": lambda x, t, m: interpolate(model, guide, x, t, t, m, num_samples=2),
    }


def _sequence_shapes(B, K1, Dx=DX, Dz=DZ):
    """The documented shapes of :func:`_sequence_entry_points`' outputs."""
    return {"model": (B,), "guide": (B, K1 - 1, Dz), "guide.marginal": (B, K1, Dz),
            "elbo": ((B,), (B,)), "log_weights": (2, B), "importance_log_likelihood": (B,),
            "elbo_per_point": (), "posterior_predictive": ((2, B, K1, Dx), (2, B, K1, Dz),
                                                           (2, B)),
            "forecast": ((2, B, 2, Dz), (2, B, 2, Dx)), "interpolate": (2, B, K1, Dx)}


def _assert_finite_of_shape(out, shapes):
    for name, value in out.items():
        values = value if isinstance(value, tuple) else (value,)
        expected = shapes[name] if isinstance(value, tuple) else (shapes[name],)
        assert len(values) == len(expected), name
        for v, shape in zip(values, expected, strict=True):
            assert v.shape == shape, name
            assert torch.isfinite(v).all(), name


def _assert_value_error(argument, name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``ValueError`` naming ``argument`` (any other exception
    propagates; ``name``, the entry point, goes into the failure message)."""
    try:
        with torch.no_grad():
            fn(*args, **kwargs)
    except ValueError as err:
        assert re.search(_names(argument), str(err)), f"{name} does not name {argument}: {err}"
    else:
        raise AssertionError(f"{name} returned a result for an invalid {argument}")


def _entry_points(guide_name):
    return _sequence_entry_points(MODEL, GUIDES[guide_name])


@pytest.mark.parametrize("guide_name", sorted(GUIDES))
@SETTINGS
@given(data=sequences())
def test_valid_inputs_give_finite_outputs_of_the_documented_shape(guide_name, data):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, times, mask) for name, fn in _entry_points(guide_name).items()}
    _assert_finite_of_shape(out, _sequence_shapes(B, K1))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@SETTINGS
@given(data=sequences(), guide_name=st.sampled_from(sorted(GUIDES)))
def test_invalid_inputs_raise_a_value_error_naming_the_argument(corruption, data, guide_name):
    argument, x, times, mask = _corrupted(corruption, data)
    pyro.clear_param_store()
    for name, fn in _entry_points(guide_name).items():
        _assert_value_error(argument, name, fn, x, times, mask)


# -- the static model ---------------------------------------------------------------------

D = 3  # FlowVAE's data dimension
STATIC_MODEL = FlowVAE(D, DZ, 8, num_prior_layers=1)
STATIC_GUIDES = {name: cls(D, DZ, 8) for name, cls in VAE_GUIDES.items()}


@st.composite
def points(draw):
    """Valid ``x (N, D)`` for :class:`FlowVAE`: 1 to 6 points on scales from 1e-2 to 1e2."""
    N = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = 10.0 ** draw(st.floats(-2, 2))
    return scale * torch.randn(N, D, generator=gen)


POINT_CORRUPTIONS = {
    "NaN value": ("x", lambda x: (_with_nan(x, (0, 0)), None, None)),
    "infinite value": ("x", lambda x: (_with_nan(x, (-1, -1)).nan_to_num(nan=float("inf")),
                                       None, None)),
    "float64 x": ("x", lambda x: (x.double(), None, None)),
    "wrong channels": ("x", lambda x: (torch.randn(x.shape[0], D + 1), None, None)),
    "sequences": ("x", lambda x: (x.unsqueeze(1), None, None)),
    "no points": ("x", lambda x: (x[:0], None, None)),
    "times given": ("times", lambda x: (x, torch.arange(float(x.shape[0])), None)),
    "mask given": ("mask", lambda x: (x, None, torch.ones(x.shape, dtype=torch.bool))),
}


def _static_entry_points(guide_name):
    guide = STATIC_GUIDES[guide_name]

    def checked(times, mask):
        if times is not None or mask is not None:  # what fit and the estimators refuse
            raise AssertionError("the programs take no times and no mask")

    return {
        "model": lambda x, t, m: checked(t, m) or poutine.trace(STATIC_MODEL).get_trace(x)
        .nodes["x"]["fn"].log_prob(x),
        "guide": lambda x, t, m: checked(t, m) or poutine.trace(guide).get_trace(x)
        .nodes["z"]["value"],
        "elbo": lambda x, t, m: elbo(STATIC_MODEL, guide, x, t, m, num_particles=2)
        .per_sequence,
        "log_weights": lambda x, t, m: log_weights(STATIC_MODEL, guide, x, t, m,
                                                   num_particles=2),
        "importance_log_likelihood": lambda x, t, m: importance_log_likelihood(
            STATIC_MODEL, guide, x, t, m, num_particles=3, chunk_size=2),
        "elbo_per_point": lambda x, t, m: torch.tensor(elbo_per_point(
            STATIC_MODEL, guide, x, t, m, num_particles=2, batch_size=2)),
    }


@pytest.mark.parametrize("guide_name", sorted(STATIC_GUIDES))
@SETTINGS
@given(x=points())
def test_static_model_gives_finite_outputs_of_the_documented_shape(guide_name, x):
    N = x.shape[0]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, None, None) for name, fn in _static_entry_points(guide_name).items()}
    shapes = {"model": (N,), "guide": (N, DZ), "elbo": (N,), "log_weights": (2, N),
              "importance_log_likelihood": (N,), "elbo_per_point": ()}
    for name, value in out.items():
        assert value.shape == shapes[name], name
        assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("corruption", sorted(POINT_CORRUPTIONS))
@settings(SETTINGS, max_examples=10)
@given(x=points(), guide_name=st.sampled_from(sorted(STATIC_GUIDES)))
def test_static_model_refuses_invalid_inputs_naming_the_argument(corruption, x, guide_name):
    argument, corrupt = POINT_CORRUPTIONS[corruption]
    x, times, mask = corrupt(x)
    pyro.clear_param_store()
    for name, fn in _static_entry_points(guide_name).items():
        if name in ("model", "guide") and (times is not None or mask is not None):
            continue  # the programs have no times or mask argument to pass them to
        _assert_value_error(argument, name, fn, x, times, mask)


# -- the training loops: fit and fit_distributed ------------------------------------------

LOOPS = ("fit", "fit_distributed")
SEQUENCE_GUIDES = {"affine": AffineGuide, "markov": MarkovGuide}
#: examples per loop: fit_distributed starts a Lightning Trainer for each
EXAMPLES = {"fit": 20, "fit_distributed": 4}


def _pair(kind, guide_name=None):
    """A new model and guide (training must not change the module's shared ones)."""
    pyro.clear_param_store()
    if kind == "points":
        return (FlowVAE(D, DZ, 8, num_prior_layers=1),
                VAE_GUIDES[guide_name or "meanfield"](D, DZ, 8))
    return (VPF(DX, DZ, 8, num_flow_layers=1, observation="linear_gaussian"),
            SEQUENCE_GUIDES[guide_name or "affine"](DX, DZ, 8))


def _train(loop, model, guide, x, times, mask, **kwargs):
    if loop == "fit":
        return fit(model, guide, x, times, mask, progress=False, **kwargs)
    pytest.importorskip("lightning")
    from pyro_vpf.infer.lightning import fit_distributed

    return fit_distributed(model, guide, x, times, mask, accelerator="cpu", seed=0,
                           progress=False, **kwargs)


@contextlib.contextmanager
def _scratch(tmp_path_factory):
    """A new empty directory, which is also the working directory meanwhile (where Lightning
    would write files of its own)."""
    directory = tmp_path_factory.mktemp("run")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield directory
    finally:
        os.chdir(previous)


def _state(*modules):
    return [value.detach().clone() for m in modules for value in m.state_dict().values()]


def _copies(*tensors):
    return [None if t is None else t.clone() for t in tensors]


def _same(a, b):
    """Equal, NaN where the other is NaN (masked entries hold NaN)."""
    return a is b is None or (a.dtype == b.dtype and a.shape == b.shape and bool(
        (torch.isnan(a) == torch.isnan(b)).all() and torch.equal(a.nan_to_num(), b.nan_to_num())
    ))


def _check_training(loop, kind, guide_name, x, times, mask, draw, tmp_path_factory):
    """Train 1 or 2 steps on valid data: a finite history of that length, finite parameters
    that moved, the checkpoint (when asked for) and no other file, the inputs untouched."""
    num_steps = draw(st.integers(1, 2), label="num_steps")
    batch_size = draw(st.none() | st.integers(1, x.shape[0]), label="batch_size")
    checkpoint = draw(st.booleans(), label="checkpoint")
    inputs = _copies(x, times, mask)
    model, guide = _pair(kind, guide_name)
    before = _state(model, guide)
    steps = []
    with _scratch(tmp_path_factory) as directory:
        path = str(directory / "ckpt.pt") if checkpoint else None
        history = _train(loop, model, guide, x, times, mask, num_steps=num_steps,
                         batch_size=batch_size, lr=1e-2, checkpoint_path=path,
                         checkpoint_every=1 if checkpoint else None,
                         callback=lambda step, _: steps.append(step))
        files = sorted(os.listdir(directory))
    assert steps == list(range(num_steps))
    assert len(history) == num_steps
    for name in ("loss", "elbo_per_point", "kl_weight", "lr"):
        values = torch.tensor(getattr(history, name))
        assert values.shape == (num_steps,) and torch.isfinite(values).all(), name
    after = _state(model, guide)
    assert all(torch.isfinite(value).all() for value in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert all(_same(a, b) for a, b in zip((x, times, mask), inputs, strict=True))
    assert files == (["ckpt.pt"] if checkpoint else [])
    if checkpoint:
        fresh_model, fresh_guide = _pair(kind, guide_name)
        step, saved, _ = load_checkpoint(path, fresh_model, fresh_guide)
        assert step == num_steps and saved.loss == history.loss
        assert all(torch.equal(a, b) for a, b in zip(_state(fresh_model, fresh_guide), after,
                                                     strict=True))


def _assert_refused(loop, argument, model, guide, x, times, mask, tmp_path_factory, **kwargs):
    """``ValueError`` naming ``argument``, before any step is taken or any file written."""
    before = _state(model, guide)
    steps = []
    with _scratch(tmp_path_factory) as directory:
        kwargs = {"num_steps": 2, "checkpoint_path": str(directory / "ckpt.pt"),
                  "checkpoint_every": 1, **kwargs}
        with pytest.raises(ValueError, match=_names(argument)):
            _train(loop, model, guide, x, times, mask,
                   callback=lambda step, _: steps.append(step), **kwargs)
        assert os.listdir(directory) == []
    assert steps == []
    assert all(torch.equal(a, b) for a, b in zip(_state(model, guide), before, strict=True))


def _loop_settings(loop):
    return settings(SETTINGS, max_examples=EXAMPLES[loop])


@pytest.mark.parametrize("loop", LOOPS)
def test_training_loops_train_on_valid_sequences(loop, tmp_path_factory):
    @_loop_settings(loop)
    @given(data=sequences(), guide_name=st.sampled_from(sorted(SEQUENCE_GUIDES)),
           choice=st.data())
    def check(data, guide_name, choice):
        _check_training(loop, "sequences", guide_name, *data, choice.draw, tmp_path_factory)

    check()


@pytest.mark.parametrize("loop", LOOPS)
def test_training_loops_train_the_static_model_on_valid_points(loop, tmp_path_factory):
    @_loop_settings(loop)
    @given(x=points(), guide_name=st.sampled_from(sorted(VAE_GUIDES)), choice=st.data())
    def check(x, guide_name, choice):
        _check_training(loop, "points", guide_name, x, None, None, choice.draw,
                        tmp_path_factory)

    check()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@settings(SETTINGS, max_examples=4)
@given(data=sequences())
def test_training_loops_refuse_invalid_sequences_before_training(loop, corruption, data,
                                                                 tmp_path_factory):
    argument, *corrupted = _corrupted(corruption, data)
    model, guide = _pair("sequences")
    _assert_refused(loop, argument, model, guide, *corrupted, tmp_path_factory)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("corruption", sorted(POINT_CORRUPTIONS))
@settings(SETTINGS, max_examples=4)
@given(x=points())
def test_training_loops_refuse_invalid_points_before_training(loop, corruption, x,
                                                              tmp_path_factory):
    argument, corrupt = POINT_CORRUPTIONS[corruption]
    model, guide = _pair("points")
    _assert_refused(loop, argument, model, guide, *corrupt(x), tmp_path_factory)


#: bad training settings, as functions of the number of sequences (or points) N
BAD_SETTINGS = {
    "lr zero": ("lr", lambda N: {"lr": 0.0}),
    "lr negative": ("lr", lambda N: {"lr": -1e-3}),
    "lr NaN": ("lr", lambda N: {"lr": float("nan")}),
    "batch_size zero": ("batch_size", lambda N: {"batch_size": 0}),
    "batch_size above N": ("batch_size", lambda N: {"batch_size": N + 1}),
    "batch_size fractional": ("batch_size", lambda N: {"batch_size": 0.5 * N + 0.25}),
    "batch_size float": ("batch_size", lambda N: {"batch_size": float(N)}),
    "batch_size bool": ("batch_size", lambda N: {"batch_size": True}),
    "batch_size string": ("batch_size", lambda N: {"batch_size": str(N)}),
    "num_steps negative": ("num_steps", lambda N: {"num_steps": -1}),
    "num_steps fractional": ("num_steps", lambda N: {"num_steps": 1.5}),
    "num_steps bool": ("num_steps", lambda N: {"num_steps": True}),
    "num_steps string": ("num_steps", lambda N: {"num_steps": "2"}),
    "checkpoint_every without path": ("checkpoint_every", lambda N: {
        "checkpoint_every": 1, "checkpoint_path": None}),
    "checkpoint_every zero": ("checkpoint_every", lambda N: {"checkpoint_every": 0}),
    "checkpoint_every negative": ("checkpoint_every", lambda N: {"checkpoint_every": -1}),
    "checkpoint_every fractional": ("checkpoint_every", lambda N: {"checkpoint_every": 1.5}),
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bad", sorted(BAD_SETTINGS))
@settings(SETTINGS, max_examples=3)
@given(data=st.one_of(sequences(), points().map(lambda x: (x, None, None))))
def test_training_loops_refuse_bad_settings_before_training(loop, bad, data,
                                                            tmp_path_factory):
    argument, make = BAD_SETTINGS[bad]
    x, times, mask = data
    model, guide = _pair("sequences" if times is not None else "points")
    _assert_refused(loop, argument, model, guide, x, times, mask, tmp_path_factory,
                    **make(x.shape[0]))


# -- sample counts and chunk sizes --------------------------------------------------------

BAD_COUNTS = {"zero": 0, "negative": -1, "fractional": 1.5}
_G = GUIDES["affine"]
#: entry point -> (the count argument, a call with data and the count)
COUNTED = {
    "elbo num_particles": ("num_particles", lambda x, t, m, n: elbo(
        MODEL, _G, x, t, m, num_particles=n)),
    "elbo chunk_size": ("chunk_size", lambda x, t, m, n: elbo(
        MODEL, _G, x, t, m, num_particles=2, chunk_size=n)),
    "importance_log_likelihood num_particles": ("num_particles", lambda x, t, m, n:
                                                importance_log_likelihood(
                                                    MODEL, _G, x, t, m, num_particles=n)),
    "importance_log_likelihood chunk_size": ("chunk_size", lambda x, t, m, n:
                                             importance_log_likelihood(
                                                 MODEL, _G, x, t, m, num_particles=2,
                                                 chunk_size=n)),
    "log_weights": ("num_particles", lambda x, t, m, n: log_weights(
        MODEL, _G, x, t, m, num_particles=n)),
    "elbo_per_point num_particles": ("num_particles", lambda x, t, m, n: elbo_per_point(
        MODEL, _G, x, t, m, num_particles=n)),
    "elbo_per_point batch_size": ("batch_size", lambda x, t, m, n: elbo_per_point(
        MODEL, _G, x, t, m, num_particles=2, batch_size=n)),
    "posterior_predictive": ("num_samples", lambda x, t, m, n: posterior_predictive(
        MODEL, _G, x, t, m, num_samples=n)),
    "forecast": ("num_samples", lambda x, t, m, n: forecast(
        MODEL, _G, x, t, FUTURE, m, num_samples=n)),
    "interpolate": ("num_samples", lambda x, t, m, n: interpolate(
        MODEL, _G, x, t, t, m, num_samples=n)),
    "to_inference_data": ("num_samples", lambda x, t, m, n: to_inference_data(
        MODEL, _G, x, t, m, num_samples=n)),
    "evaluate_sequences num_particles": ("num_particles", lambda x, t, m, n:
                                         evaluate_sequences(MODEL, _G, x, t, m,
                                                            num_particles=n, num_samples=2)),
    "evaluate_sequences num_samples": ("num_samples", lambda x, t, m, n: evaluate_sequences(
        MODEL, _G, x, t, m, num_particles=2, num_samples=n)),
}


@pytest.mark.parametrize("entry", sorted(COUNTED))
@settings(SETTINGS, max_examples=3)
@given(data=sequences(), bad=st.sampled_from(sorted(BAD_COUNTS)))
def test_sample_counts_of_zero_negative_or_fractional_raise_naming_the_argument(entry, data,
                                                                                bad):
    argument, call = COUNTED[entry]
    _assert_value_error(argument, entry, call, *data, BAD_COUNTS[bad])


# -- PathModel with each likelihood -------------------------------------------------------


def _counts(x):
    return x.exp().floor()  # non-negative integers


def _binary(x):
    return (x > 0).to(x.dtype)


def _heavy_tailed(x):
    return x / torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).clamp_min(0.05)


def _path_model(likelihood):
    return PathModel(LatentPathPrior(DZ, 8, 1), likelihood)


#: name -> (model, the map of normal draws into its support, invalid observed values)
LIKELIHOOD_MODELS = {
    "student_t": (_path_model(StudentTLikelihood(DX, DZ, df=3.0)), _heavy_tailed, {}),
    "poisson": (_path_model(PoissonLikelihood(DX, DZ)), _counts,
                {"negative count": -1.0, "fractional count": 0.5}),
    "bernoulli": (_path_model(BernoulliLikelihood(DX, DZ)), _binary,
                  {"2 for a 0/1 event": 2.0, "fractional event": 0.5}),
    "negative_binomial": (_path_model(NegativeBinomialLikelihood(DX, DZ, concentration=2.0)),
                          _counts, {"negative count": -3.0, "fractional count": 1.5}),
}


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOOD_MODELS))
@settings(SETTINGS, max_examples=8)
@given(choice=st.data())
def test_path_models_give_finite_outputs_in_the_support_on_valid_data(likelihood, choice):
    """Data in each likelihood's support (counts, 0/1, heavy-tailed reals) with any guide:
    finite outputs of the documented shapes, and predictive draws in the support."""
    model, values, _ = LIKELIHOOD_MODELS[likelihood]
    x, times, mask = choice.draw(sequences(values=values), label="data")
    guide = GUIDES[choice.draw(st.sampled_from(sorted(GUIDES)), label="guide")]
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, times, mask)
               for name, fn in _sequence_entry_points(model, guide).items()}
    _assert_finite_of_shape(out, _sequence_shapes(B, K1))
    support = model.likelihood.point_distribution(torch.zeros(1, DZ)).support
    for draws in (out["posterior_predictive"][0], out["forecast"][1], out["interpolate"]):
        assert support.check(draws).all()


#: the entry points that check the data against the likelihood's support
SUPPORT_CHECKED = ("elbo", "log_weights", "importance_log_likelihood", "elbo_per_point")


@pytest.mark.parametrize("likelihood, value", [
    (name, value) for name, (_, _, bad) in sorted(LIKELIHOOD_MODELS.items())
    for value in sorted(bad)])
@settings(SETTINGS, max_examples=4)
@given(data=sequences(masks=("none", "entries")))
def test_data_outside_the_likelihoods_support_raise_naming_x(likelihood, value, data,
                                                             tmp_path_factory):
    model, values, bad = LIKELIHOOD_MODELS[likelihood]
    x, times, mask = data
    x = values(x)
    x[0, 0, 0] = bad[value]  # an observed entry (the first point is always observed)
    guide = GUIDES["affine"]
    pyro.clear_param_store()
    entry_points = _sequence_entry_points(model, guide)
    for name in SUPPORT_CHECKED:
        _assert_value_error("x", name, entry_points[name], x, times, mask)
    _assert_value_error("x", "to_inference_data", to_inference_data, model, guide, x, times,
                        mask, num_samples=2)
    _assert_value_error("x", "evaluate_sequences", evaluate_sequences, model, guide, x, times,
                        mask, num_particles=2, num_samples=2)
    for loop in LOOPS:
        _assert_refused(loop, "x", model, guide, x, times, mask, tmp_path_factory)


FLOW_MODEL = VPF(DX, DZ, 8, num_flow_layers=1, num_obs_flow_layers=1)  # the flow likelihood


@settings(SETTINGS, max_examples=8)
@given(data=sequences(masks=("none", "points")), guide_name=st.sampled_from(sorted(GUIDES)))
def test_the_flow_likelihood_gives_finite_outputs_with_masks_of_whole_points(data,
                                                                             guide_name):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, times, mask)
               for name, fn in _sequence_entry_points(FLOW_MODEL, GUIDES[guide_name]).items()}
    _assert_finite_of_shape(out, _sequence_shapes(B, K1))


@settings(SETTINGS, max_examples=4)
@given(data=sequences(masks=("entries",)))
def test_the_flow_likelihood_refuses_masks_of_single_entries_naming_mask(data):
    """The flow couples the channels of a time point: a point with some channels observed
    and others missing has no density (documented), a ValueError naming mask."""
    x, times, mask = data
    mask[0, -1] = torch.tensor([True, False])  # a partly observed point
    x = torch.where(mask, torch.nan_to_num(x), torch.full_like(x, float("nan")))
    pyro.clear_param_store()
    entry_points = _sequence_entry_points(FLOW_MODEL, GUIDES["affine"])
    for name in ("model", "elbo", "log_weights", "importance_log_likelihood",
                 "elbo_per_point", "posterior_predictive"):
        _assert_value_error("mask", name, entry_points[name], x, times, mask)


# -- the latent SDE -----------------------------------------------------------------------

SDE_MODEL = LatentSDE(DX, DZ, 8, num_obs_flow_layers=1, time_embed_dim=0, drift_layers=1,
                      observation="linear_gaussian")
SDE_GUIDE = AffineGuide(DX, DZ, 8)  # SDE matching needs its GaussianMarginals
SDE_ELBO = SDEMatchingELBO(num_time_samples=4)


def _sde_entry_points(posterior_paths=False):
    """The sequence entry points that apply to the latent SDE (and, with
    ``posterior_paths``, ``sample_posterior_sde``, whose valid inputs are among the known
    defects)."""
    entry_points = _sequence_entry_points(SDE_MODEL, SDE_GUIDE)
    for name in ("elbo", "log_weights", "importance_log_likelihood"):  # need a path density
        del entry_points[name]
    entry_points["elbo_per_point"] = lambda x, t, m: torch.tensor(elbo_per_point(
        SDE_MODEL, SDE_GUIDE, x, t, m, elbo=SDE_ELBO))
    if posterior_paths:
        entry_points["sample_posterior_sde"] = lambda x, t, m: sample_posterior_sde(
            SDE_MODEL, SDE_GUIDE, x, t, t.reshape(-1)[:t.shape[-1]], m, num_samples=2)
    return entry_points


@settings(SETTINGS, max_examples=5)
@given(data=sequences())
def test_the_latent_sde_gives_finite_outputs_of_the_documented_shape(data):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, times, mask) for name, fn in _sde_entry_points().items()}
        z, draws = SDE_MODEL.sample_prior(times if times.dim() == 1 else times[0], 2)
    _assert_finite_of_shape(out, _sequence_shapes(B, K1))
    assert z.shape == (2, K1, DZ) and draws.shape == (2, K1, DX)
    assert torch.isfinite(z).all() and torch.isfinite(draws).all()
    with pytest.raises(NotImplementedError, match="SDEMatchingELBO"):  # documented: no density
        elbo(SDE_MODEL, SDE_GUIDE, x, times, mask, num_particles=2)


@settings(SETTINGS, max_examples=2)
@given(data=sequences(max_sequences=2))
def test_the_latent_sde_trains_with_sde_matching_on_valid_sequences(data):
    x, times, mask = data
    pyro.clear_param_store()
    model = LatentSDE(DX, DZ, 8, num_obs_flow_layers=1, time_embed_dim=0, drift_layers=1,
                      observation="linear_gaussian")
    history = fit(model, AffineGuide(DX, DZ, 8), x, times, mask, num_steps=2, lr=1e-2,
                  elbo=SDEMatchingELBO(num_time_samples=4), progress=False)
    assert len(history) == 2 and all(math.isfinite(v) for v in history.loss)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@settings(SETTINGS, max_examples=3)
@given(data=sequences())
def test_the_latent_sde_refuses_invalid_inputs_naming_the_argument(corruption, data):
    argument, x, times, mask = _corrupted(corruption, data)
    pyro.clear_param_store()
    for name, fn in _sde_entry_points(posterior_paths=True).items():
        _assert_value_error(argument, name, fn, x, times, mask)


#: invalid query times of sample_posterior_sde, as functions of valid ones
BAD_QUERIES = {
    "NaN query time": lambda q: _with_nan(q, -1),
    "decreasing query times": lambda q: q.flip(-1),
    "query times per sequence": lambda q: q.expand(2, -1),
    "float64 query times": lambda q: q.double(),
}


@pytest.mark.parametrize("bad", sorted(BAD_QUERIES))
@settings(SETTINGS, max_examples=2)
@given(data=sequences(max_sequences=1, masks=("none",)))
def test_sample_posterior_sde_refuses_invalid_query_times_naming_them(bad, data):
    x, times, _ = data
    times = times if times.dim() == 1 else times[0]
    _assert_value_error("query_times", "sample_posterior_sde", sample_posterior_sde, SDE_MODEL,
                        SDE_GUIDE, x, times, BAD_QUERIES[bad](times), num_samples=2)
    _assert_value_error("num_samples", "sample_posterior_sde", sample_posterior_sde,
                        SDE_MODEL, SDE_GUIDE, x, times, times, num_samples=0)


# -- the exact functions of the linear-Gaussian VPF ---------------------------------------

LG_MODEL = VPF(DX, DZ, 8, num_flow_layers=0, observation="linear_gaussian")


def _exact_entry_points(model=LG_MODEL):
    def marginals(x, t, m):
        law = kalman_observation_marginals(model, x, t, m)
        return law.mean, law.stddev

    return {
        "exact_log_likelihood": lambda x, t, m: exact_log_likelihood(model, x, t, m),
        "kalman_log_likelihood": lambda x, t, m: kalman_log_likelihood(model, x, t, m),
        "kalman_smoother": lambda x, t, m: kalman_smoother(model, x, t, m),
        "kalman_observation_marginals": marginals,
    }


@settings(SETTINGS, max_examples=20)
@given(data=sequences())
def test_exact_functions_give_finite_outputs_of_the_documented_shape(data):
    x, times, mask = data
    B, K1 = x.shape[:2]
    out = {name: fn(x, times, mask) for name, fn in _exact_entry_points().items()}
    if mask is None:  # Pyro's HMM: every entry observed
        out["gaussian_hmm"] = gaussian_hmm(LG_MODEL, times, B).log_prob(x)
    _assert_finite_of_shape(out, {
        "exact_log_likelihood": (B,), "kalman_log_likelihood": (B,), "gaussian_hmm": (B,),
        "kalman_smoother": ((B, K1, DZ), (B, K1, DZ, DZ)),
        "kalman_observation_marginals": ((B, K1, DX), (B, K1, DX))})
    assert (out["kalman_observation_marginals"][1] > 0).all()
    params = linear_gaussian_parameters(LG_MODEL)
    assert all(torch.isfinite(v).all() for v in params.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@settings(SETTINGS, max_examples=4)
@given(data=sequences())
def test_exact_functions_refuse_invalid_inputs_naming_the_argument(corruption, data):
    argument, x, times, mask = _corrupted(corruption, data)
    for name, fn in _exact_entry_points().items():
        _assert_value_error(argument, name, fn, x, times, mask)


#: invalid arguments of gaussian_hmm: (the argument, times and num_sequences from valid ones)
BAD_HMM = {
    "NaN time": ("times", lambda t, B: (_with_nan(t, (..., -1)), B)),
    "duplicate time": ("times", lambda t, B: (torch.cat([t[..., :1], t[..., :-1]], -1), B)),
    "decreasing times": ("times", lambda t, B: (t.flip(-1), B)),
    "float64 times": ("times", lambda t, B: (t.double(), B)),
    "times of other rows": ("times", lambda t, B: (t.expand(B, -1).repeat(2, 1), B)),
    "no sequences": ("num_sequences", lambda t, B: (t, 0)),
    "negative num_sequences": ("num_sequences", lambda t, B: (t, -1)),
    "fractional num_sequences": ("num_sequences", lambda t, B: (t, 1.5)),
}


@pytest.mark.parametrize("bad", sorted(BAD_HMM))
@settings(SETTINGS, max_examples=3)
@given(data=sequences(masks=("none",)))
def test_gaussian_hmm_refuses_invalid_times_and_counts_naming_them(bad, data):
    x, times, _ = data
    argument, corrupt = BAD_HMM[bad]
    _assert_value_error(argument, "gaussian_hmm", gaussian_hmm, LG_MODEL,
                        *corrupt(times, x.shape[0]))


@pytest.mark.parametrize("name", sorted(_exact_entry_points()) + ["gaussian_hmm",
                                                                  "linear_gaussian_parameters"])
@pytest.mark.parametrize("model", ["latent flow", "flow likelihood", "latent SDE"])
def test_exact_functions_refuse_models_that_are_not_linear_gaussian(name, model):
    x, times = torch.randn(2, 4, DX), torch.arange(4.0)
    other = {"latent flow": MODEL, "flow likelihood": FLOW_MODEL, "latent SDE": SDE_MODEL}[model]
    calls = {
        **{n: lambda fn=fn: fn(x, times, None) for n, fn in _exact_entry_points(other).items()},
        "gaussian_hmm": lambda: gaussian_hmm(other, times, 2),
        "linear_gaussian_parameters": lambda: linear_gaussian_parameters(other),
    }
    _assert_value_error("model", name, calls[name])


# -- evaluate_sequences and to_inference_data ---------------------------------------------


@settings(SETTINGS, max_examples=10)
@given(data=sequences(), guide_name=st.sampled_from(sorted(GUIDES)),
       forecast_points=st.integers(1, 3), hide_fraction=st.sampled_from([0.0, 0.2, 0.9]))
def test_evaluate_sequences_gives_finite_figures_on_valid_sequences(data, guide_name,
                                                                    forecast_points,
                                                                    hide_fraction):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    out = evaluate_sequences(MODEL, GUIDES[guide_name], x, times, mask, num_particles=2,
                             num_samples=3, hide_fraction=hide_fraction,
                             forecast_points=forecast_points)
    for key in ("elbo_per_point", "iw_per_point"):
        assert math.isfinite(out[key]), key
    for key, value in out.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
            if "coverage" in key:
                assert 0 <= value <= 1, key
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all(), key
    assert out["interpolation_draws"].shape == (3, B, K1, DX)
    # scored where a point was hidden (documented)
    assert ("interpolation_coverage_50" in out) == bool(out["hidden"].any())
    if "forecast_draws" in out:
        b = len(out["forecast_rows"])
        assert out["forecast_draws"].shape == (3, b, forecast_points, DX)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@settings(SETTINGS, max_examples=3)
@given(data=sequences())
def test_evaluate_sequences_and_to_inference_data_refuse_invalid_inputs(corruption, data):
    argument, x, times, mask = _corrupted(corruption, data)
    pyro.clear_param_store()
    _assert_value_error(argument, "evaluate_sequences", evaluate_sequences, MODEL, _G, x, times,
                        mask, num_particles=2, num_samples=2)
    _assert_value_error(argument, "to_inference_data", to_inference_data, MODEL, _G, x, times,
                        mask, num_samples=2)


@settings(SETTINGS, max_examples=5)
@given(data=sequences())
def test_to_inference_data_holds_finite_groups_of_the_documented_shape(data):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    idata = to_inference_data(MODEL, _G, x, times, mask, num_samples=2)
    shapes = {("posterior", "z"): (1, 2, B, K1, DZ), ("posterior_predictive", "x"):
              (1, 2, B, K1, DX), ("log_likelihood", "x"): (1, 2, B),
              ("observed_data", "x"): (B, K1, DX), ("constant_data", "times"): (B, K1),
              ("constant_data", "mask"): (B, K1, DX)}
    for (group, name), shape in shapes.items():
        values = np.asarray(idata[group][name])
        assert values.shape == shape, (group, name)
        if group != "observed_data":  # NaN at the unobserved entries
            assert np.isfinite(values.astype(float)).all(), (group, name)


# -- scores and sample distances ----------------------------------------------------------


@st.composite
def ensembles(draw):
    """``(samples (S, ...), y (...), mask or None, levels)``: S >= 2 draws; entries that the
    mask leaves out hold NaN (they must change nothing)."""
    S = draw(st.integers(2, 6))
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=3)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = 10.0 ** draw(st.floats(-2, 2))
    samples = scale * torch.randn((S,) + shape, generator=gen)
    y = scale * torch.randn(shape, generator=gen)
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(shape, generator=gen) > 0.4
        mask.view(-1)[0] = True
        y = torch.where(mask, y, torch.full_like(y, float("nan")))
        samples = torch.where(mask, samples, torch.full_like(samples, float("nan")))
    levels = tuple(draw(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=3, unique=True)))
    return samples, y, mask, levels


@settings(SETTINGS, max_examples=30)
@given(data=ensembles())
def test_scores_give_finite_values_of_the_documented_shape(data):
    samples, y, mask, levels = data
    scores = forecast_scores(samples, y, mask, levels)
    observed = torch.ones_like(y, dtype=torch.bool) if mask is None else mask
    assert scores.count == int(observed.sum())
    assert all(math.isfinite(v) for v in (scores.mse, scores.mae, scores.crps))
    assert scores.mse >= 0 and scores.mae >= 0 and scores.crps >= -1e-6 * (1 + scores.mae)
    assert sorted(scores.coverage) == sorted(levels) == sorted(scores.interval_width)
    assert all(0 <= c <= 1 for c in scores.coverage.values())
    assert all(math.isfinite(w) and w >= 0 for w in scores.interval_width.values())
    assert predictive_coverage(samples, y, observed, levels) == scores.coverage
    members, truth = samples[:, observed], y[observed]
    crps = crps_ensemble(members, truth)
    assert crps.shape == truth.shape and torch.isfinite(crps).all()
    assert float(crps.mean()) == pytest.approx(scores.crps, rel=1e-4, abs=1e-6)
    for distance in (energy_distance, mmd):
        value = distance(members.T, members.T.flip(0) + 1.0) if members.shape[1] >= 2 else \
            distance(members, members + 1.0)
        assert value.shape == () and torch.isfinite(value)


def _scored(samples, y, mask):
    return torch.ones_like(y, dtype=torch.bool) if mask is None else mask


#: invalid score inputs: (the argument as forecast_scores names it, the corruption)
BAD_SCORES = {
    "one draw": ("samples", lambda s, y, m, lv: (s[:1], y, m, lv)),
    "no draw dimension": ("samples", lambda s, y, m, lv: (s.flatten()[0], y, None, lv)),
    "integer samples": ("samples", lambda s, y, m, lv: (torch.nan_to_num(s).long(), y, m, lv)),
    "mismatched shapes": ("y", lambda s, y, m, lv: (s, torch.cat([y.reshape(-1),
                                                                  y.reshape(-1)[:1]]), None,
                                                    lv)),
    "integer y": ("y", lambda s, y, m, lv: (s, torch.nan_to_num(y).long(), m, lv)),
    "NaN at a scored entry": ("y", lambda s, y, m, lv: (
        s, torch.where(_scored(s, y, m), torch.full_like(y, float("nan")), y), m, lv)),
    "float mask": ("mask", lambda s, y, m, lv: (s, y, _scored(s, y, m).float(), lv)),
    "mask of another shape": ("mask", lambda s, y, m, lv: (
        s, y, torch.ones(y.shape + (2,), dtype=torch.bool), lv)),
    "nothing scored": ("mask", lambda s, y, m, lv: (s, y, torch.zeros_like(y, dtype=torch.bool),
                                                    lv)),
    "level 0": ("levels", lambda s, y, m, lv: (s, y, m, lv + (0.0,))),
    "level 1": ("levels", lambda s, y, m, lv: (s, y, m, lv + (1.0,))),
    "level above 1": ("levels", lambda s, y, m, lv: (s, y, m, (1.5,))),
    "negative level": ("levels", lambda s, y, m, lv: (s, y, m, (-0.1,))),
    "NaN level": ("levels", lambda s, y, m, lv: (s, y, m, (float("nan"),))),
    "level True": ("levels", lambda s, y, m, lv: (s, y, m, (True,))),
}
#: predictive_coverage's names for forecast_scores' arguments
COVERAGE_NAMES = {"samples": "draws", "y": "truth", "mask": "held_out", "levels": "levels"}


@pytest.mark.parametrize("bad", sorted(BAD_SCORES))
@settings(SETTINGS, max_examples=5)
@given(data=ensembles())
def test_scores_refuse_invalid_inputs_naming_the_argument(bad, data):
    argument, corrupt = BAD_SCORES[bad]
    samples, y, mask, levels = corrupt(*data)
    _assert_value_error(argument, "forecast_scores", forecast_scores, samples, y, mask, levels)
    if argument == "levels":  # named alike by predictive_coverage (see the known defects)
        _assert_value_error(argument, "predictive_coverage", predictive_coverage, samples, y,
                            _scored(samples, y, mask), levels)
    if argument in ("samples", "y") and bad != "NaN at a scored entry":
        _assert_value_error(argument, "crps_ensemble", crps_ensemble, samples,
                            y if mask is None or y.shape != samples.shape[1:] else
                            torch.nan_to_num(y))


#: invalid inputs of the sample distances: (argument, corruption of (x, y, bandwidth))
BAD_DISTANCES = {
    "one sample": ("x", lambda x, y, h: (x[:1], y, h)),
    "NaN sample": ("y", lambda x, y, h: (x, _with_nan(y, (0, 0)), h)),
    "integer samples": ("x", lambda x, y, h: (x.long(), y, h)),
    "other dimension": ("y", lambda x, y, h: (x, torch.cat([y, y[:, :1]], -1), h)),
    "other dtype": ("y", lambda x, y, h: (x, y.double(), h)),
    "three dimensions": ("x", lambda x, y, h: (x.unsqueeze(0), y, h)),
}
BAD_BANDWIDTHS = {"zero": 0.0, "negative": -1.0, "NaN": float("nan"), "string": "1"}


@pytest.mark.parametrize("bad", sorted(BAD_DISTANCES) + [f"bandwidth {b}"
                                                          for b in sorted(BAD_BANDWIDTHS)])
@settings(SETTINGS, max_examples=3)
@given(n=st.integers(2, 6), m=st.integers(2, 6), d=st.integers(1, 3), seed=st.integers(0, 99))
def test_sample_distances_refuse_invalid_samples_naming_them(bad, n, m, d, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=gen), torch.randn(m, d, generator=gen)
    if bad.startswith("bandwidth"):
        value = BAD_BANDWIDTHS[bad.split(" ", 1)[1]]
        _assert_value_error("bandwidth", "mmd", mmd, x, y, bandwidth=value)
        return
    argument, corrupt = BAD_DISTANCES[bad]
    x, y, _ = corrupt(x, y, None)
    for distance in (energy_distance, mmd):
        _assert_value_error(argument, distance.__name__, distance, x, y)


@settings(SETTINGS, max_examples=3)
@given(data=sequences(masks=("entries",)))
def test_per_point_figures_count_points_with_any_observed_entry(data):
    """Entry masks that leave every time point partly missing (channel 0 on even points,
    channel 1 on odd ones): every point has an observed entry and counts as observed, so the
    per-point figures are finite and divide by the number of points."""
    x, times, mask = data
    mask[..., 0] = torch.arange(x.shape[1]) % 2 == 0
    mask[..., 1] = ~mask[..., 0]
    x = torch.where(mask, torch.nan_to_num(x), torch.full_like(x, float("nan")))
    pyro.clear_param_store()
    assert math.isfinite(elbo_per_point(MODEL, _G, x, times, mask, num_particles=2))
    scores = elbo(MODEL, _G, x, times, mask, num_particles=2)
    torch.testing.assert_close(scores.per_point, scores.per_sequence / x.shape[1])
    figures = evaluate_sequences(MODEL, _G, x, times, mask, num_particles=2, num_samples=2)
    assert math.isfinite(figures["elbo_per_point"])


# -- data entry points: SequenceData.from_arrays, split_series, forecast_series ------------


@st.composite
def ragged_panels(draw, channels=DX):
    """``(values, times)``: lists of ``(T_i, Dx)`` arrays (NaN where missing, the first point
    observed) and of their strictly increasing irregular times, lengths 2 to 7."""
    N = draw(st.integers(1, 4))
    gen = np.random.default_rng(draw(st.integers(0, 2**16)))
    values, times = [], []
    for _ in range(N):
        T = draw(st.integers(2, 7))
        row = gen.standard_normal((T, channels))
        row[1:][gen.random((T - 1, channels)) < 0.3] = np.nan
        values.append(row)
        times.append(gen.uniform(-5, 5) + np.concatenate(
            [[0.0], np.cumsum(10.0 ** gen.uniform(-3, 2, T - 1))]))
    return values, times


@settings(SETTINGS, max_examples=20)
@given(panel=ragged_panels(), guide_name=st.sampled_from(sorted(GUIDES)))
def test_ragged_panels_give_finite_padded_sequences_that_the_model_scores(panel, guide_name):
    values, times = panel
    data = SequenceData.from_arrays(values, times)
    N, L = len(values), max(len(v) for v in values)
    assert data.x.shape == (N, L, DX) and data.times.shape == (N, L)
    assert torch.isfinite(data.x).all() and torch.isfinite(data.times).all()
    assert (data.times.diff(dim=-1) > 0).all()
    observed = data.observed()
    for i, row in enumerate(values):
        seen = torch.as_tensor(~np.isnan(row))
        assert torch.equal(observed[i, :len(row)], seen)
        assert not observed[i, len(row):].any()  # the padding is unobserved
        assert torch.allclose(data.x[i, :len(row)][seen], torch.as_tensor(row)[seen].float())
    pyro.clear_param_store()
    guide = GUIDES[guide_name]
    with torch.no_grad():
        scores = elbo(MODEL, guide, data.x, data.times, data.mask, num_particles=2)
        future = data.times.amax(-1, keepdim=True) + torch.tensor([1.0, 2.0])
        draws = forecast(MODEL, guide, data.x, data.times, future, data.mask, num_samples=2)
    assert scores.per_sequence.shape == (N,) and torch.isfinite(scores.per_sequence).all()
    assert draws["x"].shape == (2, N, 2, DX) and torch.isfinite(draws["x"]).all()


#: invalid ragged panels: (argument, corruption of (values, times))
BAD_PANELS = {
    "NaN time": ("times", lambda v, t: (v, [np.where(np.arange(len(t[0])) == 1, np.nan, t[0])]
                                        + t[1:])),
    "duplicate time": ("times", lambda v, t: (v, [np.concatenate([t[0][:1], t[0][:-1]])]
                                              + t[1:])),
    "decreasing times": ("times", lambda v, t: (v, [t[0][::-1].copy()] + t[1:])),
    "times of another length": ("times", lambda v, t: (v, [t[0][:-1]] + t[1:])),
    "times of another count": ("times", lambda v, t: (v, t + t[:1])),
    "infinite value": ("values", lambda v, t: ([np.where(np.isnan(v[0]), v[0], np.inf)]
                                               + v[1:], t)),
    "no sequence": ("values", lambda v, t: ([], [])),
    "an empty sequence": ("values", lambda v, t: (v + [np.zeros((0, DX))], t + [np.zeros(0)])),
    "words": ("values", lambda v, t: ([np.full(v[0].shape, "a").tolist()] + v[1:], t)),
    "ids of another count": ("ids", lambda v, t: (v, t)),
}


@pytest.mark.parametrize("bad", sorted(BAD_PANELS))
@settings(SETTINGS, max_examples=5)
@given(panel=ragged_panels())
def test_invalid_ragged_panels_raise_naming_the_argument(bad, panel):
    argument, corrupt = BAD_PANELS[bad]
    values, times = corrupt(*panel)
    ids = list(range(len(values) + 1)) if argument == "ids" else None
    _assert_value_error(argument, "SequenceData.from_arrays", SequenceData.from_arrays, values,
                        times, ids=ids)


@st.composite
def series(draw):
    """``(times (T,), values (T, Dx) with NaN, holdout, window)`` for split_series: T from 12
    to 30 regular or irregular points, a holdout of a few points' span."""
    T = draw(st.integers(12, 30))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    gaps = torch.rand(T - 1, generator=gen) + 0.5 if draw(st.booleans()) else torch.ones(T - 1)
    times = torch.cat([torch.zeros(1), gaps.cumsum(0)])
    values = torch.randn(T, DX, generator=gen)
    values[torch.rand(T, DX, generator=gen) < 0.15] = float("nan")
    values[:3] = torch.randn(3, DX, generator=gen)  # two observed values per channel at least
    holdout = float(times[-1] - times[-1 - draw(st.integers(1, 4))]) + 1e-3
    window = draw(st.integers(2, 6))
    return times, values, holdout, window


@settings(SETTINGS, max_examples=10)
@given(data=series(), guide_name=st.sampled_from(sorted(GUIDES)))
def test_series_split_and_forecast_give_finite_outputs_of_the_documented_shape(data,
                                                                               guide_name):
    times, values, holdout, window = data
    split = split_series(times, values, holdout=holdout, window=window)
    T_h, T_test = split.history.x.shape[1], split.test.x.shape[1]
    assert T_h + T_test == len(times) and T_test >= 1
    assert split.train.x.shape[1:] == (window, DX) and split.train.times.shape[1] == window
    for part in (split.train, split.history, split.test):
        assert torch.isfinite(part.x).all() and torch.isfinite(part.times).all()
    pyro.clear_param_store()
    draws = forecast_series(MODEL, GUIDES[guide_name], split.history, split.test.times,
                            context=min(window, T_h), num_samples=3)
    assert draws.shape == (3, T_test, DX) and torch.isfinite(draws).all()


#: invalid split_series arguments: (argument, corruption of (times, values, holdout, window),
#: extra keywords)
BAD_SPLITS = {
    "holdout zero": ("holdout", lambda t, v, h, w: (t, v, 0.0, w), {}),
    "holdout NaN": ("holdout", lambda t, v, h, w: (t, v, float("nan"), w), {}),
    "holdout of the whole series": ("holdout", lambda t, v, h, w: (t, v, float(t[-1]) + 1, w),
                                    {}),
    "window 1": ("window", lambda t, v, h, w: (t, v, h, 1), {}),
    "window fractional": ("window", lambda t, v, h, w: (t, v, h, 2.5), {}),
    "stride 0": ("stride", lambda t, v, h, w: (t, v, h, w), {"stride": 0}),
    "NaN time": ("times", lambda t, v, h, w: (_with_nan(t, 3), v, h, w), {}),
    "duplicate time": ("times", lambda t, v, h, w: (torch.cat([t[:1], t[:-1]]), v, h, w), {}),
    "decreasing times": ("times", lambda t, v, h, w: (t.flip(0), v, h, w), {}),
    "infinite value": ("values", lambda t, v, h, w: (t, _with_nan(v, (0, 0)).nan_to_num(
        nan=float("inf")), h, w), {}),
    "values of another length": ("values", lambda t, v, h, w: (t, v[:-1], h, w), {}),
}


@pytest.mark.parametrize("bad", sorted(BAD_SPLITS))
@settings(SETTINGS, max_examples=3)
@given(data=series())
def test_invalid_series_splits_raise_naming_the_argument(bad, data):
    argument, corrupt, extra = BAD_SPLITS[bad]
    times, values, holdout, window = corrupt(*data)
    _assert_value_error(argument, "split_series", split_series, times, values,
                        holdout=holdout, window=window, **extra)


#: invalid forecast_series arguments, from a valid split: (argument, keywords)
BAD_SERIES_FORECASTS = {
    "context 1": ("context", lambda s: {"context": 1}),
    "context above the history": ("context", lambda s: {"context": s.history.x.shape[1] + 1}),
    "num_samples 0": ("num_samples", lambda s: {"num_samples": 0}),
    "two sequences": ("history", lambda s: {"history": s.train[:2] if len(s.train) > 1 else
                                            s.history[[0, 0]]}),
    "NaN future time": ("future_times", lambda s: {"future_times": _with_nan(s.test.times,
                                                                             0)}),
    "future before the history's end": ("future_times", lambda s: {
        "future_times": s.history.times[-2:]}),
}


@pytest.mark.parametrize("bad", sorted(BAD_SERIES_FORECASTS))
@settings(SETTINGS, max_examples=2)
@given(data=series())
def test_invalid_series_forecasts_raise_naming_the_argument(bad, data):
    times, values, holdout, window = data
    split = split_series(times, values, holdout=holdout, window=window)
    argument, make = BAD_SERIES_FORECASTS[bad]
    arguments = {"history": split.history, "future_times": split.test.times, "num_samples": 2,
                 **make(split)}
    pyro.clear_param_store()
    _assert_value_error(argument, "forecast_series", forecast_series, MODEL, _G,
                        arguments.pop("history"), arguments.pop("future_times"), **arguments)


# -- backtest -----------------------------------------------------------------------------


def _small_forecaster(train):
    return (VPF(train.obs_dim, 1, 8, 0, 0, observation="linear_gaussian"),
            AffineGuide(train.obs_dim, 1, 8))


BACKTEST = {"horizon": 2.0, "window": 3, "num_origins": 2, "fit_options": {"num_steps": 2},
            "num_samples": 3, "progress": False}


def test_backtest_refuses_a_horizon_with_nothing_observed_before_fitting(monkeypatch):
    times = torch.arange(20.0)
    values = torch.randn(20, DX)
    values[17:] = float("nan")  # the last origin's horizon (17, 18, 19) is all missing
    fitted = []
    module = importlib.import_module("pyro_vpf.evaluation.backtest")  # the function shadows it
    monkeypatch.setattr(module, "fit", lambda *a, **k: fitted.append(1))
    with pytest.raises(ValueError, match="origin 16 has no observed entry"):
        backtest(_small_forecaster, times, values, horizon=3.0, window=3, origins=[16.0],
                 progress=False)
    assert not fitted


@settings(SETTINGS, max_examples=2)
@given(data=series())
def test_backtest_gives_finite_scores_for_every_origin(data):
    times, values, _, _ = data
    times = times + 10.0  # any origin of time
    # every point keeps an observed entry, so every horizon has something to score (a
    # horizon without one is refused: the test below)
    empty = values.isnan().all(-1)
    values[empty, 0] = 0.5
    results = backtest(_small_forecaster, times, values, **BACKTEST)
    assert len(results) == 2
    for result in results:
        assert result["num_test"] >= 1 and result["num_train"] >= 1
        for key in ("crps", "mse", "mae", "seconds"):
            assert math.isfinite(result[key]) and result[key] >= 0, key
        assert all(0 <= c <= 1 for c in result["coverage"].values())
        assert result["draws"].shape[0] == 3 and result["draws"].shape[2] == DX
        assert torch.isfinite(result["draws"]).all()
        assert len(result["history"]) == 2


#: invalid backtest arguments: (argument, keywords or a corruption of times and values)
BAD_BACKTESTS = {
    "horizon zero": ("horizon", {"horizon": 0.0}),
    "horizon NaN": ("horizon", {"horizon": float("nan")}),
    "window 1": ("window", {"window": 1}),
    "window above the history": ("window", {"window": 100}),
    "no origin": ("num_origins", {"num_origins": 0}),
    "fractional num_origins": ("num_origins", {"num_origins": 1.5}),
    "spacing zero": ("spacing", {"spacing": 0.0}),
    "NaN origin": ("origins", {"origins": [float("nan")]}),
    "num_samples zero": ("num_samples", {"num_samples": 0}),
    "progress in fit_options": ("progress", {"fit_options": {"progress": True}}),
    "model_factory not callable": ("model_factory", {"model_factory": None}),
    "NaN time": ("times", lambda t, v: (_with_nan(t, 2), v)),
    "times per sequence": ("times", lambda t, v: (t.expand(2, -1), v)),
    "infinite value": ("values", lambda t, v: (t, _with_nan(v, (0, 0)).nan_to_num(
        nan=float("inf")))),
    "values of another length": ("values", lambda t, v: (t, v[:-3])),
}


@pytest.mark.parametrize("bad", sorted(BAD_BACKTESTS))
@settings(SETTINGS, max_examples=2)
@given(data=series())
def test_invalid_backtests_raise_naming_the_argument(bad, data):
    times, values, _, _ = data
    argument, change = BAD_BACKTESTS[bad]
    arguments = dict(BACKTEST, model_factory=_small_forecaster)
    if callable(change):
        times, values = change(times, values)
    else:
        arguments.update(change)
    factory = arguments.pop("model_factory")
    _assert_value_error(argument, "backtest", backtest, factory, times, values, **arguments)


# -- the baselines ------------------------------------------------------------------------


@settings(SETTINGS, max_examples=20)
@given(data=sequences(masks=("entries",)))
def test_linear_interpolation_fills_hidden_entries_with_finite_values(data):
    x, times, mask = data
    filled = linear_interpolation(x, times, mask)
    assert filled.shape == x.shape and torch.isfinite(filled).all()
    assert torch.equal(filled[mask], x[mask])  # observed entries unchanged


#: invalid linear_interpolation inputs: corruptions of (x, times, entry mask)
BAD_INTERPOLATIONS = {
    **{name: CORRUPTIONS[name] for name in ("NaN time", "decreasing times", "duplicate time",
                                            "float mask", "wrong mask shape")},
    "NaN observed": ("x", lambda x, t, m: (_with_nan(x, (0, 0, 0)), t, m)),
    "integer x": ("x", lambda x, t, m: (torch.nan_to_num(x).long(), t, m)),
    "no mask": ("mask", lambda x, t, m: (torch.nan_to_num(x), t, None)),
    "no sequences": ("sequence", lambda x, t, m: (x[:0], t if t.dim() == 1 else t[:0], m[:0])),
}


@pytest.mark.parametrize("bad", sorted(BAD_INTERPOLATIONS))
@settings(SETTINGS, max_examples=3)
@given(data=sequences(masks=("entries",)))
def test_linear_interpolation_refuses_invalid_inputs_naming_the_argument(bad, data):
    argument, corrupt = BAD_INTERPOLATIONS[bad]
    x, times, mask = data
    mask[:, 0, 0] = True  # (x[0, 0, 0] is observed)
    _assert_value_error(argument, "linear_interpolation", linear_interpolation,
                        *corrupt(x, times, mask))


def _monthly(T=40, seed=0):
    times = torch.arange(T, dtype=torch.float64) / 12
    gen = torch.Generator().manual_seed(seed)
    values = torch.sin(2 * math.pi * times) + 0.1 * torch.randn(T, generator=gen,
                                                                dtype=torch.float64)
    return times, values


def test_structural_forecast_gives_finite_draws_of_the_documented_shape():
    pytest.importorskip("statsmodels")
    times, y = _monthly()
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[5] = False
    y[5] = float("nan")  # a missing value is never read
    future = times[-1] + torch.tensor([1.0, 3.0], dtype=torch.float64) / 12
    result = structural_forecast(times, y, mask, future, num_samples=4, harmonics=1)
    assert result.samples.shape == (4, 2) and result.mean.shape == result.std.shape == (2,)
    for value in (result.samples, result.mean, result.std):
        assert torch.isfinite(value).all()
    assert (result.std > 0).all()


#: invalid structural_forecast arguments: (argument, keywords from the valid ones)
BAD_STRUCTURAL = {
    "irregular times": ("times", lambda a: {"times": a["times"] ** 1.5}),
    "NaN time": ("times", lambda a: {"times": _with_nan(a["times"], 3)}),
    "NaN observed": ("y", lambda a: {"y": _with_nan(a["y"], 3)}),
    "y of another length": ("y", lambda a: {"y": a["y"][:-1]}),
    "float mask": ("mask", lambda a: {"mask": torch.ones_like(a["y"])}),
    "too few observed": ("mask", lambda a: {"mask": torch.arange(len(a["y"])) < 3}),
    "future before the end": ("future_times", lambda a: {"future_times": a["times"][-2:]}),
    "future off the grid": ("future_times", lambda a: {"future_times":
                                                       a["future_times"] + 0.5 / 12}),
    "no future": ("future_times", lambda a: {"future_times": a["future_times"][:0]}),
    "num_samples zero": ("num_samples", lambda a: {"num_samples": 0}),
    "fractional num_samples": ("num_samples", lambda a: {"num_samples": 1.5}),
    "harmonics zero": ("harmonics", lambda a: {"harmonics": 0}),
    "harmonics above half the period": ("harmonics", lambda a: {"harmonics": 7}),
    "seasonal_period zero": ("seasonal_period", lambda a: {"seasonal_period": 0.0}),
    "negative seed": ("seed", lambda a: {"seed": -1}),
}


@pytest.mark.parametrize("bad", sorted(BAD_STRUCTURAL))
def test_structural_forecast_refuses_invalid_inputs_before_fitting(bad):
    pytest.importorskip("statsmodels")
    times, y = _monthly()
    arguments = {"times": times, "y": y, "mask": None, "future_times": times[-1] + 1 / 12,
                 "num_samples": 2, "harmonics": 1}
    arguments["future_times"] = arguments["future_times"].reshape(1)
    argument, change = BAD_STRUCTURAL[bad]
    arguments.update(change(arguments))
    _assert_value_error(argument, "structural_forecast", structural_forecast, **arguments)


# -- the static model's diagnostics -------------------------------------------------------


@pytest.mark.parametrize("guide_name", sorted(STATIC_GUIDES))
@settings(SETTINGS, max_examples=10)
@given(x=points())
def test_static_diagnostics_give_finite_outputs_of_the_documented_shape(guide_name, x):
    guide = STATIC_GUIDES[guide_name]
    mean = posterior_mean(guide, x, num_samples=4)
    assert mean.shape == (x.shape[0], DZ) and torch.isfinite(mean).all()
    if x.shape[0] >= 2:
        units = active_units(guide, x, num_samples=4)
        assert 0 <= units.count <= DZ and units.variance.shape == (DZ,)
        assert torch.isfinite(units.variance).all() and (units.variance >= 0).all()


@pytest.mark.parametrize("corruption", sorted(set(POINT_CORRUPTIONS) - {"times given",
                                                                          "mask given"}))
@settings(SETTINGS, max_examples=3)
@given(x=points(), guide_name=st.sampled_from(sorted(STATIC_GUIDES)))
def test_static_diagnostics_refuse_invalid_points_naming_x(corruption, x, guide_name):
    argument, corrupt = POINT_CORRUPTIONS[corruption]
    x = corrupt(torch.cat([x, x]))[0]  # (two points at least: active_units needs them)
    guide = STATIC_GUIDES[guide_name]
    _assert_value_error(argument, "posterior_mean", posterior_mean, guide, x, num_samples=2)
    _assert_value_error(argument, "active_units", active_units, guide, x, num_samples=2)


@pytest.mark.parametrize("bad", ["num_samples 0", "num_samples negative", "threshold negative",
                                 "threshold NaN"])
def test_static_diagnostics_refuse_bad_settings_naming_them(bad):
    argument, value = bad.split(" ")
    value = {"0": 0, "negative": -1, "NaN": float("nan")}[value]
    x = torch.randn(4, D)
    guide = STATIC_GUIDES["flow"]  # (draws the mean: num_samples is read)
    _assert_value_error(argument, "active_units", active_units, guide, x, **{argument: value})
    if argument == "num_samples":
        _assert_value_error(argument, "posterior_mean", posterior_mean, guide, x, value)


# -- refine and the VPF's refined prior samples -------------------------------------------


@settings(SETTINGS, max_examples=15)
@given(batch=st.lists(st.integers(1, 3), max_size=2), event=st.lists(st.integers(1, 3),
                                                                     min_size=1, max_size=2),
       steps=st.integers(0, 4), lr=st.floats(1e-3, 10.0), anchor=st.sampled_from(
           [0.0, 0.1, 10.0, math.inf]), seed=st.integers(0, 99))
def test_refine_gives_finite_samples_and_nondecreasing_objectives(batch, event, steps, lr,
                                                                  anchor, seed):
    z_init = torch.randn(batch + event, generator=torch.Generator().manual_seed(seed))
    dims = tuple(range(-len(event), 0))

    def log_density(z):
        return -0.5 * z.square().sum(dims)

    result = refine(log_density, z_init, steps=steps, lr=lr, anchor=anchor,
                    event_dim=len(event))
    assert result.z.shape == z_init.shape and torch.isfinite(result.z).all()
    if math.isfinite(anchor):  # math.inf: see the known defects
        assert result.objective.shape == result.log_density.shape == (steps + 1, *batch)
    assert torch.isfinite(result.objective).all() and result.reward is None
    assert (result.objective.diff(dim=0) >= -1e-5 * result.objective[:-1].abs()).all()


#: invalid refine arguments: keywords
BAD_REFINES = {
    "negative steps": ("steps", {"steps": -1}),
    "fractional steps": ("steps", {"steps": 1.5}),
    "lr zero": ("lr", {"lr": 0.0}),
    "lr NaN": ("lr", {"lr": float("nan")}),
    "negative anchor": ("anchor", {"anchor": -1.0}),
    "NaN anchor": ("anchor", {"anchor": float("nan")}),
    "event_dim too large": ("event_dim", {"event_dim": 3}),
    "negative event_dim": ("event_dim", {"event_dim": -1}),
    "NaN z_init": ("z_init", {"z_init": torch.tensor([[0.0, float("nan")]])}),
    "integer z_init": ("z_init", {"z_init": torch.ones(2, 2, dtype=torch.long)}),
    "reward not callable": ("reward", {"reward": 1.0}),
    "log_density of another shape": ("log_density", {"log_density": lambda z: z.sum()}),
}


@pytest.mark.parametrize("bad", sorted(BAD_REFINES))
def test_refine_refuses_invalid_arguments_naming_them(bad):
    argument, change = BAD_REFINES[bad]
    arguments = {"log_density": lambda z: -z.square().sum(-1), "z_init": torch.randn(3, 2),
                 **change}
    _assert_value_error(argument, "refine", refine, arguments.pop("log_density"),
                        arguments.pop("z_init"), **arguments)


@settings(SETTINGS, max_examples=8)
@given(data=sequences(masks=("none",)), num_samples=st.integers(1, 3),
       refine_steps=st.integers(0, 2))
def test_prior_samples_of_the_sequence_models_are_finite_of_the_documented_shape(
        data, num_samples, refine_steps):
    _, times, _ = data
    times = times.reshape(-1, times.shape[-1])[0]
    K1 = times.shape[0]
    for model in (MODEL, FLOW_MODEL, *[m for m, _, _ in LIKELIHOOD_MODELS.values()]):
        with torch.no_grad():
            z, x = (model.sample_prior(times, num_samples, refine_steps=refine_steps)
                    if isinstance(model, VPF) else model.sample_prior(times, num_samples))
        assert z.shape == (num_samples, K1, DZ) and x.shape == (num_samples, K1, DX)
        assert torch.isfinite(z).all() and torch.isfinite(x).all()


#: invalid prior-sample arguments: (argument, keywords; times given as a corruption)
BAD_PRIOR_SAMPLES = {
    "NaN time": ("times", {"times": torch.tensor([0.0, float("nan"), 2.0])}),
    "decreasing times": ("times", {"times": torch.tensor([2.0, 1.0, 0.0])}),
    "times per sequence": ("times", {"times": torch.arange(6.0).reshape(2, 3)}),
    "float64 times": ("times", {"times": torch.arange(3.0, dtype=torch.float64)}),
    "no sample": ("num_samples", {"num_samples": 0}),
    "negative anchor": ("anchor", {"anchor": -1.0, "refine_steps": 2}),
    "reward not callable": ("reward", {"reward": 1.0, "refine_steps": 2}),
}


@pytest.mark.parametrize("bad", sorted(BAD_PRIOR_SAMPLES))
def test_prior_samples_refuse_invalid_arguments_naming_them(bad):
    argument, change = BAD_PRIOR_SAMPLES[bad]
    arguments = {"times": torch.arange(3.0), "num_samples": 2, **change}
    _assert_value_error(argument, "VPF.sample_prior", MODEL.sample_prior, **arguments)
    if "refine_steps" not in arguments:
        for model in (SDE_MODEL, LIKELIHOOD_MODELS["poisson"][0]):
            _assert_value_error(argument, f"{type(model).__name__}.sample_prior",
                                model.sample_prior, **arguments)


# -- the constructors ---------------------------------------------------------------------

#: label -> (the argument, a constructor call with an invalid value of it)
BAD_CONSTRUCTORS = {
    "VPF obs_dim 0": ("obs_dim", lambda: VPF(0, DZ, 8)),
    "VPF latent_dim 0": ("latent_dim", lambda: VPF(DX, 0, 8)),
    "VPF hidden_dim fractional": ("hidden_dim", lambda: VPF(DX, DZ, 1.5)),
    "VPF num_flow_layers negative": ("num_flow_layers", lambda: VPF(DX, DZ, 8, -1)),
    "VPF time_scale zero": ("time_scale", lambda: VPF(DX, DZ, 8, time_scale=0.0)),
    "VPF observation unknown": ("observation", lambda: VPF(DX, DZ, 8, observation="poisson")),
    "LatentSDE latent_dim 0": ("latent_dim", lambda: LatentSDE(DX, 0, 8)),
    "LatentSDE method unknown": ("method", lambda: LatentSDE(DX, DZ, 8, method="rk4")),
    "LatentSDE time_scale zero": ("time_scale", lambda: LatentSDE(DX, DZ, 8, time_scale=0.0)),
    "NeuralSDE min_diffusion zero": ("min_diffusion", lambda: NeuralSDE(DZ, 8,
                                                                        min_diffusion=0.0)),
    "LatentSDEPrior method unknown": ("method", lambda: LatentSDEPrior(DZ, NeuralSDE(DZ, 8),
                                                                       method="rk4")),
    "PathModel prior": ("prior", lambda: PathModel(None, PoissonLikelihood(DX, DZ))),
    "PathModel likelihood": ("likelihood", lambda: PathModel(LatentPathPrior(DZ, 8, 1),
                                                             None)),
    "PathModel latent dims": ("latent_dim", lambda: PathModel(LatentPathPrior(DZ + 1, 8, 1),
                                                              PoissonLikelihood(DX, DZ))),
    "make_likelihood unknown": ("observation", lambda: make_likelihood("poisson", DX, DZ)),
    "StudentTLikelihood df zero": ("df", lambda: StudentTLikelihood(DX, DZ, df=0.0)),
    "StudentTLikelihood df NaN": ("df", lambda: StudentTLikelihood(DX, DZ, df=float("nan"))),
    "NegativeBinomialLikelihood concentration zero": ("concentration", lambda:
                                                      NegativeBinomialLikelihood(
                                                          DX, DZ, concentration=0.0)),
    "PoissonLikelihood obs_dim 0": ("obs_dim", lambda: PoissonLikelihood(0, DZ)),
    "BernoulliLikelihood latent_dim fractional": ("latent_dim", lambda: BernoulliLikelihood(
        DX, 1.5)),
    "FlowLikelihood num_layers negative": ("num_layers", lambda: FlowLikelihood(DX, DZ, -1)),
    "AffineGuide obs_dim 0": ("obs_dim", lambda: AffineGuide(0, DZ, 8)),
    "AffineGuide window 0": ("window", lambda: AffineGuide(DX, DZ, 8, window=0)),
    "FlowGuide obs_dim 0": ("obs_dim", lambda: FlowGuide(0, DZ, 8)),
    "MarkovGuide latent_dim 0": ("latent_dim", lambda: MarkovGuide(DX, 0, 8)),
    "MarkovGuide parametrization unknown": ("parametrization", lambda: MarkovGuide(
        DX, DZ, 8, parametrization="smooth")),
    "FlowVAE data_dim 0": ("data_dim", lambda: FlowVAE(0, DZ, 8)),
    "SDEMatchingELBO num_time_samples 0": ("num_time_samples", lambda: SDEMatchingELBO(
        num_time_samples=0)),
    "SDEMatchingELBO vectorize_particles": ("vectorize_particles", lambda: SDEMatchingELBO(
        vectorize_particles=True)),
}


@pytest.mark.parametrize("label", sorted(BAD_CONSTRUCTORS))
def test_constructors_refuse_invalid_arguments_naming_them(label):
    argument, make = BAD_CONSTRUCTORS[label]
    _assert_value_error(argument, label, make)


# -- checkpoints and the posterior drift --------------------------------------------------


def test_checkpoints_that_are_empty_or_foreign_raise_naming_the_file(tmp_path):
    empty, foreign = tmp_path / "empty.pt", tmp_path / "foreign.pt"
    empty.write_bytes(b"")
    torch.save({"weights": torch.ones(2)}, foreign)
    for path in (empty, foreign):
        _assert_value_error(str(path), "read_checkpoint", read_checkpoint, str(path))
        model, guide = _pair("sequences")
        _assert_value_error(str(path), "load_checkpoint", load_checkpoint, str(path), model,
                            guide)
    with pytest.raises(FileNotFoundError, match="missing"):  # documented (an OSError)
        read_checkpoint(str(tmp_path / "missing.pt"))


@settings(SETTINGS, max_examples=10)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3), seed=st.integers(0, 99),
       state_dependent=st.booleans())
def test_posterior_drift_is_finite_of_the_states_shape(shape, seed, state_dependent):
    gen = torch.Generator().manual_seed(seed)
    eps, dloc, dscale = (torch.randn(shape, generator=gen) for _ in range(3))
    scale, diffusion = (torch.rand(shape, generator=gen) + 0.1 for _ in range(2))
    grad = torch.randn(shape, generator=gen) if state_dependent else None
    drift = posterior_drift(eps, scale, dloc, dscale, diffusion, grad)
    assert drift.shape == tuple(shape) and torch.isfinite(drift).all()


# -- known defects outside the files this module may change --------------------------------


def _fixed_data(B=2, K1=4):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(B, K1, DX, generator=gen), torch.tensor([0.0, 0.5, 1.5, 3.0])[:K1]


def _support_case(entry_point):
    def check():
        model, values, _ = LIKELIHOOD_MODELS["poisson"]
        x, times = _fixed_data()
        x = values(x)
        x[0, 0, 0] = -1.0
        _assert_value_error("x", entry_point, _sequence_entry_points(model, _G)[entry_point],
                            x, times, None)

    return check


def _coverage_case(argument):
    def check():
        samples, y = torch.randn(4, 3, 2), torch.randn(3, 2)
        held_out = torch.ones(3, 2, dtype=torch.bool)
        arguments = {"draws": (samples.long(), y, held_out), "truth": (samples, y[:2], held_out),
                     "held_out": (samples, y, held_out.float())}[argument]
        _assert_value_error(argument, "predictive_coverage", predictive_coverage, *arguments)

    return check


def _sde_posterior_case(num_sequences=1, num_samples=2, model=None):
    def check():
        x, times = _fixed_data(num_sequences)
        out = sample_posterior_sde(model or SDE_MODEL, SDE_GUIDE, x, times, times,
                                   num_samples=num_samples)
        assert out[0].shape == (num_samples, num_sequences, len(times), DZ)

    return check


def _assert_shape(value, shape):
    assert value.shape == shape, tuple(value.shape)


def _sde_posterior_diverges():
    """Finite posterior paths for one sequence with gaps up to ~80 (valid input)."""
    torch.manual_seed(0)
    model = LatentSDE(DX, DZ, 8, num_obs_flow_layers=1, time_embed_dim=0, drift_layers=1,
                      observation="linear_gaussian")
    guide = AffineGuide(DX, DZ, 8)
    times = torch.tensor([0.0, 1.9007, 1.9331, 2.1840, 9.8907, 48.7792, 93.9823, 94.0024,
                          152.4974])
    z, x = sample_posterior_sde(model, guide, torch.randn(1, 9, DX), times, times,
                                num_samples=2)
    assert torch.isfinite(z).all() and torch.isfinite(x).all()


def _refused(argument, fn, *args, **kwargs):
    return lambda: _assert_value_error(argument, getattr(fn, "__name__", str(fn)), fn, *args,
                                       **kwargs)


def _split():
    times, values = torch.arange(20.0), torch.randn(20, DX)
    return split_series(times, values, holdout=3.5, window=4)


def _backtest_case(**change):
    times, values = torch.arange(20.0), torch.randn(20, DX)
    arguments = {**BACKTEST, **change}
    if "times" in change:
        times = arguments.pop("times")
    return lambda: backtest(_small_forecaster, times, values, **arguments)


def _fit_no_whole_point():
    """Channels observed at different times (no point observed in full) train: a point with
    any observed entry counts as observed."""
    x, times = _fixed_data()
    mask = ((torch.arange(4) % 2 == 0).unsqueeze(-1) == torch.tensor([True, False])).expand(
        2, 4, DX)
    model, guide = _pair("sequences")
    history = fit(model, guide, x, times, mask, num_steps=2, progress=False)
    assert len(history) == 2 and all(math.isfinite(v) for v in history.elbo_per_point)
    assert math.isfinite(elbo_per_point(model, guide, x, times, mask, num_particles=2))


def _fit_checkpoint_is_the_final_state(tmp_dir):
    """fit's checkpoint at the end holds the model's final state (also its buffers)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, DX, generator=gen)
    times = torch.rand(4, 5, generator=gen).cumsum(-1)  # other time ranges per sequence
    pyro.set_rng_seed(2)
    model, guide = _pair("sequences")
    path = os.path.join(tmp_dir, "ckpt.pt")
    fit(model, guide, x, times, num_steps=1, batch_size=2, progress=False,
        checkpoint_path=path)
    after = _state(model, guide)
    fresh_model, fresh_guide = _pair("sequences")
    load_checkpoint(path, fresh_model, fresh_guide)
    assert all(torch.equal(a, b) for a, b in zip(_state(fresh_model, fresh_guide), after,
                                                 strict=True))


def _load_into_another_architecture(tmp_dir):
    path = os.path.join(tmp_dir, "ckpt.pt")
    model, guide = _pair("sequences")
    fit(model, guide, *_fixed_data(), num_steps=1, progress=False, checkpoint_path=path)
    other = VPF(DX, DZ, 16, num_flow_layers=1, observation="linear_gaussian")
    _assert_value_error("model", "load_checkpoint", load_checkpoint, path, other, guide)


#: id -> (where the defect lay, a check of the contract it broke)
FORMER_DEFECTS = {
    "posterior_predictive names no x for data outside the support": (
        "pyro_vpf/evaluation/predictive.py (check_sequences only; Pyro's own message)",
        _support_case("posterior_predictive")),
    "forecast accepts data outside the support": (
        "pyro_vpf/evaluation/predictive.py", _support_case("forecast")),
    "interpolate accepts data outside the support": (
        "pyro_vpf/evaluation/predictive.py", _support_case("interpolate")),
    "the model program names no x for data outside the support": (
        "models/path_model.py (PathModel.forward checks finiteness only)",
        _support_case("model")),
    "predictive_coverage calls draws samples": (
        "pyro_vpf/evaluation/predictive.py (forecast_scores' names)", _coverage_case("draws")),
    "predictive_coverage calls truth y": (
        "pyro_vpf/evaluation/predictive.py", _coverage_case("truth")),
    "predictive_coverage calls held_out mask": (
        "pyro_vpf/evaluation/predictive.py", _coverage_case("held_out")),
    "sample_posterior_sde fails for two sequences": (
        "pyro_vpf/distributions/posterior_sde.py PosteriorSDE.f: marginals.rates(t.expand(B, 1))"
        " -> torch.func.jvp of an expanded tensor (RuntimeError)",
        _sde_posterior_case(num_sequences=2)),
    "sample_posterior_sde diverges with the default dt": (
        "pyro_vpf/evaluation/predictive.py sample_posterior_sde with the prior's default dt (a "
        "hundredth of the span): the posterior drift's -g^2 (z - m) / (2 s^2) is stiff where "
        "the guide's scale s is small, explicit Euler blows up, torch's Normal refuses NaN "
        "locations (a ValueError that names nothing)", _sde_posterior_diverges),
    "sample_posterior_sde takes a fractional num_samples": (
        "pyro_vpf/evaluation/predictive.py (int(num_samples))",
        _refused("num_samples", sample_posterior_sde, SDE_MODEL, SDE_GUIDE,
                 *_fixed_data(1), _fixed_data(1)[1][:1], num_samples=1.5)),  # (no solve)
    "sample_posterior_sde of a VPF raises AttributeError": (
        "pyro_vpf/evaluation/predictive.py (model.prior.solver_options, model.sde)",
        _refused("model", sample_posterior_sde, MODEL, SDE_GUIDE, *_fixed_data(1),
                 _fixed_data(1)[1], num_samples=2)),
    "a latent SDE with a fixed dt cannot forecast far ahead": (
        "pyro_vpf/distributions (solve_sde / SDEPath): torchsde's BrownianInterval recurses "
        "past Python's limit (RecursionError) for spans of ~1e4 steps of dt",
        lambda: forecast(LatentSDE(DX, DZ, 8, num_obs_flow_layers=1, time_embed_dim=0,
                                   drift_layers=1, observation="linear_gaussian", dt=0.1),
                         SDE_GUIDE, *_fixed_data(), FUTURE, num_samples=2)),
    "forecast_series truncates a fractional context": (
        "pyro_vpf/evaluation/predictive.py (int(context))",
        lambda: _assert_value_error("context", "forecast_series", forecast_series, MODEL, _G,
                                    _split().history, _split().test.times, context=2.5,
                                    num_samples=2)),
    "forecast_series of a tensor raises AttributeError": (
        "pyro_vpf/evaluation/predictive.py (history.x)",
        lambda: _assert_value_error("history", "forecast_series", forecast_series, MODEL, _G,
                                    _split().history.x, _split().test.times, num_samples=2)),
    "backtest names no times for decreasing times": (
        "pyro_vpf/evaluation/backtest.py (origins from times[-1] before split_series checks)",
        lambda: _assert_value_error("times", "backtest", _backtest_case(
            times=torch.arange(20.0).flip(0)))),
    "backtest calls num_samples=1 samples": (
        "pyro_vpf/evaluation/backtest.py (forecast_scores needs 2 draws, after training)",
        lambda: _assert_value_error("num_samples", "backtest", _backtest_case(num_samples=1))),
    "backtest reads context=0 as the window": (
        "pyro_vpf/evaluation/backtest.py (context or window)",
        lambda: _assert_value_error("context", "backtest", _backtest_case(context=0))),
    "backtest raises TypeError for a seed string": (
        "pyro_vpf/evaluation/backtest.py (seed + i)",
        lambda: _assert_value_error("seed", "backtest", _backtest_case(seed="0"))),
    "posterior_mean truncates a fractional num_samples": (
        "pyro_vpf/evaluation/latent.py (int(num_samples))",
        _refused("num_samples", posterior_mean, STATIC_GUIDES["flow"], torch.randn(3, D), 1.5)),
    "active_units raises TypeError for a threshold string": (
        "pyro_vpf/evaluation/latent.py (threshold >= 0)",
        _refused("threshold", active_units, STATIC_GUIDES["flow"], torch.randn(3, D),
                 threshold="0.1")),
    "prior samples truncate a fractional num_samples": (
        "pyro_vpf/prior.py PathPrior.sample (int(num_samples))",
        _refused("num_samples", MODEL.sample_prior, torch.arange(3.0), 1.5)),
    "VPF.sample_prior calls refine_lr lr": (
        "models/vpf.py (refine's own names)",
        _refused("refine_lr", MODEL.sample_prior, torch.arange(3.0), 2, refine_steps=2,
                 refine_lr=0.0)),
    "refine takes steps=True": (
        "pyro_vpf/refine.py (int(steps) != steps)",
        _refused("steps", refine, lambda z: -z.square().sum(-1), torch.randn(3, 2),
                 steps=True)),
    "refine truncates a fractional event_dim": (
        "pyro_vpf/refine.py (int(event_dim))",
        _refused("event_dim", refine, lambda z: -z.square().sum(-1), torch.randn(3, 2),
                 event_dim=1.5)),
    "refine raises TypeError for an lr string": (
        "pyro_vpf/refine.py (lr > 0)",
        _refused("lr", refine, lambda z: -z.square().sum(-1), torch.randn(3, 2), lr="0.1")),
    "refine with an infinite anchor returns one-step traces": (
        "pyro_vpf/refine.py (steps = 0 when the anchor is infinite; Refinement documents "
        "(steps + 1, *batch))",
        lambda: _assert_shape(refine(lambda z: -z.square().sum(-1), torch.randn(3, 2),
                                     steps=2, anchor=math.inf).objective, (3, 3))),
    "LatentSDE takes dt=0": (
        "models/latent_sde.py LatentSDEPrior (checked only when sampling)",
        _refused("dt", LatentSDE, DX, DZ, 8, dt=0.0)),
    "LatentSDEPrior takes an sde of another latent_dim": (
        "models/latent_sde.py LatentSDEPrior (RuntimeError when sampling)",
        _refused("latent_dim", LatentSDEPrior, DZ + 1, NeuralSDE(DZ, 8))),
    "GaussianEncoderGuide calls data_dim in_dim": (
        "guides/vae.py (the MLP's names)", _refused("data_dim", GaussianEncoderGuide, 0, DZ, 8)),
    "GaussianEncoderGuide takes a negative min_scale": (
        "guides/vae.py", _refused("min_scale", GaussianEncoderGuide, D, DZ, 8, min_scale=-1.0)),
    "ConditionalFlowGuide calls latent_dim out_dim": (
        "guides/vae.py (the MLP's names)", _refused("latent_dim", ConditionalFlowGuide, D, 0,
                                                    8)),
    "FlowGuide calls num_flow_layers num_layers": (
        "guides/flow.py (ConditionalFlow's names)",
        _refused("num_flow_layers", FlowGuide, DX, DZ, 8, num_flow_layers=-1)),
    "SDEMatchingELBO truncates a fractional num_time_samples": (
        "pyro_vpf/infer/sde_matching.py (int(num_time_samples))",
        _refused("num_time_samples", SDEMatchingELBO, num_time_samples=1.5)),
    "SDEMatchingELBO takes num_particles=0": (
        "pyro_vpf/infer/sde_matching.py", _refused("num_particles", SDEMatchingELBO,
                                                   num_particles=0)),
    "from_arrays names no values for a sequence with no observed value": (
        "pyro_vpf/data/sequences.py ('sequences [i] have no observed value')",
        _refused("values", SequenceData.from_arrays, [[1.0, 2.0], [float("nan")] * 2])),
    "from_arrays names no values for sequences of other channel counts": (
        "pyro_vpf/data/sequences.py ('every sequence must be ...')",
        _refused("values", SequenceData.from_arrays, [np.ones((2, 1)), np.ones((2, 2))])),
    "posterior_drift raises RuntimeError for mismatched shapes": (
        "pyro_vpf/distributions/posterior_sde.py (no checks)",
        _refused("scale", posterior_drift, torch.ones(2, 3), torch.ones(2, 2), torch.ones(2, 3),
                 torch.ones(2, 3), torch.ones(2, 3))),
    "fit divides by zero when no time point is observed whole": (
        "pyro_vpf/infer/fit.py (history.record(num_points=0): ZeroDivisionError after the "
        "first step; fit_distributed alike, pyro_vpf/infer/lightning.py)",
        _fit_no_whole_point),
}
#: the former defects that need a scratch directory
FORMER_DEFECTS_WITH_FILES = {
    "fit's final checkpoint misses the last evaluation's buffer updates": (
        "pyro_vpf/infer/fit.py: after save_checkpoint at the last step, guard.evaluate runs the"
        " model on a new subsample, which moves the time embedding's time_min/time_max buffers"
        " (pyro_vpf/transforms/time_embedding.py); also makes "
        "test_training_loops_train_on_valid_sequences[fit] fail when it draws batch_size < B",
        _fit_checkpoint_is_the_final_state),
    "load_checkpoint into another architecture raises RuntimeError": (
        "pyro_vpf/infer/checkpoint.py (torch's load_state_dict size mismatch)",
        _load_into_another_architecture),
}


@contextlib.contextmanager
def _scratch_directory(path):
    """``path`` as the working directory meanwhile."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("defect", sorted({**FORMER_DEFECTS, **FORMER_DEFECTS_WITH_FILES}))
def test_former_defects_stay_fixed(defect, tmp_path):
    """Each case asserts the contract (finite output, or a ValueError naming the argument) at
    an input that once broke it."""
    pyro.clear_param_store()
    if defect in FORMER_DEFECTS_WITH_FILES:
        with _scratch_directory(tmp_path):
            FORMER_DEFECTS_WITH_FILES[defect][1](str(tmp_path))
    else:
        FORMER_DEFECTS[defect][1]()

