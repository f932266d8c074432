"""The command line trains any model of the collection, and a run directory stays consistent
whatever fails."""

import json

import pytest

from pyro_vpf.cli import main
from pyro_vpf.cli import run as cli_run
from pyro_vpf.cli.config import TrainConfig


def _train(out, *flags):
    return main(["train", "--fast", "--out-dir", str(out), "--device", "cpu", *flags])


@pytest.mark.slow
def test_the_latent_sde_and_the_linear_gaussian_likelihood_train(tmp_path, capsys):
    assert _train(tmp_path / "sde", "--model", "sde", "--steps", "3") == 0
    summary = json.loads((tmp_path / "sde" / "summary.json").read_text())
    assert summary["config"]["model"] == "sde" and summary["steps"] == 3
    assert isinstance(summary["test_elbo_per_point"], float)
    assert main(["sample", "--out-dir", str(tmp_path / "sde"), "--points", "51",
                 "--num-samples", "2"]) == 0
    with pytest.raises(ValueError, match="path density"):
        main(["evaluate", "--out-dir", str(tmp_path / "sde")])
    assert _train(tmp_path / "lg", "--likelihood", "linear_gaussian", "--steps", "3") == 0
    config = json.loads((tmp_path / "lg" / "config.json").read_text())
    assert config["likelihood"] == "linear_gaussian"


def test_the_default_guide_is_the_markov_guide_and_the_latent_sde_keeps_the_affine_one():
    from pyro_vpf.guides import DEFAULT_GUIDE, AffineGuide, MarkovGuide

    from pyro_vpf.cli.config import TrainConfig, build

    assert DEFAULT_GUIDE == "markov"
    config = TrainConfig.fast()
    assert config.guide == DEFAULT_GUIDE
    assert type(build(config, 3)[1]) is MarkovGuide
    assert TrainConfig.fast(model="sde").guide == "affine"
    assert type(build(TrainConfig.fast(model="sde"), 3)[1]) is AffineGuide
    assert TrainConfig.fast(guide="flow").guide == "flow"
    # what a run saves is the resolved name, so reloading never depends on the default
    assert TrainConfig.from_dict(dict(config.__dict__)).guide == "markov"


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "lr"), (["--steps", "-2"], "num_steps"),
    (["--model", "sde", "--guide", "markov"], "affine"),
    (["--model", "sde", "--base", "matern32"], "base"),
    (["--steps", "0"], "a new run needs num_steps >= 1"),
    (["--missing-rate", "1.5"], "missing_rate must lie in [0, 1), got 1.5"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--resume"], "nothing to resume"),
])
def test_bad_settings_are_usage_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path / "run", *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "python -m pyro_vpf train" in err  # the subcommand's usage
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.slow
def test_a_run_scores_the_same_after_training_and_in_evaluate(tmp_path, capsys):
    # the final ELBOs are seeded Monte Carlo estimates: evaluate on the saved run must not
    # print other figures than training did
    assert _train(tmp_path / "r", "--steps", "3") == 0
    trained = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert main(["evaluate", "--out-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    evaluated = json.loads((tmp_path / "r" / "summary.json").read_text())
    for key in ("train_elbo_per_point", "test_elbo_per_point"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_a_run_directory_stays_consistent(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _train(out, "--steps", "3") == 0
    config_before = (out / "config.json").read_text()
    # resuming with another architecture is refused (a usage error) before anything is written
    with pytest.raises(SystemExit) as exit_info:
        _train(out, "--steps", "5", "--hidden-dim", "8", "--resume")
    assert exit_info.value.code == 2 and "hidden_dim" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config_before
    assert main(["sample", "--out-dir", str(out), "--points", "21", "--num-samples", "1"]) == 0
    # a new run needs steps, else it would report a checkpoint it never wrote; the library's
    # own entry point refuses it too
    with pytest.raises(SystemExit):
        _train(tmp_path / "empty", "--steps", "0")
    assert "num_steps" in capsys.readouterr().err and not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="num_steps"):
        cli_run.train(TrainConfig.fast(num_steps=0), str(tmp_path / "empty"))
    # a new run into the directory that fails before its first checkpoint leaves no
    # mismatched config and checkpoint behind
    def crash(*args, **kwargs):
        raise RuntimeError("killed before the first checkpoint")

    monkeypatch.setattr(cli_run, "fit", crash, raising=False)
    import pyro_vpf.infer as infer

    monkeypatch.setattr(infer, "fit", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _train(out, "--steps", "3", "--hidden-dim", "8")
    assert not (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        main(["sample", "--out-dir", str(out)])


@pytest.mark.slow
def test_the_checkpoint_carries_the_run_settings(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--steps", "3") == 0
    (out / "config.json").unlink()
    config, model, *_ = cli_run.load_run(str(out))
    assert config.num_steps == 3 and config.hidden_dim == 16
