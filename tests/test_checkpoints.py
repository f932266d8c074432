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


def _problem(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 2, generator=gen, dtype=dtype)
    return x, torch.linspace(0, 1, 8, dtype=dtype)


@pytest.mark.parametrize("blow_up_after", [0, 5])
def test_divergence_raises_one_error_and_leaves_a_checkpoint_that_evaluates(tmp_path,
                                                                          blow_up_after):
    """A step whose parameters are finite but give non-finite values (as after a too large
    learning rate) stops the run with FloatingPointError, never a raw ValueError from a
    distribution; the checkpoint left holds parameters whose loss was finite (not the ones
    saved just before the failing step), so that resuming it trains on."""
    x, times = _problem()
    path = str(tmp_path / "ckpt.pt")
    pyro.set_rng_seed(0)
    model, guide = _tiny()

    def blow_up(step, history):  # finite, but far too large: activations overflow
        if step == blow_up_after:
            with torch.no_grad():
                for p in model.likelihood.parameters():
                    p.mul_(1e30)

    with pytest.raises(FloatingPointError, match="non-finite|loss became"):
        fit(model, guide, x, times, num_steps=20, lr=1e-3, checkpoint_path=path,
            checkpoint_every=1, callback=blow_up, progress=False)
    assert not os.path.exists(path + ".pending")
    if blow_up_after == 0:  # the first parameters saved were the bad ones: nothing is kept
        assert not os.path.exists(path)
        return
    model, guide = _tiny()
    step, _, _ = load_checkpoint(path, model, guide)
    assert step == blow_up_after  # saved before the blow-up, confirmed by a finite step
    loss = pyro.infer.Trace_ELBO().loss(model, guide, x, times)
    assert torch.isfinite(torch.tensor(loss))
    history = fit(model, guide, x, times, num_steps=step + 3, lr=1e-4, resume=path,
                  progress=False)
    assert len(history) == step + 3 and all(torch.isfinite(torch.tensor(history.loss)))
    assert history.lr[-1] == pytest.approx(1e-4)


def test_resuming_with_another_learning_rate_uses_it(tmp_path):
    """Adam's update is proportional to the learning rate given the same gradients and
    moments: one step resumed at lr/10 moves every parameter a tenth as far."""
    x, times = _problem(torch.float64)
    path = str(tmp_path / "ckpt.pt")
    pyro.set_rng_seed(0)
    model, guide = (m.double() for m in _tiny())
    fit(model, guide, x, times, num_steps=3, lr=1e-2, checkpoint_path=path, progress=False)
    moves = []
    for lr in (1e-2, 1e-3):
        model, guide = (m.double() for m in _tiny())
        load_checkpoint(path, model, guide)
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        history = fit(model, guide, x, times, num_steps=4, lr=lr, resume=path, progress=False)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moves.append(after - before)
        assert history.lr[-1] == pytest.approx(lr) and history.lr[0] == pytest.approx(1e-2)
    moved = moves[0].abs() > 1e-7
    assert moved.sum() > 10
    assert torch.allclose(moves[1][moved], moves[0][moved] / 10, rtol=1e-8, atol=1e-14)


def test_broken_files_get_a_clear_error_naming_them(tmp_path):
    model, guide, path = _run(tmp_path)
    with open(path, "rb") as handle:
        data = handle.read()
    cases = {"empty.pt": b"", "truncated.pt": data[: len(data) // 2], "noise.pt": b"\x00junk" * 50}
    for name, content in cases.items():
        broken = str(tmp_path / name)
        with open(broken, "wb") as handle:
            handle.write(content)
        with pytest.raises(ValueError, match=name):
            load_checkpoint(broken, model, guide)
    wrong = str(tmp_path / "weights.pt")
    torch.save(model.state_dict(), wrong)  # a checkpoint of the wrong kind
    with pytest.raises(ValueError, match="weights.pt is not a checkpoint"):
        load_checkpoint(wrong, model, guide)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"), model, guide)


def test_the_temporary_file_is_unique_and_never_left_behind(tmp_path):
    model, guide, path = _run(tmp_path)
    decoy = tmp_path / "ckpt.pt.tmp"  # the name a predictable temporary file would take
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    decoy.symlink_to(target)
    fit(model, guide, torch.randn(4, 6, 2), torch.linspace(0, 1, 6), num_steps=3,
        checkpoint_path=path, resume=path, progress=False)
    assert target.read_text() == "keep"  # the link was not followed
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".pending"))
                 and p.name != "ckpt.pt.tmp"]
    assert leftovers == []
    assert load_checkpoint(path, model, guide)[0] == 3


def test_fit_distributed_refuses_a_checkpoint_of_fit_clearly(tmp_path):
    pytest.importorskip("lightning")
    from pyro_vpf.infer.lightning import fit_distributed

    model, guide, path = _run(tmp_path)
    with pytest.raises(ValueError, match="written by fit"):
        fit_distributed(model, guide, torch.randn(4, 6, 2), torch.linspace(0, 1, 6),
                        num_steps=3, batch_size=4, resume=path, accelerator="cpu",
                        progress=False)
