import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from pyro_vpf.cli import main

ROOT = pathlib.Path(__file__).parents[1]


def test_prior_demo_fast_writes_figure(tmp_path, capsys):
    assert main(["prior", "--fast", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "figure:" in out
    assert (tmp_path / "prior_samples.png").stat().st_size > 0


def test_prior_demo_rejects_bad_sizes(tmp_path):
    with pytest.raises(SystemExit):
        main(["prior", "--points", "1", "--out-dir", str(tmp_path)])


@pytest.mark.slow
def test_train_sample_evaluate_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--fast", "--out-dir", out, "--device", "cpu"]) == 0
    for name in ("loss.png", "samples.png", "reconstruction.png", "summary.json",
                 "checkpoint.pt", "config.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6
    for key in ("train_elbo_per_point", "test_elbo_per_point", "median_step_seconds"):
        assert isinstance(summary[key], float)
    # resume continues to a larger number of steps from the checkpoint
    assert main(["train", "--fast", "--out-dir", out, "--steps", "9", "--resume",
                 "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 9
    assert main(["sample", "--out-dir", out, "--points", "301", "--num-samples", "5"]) == 0
    assert main(["evaluate", "--out-dir", out]) == 0
    assert "forecast_mse" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    for key in ("elbo_per_point", "iw_per_point", "interpolation_coverage_90",
                "forecast_coverage_90", "forecast_mse"):
        assert isinstance(evaluation[key], float), key
    for name in ("interpolation.png", "forecast.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["markov", "flow"])
def test_train_and_evaluate_with_another_guide(tmp_path, guide):
    out = str(tmp_path / "run")
    assert main(["train", "--fast", "--guide", guide, "--out-dir", out, "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["guide"] == guide
    assert (tmp_path / "run" / "reconstruction.png").stat().st_size > 0
    assert main(["evaluate", "--out-dir", out]) == 0
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert isinstance(evaluation["forecast_coverage_90"], float)


def test_sample_without_a_run_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        main(["sample", "--out-dir", str(tmp_path)])


@pytest.mark.slow
def test_sampling_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_sampling.py"), "--sizes", "11", "101",
           "--paths", "4", "--hidden-dim", "16", "--repeats", "1", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    assert "sampler/flow" in result.stdout
    record = json.loads(out.read_text())
    assert [r["points"] for r in record["rows"]] == [11, 101]
    assert all(r["loop"] > 0 and r["scan"] > 0 for r in record["rows"])


@pytest.mark.slow
def test_the_device_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "device.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--device",
                             "cpu", "--quick", "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r[0].split(":")[0] for r in rows] == [
        "sample 4 paths at 11 points", "sample 4 paths at 101 points",
        "train step, seed configuration (B 16, conditioner depth 2)",
        "guide step, demo configuration (B 8)"]
    assert "markov" in result.stdout and "VPF / SDE" in result.stdout


@pytest.mark.slow
def test_the_step_profile_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"),
                             "--quick", "--repeats", "1"], capture_output=True, text=True,
                            timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("SVI step") == 3 and "Markov / affine step" in out
    assert "conditioning (gauss_markov_posterior), fwd+bwd" in out
    assert out.count("operators by self CPU time") == 3


@pytest.mark.slow
def test_guides_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "guides.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_guides.py"), "--quick",
           "--steps", "5", "--lorenz-steps", "3", "--particles", "4", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["problem"], r["guide"]) for r in rows] == [
        (p, g) for p in ("linear", "lorenz") for g in ("affine", "markov", "markov-direct", "flow")]
    lengths = json.loads(out.read_text())["lengths"]
    assert [(r["points"], r["guide"]) for r in lengths] == [
        (p, g) for p in (21, 41) for g in ("affine", "markov", "markov-direct", "flow")]
    assert all(r["step_ms"] > 0 for r in lengths)
    for r in rows:
        assert r["elbo"] <= r["iw"] + 1.0 and r["step_ms"] > 0
        if r["problem"] == "linear":
            assert r["elbo"] < r["exact"]


@pytest.mark.slow
def test_flow_vae_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "flow_vae.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_flow_vae.py"), "--quick",
           "--steps", "5", "--data", "moons", "digits", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["data"], r["guide"]) for r in rows] == [
        (d, g) for d in ("moons", "digits") for g in ("meanfield", "flow")]
    for r in rows:
        assert r["elbo"] <= r["iw"] + 1.0 and r["step_ms"] > 0 and 0 <= r["au"] <= r["latent_dim"]
        assert ("ed" in r) == (r["data"] == "moons")


@pytest.mark.slow
def test_real_data_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "real.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), "--quick",
           "--co2-steps", "3", "--motions-steps", "3", "--exact-steps", "2", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert [r["model"] for r in record["co2"]] == ["structural", "vpf", "vpf+trend"]
    assert {(r["hidden"], r["model"]) for r in record["motions"]} == {
        (h, m) for h in ("entries", "blocks")
        for m in ("vpf-affine", "vpf-markov", "lg-vpf", "linear")}
    for r in record["co2"]:
        assert r["crps"] > 0 and 0 <= r["cov90"] <= 1
    structural = record["co2"][0]
    assert structural["crps"] < 2.0 and structural["cov90"] > 0.8  # a sound baseline


@pytest.mark.slow
def test_vpf_vs_sde_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "vpf_vs_sde.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_vpf_vs_sde.py"), "--quick",
           "--steps", "3", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert [r["model"] for r in record["rows"]][:2] == ["vpf", "sde"]
    for r in record["rows"]:
        assert r["mse"] > 0 and 0 <= r["cov90"] <= 1 and r["step_ms"] > 0
        assert (r["iw"] is None) == (r["model"] == "sde")  # no path density for the SDE
    assert [s["points"] for s in record["sampling"]] == [11, 51]
    assert all(s["vpf_ms"] > 0 and s["sde_ms"] > 0 for s in record["sampling"])


needs_lightning = pytest.mark.skipif(importlib.util.find_spec("lightning") is None,
                                     reason="needs the `distributed` extra (lightning)")


@pytest.mark.slow
@needs_lightning
def test_train_on_two_processes_then_sample_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pyro_vpf", "train", "--fast", "--devices", "2", "--device",
           "cpu", "--out-dir", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("train_elbo_per_point") == 1  # rank 0 alone reports
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["config"]["devices"] == 2
    assert len(summary["held_out_during_training"]) > 0
    # the Lightning checkpoint serves sample and evaluate like a checkpoint of fit
    assert main(["sample", "--out-dir", str(out), "--points", "101", "--num-samples", "3"]) == 0
    assert main(["evaluate", "--out-dir", str(out)]) == 0
    assert "forecast_mse" in capsys.readouterr().out


def test_train_rejects_fewer_than_one_device(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # a usage error, named
        main(["train", "--fast", "--devices", "0", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "devices" in capsys.readouterr().err


@pytest.mark.slow
@needs_lightning
def test_scaling_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "scaling.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_scaling.py"), "--quick",
           "--threads", "1", "--no-gpu", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "speed-up cpu: x2/x1" in result.stdout
    record = json.loads(out.read_text())
    assert [(r["setting"], r["processes"]) for r in record["rows"]] == [
        ("fit (SVI)", 1), ("lightning x1", 1), ("lightning x2", 2)]
    assert all(r["sequences_per_second"] > 0 for r in record["rows"])
    assert record["speedup_2_over_1"]["cpu: x2/x1"] > 0


@pytest.mark.slow
def test_bases_benchmark_runs_and_writes_json(tmp_path):
    import math

    out = tmp_path / "bases.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_bases.py"), "--quick",
           "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())

    def finite(row, keys):
        for key in keys:
            values = row[key] if isinstance(row[key], list) else [row[key]]
            assert values and all(isinstance(v, (int, float)) and math.isfinite(v)
                                  for v in values), (key, row)

    assert [r["model"] for r in record["co2"]] == ["structural", "exact[trend+cycle]",
                                                   "vpf[trend+cycle]", "vpf[ou]"]
    for r in record["co2"] + record["co2_summary"]:
        finite(r, ("mse", "mae", "crps", "cov50", "cov90", "seconds"))
        assert 0 <= r["cov50"] <= 1 and 0 <= r["cov90"] <= 1
    bases = [r["base"] for r in record["fine"]]
    assert bases[0] == "truth" and {"ou", "matern32", "matern52", "trend+cycle"} <= set(bases)
    for r in record["fine"]:
        finite(r, ("ratio", "gm41", "ed41", "ed1001"))
        assert len(r["ratio"]) == 3 and min(r["ratio"]) > 0
    assert {(r["base"], r["points"]) for r in record["sampling"]} == {
        (b, k) for b in bases[1:] for k in (101, 1001, 10001)}
    for r in record["sampling"]:
        finite(r, ("sampler_s", "base_s", "us_per_point", "sampler_over_ou", "base_over_ou"))
    assert {(r["guide"], r["base"]) for r in record["step"]} == {
        (g, b) for g in ("affine", "markov") for b in bases[1:]}
    for r in record["step"]:
        finite(r, ("step_s", "over_ou"))
        assert r["step_s"] > 0
    assert record["targets"] and all(isinstance(t["met"], bool) for t in record["targets"])
