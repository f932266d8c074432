"""Property-based inputs for the public entry points: valid input gives finite output of the
documented shape; invalid input raises ValueError whose message names the argument, never
another exception type and never a silent result."""

import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro import poutine
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF

from pyro_vpf.evaluation import elbo, forecast, interpolate, posterior_predictive

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
