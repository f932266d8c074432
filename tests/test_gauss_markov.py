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


def test_log_prob_of_its_own_draw_skips_the_solve_with_the_same_value_and_gradients():
    # The ELBO scores a draw with the distribution that made it: the whitened residuals are
    # then the draw's own noise. Value and every parameter gradient must equal the solve's
    # on a copy of the draw (which the cache does not recognise), and the dense Gaussian's.
    # (L through tril, as a scale_tril is built: its upper triangle is no parameter)
    z0, A, b, L = random_params((2,), 5, 3, seed=11)
    params = [t.clone().requires_grad_() for t in (z0, A, b, L)]
    d = GaussMarkovPath(*params[:3], params[3].tril())
    torch.manual_seed(0)
    z = d.rsample((4,))
    cached, solved = d.log_prob(z), d.log_prob(z.detach().clone())
    assert torch.allclose(cached, solved, atol=1e-10)
    mean, cov = dense(*(t.detach()[1] for t in (z0, A, b, L)))
    dense_lp = dist.MultivariateNormal(mean, cov).log_prob(z.detach()[:, 1].reshape(4, -1))
    assert torch.allclose(cached[:, 1], dense_lp, atol=1e-9)
    # gradients through the draw (reparameterised), as an ELBO takes them
    fresh = [t.clone().requires_grad_() for t in (z0, A, b, L)]
    other = GaussMarkovPath(*fresh[:3], fresh[3].tril())
    torch.manual_seed(0)
    z_other = other.rsample((4,))
    recomputed = other.log_prob(z_other + 0.0)  # a new tensor: the solve runs
    assert other._last_draw[0] is z_other
    g_cached = torch.autograd.grad((cached * z.sum((-1, -2))).sum(), params)
    g_solved = torch.autograd.grad((recomputed * z_other.sum((-1, -2))).sum(), fresh)
    for got, want in zip(g_cached, g_solved, strict=True):
        assert torch.allclose(got, want, atol=1e-9)


def test_gradients_and_bad_shapes():
    z0, A, b, L = random_params((2,), 4, 2, seed=4)
    A.requires_grad_()
    d = GaussMarkovPath(z0, A, b, L)
    d.log_prob(d.rsample().detach()).sum().backward()  # the density's gradient in A
    assert torch.isfinite(A.grad).all() and A.grad.abs().sum() > 0
    A.grad = None
    d.rsample().square().sum().backward()  # the draw's (reparameterised)
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


def dense_with_start(loc0, scale_tril0, A, b, L):
    """Joint mean and covariance of z_{0:K} (flattened) with z_0 = loc0 + C_0 e_0: the
    conditional construction above, plus the start's spread through the Jacobian of the
    mean (linear in z_0)."""
    mean, cond_cov = dense(loc0, A, b, L)
    J = torch.autograd.functional.jacobian(lambda s: dense(s, A, b, L)[0], loc0)
    cov0 = scale_tril0 @ scale_tril0.T
    full = torch.cat([torch.eye(loc0.shape[-1], dtype=D64), J])  # d z_{0:K} / d z_0
    cov = full @ cov0 @ full.T
    cov[loc0.shape[-1]:, loc0.shape[-1]:] += cond_cov
    return torch.cat([loc0, mean]), cov


@pytest.mark.parametrize("K", [5, 37])
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_posterior_chain_equals_dense_gaussian_conditioning(rank, K):
    # Prior chain times potentials exp(-z'Jz/2 + h'z) at every step, against Bayes' rule on
    # the dense joint: precision Sigma^-1 + blockdiag(J), mean (.)^-1 (Sigma^-1 mu + h).
    # rank 0 leaves some steps without information; rank 1 is a one-channel observation;
    # K = 37 takes six levels of the scan, the last one partial.
    from pyro_vpf.distributions import gauss_markov_posterior

    D = 3
    z0, A, b, L = random_params((2,), K, D, seed=7)
    g = torch.Generator().manual_seed(8)
    raw0 = torch.randn(2, D, D, generator=g, dtype=D64) * 0.5
    C0 = raw0.tril(-1) + torch.diag_embed(torch.rand(2, D, generator=g, dtype=D64) + 0.5)
    W = torch.randn(2, K + 1, D, max(rank, 1), generator=g, dtype=D64)
    J = W @ W.mT * (rank > 0)
    J[:, 2] = 0  # a step with no information at all
    h = torch.randn(2, K + 1, D, generator=g, dtype=D64)
    post = gauss_markov_posterior(z0, C0, A, b, L, J, h)
    assert [t.shape for t in post] == [(2, D), (2, D, D), (2, K, D, D), (2, K, D), (2, K, D, D)]
    assert torch.equal(post[4], post[4].tril()) and (post[4].diagonal(dim1=-2, dim2=-1) > 0).all()
    for i in range(2):
        mu, Sigma = dense_with_start(z0[i], C0[i], A[i], b[i], L[i])
        precision = torch.linalg.inv(Sigma) + torch.block_diag(*J[i])
        cov = torch.linalg.inv(precision)
        mean = cov @ (torch.linalg.solve(Sigma, mu) + h[i].reshape(-1))
        got_mean, got_cov = dense_with_start(*(t[i] for t in post))
        assert torch.allclose(got_mean, mean, atol=1e-9)
        assert torch.allclose(got_cov, cov, atol=1e-9)


@pytest.mark.parametrize("K", [1, 6, 37])
def test_posterior_chain_with_a_diagonal_prior_equals_dense_gaussian_conditioning(K):
    # diagonal=True takes F_k and C_k by their diagonals (an OU reference): the posterior must
    # be Bayes' rule on the dense joint, as with full matrices (whose test is above).
    from pyro_vpf.distributions import gauss_markov_posterior

    D = 3
    g = torch.Generator().manual_seed(21)
    f = torch.rand(2, K, D, generator=g, dtype=D64) * 0.9 + 0.05
    c = torch.rand(2, K, D, generator=g, dtype=D64) + 0.2
    shift = torch.randn(2, K, D, generator=g, dtype=D64)
    m0 = torch.randn(2, D, generator=g, dtype=D64)
    C0 = torch.diag_embed(torch.rand(2, D, generator=g, dtype=D64) + 0.5)
    W = torch.randn(2, K + 1, D, 2, generator=g, dtype=D64)
    J, h = W @ W.mT, torch.randn(2, K + 1, D, generator=g, dtype=D64)
    post = gauss_markov_posterior(m0, C0, f, shift, c, J, h, diagonal=True)
    full = gauss_markov_posterior(m0, C0, torch.diag_embed(f), shift, torch.diag_embed(c), J,
                                  h)
    for got, want in zip(post, full, strict=True):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-10)
    for i in range(2):
        mu, Sigma = dense_with_start(m0[i], C0[i], torch.diag_embed(f[i]), shift[i],
                                     torch.diag_embed(c[i]))
        cov = torch.linalg.inv(torch.linalg.inv(Sigma) + torch.block_diag(*J[i]))
        mean = cov @ (torch.linalg.solve(Sigma, mu) + h[i].reshape(-1))
        got_mean, got_cov = dense_with_start(*(t[i] for t in post))
        assert torch.allclose(got_mean, mean, atol=1e-9)
        assert torch.allclose(got_cov, cov, atol=1e-9)
    with pytest.raises(ValueError, match="transition"):
        gauss_markov_posterior(m0, C0, torch.diag_embed(f), shift, c, J, h, diagonal=True)


def test_posterior_chain_broadcasts_and_checks_shapes():
    from pyro_vpf.distributions import gauss_markov_posterior

    K, D = 4, 2
    z0, A, b, L = random_params((), K, D, seed=9)
    J = torch.eye(D, dtype=D64).expand(3, K + 1, D, D)
    h = torch.randn(3, K + 1, D, dtype=D64)
    m0, L0, A2, b2, L2 = gauss_markov_posterior(z0, torch.eye(D, dtype=D64), A, b, L, J, h)
    assert m0.shape == (3, D) and A2.shape == (3, K, D, D) and L2.shape == (3, K, D, D)
    with pytest.raises(ValueError, match="precision"):
        gauss_markov_posterior(z0, torch.eye(D, dtype=D64), A, b, L, J[:, :K], h)
