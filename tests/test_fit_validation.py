"""fit with held-out data: scores recorded, best parameters kept and checkpointed, early
stopping after ``patience`` evaluations without improvement, training draws unchanged."""

import importlib
import math

import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.data import SequenceData
from pyro_vpf.infer import fit, load_checkpoint

# the module (the package re-exports its function under the same name)
fit_module = importlib.import_module("pyro_vpf.infer.fit")


def _data(seed=0, n=6):
    gen = torch.Generator().manual_seed(seed)
    times = torch.linspace(0, 1, 8)
    x = torch.sin(6 * times).unsqueeze(-1) + 0.1 * torch.randn(n, 8, 2, generator=gen)
    return x, times


def _pair():
    torch.manual_seed(0)
    return VPF(2, 2, 8, 1, 1), AffineGuide(2, 2, 8)


def _snapshots(model, guide):
    saved = {}

    def callback(step, history):
        saved[step + 1] = [p.detach().clone() for m in (model, guide) for p in m.parameters()]

    return saved, callback


def test_scoring_held_out_data_leaves_the_training_draws_unchanged():
    x, times = _data()
    held_out = SequenceData(*_data(seed=1, n=3))
    first = _pair()
    torch.manual_seed(1)
    plain = fit(*first, x, times, num_steps=6, batch_size=3, lr=1e-2, progress=False)
    model, guide = _pair()
    torch.manual_seed(1)
    scored = fit(model, guide, x, times, num_steps=6, batch_size=3, lr=1e-2, progress=False,
                 validation=held_out, eval_every=2)
    assert scored.loss == plain.loss
    assert scored.validation_step == [2, 4, 6]
    assert all(math.isfinite(v) for v in scored.validation_elbo_per_point)


def test_the_model_ends_with_the_best_parameters(monkeypatch):
    x, times = _data()
    scores = iter([-3.0, -1.0, -2.0])  # the second evaluation (step 4) is the best
    monkeypatch.setattr(fit_module, "elbo_per_point", lambda *a, **k: next(scores))
    model, guide = _pair()
    saved, callback = _snapshots(model, guide)
    history = fit(model, guide, x, times, num_steps=6, lr=1e-2, progress=False,
                  validation=SequenceData(x, times), eval_every=2, callback=callback)
    assert history.best_step == 4 and len(history) == 6
    final = [p.detach() for m in (model, guide) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(final, saved[4], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(final, saved[6], strict=True))


def test_early_stopping_after_patience_evaluations_without_improvement(monkeypatch, tmp_path):
    x, times = _data()
    scores = iter([-3.0, -1.0, -1.5, -1.0, -1.2, 5.0])  # no improvement after step 4
    monkeypatch.setattr(fit_module, "elbo_per_point", lambda *a, **k: next(scores))
    model, guide = _pair()
    saved, callback = _snapshots(model, guide)
    path = str(tmp_path / "run.pt")
    history = fit(model, guide, x, times, num_steps=50, lr=1e-2, progress=False,
                  validation=SequenceData(x, times), eval_every=2, early_stopping=3,
                  checkpoint_path=path, callback=callback)
    assert len(history) == 10 and history.validation_step == [2, 4, 6, 8, 10]
    assert history.best_step == 4
    # the best parameters in memory and in <path>.best; the run's own checkpoint at the stop
    best = [p.detach() for m in (model, guide) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(best, saved[4], strict=True))
    fresh_model, fresh_guide = _pair()
    step, _, _ = load_checkpoint(path + ".best", fresh_model, fresh_guide)
    loaded = [p.detach() for m in (fresh_model, fresh_guide) for p in m.parameters()]
    assert step == 4 and all(torch.equal(a, b) for a, b in zip(loaded, saved[4], strict=True))
    step, stopped, _ = load_checkpoint(path, *_pair())
    assert step == 10 and stopped.validation_step == [2, 4, 6, 8, 10]


def test_a_resumed_run_keeps_counting_its_evaluations(tmp_path):
    x, times = _data()
    path = str(tmp_path / "run.pt")
    held_out = SequenceData(*_data(seed=1, n=3))
    fit(*_pair(), x, times, num_steps=4, lr=1e-2, progress=False, validation=held_out,
        eval_every=2, checkpoint_path=path)
    history = fit(*_pair(), x, times, num_steps=8, lr=1e-2, progress=False,
                  validation=held_out, eval_every=2, checkpoint_path=path, resume=path)
    assert history.validation_step == [2, 4, 6, 8] and len(history) == 8


def test_a_static_model_takes_held_out_points():
    from pyro_vpf.guides import GaussianEncoderGuide
    from pyro_vpf.models import FlowVAE

    x = torch.randn(12, 3)
    model, guide = FlowVAE(3, 2, 8), GaussianEncoderGuide(3, 2, 8)
    history = fit(model, guide, x, num_steps=4, progress=False,
                  validation=SequenceData(torch.randn(5, 3), None), eval_every=2)
    assert history.validation_step == [2, 4]


@pytest.mark.parametrize("kwargs, message", [
    ({"eval_every": 5}, "need validation data"),
    ({"early_stopping": 2}, "need validation data"),
    ({"validation": (1, 2)}, "validation must be a SequenceData"),
    ({"validation": "held", "eval_every": 0}, "validation must be a SequenceData"),
    ({"validation": True, "eval_every": 0}, "eval_every must be an integer >= 1"),
    ({"validation": True, "early_stopping": 0}, "early_stopping must be an integer >= 1"),
    ({"validation": True, "validation_particles": 0}, "validation_particles"),
    ({"validation": "wrong channels"}, r"validation: x must have shape \(B, 8, 2\)"),
])
def test_bad_validation_settings_are_refused(kwargs, message):
    x, times = _data()
    if kwargs.get("validation") is True:
        kwargs["validation"] = SequenceData(x, times)
    elif kwargs.get("validation") == "wrong channels":
        kwargs["validation"] = SequenceData(x[..., :1], times)
    with pytest.raises(ValueError, match=message):
        fit(*_pair(), x, times, num_steps=2, progress=False, **kwargs)


def test_the_last_step_is_always_scored():
    x, times = _data()
    history = fit(*_pair(), x, times, num_steps=3, progress=False,
                  validation=SequenceData(x, times), eval_every=50)
    assert history.validation_step == [3] and history.best_step == 3
    history = fit(*_pair(), x, times, num_steps=4, progress=False,
                  validation=SequenceData(x, times), eval_every=3)
    assert history.validation_step == [3, 4]


def test_plot_elbo_shows_the_held_out_scores_and_the_best_step(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vpf.plotting import plot_elbo

    x, times = _data()
    scores = iter([-3.0, -1.0, -2.0])
    monkeypatch.setattr(fit_module, "elbo_per_point", lambda *a, **k: next(scores))
    history = fit(*_pair(), x, times, num_steps=6, progress=False,
                  validation=SequenceData(x, times), eval_every=2)
    fig, ax = plt.subplots()
    plot_elbo(history, ax=ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["held-out"].get_xdata()) == [2, 4, 6]
    assert list(lines["best (restored)"].get_xdata()) == [4]
    assert list(lines["best (restored)"].get_ydata()) == [-1.0]
    plt.close(fig)
