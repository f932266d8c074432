"""Fault injection: a training process killed with SIGKILL at random moments, then resumed.

A worker (``_fault_worker.py``: a fixed small VPF + AffineGuide problem, ``fit`` with a
checkpoint after every step) is killed in several phases of its run — while its first
checkpoint is being written, at a random moment, in the middle of training with a pending
checkpoint on disk, and around the final checkpoint — and each time started again; it resumes
from the checkpoint it finds. The finished run must equal an uninterrupted one bit for bit;
after every kill, the checkpoint on disk (and a pending one) must load and hold exactly the
uninterrupted run's state at its step; and the completed run must leave nothing behind but
its checkpoint. The delays are drawn from a seeded RNG, so the schedule is reproducible (the
moments they hit depend on the machine's speed).

A killed run leaves its pending checkpoint (written, never confirmed) and perhaps the
temporary file of an unfinished write: a later run on the same path, of either training loop,
must neither confirm the pending checkpoint as its own nor leave those files behind.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pyro
import pytest
import torch
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.infer import fit, load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not hasattr(signal, "SIGKILL"),
                                reason="needs SIGKILL (POSIX)")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fault_worker.py")
NUM_STEPS = 24
SEED = 1234
#: a worker that has not finished in this long has hung
TIMEOUT = 120.0


def _modules():
    """Model and guide of the worker's shapes (their values come from the checkpoints)."""
    pyro.clear_param_store()
    return VPF(2, 2, 16, num_flow_layers=1, num_obs_flow_layers=1), AffineGuide(2, 2, 16)


class _Worker:
    """A worker process whose output lines are collected, with their arrival times.

    With ``wait=True`` it imports and builds its problem, then waits for :meth:`go` before it
    looks for a checkpoint and trains: the next worker starts while the current one runs.
    """

    def __init__(self, checkpoint, out, logs, *options, wait=False):
        self.started = time.monotonic()
        self.lines = []
        self._log = open(os.path.join(logs, f"stderr-{len(os.listdir(logs))}.txt"), "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, "--checkpoint", checkpoint, "--steps", str(NUM_STEPS),
             "--out", out, *options, *(["--wait"] if wait else [])],
            stdin=subprocess.PIPE if wait else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log, text=True, bufsize=1, cwd=logs, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def go(self):
        assert self.wait_for(lambda: self.ready), self.stderr()
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    @property
    def ready(self):
        return any(line == "ready" for _, line in self.lines)

    def last_step(self):
        steps = [int(line.split()[1]) for _, line in self.lines if line.startswith("step ")]
        return steps[-1] if steps else None

    def wait_for(self, condition):
        """Poll until ``condition()`` holds (True) or the worker exits (False)."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.proc.poll() is not None:
                return condition()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the worker hung; stderr: {self.stderr()}")
            time.sleep(0.002)
        return True

    def kill(self):
        """SIGKILL; whether it was still running (then it was killed)."""
        running = self.proc.poll() is None
        if running:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._close()
        return running and self.proc.returncode == -signal.SIGKILL

    def finish(self, returncode=0):
        self._close()
        assert self.proc.returncode == returncode, self.stderr()

    def _close(self):
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()

    def stderr(self):
        with open(self._log.name) as handle:
            return handle.read()[-3000:]


@pytest.fixture
def workers():
    """Start workers; any still running at the end of the test is killed."""
    started = []

    def start(*args, **kwargs):
        started.append(_Worker(*args, **kwargs))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.kill()


def _temporary_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def _check_against_reference(path, reference, record):
    """``path`` loads, and holds exactly the uninterrupted run's parameters and history at
    its step. Returns the step."""
    model, guide = _modules()
    step, history, config = load_checkpoint(path, model, guide)
    assert 1 <= step <= NUM_STEPS
    expected = torch.load(os.path.join(record, f"{step}.pt"), weights_only=True)
    for name, module in (("model", model), ("guide", guide)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, expected[name][key]), (path, step, name, key)
    for key in ("loss", "elbo_per_point", "kl_weight", "lr"):
        assert getattr(history, key) == reference["history"][key][:step], (path, step, key)
    return step


def test_a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result(tmp_path, workers):
    rng = random.Random(SEED)
    logs, record = tmp_path / "logs", tmp_path / "record"
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    for directory in (logs, record, ref_dir, run_dir):
        directory.mkdir()
    path = str(run_dir / "ckpt.pt")
    pending = path + ".pending"
    out = str(tmp_path / "out.pt")
    kills, phases, progress = 0, [], 0

    def start_next():  # the next worker imports while the current one runs
        return workers(path, out, str(logs), wait=True)

    # the uninterrupted run, which also records the parameters after every step; meanwhile,
    # the first interrupted run, on a slow disk (its fsync sleeps): the temporary file of its
    # first checkpoint write is seen, and the worker killed while writing it
    reference_worker = workers(str(ref_dir / "ckpt.pt"), str(tmp_path / "reference.pt"),
                               str(logs), "--record", str(record))
    worker = workers(path, out, str(logs), "--slow-fsync", "0.5")
    assert worker.wait_for(lambda: bool(_temporary_files(run_dir))), worker.stderr()
    upcoming = start_next()
    time.sleep(rng.uniform(0.0, 0.2))  # within the half-second fsync
    assert _temporary_files(run_dir), "the first checkpoint write was not hit"
    kills += worker.kill()
    assert os.listdir(run_dir) == _temporary_files(run_dir)  # the unfinished write only
    phases.append("first checkpoint write")

    reference_worker.finish()
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert reference["resumed_from"] is None and len(reference["history"]["loss"]) == NUM_STEPS
    assert sorted(os.listdir(ref_dir)) == ["ckpt.pt"]
    arrival = {line: t for t, line in reference_worker.lines}
    step_time = (arrival[f"step {NUM_STEPS}"] - arrival["step 1"]) / (NUM_STEPS - 1)

    def after_kill(phase):
        nonlocal progress
        phases.append(phase)
        assert set(os.listdir(run_dir)) - set(_temporary_files(run_dir)) <= {
            "ckpt.pt", "ckpt.pt.pending"}
        if os.path.exists(path):  # never a partial or unloadable checkpoint
            step = _check_against_reference(path, reference, str(record))
            assert step >= progress  # the checkpoint never goes back
            progress = step
        if os.path.exists(pending):  # written atomically too: complete, and a true state
            _check_against_reference(pending, reference, str(record))

    # at a random moment of training (it starts again from scratch)
    worker, upcoming = upcoming, None
    worker.go()
    upcoming = start_next()
    time.sleep(rng.uniform(0.0, 0.4 * NUM_STEPS * step_time))
    kills += worker.kill()
    after_kill(f"random moment (last step printed: {worker.last_step()})")

    # in the middle of training, with a pending checkpoint written, after a random part of a
    # step: inside the next step or the next checkpoint write
    worker = upcoming
    worker.go()
    upcoming = start_next()
    target = rng.randint(min(max(progress + 2, NUM_STEPS // 2), NUM_STEPS - 3), NUM_STEPS - 3)
    assert worker.wait_for(lambda: (worker.last_step() or 0) >= target
                           and os.path.exists(pending)), worker.stderr()
    time.sleep(rng.uniform(0.0, step_time))
    kills += worker.kill()
    assert os.path.exists(path)
    after_kill(f"mid-training (last step printed: {worker.last_step()})")

    # around the final checkpoint: its write, the last evaluation, its confirmation
    worker = upcoming
    worker.go()
    upcoming = start_next()
    assert worker.wait_for(lambda: worker.last_step() == NUM_STEPS), worker.stderr()
    time.sleep(rng.uniform(0.0, 0.02))
    kills += worker.kill()
    after_kill("final checkpoint")
    assert kills >= 3, phases

    # resumed to completion
    worker = upcoming
    worker.go()
    worker.finish()
    result = torch.load(out, weights_only=True)
    assert result["resumed_from"] == path
    for name in ("model", "guide"):
        assert result[name].keys() == reference[name].keys()
        for key, value in reference[name].items():
            assert torch.equal(result[name][key], value), (name, key)
    for key in ("loss", "elbo_per_point", "kl_weight", "lr"):
        assert result["history"][key] == reference["history"][key], key
    assert _check_against_reference(path, reference, str(record)) == NUM_STEPS
    # the completed run leaves its checkpoint only: no pending checkpoint, no temporary file
    assert sorted(os.listdir(run_dir)) == ["ckpt.pt"], phases


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """The directory of a worker killed just after writing the pending checkpoint of step 3
    (before anything confirmed it): ``ckpt.pt`` of step 2 and ``ckpt.pt.pending`` of step 3.
    """
    tmp_path = tmp_path_factory.mktemp("killed")
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    logs.mkdir()
    path = str(run_dir / "ckpt.pt")
    worker = _Worker(path, str(tmp_path / "out.pt"), str(logs), "--kill-after-pending", "3")
    worker.finish(returncode=-signal.SIGKILL)
    model, guide = _modules()
    assert load_checkpoint(path + ".pending", model, guide)[0] == 3
    assert load_checkpoint(path, model, guide)[0] == 2
    assert sorted(os.listdir(run_dir)) == ["ckpt.pt", "ckpt.pt.pending"]
    return run_dir


def _watch(path, seen):
    """A callback that keeps the bytes at ``path`` (or None) after every step."""

    def callback(step, history):
        if not os.path.exists(path):
            seen.append(None)
            return
        with open(path, "rb") as handle:
            seen.append(handle.read())

    return callback


@pytest.mark.parametrize("resume", [False, True])
def test_a_new_run_never_confirms_the_pending_checkpoint_of_a_killed_one(tmp_path, killed_run,
                                                                        resume):
    """The pending checkpoint a killed run leaves was never confirmed (its loss and update
    were not evaluated): a later run on the same path, fresh or resumed, must not move it
    over the checkpoint (which holds the killed run's step 2 until the new run saves), and
    does not leave it behind."""
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    path = str(run_dir / "ckpt.pt")
    with open(run_dir / "ckpt.pt.pending", "rb") as handle:  # and an unfinished write
        (run_dir / ".ckpt.pt.pending.k1ll3d0.tmp").write_bytes(handle.read()[:1000])
    with open(path, "rb") as handle:
        before = handle.read()
    sys.path.insert(0, os.path.dirname(WORKER))
    try:
        from _fault_worker import SETTINGS, problem
    finally:
        sys.path.remove(os.path.dirname(WORKER))
    model, guide, x, times, mask = problem()
    seen = []
    fit(model, guide, x, times, mask, num_steps=5, checkpoint_path=path,
        resume=path if resume else None, progress=False, callback=_watch(path, seen),
        **SETTINGS)
    # the run saves at its end only, after its last callback
    assert seen == [before] * (3 if resume else 5), (
        "the killed run's unconfirmed checkpoint was moved over the checkpoint")
    assert sorted(os.listdir(run_dir)) == ["ckpt.pt"]
    model, guide = _modules()
    assert load_checkpoint(path, model, guide)[0] == 5


def test_fit_distributed_never_confirms_the_pending_checkpoint_of_a_killed_run(tmp_path,
                                                                               killed_run):
    """The same for the Lightning loop: a fresh run must not take the pending checkpoint it
    finds for its own."""
    pytest.importorskip("lightning")
    from pyro_vpf.infer.lightning import fit_distributed

    path = str(tmp_path / "run.ckpt")
    shutil.copy(killed_run / "ckpt.pt.pending", path + ".pending")
    model, guide = _modules()
    x, times = torch.randn(4, 6, 2), torch.linspace(0, 1, 6)
    seen = []
    fit_distributed(model, guide, x, times, num_steps=3, batch_size=2, checkpoint_path=path,
                    accelerator="cpu", seed=0, progress=False, callback=_watch(path, seen))
    # the run saves at its end only, after its last callback
    assert seen == [None] * 3, "the killed run's unconfirmed checkpoint became the checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]
