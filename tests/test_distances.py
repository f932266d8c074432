import itertools
import math

import numpy as np
import pytest
import torch

from pyro_vpf.evaluation import crps_ensemble, energy_distance, mmd
from pyro_vpf.evaluation import distances as distances_module


def normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def normal_pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def expected_abs_normal(mean, variance):
    r""":math:`\mathbb{E}\lvert Z\rvert` for :math:`Z \sim \mathcal{N}(m, v)` (folded normal)."""
    sd = math.sqrt(variance)
    return (sd * math.sqrt(2 / math.pi) * math.exp(-mean**2 / (2 * variance))
            + mean * (1 - 2 * normal_cdf(-mean / sd)))


def draw(shape, seed, loc=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return loc + scale * torch.randn(shape, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- brute force


def brute_energy(x, y):
    """Double loops over the pairs, in Python floats."""
    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    y = np.asarray(y, dtype=float).reshape(len(y), -1)

    def norm(a, b):
        return math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)))

    n, m = len(x), len(y)
    cross = sum(norm(a, b) for a in x for b in y) / (n * m)
    within_x = sum(norm(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    within_y = sum(norm(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    return 2 * cross - within_x / (n * (n - 1)) - within_y / (m * (m - 1))


def brute_mmd(x, y, h):
    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    y = np.asarray(y, dtype=float).reshape(len(y), -1)

    def k(a, b):
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)) / (2 * h * h))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in x for b in y) / (n * m)
    return kxx + kyy - 2 * kxy


def brute_median_distance(x, y):
    z = np.concatenate([np.asarray(x).reshape(len(x), -1), np.asarray(y).reshape(len(y), -1)])
    distances = [np.linalg.norm(z[i] - z[j]) for i, j in itertools.combinations(range(len(z)), 2)]
    return float(np.median(distances))


def brute_crps(samples, y):
    samples = np.asarray(samples, dtype=float)
    y = np.asarray(y, dtype=float)
    s = samples.shape[0]
    out = np.empty(y.shape)
    for index in np.ndindex(y.shape):
        members = [samples[(k, *index)] for k in range(s)]
        error = sum(abs(v - y[index]) for v in members) / s
        spread = sum(abs(members[i] - members[j]) for i in range(s) for j in range(s) if i != j)
        out[index] = error - spread / (2 * s * (s - 1))
    return out


@pytest.fixture(params=[None, 7, 20], ids=["one-block", "row-blocks", "uneven-blocks"])
def blocks(request, monkeypatch):
    """Run a test as is, and again with blocks of a few distances: one row at a time, or a
    few rows with a shorter last block."""
    if request.param is not None:
        monkeypatch.setattr(distances_module, "_BLOCK_ELEMENTS", request.param)


@pytest.mark.parametrize(("n", "m", "d"), [(7, 5, 3), (2, 2, 1), (9, 11, 2), (6, 4, None)])
def test_energy_distance_matches_brute_force(n, m, d, blocks):
    shape_x = (n,) if d is None else (n, d)
    shape_y = (m,) if d is None else (m, d)
    x, y = draw(shape_x, 1), draw(shape_y, 2, loc=0.4, scale=1.3)
    estimate = energy_distance(x, y)
    assert estimate.shape == () and estimate.dtype == torch.float64
    assert abs(estimate.item() - brute_energy(x.numpy(), y.numpy())) < 1e-10
    # Symmetric in its arguments; 1-D input is the d = 1 case.
    assert abs(energy_distance(y, x).item() - estimate.item()) < 1e-12
    if d is None:
        assert energy_distance(x[:, None], y).item() == estimate.item()


def test_energy_distance_of_a_sample_with_itself_is_negative_only_by_the_diagonal():
    # x against x: the cross mean includes the n zero self-distances, the within means do not,
    # so the estimate is exactly -2/n * (the within mean).
    x = draw((6, 2), 3)
    within = brute_energy(x.numpy(), x.numpy())
    assert abs(energy_distance(x, x).item() - within) < 1e-12 and within < 0


# --------------------------------------------------------------------------- closed forms


def sum_abs_cross(a, b):
    r""":math:`\sum_{i, j} \lvert a_i - b_j\rvert` in O((n + m) log m), by sorting."""
    b = np.sort(b)
    prefix = np.concatenate([[0.0], np.cumsum(b)])
    below = np.searchsorted(b, a)
    return float(np.sum(a * below - prefix[below] + (prefix[-1] - prefix[below])
                        - a * (len(b) - below)))


def sum_abs_within(a):
    r""":math:`\sum_{i \ne j} \lvert a_i - a_j\rvert` from the order statistics."""
    a = np.sort(a)
    n = len(a)
    return float(2 * np.sum(a * (2 * np.arange(1, n + 1) - n - 1)))


def sorted_energy(x, y):
    n, m = len(x), len(y)
    return (2 * sum_abs_cross(x, y) / (n * m) - sum_abs_within(x) / (n * (n - 1))
            - sum_abs_within(y) / (m * (m - 1)))


def test_sorting_reference_agrees_with_brute_force():
    x, y = draw(8, 4).numpy(), draw(5, 5, loc=1.0).numpy()
    assert abs(sorted_energy(x, y) - brute_energy(x, y)) < 1e-12


@pytest.mark.slow
def test_energy_distance_of_two_gaussians_matches_the_closed_form():
    mu1, s1, mu2, s2 = 0.0, 1.0, 0.5, 1.5
    # 2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(mu1 - mu2, s1^2 + s2^2) and
    # X - X' ~ N(0, 2 s1^2).
    exact = (2 * expected_abs_normal(mu1 - mu2, s1**2 + s2**2)
             - expected_abs_normal(0.0, 2 * s1**2) - expected_abs_normal(0.0, 2 * s2**2))
    n = 20_000
    x, y = draw(n, 10, mu1, s1), draw(n, 11, mu2, s2)
    estimate = energy_distance(x, y).item()  # blockwise: never a 20000 x 20000 matrix
    # Exact against an O(n log n) evaluation of the same U-statistic.
    reference = sorted_energy(x.numpy(), y.numpy())
    assert abs(estimate - reference) < 1e-9 * abs(reference)
    # The estimator's standard deviation at this n, from 60 independent repeats.
    repeats = np.array([sorted_energy(draw(n, 100 + 2 * r, mu1, s1).numpy(),
                                      draw(n, 101 + 2 * r, mu2, s2).numpy()) for r in range(60)])
    sd = repeats.std(ddof=1)
    assert abs(repeats.mean() - exact) < 4 * sd / math.sqrt(len(repeats))
    assert abs(estimate - exact) < 4 * sd
    assert sd < 0.05 * exact  # the check has resolution: ~0.1 against sd ~ 0.004


def test_energy_distance_is_unbiased_for_equal_laws():
    n, repeats = 60, 300
    x = draw((repeats, n, 2), 20)
    y = draw((repeats, n, 2), 21)
    estimates = np.array([energy_distance(x[r], y[r]).item() for r in range(repeats)])
    se = estimates.std(ddof=1) / math.sqrt(repeats)
    assert abs(estimates.mean()) < 4 * se
    # The biased V-statistic (S^2 denominators) would sit E||X - X'|| (1/n + 1/m) above
    # zero, about 0.059 here: far outside the tolerance, so the check can tell them apart.
    assert 4 * se < 0.2 * 2 * math.sqrt(math.pi) / n


def test_energy_distance_grows_with_the_shift():
    x = draw((500, 2), 30)
    values = [energy_distance(x, draw((500, 2), 31) + shift).item() for shift in (0.0, 0.5, 2.0)]
    assert values[0] < values[1] < values[2]


def test_energy_distance_has_gradients():
    x = draw((20, 3), 32).requires_grad_()
    energy_distance(x, draw((15, 3), 33)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- MMD


@pytest.mark.parametrize(("n", "m", "d", "h"), [(7, 5, 3, 0.8), (2, 3, 1, 2.0), (9, 6, None, 0.5)])
def test_mmd_matches_brute_force(n, m, d, h, blocks):
    x = draw((n,) if d is None else (n, d), 40)
    y = draw((m,) if d is None else (m, d), 41, loc=0.3)
    estimate = mmd(x, y, bandwidth=h)
    assert estimate.shape == () and estimate.dtype == torch.float64
    assert abs(estimate.item() - brute_mmd(x.numpy(), y.numpy(), h)) < 1e-10
    as_tensor = torch.tensor(h, dtype=torch.float64)
    assert abs(mmd(x, y, bandwidth=as_tensor).item() - estimate.item()) < 1e-15


def test_mmd_median_heuristic():
    x, y = draw((8, 2), 42), draw((7, 2), 43, loc=1.0)
    h = brute_median_distance(x.numpy(), y.numpy())
    assert abs(mmd(x, y).item() - brute_mmd(x.numpy(), y.numpy(), h)) < 1e-10


def test_mmd_median_heuristic_on_a_large_pooled_sample_is_a_subsample_median():
    x, y = draw((3000, 2), 44), draw((1000, 2), 45, loc=0.5)
    z = torch.cat([x, y]).numpy()
    index = np.round(np.linspace(0, len(z) - 1, 2048)).astype(int)
    sub = z[index]
    distances = np.sqrt(((sub[:, None] - sub[None]) ** 2).sum(-1))[np.triu_indices(len(sub), 1)]
    h = float(np.median(distances))
    assert abs(mmd(x, y).item() - mmd(x, y, bandwidth=h).item()) < 1e-12
    # ... and close to the median over all pairs.
    full = torch.pdist(torch.cat([x, y])).median().item()
    assert abs(h - full) < 0.02 * full


def gaussian_mmd2(shift, h, d):
    r"""Exact MMD^2 between N(0, I) and N(shift, I) in d dimensions, Gaussian kernel h.

    For :math:`Z \sim \mathcal{N}(\mu, s^2 I_d)`,
    :math:`\mathbb{E} e^{-\lVert Z\rVert^2 / 2h^2} = (h^2 / (h^2 + s^2))^{d/2}
    e^{-\lVert\mu\rVert^2 / 2(h^2 + s^2)}`, with :math:`s^2 = 2` for differences.
    """
    factor = (h**2 / (h**2 + 2)) ** (d / 2)
    return 2 * factor * (1 - math.exp(-(shift**2) / (2 * (h**2 + 2))))


def test_mmd_is_unbiased_and_matches_the_gaussian_closed_form():
    n, repeats, h, d = 400, 30, 1.0, 2
    shift = torch.tensor([0.6, 0.0], dtype=torch.float64)
    same, shifted = [], []
    for r in range(repeats):
        x, y = draw((n, d), 50 + 3 * r), draw((n, d), 51 + 3 * r)
        same.append(mmd(x, y, bandwidth=h).item())
        shifted.append(mmd(x, draw((n, d), 52 + 3 * r) + shift, bandwidth=h).item())
    same, shifted = np.array(same), np.array(shifted)
    se_same = same.std(ddof=1) / math.sqrt(repeats)
    se_shifted = shifted.std(ddof=1) / math.sqrt(repeats)
    assert abs(same.mean()) < 4 * se_same
    exact = gaussian_mmd2(0.6, h, d)
    assert abs(shifted.mean() - exact) < 4 * se_shifted
    assert shifted.min() > same.max()  # a shift of 0.6 sd is clearly detected at n = 400
    assert shifted.mean() > 20 * se_shifted


# --------------------------------------------------------------------------- CRPS


def gaussian_crps(mu, sigma, y):
    z = (y - mu) / sigma
    return sigma * (z * (2 * normal_cdf(z) - 1) + 2 * normal_pdf(z) - 1 / math.sqrt(math.pi))


def test_crps_matches_brute_force_on_a_tiny_ensemble():
    samples = draw((5, 3, 2), 60)
    y = draw((3, 2), 61)
    scores = crps_ensemble(samples, y)
    assert scores.shape == (3, 2) and scores.dtype == torch.float64
    assert np.abs(scores.numpy() - brute_crps(samples.numpy(), y.numpy())).max() < 1e-12


def test_crps_by_hand():
    # Members {0, 2}, y = 1: E|X - y| = 1 and the fair spread sum_{s != t}|x_s - x_t| / 2 = 2,
    # halved: 1. The score is 0 (the S^2 form would give 1/2).
    samples = torch.tensor([[0.0], [2.0]])
    assert crps_ensemble(samples, torch.tensor([1.0])).tolist() == [0.0]
    # Scalar observations: samples (S,), y ().
    assert crps_ensemble(torch.tensor([0.0, 1.0, 2.0]), torch.tensor(5.0)).item() == \
        pytest.approx(4.0 - 0.5 * 8 / 6)


def test_crps_of_a_gaussian_ensemble_matches_the_closed_form():
    mu, sigma = 0.3, 1.7
    ys = [-3.0, -0.5, 0.3, 1.0, 4.0]
    y = torch.tensor(ys, dtype=torch.float64)
    size, repeats = 5000, 40
    scores = np.stack([crps_ensemble(draw((size, len(ys)), 70 + r, mu, sigma), y).numpy()
                       for r in range(repeats)])
    se = scores.std(0, ddof=1) / math.sqrt(repeats)
    exact = np.array([gaussian_crps(mu, sigma, value) for value in ys])
    assert (np.abs(scores.mean(0) - exact) < 4 * se).all()
    # The fair form is unbiased even for two members.
    pairs = crps_ensemble(draw((2, 20_000), 80, mu, sigma), torch.full((20_000,), 1.0,
                                                                      dtype=torch.float64))
    pairs_se = pairs.std().item() / math.sqrt(pairs.numel())
    assert abs(pairs.mean().item() - gaussian_crps(mu, sigma, 1.0)) < 4 * pairs_se


def test_crps_is_shift_invariant_and_keeps_float32():
    samples = draw((50, 4), 90).float()
    y = draw(4, 91).float()
    scores = crps_ensemble(samples, y)
    assert scores.dtype == torch.float32
    shifted = crps_ensemble(samples.double() + 1e6, y.double() + 1e6)
    assert torch.allclose(shifted, scores.double(), atol=1e-5)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("function", [energy_distance, mmd])
def test_two_sample_validation(function):
    good = torch.randn(5, 2)
    cases = [
        ((good.numpy(), good), "x"),
        ((good, [[0.0, 1.0]] * 3), "y"),
        ((good.long(), good), "x"),
        ((good, torch.randn(5, 2, 2)), "y"),
        ((torch.randn(1, 2), good), "x"),
        ((good, torch.randn(1)), "y"),
        ((good, torch.randn(5, 0)), "y"),
        ((good, good.double()), "y"),
        ((good, good.to("meta")), "y"),
        ((good, torch.randn(5, 3)), "y"),
        ((torch.tensor([[0.0, math.nan], [1.0, 2.0]]), good), "x"),
        ((good, torch.tensor([[0.0, 1.0], [math.inf, 2.0]])), "y"),
    ]
    for (x, y), name in cases:
        with pytest.raises(ValueError, match=rf"^{name} "):
            function(x, y)


def test_mmd_bandwidth_validation():
    x, y = torch.randn(5, 2), torch.randn(4, 2)
    for bandwidth in (0.0, -1.0, math.nan, math.inf, "1", True, torch.tensor([1.0, 2.0]),
                      torch.tensor(1)):
        with pytest.raises(ValueError, match=r"^bandwidth"):
            mmd(x, y, bandwidth=bandwidth)
    with pytest.raises(ValueError, match=r"^bandwidth: the median heuristic gave 0"):
        mmd(torch.zeros(5, 2), torch.zeros(4, 2))


def test_crps_validation():
    samples, y = torch.randn(6, 3), torch.randn(3)
    cases = [
        ((samples.numpy(), y), "samples"),
        ((samples.long(), y), "samples"),
        ((torch.randn(1, 3), y), "samples"),
        ((torch.tensor(1.0), torch.tensor(1.0)), "samples"),
        ((samples, 1.0), "y"),
        ((samples, torch.randn(4)), "y"),
        ((samples, torch.randn(6, 3)), "y"),
        ((samples, y.double()), "y"),
        ((samples, y.to("meta")), "y"),
        ((torch.cat([samples, torch.full((1, 3), math.nan)]), y), "samples"),
        ((samples, torch.tensor([0.0, math.inf, 1.0])), "y"),
    ]
    for (s, obs), name in cases:
        with pytest.raises(ValueError, match=rf"^{name} "):
            crps_ensemble(s, obs)


def test_fair_crps_is_pyros_empirical_crps_less_the_ensemble_bias():
    """pyro.ops.stats.crps_empirical scores the empirical law of the members (pair term over
    S^2); the fair form divides that term by S(S-1): they differ by sum|x_s - x_t| / (2S^2(S-1))."""
    from pyro.ops.stats import crps_empirical

    gen = torch.Generator().manual_seed(3)
    samples = torch.randn(9, 4, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    S = samples.shape[0]
    pairs = (samples.unsqueeze(0) - samples.unsqueeze(1)).abs().sum((0, 1))  # brute force
    expected = crps_empirical(samples, y) - pairs / (2 * S**2 * (S - 1))
    assert torch.allclose(crps_ensemble(samples, y), expected, rtol=1e-12, atol=1e-12)
