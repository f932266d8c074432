"""The README's quickstart runs as written (with fewer SVI steps), and the README keeps the
test command that CI runs."""

import pathlib
import re

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quickstart_source():
    """The python block between ``<!-- quickstart -->`` and ``<!-- /quickstart -->``."""
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```\s*<!-- /quickstart -->",
                      README, re.DOTALL)
    assert match, "README.md must hold one ```python block between the quickstart markers"
    return match.group(1)


def test_quickstart_runs():
    source = quickstart_source()
    # the only change: fewer steps, so that the test takes seconds (the README trains for 200)
    source, count = re.subn(r"num_steps=\d+", "num_steps=10", source)
    assert count == 1, "the quickstart should call fit(..., num_steps=...) once"
    namespace = {"__name__": "readme_quickstart"}
    exec(compile(source, "README.md (quickstart)", "exec"), namespace)

    data, draws, filled = namespace["data"], namespace["draws"], namespace["filled"]
    B, L, D = data.x.shape
    assert (B, D) == (64, 2) and data.times.shape == (B, L)
    assert data.mask is not None and not bool(data.mask.all())  # the gaps are masked
    assert draws.shape[1:] == (B, L, D)
    assert filled.shape == (B, L, D) and bool(torch.isfinite(filled).all())


def test_readme_keeps_the_ci_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert re.search(r"^make test\b", README, re.MULTILINE)
