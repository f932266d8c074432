"""Base processes and their path density, against independent references: closed-form
kernels evaluated densely in high precision, Van Loan in high precision, the sequential
recurrence, sample moments."""

import mpmath
import pytest
import torch

from pyro_vpf.distributions import GaussMarkovReadoutPath, ProcessPath
from pyro_vpf.processes import (
    OU,
    IntegratedRandomWalk,
    LocalLinearTrend,
    Matern,
    Oscillator,
    Sum,
    psd_root,
    van_loan,
)
from tests import kernels

D64 = torch.float64


def _matern(nu):
    return Matern(nu, 0.8, 1.3), kernels.matern(nu, 0.8, 1.3)


def _oscillator():
    p = Oscillator(0.7, 0.3, 1.1, num_harmonics=2)
    return p, kernels.oscillator(0.7, 0.3, p.scale.tolist())


# (process factory, smallest gap as a multiple of the time scale 1.0)
CASES = {
    "ou": (lambda t0: (OU(1.25, 1.3 * 2.5**0.5), kernels.matern(0.5, 0.8, 1.3)), 1e-6),
    "matern12": (lambda t0: _matern(0.5), 1e-6),
    "matern32": (lambda t0: _matern(1.5), 1e-6),
    # below ~1e-3 lengthscales beside gaps of 1e3, the parallel filter's combine loses digits
    # for twice-differentiable paths (measured 3e-4 relative at 1e-4 in float64)
    "matern52": (lambda t0: _matern(2.5), 1e-3),
    "oscillator": (lambda t0: _oscillator(), 1e-6),
    "irw": (lambda t0: (IntegratedRandomWalk(0.7, 1.2, 0.5),
                        kernels.local_linear_trend(0.0, 0.7, 1.2, 0.5, t0)), 1e-6),
}


def _irregular_times(smallest, seed):
    g = torch.Generator().manual_seed(seed)
    gaps = torch.tensor([smallest, 1e-2, 0.3, 1e3, 0.05, smallest, 2.0, 1e-3, 0.7, 10.0],
                        dtype=D64)
    gaps = gaps[torch.randperm(len(gaps), generator=g)]
    return torch.cat([torch.zeros(1, dtype=D64), gaps.cumsum(0)]) + 3.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_path_log_prob_matches_dense_kernel(name, float64):
    """Per-sequence irregular times, gaps from `smallest` to 1e3 time scales: log p(y_{1:K}|y_0)
    equals the dense high-precision Gaussian built from the process's covariance kernel."""
    factory, smallest = CASES[name]
    times = torch.stack([_irregular_times(smallest, seed) for seed in range(3)])  # (B, K+1)
    process, _ = factory(times[0, 0].item())
    if name == "oscillator":  # kernel scales are read after construction
        process, _ = factory(0.0)
    path = ProcessPath(process.expand((1,)), torch.randn(3, 1), times)
    values = path.sample()  # (B, K, 1)
    log_prob = path.log_prob(values)
    assert log_prob.shape == (3,)
    for b in range(3):
        _, kernel = factory(times[b, 0].item())
        if name == "oscillator":
            kernel = kernels.oscillator(0.7, 0.3, process.scale.tolist())
        ref = kernels.conditional_path_log_density(
            kernel, times[b].tolist(), [path.y0[b, 0].item()] + values[b, :, 0].tolist())
        assert abs(log_prob[b].item() - ref) <= 1e-6 * abs(ref), (b, log_prob[b].item(), ref)


def test_sum_with_trend_and_periodic_season_matches_dense_kernel(float64):
    times = _irregular_times(1e-4, 7)[:8]
    trend = LocalLinearTrend(0.2, 0.3, init_level_scale=1.5, init_slope_scale=0.4)
    cycle = Oscillator(1.0, periodic=True, scale=0.8, num_harmonics=2)
    noise = OU(2.0, 0.5)
    base = Sum(trend, cycle, noise)
    assert base.state_dim == 7 and not base.deterministic and cycle.deterministic
    # OU(rate 2, scale 0.5): stationary sd 0.5 / sqrt(4) = 0.25, lengthscale 1 / 2
    kernel = kernels.total(kernels.local_linear_trend(0.2, 0.3, 1.5, 0.4, times[0].item()),
                           kernels.oscillator(1.0, 0.0, cycle.scale.tolist()),
                           kernels.matern(0.5, 0.5, 0.25))
    path = ProcessPath(base.expand((2,)), torch.randn(2), times)
    values = path.sample()
    log_prob = path.log_prob(values)
    for d in range(2):
        ref = kernels.conditional_path_log_density(
            kernel, times.tolist(), [path.y0[d].item()] + values[:, d].tolist())
        # the two coordinates are independent: score each alone
        single = ProcessPath(base, path.y0[d:d + 1], times).log_prob(values[:, d:d + 1])
        assert abs(single.item() - ref) <= 1e-6 * abs(ref)
    assert torch.allclose(log_prob, sum(
        ProcessPath(base, path.y0[d:d + 1], times).log_prob(values[:, d:d + 1])
        for d in range(2)))


def _all_processes():
    return {"ou": OU(1.3, 0.7), "matern32": Matern(1.5, 0.6, 1.2),
            "matern52": Matern(2.5, 0.6, 1.2), "trend": LocalLinearTrend(0.3, 0.2),
            "oscillator": Oscillator(0.9, 0.2, 1.1, num_harmonics=2),
            "season": Oscillator(1.0, periodic=True, num_harmonics=3),
            "sum": Sum(LocalLinearTrend(0.3, 0.2), Oscillator(0.9, 0.2), Matern(1.5, 0.4))}


@pytest.mark.parametrize("name", sorted(_all_processes()))
@pytest.mark.parametrize("dt", [1e-6, 1e-3, 0.1, 1.0, 30.0])
def test_transition_matches_high_precision_van_loan(name, dt, float64):
    """Entry by entry, relative to each entry (or to the matrix where an entry is ~0)."""
    process = _all_processes()[name].double()
    A, Q = process.transition(torch.tensor(dt))
    A_ref, Q_ref = kernels.van_loan(process.drift().tolist(), process.diffusion().tolist(),
                                    mpmath.mpf(dt))
    for mine, ref in ((A, A_ref), (Q, Q_ref)):
        ref = torch.tensor([[float(ref[i, j]) for j in range(ref.cols)]
                            for i in range(ref.rows)], dtype=D64)
        # relative to each entry; entries at rounding level of the matrix (a rotation by a
        # large angle is exact to about angle * eps) are compared with the matrix's scale
        floor = 1e-14 * (1 + 10 * dt) * ref.abs().max()
        excess = (mine.detach() - ref).abs() - (1e-9 * ref.abs() + floor)
        assert (excess <= 0).all(), (name, dt, excess.max().item())


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_matern_stationary_readout_covariance_is_the_kernel(nu, float64):
    process = Matern(nu, 0.7, 1.4)
    kernel = kernels.matern(nu, 0.7, 1.4)
    P = process.initial_covariance()
    F, LLt = process.drift(), process.diffusion()
    lyapunov = F @ P + P @ F.T + LLt
    assert lyapunov.abs().max() <= 1e-10 * P.abs().max()
    H = process.readout()
    for r in (0.0, 0.01, 0.5, 3.0):
        A, _ = process.transition(torch.tensor(r))
        value = (H @ A @ P @ H).item()
        assert value == pytest.approx(float(kernel(0, mpmath.mpf(r))), rel=1e-12, abs=1e-300)


def test_van_loan_agrees_with_closed_forms_at_moderate_gaps(float64):
    for process in _all_processes().values():
        dt = torch.tensor([0.05, 0.5, 2.0])
        A, Q = process.transition(dt)
        A_vl, Q_vl = van_loan(process.drift(), process.diffusion(), dt)
        assert torch.allclose(A, A_vl, atol=1e-10) and torch.allclose(Q, Q_vl, atol=1e-9)


def test_rsample_is_the_sequential_recurrence_on_the_same_noise(float64):
    process = Sum(Matern(1.5, 0.5), Oscillator(0.8, 0.1)).expand((3,))
    times = torch.rand(2, 12, dtype=D64).cumsum(-1)
    path = ProcessPath(process, torch.randn(2, 3), times)
    inner = path._inner(process, path.y0)
    torch.manual_seed(5)
    draw = inner.rsample((4,))  # (4, 2, 3, K, 1)
    torch.manual_seed(5)
    S, K = process.state_dim, times.shape[-1] - 1
    eps0 = torch.randn(4, 2, 3, S, dtype=D64)
    eps = torch.randn(4, 2, 3, K, S, dtype=D64)
    loc0, _, projection = inner._start()
    s = loc0 + (projection @ psd_root(inner.cov0) @ eps0.unsqueeze(-1)).squeeze(-1)
    roots = psd_root(inner.noise_cov)
    H = inner.readout[..., 0, :]
    for k in range(K):
        s = (inner.transition[..., k, :, :] @ s.unsqueeze(-1)).squeeze(-1) \
            + (roots[..., k, :, :] @ eps[..., k, :].unsqueeze(-1)).squeeze(-1)
        assert torch.allclose((s * H).sum(-1), draw[..., k, 0], atol=1e-10)
    # the readout starts exactly at y0
    assert torch.allclose((loc0 * H).sum(-1), path.y0.expand(2, 3), atol=1e-12)


def test_sample_moments_match_the_conditional_kernel(float64):
    """Mean and covariance of 40 000 draws given y_0 against the dense conditional Gaussian."""
    nu, ell, sigma = 1.5, 0.6, 1.2
    times = torch.tensor([0.0, 0.1, 0.35, 0.4, 1.2], dtype=D64)
    y0 = torch.tensor([0.8], dtype=D64)
    draws = ProcessPath(Matern(nu, ell, sigma).expand((1,)), y0, times).sample((40_000,))[..., 0]
    k = kernels.matern(nu, ell, sigma)
    C = torch.tensor([[float(k(mpmath.mpf(a), mpmath.mpf(b))) for b in times.tolist()]
                      for a in times.tolist()], dtype=D64)
    mean = C[1:, 0] / C[0, 0] * y0
    cov = C[1:, 1:] - torch.outer(C[1:, 0], C[0, 1:]) / C[0, 0]
    sd = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() < 4.5 * sd / 200).all()
    emp = torch.cov(draws.T)
    assert ((emp - cov).abs() < 4.5 * torch.outer(sd, sd) * (2 / 40_000) ** 0.5 + 1e-12).all()


def test_float32_and_gradients_reach_every_parameter():
    base = Sum(LocalLinearTrend(0.3, 0.2), Oscillator(1.0, 0.1), Matern(2.5, 0.5)).expand((2,))
    times = torch.linspace(0, 3, 41)
    path = ProcessPath(base, torch.zeros(4, 2), times)
    y = path.rsample()
    assert y.dtype == torch.float32 and y.shape == (4, 40, 2)
    path.log_prob(y.detach()).sum().backward()
    for name, p in base.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_readout_path_shapes_and_batch():
    S, K = 3, 6
    d = GaussMarkovReadoutPath(torch.zeros(5, 1), torch.zeros(S), torch.eye(S),
                               torch.eye(S).expand(K, S, S), torch.zeros(K, S),
                               0.1 * torch.eye(S).expand(K, S, S), torch.eye(S)[:1])
    assert d.batch_shape == (5,) and d.event_shape == (K, 1)
    assert d.sample((2,)).shape == (2, 5, K, 1)
    assert d.log_prob(d.sample((2,))).shape == (2, 5)
    assert d.expand((3, 5)).log_prob(torch.zeros(3, 5, K, 1)).shape == (3, 5)


@pytest.mark.parametrize("make, argument", [
    (lambda: Matern(2.0), "nu"),
    (lambda: Matern(1.5, lengthscale=-1.0), "lengthscale"),
    (lambda: Matern(1.5, scale=0.0), "scale"),
    (lambda: OU(rate=0.0), "rate"),
    (lambda: LocalLinearTrend(slope_scale=-0.1), "slope_scale"),
    (lambda: Oscillator(frequency=-1.0), "frequency"),
    (lambda: Oscillator(num_harmonics=0), "num_harmonics"),
    (lambda: OU(rate=float("nan")), "rate"),
])
def test_bad_parameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_bad_paths_are_refused():
    times = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="process"):
        ProcessPath(Matern(1.5).expand((3,)), torch.zeros(2), times)
    with pytest.raises(ValueError, match="no density"):
        ProcessPath(Oscillator(periodic=True), torch.zeros(2), times)
    with pytest.raises(ValueError, match="times"):
        ProcessPath(Matern(1.5), torch.zeros(2), times.double())
    with pytest.raises(ValueError, match="process"):
        ProcessPath("matern", torch.zeros(2), times)


def test_per_coordinate_list_of_processes(float64):
    parts = [Matern(1.5, 0.5), Sum(LocalLinearTrend(), Oscillator(1.0, 0.2)).expand((2,))]
    times = torch.linspace(0, 2, 9)
    path = ProcessPath(parts, torch.zeros(3), times)
    y = path.sample()
    assert y.shape == (8, 3)
    expected = (ProcessPath(parts[0], torch.zeros(1), times).log_prob(y[:, :1])
                + ProcessPath(parts[1], torch.zeros(2), times).log_prob(y[:, 1:]))
    assert torch.allclose(path.log_prob(y), expected)


def test_readout_path_with_shifts_matches_dense_conditioning(float64):
    # a general chain (random A_k, shifts b_k, full Q_k, two readouts of a 3-state): the dense
    # joint Gaussian of (y_0..y_K) by propagating means and cross-covariances, then
    # log p(y_{1:K} | y_0) by dense conditioning; and with H = I the plain Gauss-Markov path
    from pyro_vpf.distributions import GaussMarkovPath

    g = torch.Generator().manual_seed(5)
    K, S, R = 6, 3, 2
    A = 0.6 * torch.randn(K, S, S, generator=g, dtype=D64)
    b = torch.randn(K, S, generator=g, dtype=D64)
    root = torch.randn(K, S, S, generator=g, dtype=D64).tril(-1) * 0.3 + torch.eye(S, dtype=D64)
    Q = root @ root.mT
    m0 = torch.randn(S, generator=g, dtype=D64)
    P0 = torch.eye(S, dtype=D64) + 0.3 * torch.ones(S, S, dtype=D64)
    H = torch.randn(R, S, generator=g, dtype=D64)
    # dense joint of the states s_0..s_K
    means, blocks = [m0], {(0, 0): P0}
    for k in range(K):
        means.append(A[k] @ means[-1] + b[k])
        for j in range(k + 1):
            blocks[(k + 1, j)] = A[k] @ blocks[(k, j)]
        blocks[(k + 1, k + 1)] = A[k] @ blocks[(k, k)] @ A[k].T + Q[k]
    cov = torch.zeros((K + 1) * R, (K + 1) * R, dtype=D64)
    for (i, j), block in blocks.items():
        cov[i * R:(i + 1) * R, j * R:(j + 1) * R] = H @ block @ H.T
        cov[j * R:(j + 1) * R, i * R:(i + 1) * R] = H @ block.T @ H.T
    mean = torch.cat([H @ m for m in means])
    joint = torch.distributions.MultivariateNormal(mean, cov)
    first = torch.distributions.MultivariateNormal(mean[:R], cov[:R, :R])
    y = joint.sample((4,))
    path = GaussMarkovReadoutPath(y[:, :R], m0, P0, A, b, Q, H)
    expected = joint.log_prob(y) - first.log_prob(y[:, :R])
    assert torch.allclose(path.log_prob(y[:, R:].reshape(4, K, R)), expected, atol=1e-9)
    chain = GaussMarkovPath(y[:, :S] if R == S else m0.expand(4, S), A, b, root)
    value = chain.sample()
    identity = GaussMarkovReadoutPath(chain.z0, m0, P0, A, b, Q, torch.eye(S, dtype=D64))
    assert torch.allclose(identity.log_prob(value), chain.log_prob(value), atol=1e-9)


def test_matern_in_float64_after_construction_keeps_exact_coefficients():
    # a process built in float32 and moved to float64 must be as accurate as one built in
    # float64: its coefficient tables are not rounded to the default dtype
    dt = torch.tensor([1e-3, 0.1, 2.0], dtype=D64)
    for nu in (1.5, 2.5):
        moved = Matern(nu, 0.7, 1.3).double()
        torch.set_default_dtype(torch.float64)
        try:
            native = Matern(nu, 0.7, 1.3)
        finally:
            torch.set_default_dtype(torch.float32)
        native.load_state_dict(moved.state_dict())  # the same (float32-rounded) parameters
        for got, ref in zip(moved.transition(dt), native.transition(dt), strict=True):
            assert torch.allclose(got, ref, rtol=1e-12, atol=0), (nu, (got - ref).abs().max())
