"""Property-based inputs for the public entry points: valid input gives finite output of the
documented shape; invalid input raises ValueError whose message names the argument, never
another exception type and never a silent result.

The entry points: the sequence model and guides, the estimators and predictive functions,
the static model :class:`FlowVAE` with its guides, and both training loops (``fit`` and
``fit_distributed``), which must train a step or two on any valid data and refuse invalid
data or settings before they take a step or write a file.
"""

import contextlib
import os

import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro import poutine
from pyro_vpf.guides import VAE_GUIDES, AffineGuide, MarkovGuide
from pyro_vpf.models import VPF, FlowVAE

from pyro_vpf.evaluation import elbo, forecast, interpolate, log_weights, posterior_predictive
from pyro_vpf.infer import fit, load_checkpoint

DX, DZ = 2, 2
MODEL = VPF(DX, DZ, 8, num_flow_layers=1, observation="linear_gaussian")  # entry masks
GUIDES = {"affine": AffineGuide(DX, DZ, 8), "markov": MarkovGuide(DX, DZ, 8)}
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sequences(draw):
    """Valid ``(x, times, mask)``: shared or per-sequence irregular times (gaps from 1e-3 to
    1e2), entry or time-point masks with at least one observed point per sequence."""
    B = draw(st.integers(1, 4))
    K1 = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    per_sequence = draw(st.booleans())
    shape = (B, K1 - 1) if per_sequence else (K1 - 1,)
    log_gaps = torch.empty(shape).uniform_(-3, 2, generator=gen)  # resolvable in float32
    gaps = 10.0 ** log_gaps
    start = torch.zeros(shape[:-1] + (1,))
    times = torch.cat([start, gaps.cumsum(-1)], -1)
    x = torch.randn(B, K1, DX, generator=gen)
    kind = draw(st.sampled_from(["none", "points", "entries"]))
    mask = None
    if kind == "points":
        mask = torch.rand(B, K1, generator=gen) > 0.3
        mask[:, 0] = True
    elif kind == "entries":
        mask = torch.rand(B, K1, DX, generator=gen) > 0.3
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


def _entry_points(guide_name):
    guide = GUIDES[guide_name]
    return {
        "model": lambda x, t, m: poutine.trace(MODEL).get_trace(x, t, m).nodes["x"]["fn"]
        .log_prob(torch.nan_to_num(x)),
        "guide": lambda x, t, m: poutine.trace(guide).get_trace(x, t, m).nodes["z"]["value"],
        "elbo": lambda x, t, m: elbo(MODEL, guide, x, t, m, num_particles=2).per_sequence,
        "posterior_predictive": lambda x, t, m: posterior_predictive(
            MODEL, guide, x, t, m, num_samples=2)["x"],
        "forecast": lambda x, t, m: forecast(
            MODEL, guide, x, t, torch.tensor([1e4, 2e4]), m, num_samples=2)["x"],  # after all
        "interpolate": lambda x, t, m: interpolate(MODEL, guide, x, t, t, m, num_samples=2),
    }


@pytest.mark.parametrize("guide_name", sorted(GUIDES))
@SETTINGS
@given(data=sequences())
def test_valid_inputs_give_finite_outputs_of_the_documented_shape(guide_name, data):
    x, times, mask = data
    B, K1 = x.shape[:2]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, times, mask) for name, fn in _entry_points(guide_name).items()}
    shapes = {"model": (B,), "guide": (B, K1 - 1, DZ), "elbo": (B,),
              "posterior_predictive": (2, B, K1, DX), "forecast": (2, B, 2, DX),
              "interpolate": (2, B, K1, DX)}
    for name, value in out.items():
        assert value.shape == shapes[name], name
        assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@SETTINGS
@given(data=sequences(), guide_name=st.sampled_from(sorted(GUIDES)))
def test_invalid_inputs_raise_a_value_error_naming_the_argument(corruption, data, guide_name):
    argument, corrupt = CORRUPTIONS[corruption]
    x, times, mask = corrupt(*data)
    pyro.clear_param_store()
    for fn in _entry_points(guide_name).values():
        with pytest.raises(ValueError, match=argument):
            with torch.no_grad():
                fn(x, times, mask)


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
    }


@pytest.mark.parametrize("guide_name", sorted(STATIC_GUIDES))
@SETTINGS
@given(x=points())
def test_static_model_gives_finite_outputs_of_the_documented_shape(guide_name, x):
    N = x.shape[0]
    pyro.clear_param_store()
    with torch.no_grad():
        out = {name: fn(x, None, None) for name, fn in _static_entry_points(guide_name).items()}
    shapes = {"model": (N,), "guide": (N, DZ), "elbo": (N,), "log_weights": (2, N)}
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
        with pytest.raises(ValueError, match=argument):
            with torch.no_grad():
                fn(x, times, mask)


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
        with pytest.raises(ValueError, match=argument):
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
    argument, corrupt = CORRUPTIONS[corruption]
    model, guide = _pair("sequences")
    _assert_refused(loop, argument, model, guide, *corrupt(*data), tmp_path_factory)


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
