import pyro.distributions as dist
import pytest
import torch

from pyro_vpf.distributions import GaussMarkovPath

D64 = torch.float64


def random_params(batch, K, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch + (K, D, D), generator=g, dtype=D64) * 0.4
    b = torch.randn(batch + (K, D), generator=g, dtype=D64)
    raw = torch.randn(batch + (K, D, D), generator=g, dtype=D64) * 0.3
    L = raw.tril(-1) + torch.diag_embed(torch.rand(batch + (K, D), generator=g,
                                                    dtype=D64) + 0.2)
    z0 = torch.randn(batch + (D,), generator=g, dtype=D64)
    return z0, A, b, L


def dense(z0, A, b, L):
    """Joint mean and covariance of z_{1:K} (flattened) by propagating the recurrence:
    z_k = A_k z_{k-1} + b_k + L_k e_k, so z = M e + m with a block lower-triangular M."""
    K, D = b.shape[-2:]
    mean, blocks = [], []
    m, rows = z0, []
    for k in range(K):
        m = A[k] @ m + b[k]
        mean.append(m)
        rows = [A[k] @ r for r in rows] + [L[k]]
        blocks.append(rows)
    M = torch.zeros(K * D, K * D, dtype=D64)
    for k, row in enumerate(blocks):
        for j, block in enumerate(row):
            M[k * D:(k + 1) * D, j * D:(j + 1) * D] = block
    return torch.cat(mean), M @ M.T


def test_log_prob_matches_dense_gaussian():
    z0, A, b, L = random_params((3,), 5, 2)
    d = GaussMarkovPath(z0, A, b, L)
    assert d.batch_shape == (3,) and d.event_shape == (5, 2)
    y = d.sample((4,))
    for i in range(3):
        mean, cov = dense(z0[i], A[i], b[i], L[i])
        expected = dist.MultivariateNormal(mean, cov).log_prob(y[:, i].reshape(4, -1))
        assert torch.allclose(d.log_prob(y)[:, i], expected, atol=1e-8)


def test_rsample_equals_loop_on_same_noise_and_moments():
    z0, A, b, L = random_params((), 6, 3, seed=1)
    d = GaussMarkovPath(z0, A, b, L)
    torch.manual_seed(2)
    y = d.rsample((5,))
    torch.manual_seed(2)
    eps = torch.randn(5, 6, 3, dtype=D64)
    z, expected = z0.expand(5, 3), []
    for k in range(6):
        noise = (L[k] @ eps[:, k].unsqueeze(-1)).squeeze(-1)
        z = (A[k] @ z.unsqueeze(-1)).squeeze(-1) + b[k] + noise
        expected.append(z)
    assert torch.allclose(y, torch.stack(expected, 1), atol=1e-10)
    # moments: 40 000 draws, 5 standard errors
    torch.manual_seed(3)
    draws = d.rsample((40_000,)).reshape(40_000, -1)
    mean, cov = dense(z0, A, b, L)
    assert ((draws.mean(0) - mean).abs() <= 5 * (cov.diagonal() / 40_000).sqrt()).all()


def test_gradients_and_bad_shapes():
    z0, A, b, L = random_params((2,), 4, 2, seed=4)
    A.requires_grad_()
    d = GaussMarkovPath(z0, A, b, L)
    d.log_prob(d.rsample()).sum().backward()
    assert torch.isfinite(A.grad).all() and A.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="transition"):
        GaussMarkovPath(z0, A[..., :3, :, :], b, L)
    e = d.expand((5, 2))
    assert e.sample().shape == (5, 2, 4, 2)


def test_marginals_match_the_dense_covariance_with_a_random_start():
    from pyro_vpf.distributions import gauss_markov_marginals

    z0, A, b, L = random_params((2,), 5, 3, seed=5)
    g = torch.Generator().manual_seed(6)
    raw = torch.randn(2, 3, 3, generator=g, dtype=D64)
    cov0 = raw @ raw.mT + 0.1 * torch.eye(3, dtype=D64)
    loc, cov = gauss_markov_marginals(z0, cov0, A, b, L)
    assert loc.shape == (2, 6, 3) and cov.shape == (2, 6, 3, 3)
    for i in range(2):
        # z_{1:K} = m(z0) + M e: covariance given z0 from the dense construction, plus the
        # start's spread carried by the Jacobian of the mean (linear in z0), by autograd
        mean, cond_cov = dense(z0[i], A[i], b[i], L[i])
        J = torch.autograd.functional.jacobian(lambda s, i=i: dense(s, A[i], b[i], L[i])[0],
                                               z0[i])
        total = cond_cov + J @ cov0[i] @ J.T
        assert torch.allclose(loc[i, 0], z0[i]) and torch.allclose(cov[i, 0], cov0[i])
        assert torch.allclose(loc[i, 1:].reshape(-1), mean, atol=1e-10)
        blocks = torch.stack([total[k * 3:(k + 1) * 3, k * 3:(k + 1) * 3] for k in range(5)])
        assert torch.allclose(cov[i, 1:], blocks, atol=1e-10)
