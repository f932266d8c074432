import json
import pathlib
import subprocess
import sys

import pytest

from pyro_vpf.cli import main

ROOT = pathlib.Path(__file__).parents[1]


def test_demo_fast_writes_figure(tmp_path, capsys):
    assert main(["demo", "--fast", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "figure:" in out
    assert (tmp_path / "prior_samples.png").stat().st_size > 0


def test_demo_rejects_bad_sizes(tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--points", "1", "--out-dir", str(tmp_path)])


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
