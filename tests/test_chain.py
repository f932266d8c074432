"""The Gaussian-chain engine: the one associative scan in both executions, its operators, and
the readout filter, against loops written out here and dense Gaussians."""

import pytest
import torch
from pyro.distributions import MultivariateNormal

from pyro_vpf.chain import (
    affine_combine,
    choose_execution,
    covariance_combine,
    gaussian_combine,
    parallel_scan,
    scalar_affine_combine,
    scan,
    sequential_scan,
)
from pyro_vpf.chain.associative import SEQUENTIAL_MAX_STEPS, SEQUENTIAL_MIN_WORK
from pyro_vpf.chain.elements import gaussian_covariance_combine
from pyro_vpf.distributions import GaussMarkovReadoutPath, ProcessPath
from pyro_vpf.ops import linear_recurrence, matrix_linear_recurrence
from pyro_vpf.processes import make_base, per_coordinate, psd_root

LENGTHS = (1, 2, 3, 5, 8, 13, 40)


def _spd(*shape, scale=1.0):
    X = torch.randn(*shape, dtype=torch.float64)
    return scale * (X @ X.transpose(-1, -2) / shape[-1]
                    + 0.1 * torch.eye(shape[-1], dtype=torch.float64))


def _gaussian_elements(K, S, batch=(3,)):
    """Random valid elements (A, b, C, eta, J) of the parallel Kalman filter."""
    A = 0.5 * torch.randn(K, *batch, S, S, dtype=torch.float64)
    b = torch.randn(K, *batch, S, 2, dtype=torch.float64)
    eta = torch.randn(K, *batch, S, 2, dtype=torch.float64)
    return [A, b, _spd(K, *batch, S, S), eta, _spd(K, *batch, S, S)]


def _loop(combine, elements, reverse=False):
    """Prefixes (or suffixes) by the definition, one combine at a time."""
    K = elements[0].shape[0]
    out = []
    for k in range(K):
        segment = range(k, K) if reverse else range(k + 1)
        acc = None
        for j in segment:
            element = [t[j] for t in elements]
            acc = element if acc is None else combine(acc, element)
        out.append(acc)
    return [torch.stack(torch.broadcast_tensors(*[o[i] for o in out])) for i in
            range(len(elements))]


CASES = {
    "scalar_affine": (scalar_affine_combine,
                      lambda K: [torch.rand(K, 4, dtype=torch.float64),
                                 torch.randn(K, 4, dtype=torch.float64)]),
    "affine": (affine_combine,
               lambda K: [0.7 * torch.randn(K, 3, 3, dtype=torch.float64),
                          torch.randn(K, 3, 5, dtype=torch.float64)]),
    "covariance": (covariance_combine,
                   lambda K: [0.7 * torch.randn(K, 2, 3, 3, dtype=torch.float64),
                              _spd(K, 2, 3, 3)]),
    "gaussian": (gaussian_combine, lambda K: _gaussian_elements(K, 3)),
    "gaussian_covariance": (gaussian_covariance_combine,
                            lambda K: [t for i, t in enumerate(_gaussian_elements(K, 3))
                                       if i in (0, 2, 4)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", LENGTHS)
def test_both_executions_equal_the_definition(case, reverse, K):
    torch.manual_seed(K)
    combine, make = CASES[case]
    elements = make(K)
    expected = _loop(combine, elements, reverse)
    for run in (parallel_scan, sequential_scan):
        got = run(combine, elements, reverse=reverse)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape
            assert torch.allclose(g, e, rtol=1e-10, atol=1e-10), (run.__name__, case)


@pytest.mark.parametrize("reverse", [False, True])
def test_executions_have_equal_gradients(reverse):
    torch.manual_seed(0)
    elements = [t.requires_grad_() for t in _gaussian_elements(13, 3)]
    weights = [torch.randn_like(t) for t in elements]
    all_grads = []
    for run in (parallel_scan, sequential_scan):
        out = run(gaussian_combine, elements, reverse=reverse)
        loss = sum((w * o).sum() for w, o in zip(weights, out, strict=True))
        grads = torch.autograd.grad(loss, elements)
        # C and J are symmetric: only the gradient's symmetric part is defined by the maths
        # (the two executions multiply them in different orders)
        all_grads.append([g + g.transpose(-1, -2) if i in (2, 4) else g
                          for i, g in enumerate(grads)])
    for g_par, g_seq in zip(*all_grads, strict=True):
        assert torch.allclose(g_par, g_seq, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("run", [parallel_scan, sequential_scan])
def test_gradcheck_of_the_kalman_scan(run):
    torch.manual_seed(1)
    A, b, C, eta, J = _gaussian_elements(5, 2, batch=())
    root_C, root_J = psd_root(C).requires_grad_(), psd_root(J).requires_grad_()
    A, b, eta = A.requires_grad_(), b.requires_grad_(), eta.requires_grad_()

    def f(A, b, root_C, eta, root_J):
        elements = [A, b, root_C @ root_C.transpose(-1, -2), eta,
                    root_J @ root_J.transpose(-1, -2)]
        return tuple(run(gaussian_combine, elements))

    assert torch.autograd.gradcheck(f, (A, b, root_C, eta, root_J))


def test_recurrences_agree_in_both_executions():
    torch.manual_seed(2)
    a = torch.rand(40, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    par = linear_recurrence(a, b, execution="parallel")
    seq = linear_recurrence(a, b, execution="sequential")
    assert torch.allclose(par, seq, rtol=1e-12, atol=1e-12)
    g_par = torch.autograd.grad(par.square().sum(), (a, b))
    g_seq = torch.autograd.grad(seq.square().sum(), (a, b))
    for x, y in zip(g_par, g_seq, strict=True):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12)
    A = 0.6 * torch.randn(4, 40, 3, 3, dtype=torch.float64)
    v = torch.randn(7, 4, 40, 3, dtype=torch.float64)
    assert torch.allclose(matrix_linear_recurrence(A, v, execution="parallel"),
                          matrix_linear_recurrence(A, v, execution="sequential"),
                          rtol=1e-10, atol=1e-10)


def test_rule_and_its_arguments():
    with pytest.raises(ValueError, match="execution"):
        choose_execution(10, 3, "cpu", "fast")
    with pytest.raises(ValueError, match="execution"):
        scan(scalar_affine_combine, [torch.ones(3), torch.ones(3)], execution="loop")
    big = SEQUENTIAL_MIN_WORK
    assert choose_execution(40, 20, "cpu", work=big) == "sequential"
    assert choose_execution(40, 2, "cpu", work=big // 2) == "parallel"
    assert choose_execution(SEQUENTIAL_MAX_STEPS + 1, 20, "cpu", work=big) == "parallel"
    # an accelerator runs the parallel scan whatever the sizes (nothing assumes the CPU)
    assert choose_execution(40, 20, torch.device("meta"), work=big) == "parallel"
    assert choose_execution(40, 20, "meta", execution="sequential") == "sequential"


def _dense_readout_log_prob(y0, loc0, cov0, A, Q, H, value):
    """log p(y_{1:K} | y_0) from the joint Gaussian of the states, built step by step."""
    K, S = A.shape[-3], A.shape[-1]
    # s_k = Phi_k s_0 + sum_j Phi_{k,j} w_j: the covariance of all states, block by block
    blocks = [[None] * (K + 1) for _ in range(K + 1)]
    propagate = [torch.eye(S, dtype=A.dtype)]
    for k in range(K):
        propagate.append(A[k] @ propagate[-1])
    means = [loc0] + [p @ loc0 for p in propagate[1:]]
    marg = [cov0]
    for k in range(K):
        marg.append(A[k] @ marg[-1] @ A[k].T + Q[k])
    for i in range(K + 1):
        blocks[i][i] = marg[i]
        transfer = torch.eye(S, dtype=A.dtype)
        for j in range(i + 1, K + 1):
            transfer = A[j - 1] @ transfer
            blocks[j][i] = transfer @ marg[i]
            blocks[i][j] = blocks[j][i].T
    cov = torch.cat([torch.cat(row, -1) for row in blocks], -2)
    readout = torch.block_diag(*([H] * (K + 1)))
    mean = readout @ torch.cat(means)
    ycov = readout @ cov @ readout.T
    R = H.shape[0]
    # condition the readout path on y_0
    y = torch.cat([y0, value.flatten()])
    m0, m1 = mean[:R], mean[R:]
    c00, c10, c11 = ycov[:R, :R], ycov[R:, :R], ycov[R:, R:]
    gain = torch.linalg.solve(c00, c10.T).T
    cond = MultivariateNormal(m1 + gain @ (y[:R] - m0), c11 - gain @ c10.T)
    return cond.log_prob(y[R:])


@pytest.mark.parametrize("execution", ["parallel", "sequential"])
def test_readout_filter_against_the_dense_gaussian(execution):
    torch.manual_seed(3)
    K, S = 6, 4
    A = 0.8 * torch.randn(K, S, S, dtype=torch.float64)
    Q = _spd(K, S, S, scale=0.3)
    cov0 = _spd(S, S)
    loc0 = torch.randn(S, dtype=torch.float64)
    H = torch.randn(2, S, dtype=torch.float64)
    y0 = torch.randn(2, dtype=torch.float64)
    value = torch.randn(K, 2, dtype=torch.float64)
    path = GaussMarkovReadoutPath(y0, loc0, cov0, A, torch.zeros(K, S, dtype=torch.float64),
                                  Q, H, execution=execution)
    expected = _dense_readout_log_prob(y0, loc0, cov0, A, Q, H, value)
    assert torch.allclose(path.log_prob(value), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("base", ["matern52", "trend+cycle", "fbm"])
def test_process_path_executions_agree_with_per_sequence_times(base):
    torch.manual_seed(4)
    process = per_coordinate(make_base(base, 1.0), 2).double()
    times = torch.sort(torch.rand(3, 12, dtype=torch.float64), -1).values
    y0 = torch.randn(3, 2, dtype=torch.float64)
    value = torch.randn(5, 3, 11, 2, dtype=torch.float64, requires_grad=True)
    results = []
    for execution in ("parallel", "sequential"):
        path = ProcessPath(process, y0, times, execution=execution)
        log_p = path.log_prob(value)
        grads = torch.autograd.grad(log_p.sum(), [value, *process.parameters()])
        results.append((log_p, grads))
    (lp_par, g_par), (lp_seq, g_seq) = results
    assert torch.allclose(lp_par, lp_seq, rtol=1e-10, atol=1e-10)
    for x, y in zip(g_par, g_seq, strict=True):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-10)


def test_benchmark_runs_and_prints_the_rule(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    path = folder / "bench_chain.py"
    spec = importlib.util.spec_from_file_location("bench_chain", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--repeats", "1", "--budget", "2e5"]) == 0
    out = capsys.readouterr().out
    assert "seq/par" in out and "gaussian" in out and "affine" in out


@pytest.mark.parametrize("diagonal", [False, True])
def test_conditioning_executions_agree(diagonal):
    # the backward information filter one step at a time against the parallel suffix scan of
    # the Kalman elements: posterior chain and evidence, values and gradients
    from pyro_vpf.distributions import gauss_markov_evidence, gauss_markov_posterior

    torch.manual_seed(5)
    B, K, D = 3, 9, 3
    prior = (B, K, D) if diagonal else (B, K, D, D)
    F = (0.3 * torch.rand(prior, dtype=torch.float64) + 0.5).requires_grad_()
    C = (0.2 * torch.rand(prior, dtype=torch.float64) + 0.3)
    if not diagonal:
        C = torch.tril(C)
    C.requires_grad_()
    c = torch.randn(B, K, D, dtype=torch.float64)
    J = _spd(B, K + 1, D, D, scale=0.5)
    J[:, 2] = 0.0  # a step with no information
    h = torch.randn(B, K + 1, D, dtype=torch.float64)
    loc0 = torch.randn(D, dtype=torch.float64)
    C0 = torch.linalg.cholesky(_spd(D, D))
    results = []
    for execution in ("parallel", "sequential"):
        post = gauss_markov_posterior(loc0, C0, F, c, C, J, h, diagonal=diagonal,
                                      execution=execution)
        loss = sum((torch.sin(t) if t.dim() else t).sum() for t in post)
        grads = torch.autograd.grad(loss, (F, C))
        results.append((post, grads))
        if not diagonal:
            loc, log_z = gauss_markov_evidence(loc0, C0, F, c, C, J, h, execution=execution)
            results[-1] += (loc, log_z)
    (post_p, grad_p, *ev_p), (post_s, grad_s, *ev_s) = results
    for a, b in zip(post_p + grad_p + tuple(ev_p), post_s + grad_s + tuple(ev_s), strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", LENGTHS)
def test_a_recurrence_that_reads_its_vectors_only(reverse, K):
    # needed=(1,): the affine operators skip the matrix prefixes and return the same vectors
    torch.manual_seed(K)
    for combine, make in (CASES["affine"], CASES["scalar_affine"]):
        elements = make(K)
        full = _loop(combine, elements, reverse)
        for run in (parallel_scan, sequential_scan):
            got = run(combine, elements, reverse=reverse, needed=(1,))
            assert got[0] is None
            assert torch.allclose(got[1], full[1], rtol=1e-10, atol=1e-10)
