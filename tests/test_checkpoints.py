"""Checkpoints hold tensors, plain containers and constraints only, and are read with
``torch.load(weights_only=True)``: a file that would run code on loading is refused."""

import os
import random

import numpy as np
import pyro
import pytest
import torch
from pyro.distributions import constraints
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.infer import fit, load_checkpoint

MARKER = "pyro_vpf_checkpoint_ran_code"


class _RunsCode:
    """Unpickling this object runs code (here: it sets an environment variable)."""

    def __reduce__(self):
        return (eval, (f"__import__('os').environ.__setitem__('{MARKER}', '1')",))


def _tiny():
    pyro.clear_param_store()
    return (VPF(2, 2, 8, num_flow_layers=1, num_obs_flow_layers=1),
            AffineGuide(2, 2, 8))


def _run(tmp_path):
    model, guide = _tiny()
    x, times = torch.randn(4, 6, 2), torch.linspace(0, 1, 6)
    path = str(tmp_path / "ckpt.pt")
    pyro.param("free_scale", torch.ones(2), constraint=constraints.positive)  # a free param
    fit(model, guide, x, times, num_steps=2, checkpoint_path=path, progress=False)
    return model, guide, path


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    model, guide, path = _run(tmp_path)
    state = torch.load(path, weights_only=False)
    state["config"]["note"] = _RunsCode()
    evil = str(tmp_path / "evil.pt")
    torch.save(state, evil)
    os.environ.pop(MARKER, None)
    with pytest.raises(ValueError, match="could run code"):
        load_checkpoint(evil, model, guide)
    assert MARKER not in os.environ
    with pytest.raises(ValueError, match="could run code"):  # resuming reads it the same way
        fit(model, guide, torch.randn(4, 6, 2), torch.linspace(0, 1, 6), num_steps=3,
            resume=evil, progress=False)
    assert MARKER not in os.environ
    os.environ.pop(MARKER, None)


def test_our_checkpoints_load_safely_and_restore_every_rng(tmp_path):
    model, guide, path = _run(tmp_path)
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    expected = (np.random.rand(3), random.random())  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    fresh_model, fresh_guide = _tiny()
    # the checkpoint holds the states at its save; draw them there and here
    step, history, config = load_checkpoint(path, fresh_model, fresh_guide)
    after_load = (np.random.rand(3), random.random())  # noqa: NPY002
    load_checkpoint(path, fresh_model, fresh_guide)
    assert np.array_equal(np.random.rand(3), after_load[0])  # noqa: NPY002
    assert random.random() == after_load[1]
    assert not np.array_equal(after_load[0], expected[0])  # the states did change on load
    assert step == 2 and len(history) == 2 and config["lr"] == 1e-3
    assert "free_scale" in pyro.get_param_store()
    store = pyro.get_param_store()
    assert store._constraints["free_scale"] is not None
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value), key


def test_a_trusted_file_may_hold_more(tmp_path):
    model, guide, path = _run(tmp_path)
    state = torch.load(path, weights_only=False)
    state["rng"]["numpy"] = np.random.get_state()  # noqa: NPY002 - the earlier format
    old = str(tmp_path / "old.pt")
    torch.save(state, old)
    with pytest.raises(ValueError, match="trusted=True"):
        load_checkpoint(old, model, guide)
    step, _, _ = load_checkpoint(old, model, guide, trusted=True)
    assert step == 2
    os.environ.pop(MARKER, None)
    state["config"]["note"] = _RunsCode()
    torch.save(state, old)
    load_checkpoint(old, model, guide, trusted=True)  # what trusted means: this runs it
    assert os.environ.pop(MARKER) == "1"
