"""The Markov approximation of fractional Brownian motion (pyro_vpf.processes.fbm)."""

import importlib.util
import json
import math
import pathlib
import time

import mpmath
import numpy as np
import pytest
import torch

from pyro_vpf.processes.base import van_loan
from pyro_vpf.processes.fbm import (
    MarkovFBM,
    _cross_moments,
    _gram,
    fbm_weights,
    geometric_rates,
    regularized_gammainc,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_table_script():
    spec = importlib.util.spec_from_file_location(
        "fbm_covariance_table", ROOT / "benchmarks" / "fbm_covariance_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mp_gammainc(a, x):
    return mpmath.gammainc(a, 0, x, regularized=True)


# -- the differentiable incomplete gamma function -------------------------------------------

GAMMA_POINTS = [(a, x) for a in (0.05, 0.3, 0.7, 1.0, 1.2, 1.5, 2.3, 5.0, 20.0, 50.0)
                for x in (1e-8, 1e-3, 0.2, 0.9 * a, a + 0.999, a + 1.0, a + 1.01, 2 * a + 3, 40.0,
                          300.0)]


def test_gammainc_values_match_mpmath(float64):
    a = torch.tensor([p[0] for p in GAMMA_POINTS])
    x = torch.tensor([p[1] for p in GAMMA_POINTS])
    ours = regularized_gammainc(a, x)
    reference = torch.tensor([float(_mp_gammainc(*p)) for p in GAMMA_POINTS])
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-300)
    assert regularized_gammainc(torch.tensor(0.8), torch.tensor(0.0)).item() == 0.0


def test_gammainc_dtype_and_broadcast():
    out = regularized_gammainc(torch.tensor([0.8, 1.8]), torch.tensor([[0.5], [3.0]]))
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert regularized_gammainc(1.5, 2.0).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("a, x", [(0.7, 0.05), (0.8, 1.0), (1.2, 2.2), (1.5, 2.6), (1.3, 4.0),
                                  (2.2, 0.5), (2.2, 3.19), (2.2, 3.21), (0.6, 30.0),
                                  (1.7, 150.0), (8.0, 6.0)])
def test_gammainc_gradients_match_mpmath(float64, a, x):
    at = torch.tensor(a, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    regularized_gammainc(at, xt).backward()
    with mpmath.workdps(30):
        if x > a:  # P = 1 - Q with Q tiny: differentiate Q, which keeps its digits
            def upper(s, t):
                return -mpmath.gammainc(s, t, mpmath.inf, regularized=True)
            da = float(mpmath.diff(lambda s: upper(s, x), a))
            dx = float(mpmath.diff(lambda t: upper(a, t), x))
        else:
            da = float(mpmath.diff(lambda s: _mp_gammainc(s, x), a))
            dx = float(mpmath.diff(lambda t: _mp_gammainc(a, t), x))
    assert at.grad.item() == pytest.approx(da, rel=1e-9, abs=1e-300)
    assert xt.grad.item() == pytest.approx(dx, rel=1e-9, abs=1e-300)


def test_gammainc_gradient_finite_at_zero_and_far(float64):
    a = torch.tensor([0.6, 0.6, 1.6], requires_grad=True)
    x = torch.tensor([0.0, 1e4, 1e-12], requires_grad=True)
    regularized_gammainc(a, x).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(x.grad).all()


# -- weights ---------------------------------------------------------------------------------

def test_gram_and_cross_moments_match_quadrature(float64):
    T = 1.7
    rates = geometric_rates(4, T)
    A = _gram(rates, T)
    b = _cross_moments(torch.tensor([0.3, 0.8]), rates, T)
    for i, gi in enumerate(rates.tolist()):
        for j, gj in enumerate(rates.tolist()):
            g = gi + gj
            ref = mpmath.quad(lambda t, g=g: -mpmath.expm1(-g * t) / g, [0, T])
            assert A[i, j].item() == pytest.approx(float(ref), rel=1e-12)
        for k, hurst in enumerate((0.3, 0.8)):
            a = hurst + 0.5
            ref = mpmath.quad(lambda u, a=a, gi=gi: (T - u) * u ** (a - 1) * mpmath.exp(-gi * u),
                              [0, T]) / mpmath.gamma(a)
            assert b[k, i].item() == pytest.approx(float(ref), rel=1e-10)
    # the small-x series branch of the Gram matrix joins the closed form
    tiny = torch.tensor([1e-4, 4.99e-3, 5.01e-3])
    x = 2 * tiny
    with mpmath.workdps(40):
        exact = [float((mpmath.mpf(v) - 1 + mpmath.exp(-mpmath.mpf(v))) / mpmath.mpf(v) ** 2)
                 for v in x.tolist()]
    torch.testing.assert_close(_gram(tiny, 1.0).diagonal(), torch.tensor(exact), rtol=1e-12,
                               atol=0)


def test_weights_minimise_the_l2_error(float64):
    rates = geometric_rates(6)
    hurst = torch.tensor(0.35)
    w = fbm_weights(hurst, rates)
    A, b = _gram(rates, 1.0), _cross_moments(hurst, rates, 1.0)
    torch.testing.assert_close(A @ w, b, rtol=1e-9, atol=1e-12)  # normal equations
    errors = [MarkovFBM(0.35, m).approximation_error().item() for m in (2, 4, 6, 10)]
    assert all(0 < e < 1 for e in errors)
    assert errors == sorted(errors, reverse=True)
    assert MarkovFBM(0.5, 8).approximation_error().item() < 1e-6  # BM: the slowest state


def test_weights_are_differentiable_in_hurst(float64):
    process = MarkovFBM(torch.tensor([0.3, 0.75]), 5)
    w = process.weights
    grads = torch.autograd.grad(w.sum(), process.hurst_unconstrained)[0]
    eps = 1e-6
    up = fbm_weights(torch.tensor([0.3, 0.75]) + eps, process.rates)
    down = fbm_weights(torch.tensor([0.3, 0.75]) - eps, process.rates)
    dh = (up - down).sum(-1) / (2 * eps)
    hurst = process.hurst.detach()
    torch.testing.assert_close(grads, dh * hurst * (1 - hurst), rtol=1e-6, atol=1e-9)


# -- the state-space form --------------------------------------------------------------------

def test_shapes_and_expand():
    process = MarkovFBM(0.3, num_components=4, scale=2.0)
    assert process.batch_shape == () and process.state_dim == 5
    wide = process.expand((3,))
    assert wide.batch_shape == (3,)
    assert wide.hurst_unconstrained is not process.hurst_unconstrained
    assert wide.drift().shape == wide.diffusion().shape == wide.initial_covariance().shape \
        == (3, 5, 5)
    assert wide.readout().shape == (3, 5)
    A, Q = wide.transition(torch.rand(7, 2))
    assert A.shape == Q.shape == (7, 2, 3, 5, 5)
    assert A.dtype == torch.float32 and torch.isfinite(Q).all()
    assert wide.covariance(torch.rand(6), 0.5).shape == (6, 3)
    batched = MarkovFBM(torch.tensor([0.2, 0.6]), 3, scale=torch.tensor([[1.0], [2.0]]))
    assert batched.batch_shape == (2, 2) and batched.readout().shape == (2, 2, 4)
    assert "num_components=4" in repr(process)


def test_transition_matches_van_loan(float64):
    process = MarkovFBM(torch.tensor([0.25, 0.7]), 5, scale=torch.tensor([0.5, 1.7]),
                        time_scale=2.0)
    dt = torch.tensor([[1e-4, 0.01], [0.3, 4.0]])
    A, Q = process.transition(dt)
    A_ref, Q_ref = van_loan(process.drift(), process.diffusion(), dt)
    torch.testing.assert_close(A, A_ref, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(Q, Q_ref, rtol=1e-8, atol=1e-13)
    # the level carries no noise and does not move
    assert (Q[..., 0, :] == 0).all() and (A[..., 0, 0] == 1).all()


def test_lyapunov_and_semigroup(float64):
    process = MarkovFBM(0.4, 4, scale=1.3)
    F, LLt = process.drift()[1:, 1:], process.diffusion()[1:, 1:]
    rates = process.rates
    P_inf = 1.3**2 / (rates[:, None] + rates[None, :])  # stationary covariance of the Y block
    torch.testing.assert_close(F @ P_inf + P_inf @ F.T + LLt, torch.zeros_like(F), rtol=0,
                               atol=1e-12)
    dt = torch.tensor([0.001, 0.05, 0.7, 3.0])
    A, Q = process.transition(dt)
    AY = A[..., 1:, 1:]
    torch.testing.assert_close(Q[..., 1:, 1:], P_inf - AY @ P_inf @ AY.transpose(-1, -2),
                               rtol=1e-9, atol=1e-14)
    A1, Q1 = process.transition(torch.tensor(0.2))
    A2, Q2 = process.transition(torch.tensor(0.5))
    A12, Q12 = process.transition(torch.tensor(0.7))
    torch.testing.assert_close(A2 @ A1, A12)
    torch.testing.assert_close(A2 @ Q1 @ A2.T + Q2, Q12, rtol=1e-12, atol=1e-15)


def test_noise_covariance_matches_euler_maruyama_moments(float64):
    """Q(Δ) against the covariance recursion of the Euler--Maruyama scheme,
    P <- (I + hF) P (I + hF)^T + h L L^T from P = 0, Richardson-extrapolated in h."""
    process = MarkovFBM(0.3, 3, scale=0.8)
    F, LLt = process.drift().detach().numpy(), process.diffusion().detach().numpy()
    delta = 0.3

    def euler_moments(steps):
        h = delta / steps
        step = np.eye(F.shape[0]) + h * F
        P = np.zeros_like(F)
        for _ in range(steps):
            P = step @ P @ step.T + h * LLt
        return P

    coarse, fine = euler_moments(3000), euler_moments(6000)
    _, Q = process.transition(torch.tensor(delta))
    Q = Q.detach().numpy()
    assert np.abs(fine - Q).max() < 1e-2 * np.abs(Q).max()  # first order, as it should be
    np.testing.assert_allclose(2 * fine - coarse, Q, rtol=1e-5, atol=1e-7 * np.abs(Q).max())


def test_covariance_method_is_the_readout_covariance(float64):
    """``covariance(s, t)`` against the state moments propagated with ``transition``."""
    process = MarkovFBM(0.65, 4, scale=1.4)
    times = torch.tensor([0.0, 0.1, 0.35, 0.9])
    H = process.readout().detach()
    A, Q = process.transition(times.diff())
    P = torch.zeros(5, 5)
    states = []
    for k in range(3):
        P = A[k] @ P @ A[k].T + Q[k]
        states.append(P)
    # Cov(y_s, y_t) for s <= t: H P_s A(t - s)^T H^T
    s, t = times[1:][:, None], times[1:][None, :]
    ours = process.covariance(s, t).detach()
    for i in range(3):
        for j in range(3):
            lo, hi = min(i, j), max(i, j)
            gap, _ = process.transition(times[hi + 1] - times[lo + 1])
            ref = H @ states[lo] @ gap.T @ H
            assert ours[i, j].item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(ours, ours.T)


def test_process_path_density_is_the_gaussian_of_the_covariance(float64):
    """The path density through ProcessPath equals the Gaussian density of the increments
    y_k - y_0 with covariance ``covariance(t_k, t_l)`` (noiseless start, Y(0) = 0)."""
    from pyro_vpf.distributions import ProcessPath

    process = MarkovFBM(0.35, 5, scale=0.9).expand((1,))
    times = torch.linspace(0.0, 1.0, 31)
    y0 = torch.tensor([[0.4], [-1.0]])
    value = y0.unsqueeze(-2) + 0.2 * torch.randn(2, 30, 1).cumsum(-2)
    ours = ProcessPath(process, y0, times).log_prob(value)
    t = times[1:]
    cov = process.covariance(t[:, None], t[None, :])[..., 0].detach()
    reference = torch.distributions.MultivariateNormal(torch.zeros(30), cov).log_prob(
        (value - y0.unsqueeze(-2))[..., 0])
    torch.testing.assert_close(ours.detach(), reference, rtol=1e-7, atol=1e-6)
    ours.sum().backward()
    assert torch.isfinite(process.hurst_unconstrained.grad).all()
    assert (process.hurst_unconstrained.grad != 0).all()


# -- the approximation against the exact type II covariance ---------------------------------

def test_covariance_error_decreases_with_components(float64):
    table = _load_table_script()
    rows = table.covariance_table(hursts=(0.2, 0.3, 0.5, 0.7, 0.8), components=(3, 5, 8),
                                  grid_size=20)
    print("\n" + table.format_table(rows))
    for hurst in (0.2, 0.3, 0.5, 0.7, 0.8):
        errors = [row["covariance_error"] for row in rows if row["hurst"] == hurst]
        assert errors == sorted(errors, reverse=True), (hurst, errors)
        assert errors[-1] < 0.01, (hurst, errors)


def test_exact_type2_covariance_reference():
    table = _load_table_script()
    times = [0.25, 1.0]
    for hurst in (0.3, 0.7):
        cov = table.exact_type2_covariance(hurst, times)
        # diagonal: t^{2H} / (2H Gamma(H + 1/2)^2)
        for k, t in enumerate(times):
            ref = t ** (2 * hurst) / (2 * hurst * math.gamma(hurst + 0.5) ** 2)
            assert cov[k, k].item() == pytest.approx(ref, rel=1e-6)
    cov = table.exact_type2_covariance(0.5, times)  # Brownian motion: min(s, t)
    torch.testing.assert_close(cov, torch.tensor([[0.25, 0.25], [0.25, 1.0]],
                                                 dtype=torch.float64))


def test_table_script_json(capsys):
    table = _load_table_script()
    table.main(["--json", "--hursts", "0.4", "--components", "2", "3", "--grid-size", "6"])
    out = json.loads(capsys.readouterr().out)
    assert [row["num_components"] for row in out["rows"]] == [2, 3]
    assert all(row["covariance_error"] > 0 for row in out["rows"])


# -- maximum likelihood of the Hurst index ---------------------------------------------------

def _type1_fbm(hurst, num_paths, num_points, seed):
    """Exact type I fBM on t_k = k / num_points (Cholesky of
    (s^{2H} + t^{2H} - |t - s|^{2H}) / 2), started at 0."""
    t = torch.arange(1, num_points + 1, dtype=torch.float64) / num_points
    s, u = t[:, None], t[None, :]
    cov = 0.5 * (s ** (2 * hurst) + u ** (2 * hurst) - (s - u).abs() ** (2 * hurst))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_points, num_paths, generator=generator, dtype=torch.float64)
    paths = (torch.linalg.cholesky(cov) @ noise).T.unsqueeze(-1)  # (N, K, 1)
    return paths, torch.cat([torch.zeros(1, dtype=torch.float64), t])


@pytest.mark.slow
@pytest.mark.parametrize("true_hurst", [0.3, 0.5, 0.7])
def test_hurst_maximum_likelihood(float64, true_hurst):
    from pyro_vpf.distributions import ProcessPath

    paths, times = _type1_fbm(true_hurst, 64, 200, seed=int(10 * true_hurst))
    y0 = torch.zeros(paths.shape[0], 1)
    process = MarkovFBM(0.5, num_components=5, scale=1.0, time_scale=1.0).expand((1,))
    params = [process.hurst_unconstrained, process.scale_unconstrained]
    optimizer = torch.optim.LBFGS(params, max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -ProcessPath(process, y0, times).log_prob(paths).sum() / paths.numel()
        loss.backward()
        return loss

    start = time.perf_counter()
    optimizer.step(closure)
    learned = process.hurst.item()
    print(f"\ntrue H {true_hurst}: learned H {learned:.4f}, scale {process.scale.item():.4f} "
          f"({time.perf_counter() - start:.1f} s)")
    assert abs(learned - true_hurst) < 0.05


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"hurst": 0.0}, "hurst"), ({"hurst": 1.0}, "hurst"), ({"hurst": -0.2}, "hurst"),
    ({"hurst": torch.tensor([0.3, 1.2])}, "hurst"), ({"hurst": float("nan")}, "hurst"),
    ({"num_components": 0}, "num_components"), ({"num_components": 2.5}, "num_components"),
    ({"num_components": True}, "num_components"),
    ({"scale": 0.0}, "scale"), ({"scale": -1.0}, "scale"),
    ({"time_scale": 0.0}, "time_scale"), ({"time_scale": -2.0}, "time_scale"),
    ({"time_scale": float("inf")}, "time_scale"),
    ({"init_level_scale": 0.0}, "init_level_scale"),
    ({"num_components": 3, "rates": [1.0, 2.0]}, "rates"),
    ({"num_components": 2, "rates": [1.0, -2.0]}, "rates"),
])
def test_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MarkovFBM(**kwargs)


def test_explicit_rates():
    process = MarkovFBM(0.4, 3, rates=[0.5, 5.0, 50.0])
    torch.testing.assert_close(process.rates, torch.tensor([0.5, 5.0, 50.0]))
    assert torch.isfinite(process.readout()).all()
    torch.testing.assert_close(geometric_rates(4, 2.0), geometric_rates(4) / 2.0)
    assert geometric_rates(1).tolist() == pytest.approx([0.2])
