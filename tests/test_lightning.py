"""Data-parallel SVI with Lightning: the sharded ELBO against one process, on 2 CPU processes.

The multi-process tests fork their workers (``ddp_fork`` and ``start_method="fork"``): a forked
worker inherits the imported modules, where a spawned one would import torch, Pyro and
Lightning again (about ten seconds per run on two cores). The workers inherit one thread each
(GNU OpenMP thread pools do not survive a fork).
"""

import copy
import importlib
import multiprocessing
import subprocess
import sys

import pytest

pytest.importorskip("lightning")

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Trace_ELBO  # noqa: E402
from pyro.poutine.messenger import Messenger  # noqa: E402
from pyro_vpf.guides import AffineGuide  # noqa: E402
from pyro_vpf.models import VPF  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import constraints  # noqa: E402

from pyro_vpf.data import SequenceData, stochastic_lorenz  # noqa: E402
from pyro_vpf.infer.lightning import (  # noqa: E402
    SequenceDataset,
    SVIModule,
    collate_sequences,
    fit_distributed,
    load_lightning_checkpoint,
)
from pyro_vpf.sites import SEQUENCES  # noqa: E402

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="the multi-process tests fork their workers")
# Python >= 3.12 warns when a process with threads (torch's pool) forks; the workers run one
# thread each and touch no lock the parent holds.
fork_ok = pytest.mark.filterwarnings(
    r"ignore:This process \(pid=\d+\) is multi-threaded:DeprecationWarning")

N, K1 = 16, 6  # sequences, points per sequence


class _AtMean(Messenger):
    """Latent sites of the guide at their means: a deterministic, reparameterised draw."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and msg["value"] is None and msg["name"] != SEQUENCES:
            msg["value"] = msg["fn"].mean


class _Subsample(Messenger):
    """The plate over sequences draws the given indices (as if its random draw gave them)."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def _pyro_sample(self, msg):
        if msg["name"] == SEQUENCES:
            msg["value"] = self.index


class MeanELBO(Trace_ELBO):
    """``Trace_ELBO`` with the guide's draws at their means: no noise, so one process and two
    can be compared on a whole global batch (a custom ELBO with ``differentiable_loss``)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, _AtMean()(guide), *args, **kwargs)


def _problem(dtype=torch.float64):
    pyro.set_rng_seed(0)
    data, _ = stochastic_lorenz(N + 4, K1, 1.0, test_fraction=0.2, seed=0)  # 16 to train
    x = data.x[:N].to(dtype)
    model = VPF(3, 2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1).to(dtype)
    guide = AffineGuide(3, 2, hidden_dim=8).to(dtype)
    return model, guide, x, data.times.to(dtype)


def _grads(module):
    return [p.grad.detach().clone() for p in module.parameters()]


def _reference_grads(model, guide, x, times, index):
    """The single-process gradient of the global batch ``index`` through Pyro's own plate
    subsampling (which scales by N / G), on all N sequences: independent of SVIModule."""
    model.zero_grad()
    guide.zero_grad()
    # the guide's plate draws the given indices; the model replays them from the guide trace
    loss = MeanELBO(max_plate_nesting=1).differentiable_loss(
        model, _Subsample(index)(guide), x, times, batch_size=len(index))
    loss.backward()
    return loss.detach(), _grads(model) + _grads(guide)


def _shard_worker(rank, module, shards, times, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=2)
    ddp = torch.nn.parallel.DistributedDataParallel(module)
    try:
        loss = ddp(shards[rank], times)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        mean = loss.detach().clone()
        torch.distributed.all_reduce(mean)
        if rank == 0:
            torch.save({"loss": mean / 2, "grads": _grads(module)}, out_file)
    finally:
        # DDP's reducer lets go of the process group first: a gloo group destroyed from the
        # reducer's destructor, after destroy_process_group, can hang joining its threads
        del ddp
        torch.distributed.destroy_process_group()


@needs_fork
@fork_ok
def test_allreduced_shard_gradients_equal_the_single_process_gradient(tmp_path):
    model, guide, x, times = _problem()
    index = torch.tensor([3, 14, 0, 9, 7, 12, 5, 1])  # a global batch of G = 8 of N = 16
    ref_loss, ref_grads = _reference_grads(model, guide, x, times, index)

    module = SVIModule(model, guide, MeanELBO(max_plate_nesting=1), num_sequences=N)
    module.zero_grad()
    shards = [x[index[:4]], x[index[4:]]]  # b = 4 per process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # inherited by the forked workers: no OpenMP pool after the fork
    try:
        torch.multiprocessing.start_processes(
            _shard_worker, args=(module, shards, times, tmp_path / "init", tmp_path / "out.pt"),
            nprocs=2, start_method="fork")
    finally:
        torch.set_num_threads(threads)
    out = torch.load(tmp_path / "out.pt")

    torch.testing.assert_close(out["loss"], ref_loss, rtol=1e-10, atol=1e-8)
    assert len(out["grads"]) == len(ref_grads)
    for got, want in zip(out["grads"], ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # the comparison has teeth: a shard loss is N / b (= 4) times its unscaled ELBO, so a
    # missing or doubled factor would be off by 2x or more against the reference
    unscaled = MeanELBO(max_plate_nesting=1).differentiable_loss(model, guide, shards[0], times)
    torch.testing.assert_close(module(shards[0], times), unscaled * N / 4)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same short training on one process and on two (ddp_fork), same seeds."""
    pyro.clear_param_store()
    model, guide, x, times = _problem()
    start = (copy.deepcopy(model), copy.deepcopy(guide))
    settings = dict(num_steps=4, batch_size=8, lr=2e-2, elbo=MeanELBO(max_plate_nesting=1),
                    accelerator="cpu", seed=3, progress=False)
    one = (copy.deepcopy(model), copy.deepcopy(guide))
    history_one = fit_distributed(*one, x, times, devices=1, **settings)
    path = tmp_path_factory.mktemp("ddp") / "run.ckpt"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        # forked workers must not start OpenMP thread pools of their own (GNU OpenMP is not
        # fork-safe): they inherit one thread, and Lightning leaves a set OMP_NUM_THREADS alone
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            history_two = fit_distributed(model, guide, x, times, devices=2,
                                          strategy="ddp_fork", checkpoint_path=str(path),
                                          **settings)
        finally:
            torch.set_num_threads(threads)
    return {"start": start, "one": one, "two": (model, guide), "history_one": history_one,
            "history_two": history_two, "checkpoint": path, "x": x, "times": times,
            "param_store_size": len(pyro.get_param_store())}


@needs_fork
@fork_ok
def test_two_process_run_matches_one_process_run(two_runs):
    history_one, history_two = two_runs["history_one"], two_runs["history_two"]
    assert len(history_one) == len(history_two) == 4
    # the logged loss: the mean of the two processes' N/b-scaled shard losses, i.e. the
    # N/G-scaled loss of the whole global batch that the single process sees
    torch.testing.assert_close(torch.tensor(history_two.loss), torch.tensor(history_one.loss),
                               rtol=1e-9, atol=0)
    assert all(s > 0 for s in history_two.step_seconds)
    assert history_two.kl_weight == [1.0] * 4
    moved = False
    for (a, b), start in zip(zip(two_runs["one"], two_runs["two"], strict=True),
                             two_runs["start"], strict=True):
        for p1, p2, p0 in zip(a.parameters(), b.parameters(), start.parameters(), strict=True):
            torch.testing.assert_close(p2, p1, rtol=1e-7, atol=1e-9)
            moved |= not torch.equal(p2, p0)
    assert moved  # the workers' weights came back into the caller's modules
    assert two_runs["param_store_size"] == 0  # the programs never registered anything there


@needs_fork
@fork_ok
def test_ddp_checkpoint_loads_into_a_plain_model_and_guide(two_runs):
    model = VPF(3, 2, hidden_dim=8, num_flow_layers=1, num_obs_flow_layers=1).double()
    guide = AffineGuide(3, 2, hidden_dim=8).double()
    step, history, config = load_lightning_checkpoint(two_runs["checkpoint"], model, guide)
    assert step == 4 and history.loss == two_runs["history_two"].loss
    assert config["num_sequences"] == N
    trained_model, trained_guide = two_runs["two"]
    for a, b in zip(list(model.parameters()) + list(guide.parameters()),
                    list(trained_model.parameters()) + list(trained_guide.parameters()),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        z, x = model.sample_prior(torch.linspace(0, 1, 23, dtype=torch.float64), 5)
    assert z.shape == (5, 23, 2) and x.shape == (5, 23, 3) and torch.isfinite(x).all()
    from pyro_vpf.evaluation import elbo

    scores = elbo(model, guide, two_runs["x"][:4], two_runs["times"], num_particles=2)
    assert scores.per_sequence.shape == (4,) and torch.isfinite(scores.per_sequence).all()


def test_resume_continues_the_step_count_and_history(tmp_path):
    model, guide, x, times = _problem(torch.float32)
    path = str(tmp_path / "run.ckpt")
    first = fit_distributed(model, guide, x, times, num_steps=2, batch_size=4, lr=1e-2,
                            accelerator="cpu", checkpoint_path=path, seed=0, progress=False)
    assert len(first) == 2
    resumed = fit_distributed(model, guide, x, times, num_steps=3, batch_size=4, lr=1e-2,
                              accelerator="cpu", checkpoint_path=path, resume=path, seed=0,
                              progress=False)
    assert len(resumed) == 3 and resumed.loss[:2] == first.loss
    assert all(v == v for v in resumed.elbo_per_point)  # finite, recorded per point
    # the learning rate of every step, as fit records it (ClippedAdam's default decay: 1)
    assert resumed.lr == pytest.approx([1e-2] * 3)


def test_any_elbo_with_a_differentiable_loss_trains_any_model_of_the_collection():
    from pyro_vpf.models import LatentSDE

    from pyro_vpf.infer.sde_matching import SDEMatchingELBO

    model = LatentSDE(3, 2, 8, num_obs_flow_layers=1, time_embed_dim=4)
    guide = AffineGuide(3, 2, 8)
    x, times = torch.randn(8, 6, 3), torch.linspace(0, 1, 6)
    mask = torch.rand(8, 6) > 0.2
    before = [p.detach().clone() for p in model.parameters()]
    history = fit_distributed(model, guide, x, times, mask, num_steps=2, batch_size=4,
                              lr=1e-2, elbo=SDEMatchingELBO(num_time_samples=4),
                              accelerator="cpu", seed=0, progress=False)
    assert len(history) == 2 and all(v == v for v in history.elbo_per_point)
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_non_finite_values_stop_training_without_a_checkpoint(tmp_path):
    model, guide, x, times = _problem(torch.float32)
    with torch.no_grad():
        model.prior.init_loc.fill_(float("nan"))
    path = tmp_path / "run.ckpt"
    with pytest.raises(FloatingPointError, match="no checkpoint yet"):
        fit_distributed(model, guide, x, times, num_steps=2, batch_size=4, accelerator="cpu",
                        checkpoint_path=str(path), seed=0, progress=False)
    assert not path.exists()


def test_dataset_and_collate_keep_shared_times_shared():
    x = torch.randn(5, 4, 2)
    shared = torch.linspace(0, 1, 4)
    batch = collate_sequences([SequenceDataset(x, shared)[i] for i in (0, 3)])
    assert batch[1] is shared and batch[2] is None and torch.equal(batch[0], x[[0, 3]])
    rows = shared + torch.rand(5, 1)
    mask = torch.rand(5, 4) > 0.3
    xb, tb, mb = collate_sequences([SequenceDataset(x, rows, mask)[i] for i in (4, 1)])
    assert torch.equal(tb, rows[[4, 1]]) and torch.equal(mb, mask[[4, 1]])
    with pytest.raises(ValueError, match="times"):
        SequenceDataset(x, torch.zeros(3, 4))
    # the dataset is a view of the collection's one container
    data = SequenceData(x, rows, mask)
    item = SequenceDataset(data)[2]
    assert torch.equal(item[0], x[2]) and torch.equal(item[1], rows[2])
    assert torch.equal(item[2], mask[2]) and SequenceDataset(data).data is data
    with pytest.raises(ValueError, match="SequenceData alone"):
        SequenceDataset(data, rows)


def test_bad_arguments_name_themselves():
    model, guide, x, times = _problem(torch.float32)
    with pytest.raises(ValueError, match="devices"):
        fit_distributed(model, guide, x, times, devices=0)
    with pytest.raises(ValueError, match="num_nodes"):
        fit_distributed(model, guide, x, times, num_nodes=0)
    with pytest.raises(ValueError, match="batch_size"):
        fit_distributed(model, guide, x, times, batch_size=N + 1)
    with pytest.raises(ValueError, match="multiple"):
        fit_distributed(model, guide, x, times, batch_size=7, devices=2)
    with pytest.raises(ValueError, match="checkpoint_path"):
        fit_distributed(model, guide, x, times, checkpoint_every=2)


class _FreeParamModel(nn.Module):
    """A model with a free ``pyro.param``, which DDP could not see."""

    obs_dim = 1

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, times, mask=None, *, kl_weight=1.0):
        pyro.module("free_param_model", self)
        noise = pyro.param("noise", torch.ones(1), constraint=constraints.positive)
        with pyro.plate(SEQUENCES, x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(self.weight, noise).expand(
                x.shape[1:]).to_event(2), obs=x)


def test_free_pyro_params_are_refused():
    model = _FreeParamModel()
    module = SVIModule(model, lambda *args, **kwargs: None, num_sequences=4)
    with pytest.raises(ValueError, match="noise"):
        module(torch.zeros(2, 3, 1), torch.linspace(0, 1, 3))


def test_missing_lightning_names_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "lightning" or n.startswith("lightning.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "pyro_vpf.infer.lightning")
    with pytest.raises(ImportError, match=r"pyro-vpf\[distributed\]"):
        importlib.import_module("pyro_vpf.infer.lightning")


def test_core_package_imports_without_lightning():
    code = ("import sys; sys.modules['lightning'] = None; "
            "import pyro_vpf, pyro_vpf.infer, pyro_vpf.models, pyro_vpf.guides, pyro_vpf.cli, "
            "pyro_vpf.cli.run, pyro_vpf.evaluation; "
            "assert not [m for m in sys.modules if m.startswith('lightning.')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_resuming_from_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    import os

    from test_checkpoints import MARKER, _RunsCode

    model, guide, x, times = _problem(torch.float32)
    path = str(tmp_path / "run.ckpt")
    fit_distributed(model, guide, x, times, num_steps=1, batch_size=4, lr=1e-2,
                    accelerator="cpu", checkpoint_path=path, seed=0, progress=False)
    state = torch.load(path, weights_only=False)
    state["note"] = _RunsCode()
    torch.save(state, path)
    os.environ.pop(MARKER, None)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        fit_distributed(model, guide, x, times, num_steps=2, batch_size=4, lr=1e-2,
                        accelerator="cpu", resume=path, seed=0, progress=False)
    assert MARKER not in os.environ


def test_fit_distributed_keeps_the_divergence_contract(tmp_path):
    """As fit: parameters that are finite but give non-finite values stop the run with one
    FloatingPointError, and the checkpoint left holds parameters whose loss was finite (not
    the ones saved just before the failing step); resuming it trains on."""
    from pyro_vpf.infer import load_checkpoint

    model, guide, x, times = _problem(torch.float32)
    path = str(tmp_path / "run.ckpt")

    def blow_up(step, history):  # finite, but far too large: activations overflow
        if step == 3:
            with torch.no_grad():
                for p in model.likelihood.parameters():
                    p.mul_(1e30)

    with pytest.raises(FloatingPointError, match="non-finite|loss became"):
        fit_distributed(model, guide, x, times, num_steps=20, batch_size=4, lr=1e-3,
                        accelerator="cpu", checkpoint_path=path, checkpoint_every=1, seed=0,
                        callback=blow_up, progress=False)
    assert not (tmp_path / "run.ckpt.pending").exists()
    fresh_model, fresh_guide, _, _ = _problem(torch.float32)
    step, _, _ = load_checkpoint(path, fresh_model, fresh_guide)
    assert step == 3
    loss = pyro.infer.Trace_ELBO().loss(fresh_model, fresh_guide, x, times)
    assert loss == loss and abs(loss) != float("inf")
    model, guide, _, _ = _problem(torch.float32)
    history = fit_distributed(model, guide, x, times, num_steps=step + 3, batch_size=4,
                              lr=1e-4, accelerator="cpu", checkpoint_path=path, resume=path,
                              seed=0, progress=False)
    assert len(history) == step + 3 and all(v == v for v in history.loss)
