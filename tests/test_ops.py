import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vpf.ops import (
    linear_recurrence,
    matrix_linear_recurrence,
    matvec,
    sequential_linear_recurrence,
)


def loop_reference(a, b):
    """h_k = a_k h_{k-1} + b_k along dim 0, written out in plain Python floats."""
    out = []
    for lane in range(b.shape[1]):
        h, col = 0.0, []
        for k in range(b.shape[0]):
            h = float(a[k, lane]) * h + float(b[k, lane])
            col.append(h)
        out.append(col)
    return torch.tensor(out, dtype=torch.float64).T


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_scan_matches_python_floats(K, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(K, 3, generator=g, dtype=torch.float64) * 1.5
    b = torch.randn(K, 3, generator=g, dtype=torch.float64)
    expected = loop_reference(a, b)
    assert torch.allclose(linear_recurrence(a, b), expected, rtol=1e-10, atol=1e-10)
    assert torch.allclose(sequential_linear_recurrence(a, b), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K", [1, 2, 3, 1000, 4097])
def test_scan_equals_loop_float32_broadcast_and_dim(K):
    a = torch.rand(1, K, 1, 4)  # shared over the batch and sample dims
    b = torch.randn(5, K, 3, 4)
    h = linear_recurrence(a, b, dim=1)
    assert h.shape == b.shape
    ref = sequential_linear_recurrence(a.double(), b.double(), dim=1)
    assert torch.allclose(h.double(), ref, rtol=1e-5, atol=1e-5)


def test_scan_stable_when_products_underflow():
    # a = exp(-50) per step: a cumulative-product closed form would divide by exp(-50 k).
    K = 300
    a = torch.full((K, 2), torch.exp(torch.tensor(-50.0)).item())
    b = torch.randn(K, 2)
    h = linear_recurrence(a, b)
    assert torch.isfinite(h).all()
    assert torch.allclose(h, b, rtol=1e-6, atol=1e-6)


def test_gradients_match_autograd_of_loop():
    a = (torch.rand(1, 9, 3, dtype=torch.float64) * 1.2).requires_grad_()
    b = torch.randn(4, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linear_recurrence(a, b, dim=1), (a, b))
    assert torch.autograd.gradgradcheck(lambda a, b: linear_recurrence(a, b, dim=1), (a, b))
    w = torch.randn(4, 9, 3, dtype=torch.float64)
    ga, gb = torch.autograd.grad((linear_recurrence(a, b, dim=1) * w).sum(), (a, b))
    ra, rb = torch.autograd.grad((sequential_linear_recurrence(a, b, dim=1) * w).sum(), (a, b))
    assert torch.allclose(ga, ra) and torch.allclose(gb, rb)


def test_bad_arguments():
    with pytest.raises(ValueError, match="broadcast"):
        linear_recurrence(torch.rand(3, 2), torch.rand(3, 4))
    with pytest.raises(ValueError, match="dtype"):
        linear_recurrence(torch.rand(3, 2, dtype=torch.float64), torch.rand(3, 2))


def test_matrix_recurrence_matches_loop_and_autograd():
    from pyro_vpf.ops import matrix_linear_recurrence

    g = torch.Generator().manual_seed(0)
    for K in (1, 2, 3, 7, 64, 101):
        A = torch.randn(2, K, 3, 3, generator=g, dtype=torch.float64) * 0.5
        b = torch.randn(2, K, 3, generator=g, dtype=torch.float64)
        h, expected = torch.zeros(2, 3, dtype=torch.float64), []
        for k in range(K):
            h = (A[:, k] @ h.unsqueeze(-1)).squeeze(-1) + b[:, k]
            expected.append(h)
        assert torch.allclose(matrix_linear_recurrence(A, b), torch.stack(expected, 1),
                              atol=1e-10)
    A = (torch.randn(1, 6, 2, 2, dtype=torch.float64) * 0.5).requires_grad_()
    b = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(matrix_linear_recurrence, (A, b))
    with pytest.raises(ValueError):
        matrix_linear_recurrence(torch.randn(6, 2, 3), torch.randn(6, 2))


def test_shared_matrices_as_columns_match_broadcasting():
    # matrices shared by many vectors (one transition for a batch of paths) are applied as
    # columns of one product: the same numbers as plain broadcasting, in both operations
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 1, 9, 4, 4, generator=g, dtype=torch.float64) * 0.5  # (d, 1, K, S, S)
    b = torch.randn(5, 3, 7, 9, 4, generator=g, dtype=torch.float64)  # (P, d, B, K, S)
    expected = (A @ b.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(matvec(A, b), expected, atol=1e-12)
    assert torch.allclose(matvec(A[0, 0], b), (A[0, 0] @ b.unsqueeze(-1)).squeeze(-1))
    h = matrix_linear_recurrence(A, b, dim=-2)
    state = torch.zeros_like(b[..., 0, :])
    for k in range(b.shape[-2]):
        state = (A[..., k, :, :] @ state.unsqueeze(-1)).squeeze(-1) + b[..., k, :]
        assert torch.allclose(h[..., k, :], state, atol=1e-10)


def test_exp_ratio_and_its_derivative_against_mpmath():
    """phi(x) = (1 - exp(-x)) / x and phi'(x), in float32 and float64, against 50-digit
    arithmetic, from x = 0 to x = 50 (the series and direct branches and their junction)."""
    import mpmath

    from pyro_vpf.ops import exp_ratio

    mpmath.mp.dps = 50
    points = [0.0, 1e-12, 1e-8, 1e-6, 1e-4, 1e-2, 0.0999, 0.1, 0.1001, 0.5, 1.0, 3.0, 10.0, 50.0]

    def phi(x):
        return mpmath.mpf(1) if x == 0 else -mpmath.expm1(-x) / x

    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-13)):
        x = torch.tensor(points, dtype=dtype, requires_grad=True)
        value = exp_ratio(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        value = value.detach()
        for i, p in enumerate(points):
            ref = phi(mpmath.mpf(p))
            dref = mpmath.diff(phi, mpmath.mpf(p)) if p > 0 else mpmath.mpf(-0.5)
            assert abs(float(value[i]) - float(ref)) <= tol * abs(float(ref)), (dtype, p)
            assert abs(float(grad[i]) - float(dref)) <= tol * abs(float(dref)) + 1e-30, (dtype, p)


def test_ou_variance_gradient_in_float32_matches_float64_for_tiny_rate_steps():
    """dQ/d(kappa) of the OU transition: float32 agrees with float64 at kappa * dt from 1e-10
    to 10 (the direct expm1 form loses it below 1e-4)."""
    from pyro_vpf.distributions import ou_transition

    times = torch.tensor([0.0, 1e-3])
    grads = {}
    for dtype in (torch.float32, torch.float64):
        rate = torch.tensor([1e-7, 1e-5, 1e-3, 1e-1, 1.0, 1e4], dtype=dtype, requires_grad=True)
        _, Q = ou_transition(times.to(dtype), rate, torch.ones(6, dtype=dtype))
        (grads[dtype],) = torch.autograd.grad(Q.sum(), rate)
    assert torch.allclose(grads[torch.float32].double(), grads[torch.float64], rtol=1e-5)
