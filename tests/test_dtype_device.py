"""No tensor of the package is created with a hard-coded dtype or device.

Every tensor that a factory function (``torch.zeros``, ``arange``, ``randn``, ...) returns
during a training step, prior sampling and the posterior summaries is recorded, together with
the line that asked for it. The model runs in one dtype while torch's default is the other,
and on the CPU while torch's default device is ``"meta"``: a factory call that relies on the
defaults instead of the data's dtype and device shows up as a float tensor of the wrong
dtype, or as a tensor on the meta device (and usually as an error a little later).
"""

import os
import pathlib
import traceback
from dataclasses import dataclass

import pytest
import torch
from pyro_vpf.guides import GUIDES
from pyro_vpf.models import VPF
from torch.overrides import TorchFunctionMode

from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.evaluation import elbo, forecast, interpolate, posterior_predictive
from pyro_vpf.infer import fit

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = tuple(str(ROOT / folder) + os.sep for folder in ("pyro_vpf", "models", "guides"))

# Functions that make a tensor from sizes or values (not from a template tensor, whose dtype
# and device the result inherits).
FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.empty_strided,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor,
             torch.as_tensor, torch.scalar_tensor, torch.rand, torch.randn, torch.randint,
             torch.randperm}


@dataclass
class Creation:
    function: str
    dtype: torch.dtype
    device: torch.device
    where: str


class FactoryRecorder(TorchFunctionMode):
    """Records the dtype and device of every tensor that a factory function returns, and the
    first caller outside torch itself."""

    def __init__(self):
        super().__init__()
        self.created = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in FACTORIES and isinstance(out, torch.Tensor):
            frames = traceback.extract_stack()[:-1]
            caller = next((f for f in reversed(frames) if "/torch/" not in f.filename), None)
            where = "?" if caller is None else f"{caller.filename}:{caller.lineno}"
            self.created.append(Creation(func.__name__, out.dtype, out.device, where))
        return out

    def misplaced(self, dtype, device):
        """Tensors that the package's own code created off ``dtype`` or ``device``. (Pyro
        makes some for its own bookkeeping, e.g. the unused indices of the plate over
        vectorised particles, on torch's default device; were one of those used with the
        data, the run itself would fail.)"""
        return [c for c in self.created if c.where.startswith(PACKAGE) and (
            c.device != device or (c.dtype.is_floating_point and c.dtype != dtype))]


def _data(dtype):
    train, _ = stochastic_lorenz(15, 7, 1.0, irregular=True, missing_rate=0.2, seed=0)
    mask = train.mask.all(-1) if train.mask.dim() == 3 else train.mask  # whole points
    return train.x.to(dtype), train.times.to(dtype), mask


def _assert_placed(tensors, dtype, device):
    for name, t in tensors.items():
        assert t.device == device, f"{name} is on {t.device}"
        if t.dtype.is_floating_point:
            assert t.dtype == dtype, f"{name} has dtype {t.dtype}"


@pytest.mark.parametrize("model_dtype, default_dtype", [(torch.float64, torch.float32),
                                                        (torch.float32, torch.float64)],
                         ids=["float64-model", "float32-model"])
@pytest.mark.parametrize("guide_name", sorted(GUIDES))
def test_training_and_sampling_create_tensors_in_the_models_dtype_and_device(
        guide_name, model_dtype, default_dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        device = torch.device("cpu")
        x, times, mask = _data(model_dtype)
        model = VPF(3, 2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1)
        guide = GUIDES[guide_name](3, 2, 8)
        model, guide = model.to(model_dtype), guide.to(model_dtype)
        grid = times[0]
        recorder = FactoryRecorder()
        with torch.device("meta"), recorder:
            history = fit(model, guide, x, times, mask, num_steps=1, batch_size=4,
                          num_particles=2, progress=False)
            with torch.no_grad():
                z, samples = model.sample_prior(
                    torch.linspace(0.0, 1.0, 9, dtype=model_dtype, device=device), 3)
                refined, _ = model.sample_prior(grid, 2, refine_steps=2)
                marginal = guide.marginal(x[:2], times[:2], times[:2], mask[:2]).sample()
        misplaced = recorder.misplaced(model_dtype, device)
        assert not misplaced, "tensors created with the default dtype or device:\n" + "\n".join(
            f"  {c.function} -> {c.dtype} on {c.device} at {c.where}" for c in misplaced)
        assert recorder.created  # the recorder saw the factory calls
        assert len(history) == 1 and history.loss[0] == history.loss[0]
        tensors = {"z": z, "x": samples, "refined": refined, "marginal": marginal}
        for module in (model, guide):
            for name, p in module.named_parameters():
                tensors[name] = p
                if p.grad is not None:
                    tensors[f"grad of {name}"] = p.grad
        _assert_placed(tensors, model_dtype, device)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("observation", ["flow", "linear_gaussian"])
def test_evaluation_keeps_the_models_dtype_and_device(observation):
    device = torch.device("cpu")
    x, times, mask = _data(torch.float64)
    model = VPF(3, 2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1,
                observation=observation).double()
    guide = GUIDES["affine"](3, 2, 8).double()
    future = times[:3, -1].max() + torch.tensor([0.1, 0.3], dtype=torch.float64)
    recorder = FactoryRecorder()
    with torch.device("meta"), recorder:
        scores = elbo(model, guide, x[:3], times[:3], mask[:3], num_particles=2)
        ahead = forecast(model, guide, x[:3], times[:3], future, mask[:3], num_samples=2)
        between = interpolate(model, guide, x[:3], times[:3], times[:3], mask[:3], num_samples=2)
        replicated = posterior_predictive(model, guide, x[:3], times[:3], mask[:3], num_samples=2)
    misplaced = recorder.misplaced(torch.float64, device)
    assert not misplaced, "\n".join(f"{c.function} -> {c.dtype} on {c.device} at {c.where}"
                                    for c in misplaced)
    outputs = {"elbo": scores.per_sequence}
    for name, value in (("forecast", ahead), ("interpolate", between),
                        ("posterior_predictive", replicated)):
        items = value.items() if isinstance(value, dict) else [(name, value)]
        outputs.update({f"{name}.{k}": v for k, v in items if isinstance(v, torch.Tensor)})
    _assert_placed(outputs, torch.float64, device)


def _latent_sde():
    from pyro_vpf.models import LatentSDE

    from pyro_vpf.infer.sde_matching import SDEMatchingELBO

    x, times, mask = _data(torch.float64)
    model = LatentSDE(3, 2, 8, num_obs_flow_layers=1, time_embed_dim=4).double()
    guide = GUIDES["affine"](3, 2, 8).double()

    def run():
        fit(model, guide, x, times, mask, num_steps=1, batch_size=4, progress=False,
            elbo=SDEMatchingELBO(num_time_samples=4))
        with torch.no_grad():
            return model.sample_prior(times[0], 2)

    return run


def _flow_vae():
    from pyro_vpf.guides import VAE_GUIDES
    from pyro_vpf.models import FlowVAE

    from pyro_vpf.data import toy_2d

    points = toy_2d("moons", 32).double()
    model = FlowVAE(2, 2, 8, num_prior_layers=2).double()
    guide = VAE_GUIDES["flow"](2, 2, 8).double()

    def run():
        fit(model, guide, points, num_steps=1, batch_size=8, progress=False)
        return model.sample(4, refine_steps=2)

    return run


@pytest.mark.parametrize("make", [_latent_sde, _flow_vae], ids=["latent_sde", "flow_vae"])
def test_the_other_models_of_the_collection_keep_their_dtype_and_device(make):
    run = make()  # built outside the recorder, with torch's defaults
    recorder = FactoryRecorder()
    with torch.device("meta"), recorder:
        outputs = run()
    misplaced = recorder.misplaced(torch.float64, torch.device("cpu"))
    assert not misplaced, "\n".join(f"{c.function} -> {c.dtype} on {c.device} at {c.where}"
                                    for c in misplaced)
    _assert_placed(dict(enumerate(outputs)), torch.float64, torch.device("cpu"))
