import math
import sys

import numpy as np
import pytest
import torch

from pyro_vpf.data import (
    TOY_2D,
    checkerboard,
    eight_gaussians,
    load_digits,
    toy_2d,
    two_moons,
)

NAMES = sorted(TOY_2D)


def within(estimate, expected, standard_error, k=5.0):
    return abs(float(estimate) - float(expected)) < k * float(standard_error)


# --------------------------------------------------------------------------- shared behaviour


def test_registry_holds_the_three_generators():
    assert TOY_2D == {"8gaussians": eight_gaussians, "moons": two_moons,
                      "checkerboard": checkerboard}


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_default_dtype(name):
    points = toy_2d(name, 17)
    assert points.shape == (17, 2)
    assert points.dtype == torch.get_default_dtype()
    assert points.device.type == "cpu"
    assert torch.isfinite(points).all()


@pytest.mark.parametrize("name", NAMES)
def test_default_dtype_follows_torch(name, float64):
    assert toy_2d(name, 5).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device_are_honoured(name, dtype):
    points = toy_2d(name, 9, seed=4, dtype=dtype, device=torch.device("cpu"))
    assert points.dtype == dtype and points.device == torch.device("cpu")
    reference = toy_2d(name, 9, seed=4, dtype=torch.float64, device="cpu")
    # The same draws, rounded to the requested dtype.
    assert torch.equal(points, reference.to(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_seeding_is_private_and_reproducible(name):
    state = torch.get_rng_state()
    first = toy_2d(name, 50, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    torch.manual_seed(123)  # and does not matter
    assert torch.equal(toy_2d(name, 50, seed=1), first)
    assert not torch.equal(toy_2d(name, 50, seed=2), first)


def test_toy_2d_dispatches_with_keyword_arguments():
    assert torch.equal(toy_2d("moons", 30, noise=0.3, seed=5), two_moons(30, noise=0.3, seed=5))
    assert torch.equal(toy_2d("8gaussians", 30, radius=3.0, seed=5),
                       eight_gaussians(30, radius=3.0, seed=5))
    assert torch.equal(toy_2d("checkerboard", 30, seed=5), checkerboard(30, seed=5))


def test_toy_2d_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"^name .*'8gaussians'.*'moons'.*'checkerboard'"):
        toy_2d("spirals", 10)
    with pytest.raises(ValueError, match=r"^name "):
        toy_2d(None, 10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10", None])
def test_bad_n(name, n):
    with pytest.raises(ValueError, match=r"^n must"):
        toy_2d(name, n)


@pytest.mark.parametrize("name", NAMES)
def test_bad_seed_and_dtype(name):
    with pytest.raises(ValueError, match=r"^seed "):
        toy_2d(name, 4, seed=1.5)
    with pytest.raises(ValueError, match=r"^dtype "):
        toy_2d(name, 4, dtype=torch.int64)


def test_bad_shape_parameters():
    for kwargs, argument in [({"radius": 0.0}, "radius"), ({"radius": -1.0}, "radius"),
                             ({"scale": -0.1}, "scale"), ({"scale": math.inf}, "scale"),
                             ({"radius": "2"}, "radius")]:
        with pytest.raises(ValueError, match=rf"^{argument} "):
            eight_gaussians(4, **kwargs)
    for noise in (-0.1, math.nan, None):
        with pytest.raises(ValueError, match=r"^noise "):
            two_moons(4, noise=noise)


def test_numpy_integers_are_accepted():
    assert eight_gaussians(np.int64(6), seed=np.int32(2)).shape == (6, 2)


# --------------------------------------------------------------------------- eight Gaussians


@pytest.mark.parametrize(("radius", "scale"), [(2.0, 0.1), (3.0, 0.5)])
def test_eight_gaussians_moments(radius, scale):
    n = 20_000
    x = eight_gaussians(n, radius=radius, scale=scale, seed=11, dtype=torch.float64).numpy()
    # Each coordinate has variance r^2 / 2 + s^2 (E cos^2 = 1/2 over the eight angles).
    coordinate_se = math.sqrt((radius**2 / 2 + scale**2) / n)
    assert all(within(mean, 0.0, coordinate_se) for mean in x.mean(0))
    square_norm = (x**2).sum(1)
    # Var ||x||^2 = 4 r^2 s^2 + 4 s^4 (the cross term has mean zero by symmetry).
    square_norm_se = math.sqrt((4 * radius**2 * scale**2 + 4 * scale**4) / n)
    assert within(square_norm.mean(), radius**2 + 2 * scale**2, square_norm_se)


def test_eight_gaussians_components_are_equally_likely_and_have_the_right_scale():
    n, radius, scale = 20_000, 2.0, 0.1
    x = eight_gaussians(n, radius=radius, scale=scale, seed=3, dtype=torch.float64).numpy()
    angles = np.arange(8) * np.pi / 4
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(nearest, minlength=8)
    assert all(within(c, n / 8, math.sqrt(n * (1 / 8) * (7 / 8))) for c in counts)
    residual = x - centres[nearest]
    # Components 1.53 apart with s = 0.1: misassignment has probability ~1e-14.
    for column in residual.T:
        assert within(column.mean(), 0.0, scale / math.sqrt(n))
        assert within(column.std(), scale, scale / math.sqrt(2 * n))


# --------------------------------------------------------------------------- two moons


def split_moons(points):
    """Assign noiseless, centred points to the moon whose circle they lie on."""
    shifted = points + np.array([0.5, 0.25])
    upper = np.abs(np.hypot(shifted[:, 0], shifted[:, 1]) - 1) < 1e-9
    lower = np.abs(np.hypot(shifted[:, 0] - 1, shifted[:, 1] - 0.5) - 1) < 1e-9
    return shifted, upper, lower


@pytest.mark.parametrize("n", [2001, 2000, 1])
def test_two_moons_without_noise_lie_on_the_two_half_circles(n):
    points = two_moons(n, noise=0.0, seed=7, dtype=torch.float64).numpy()
    shifted, upper, lower = split_moons(points)
    # The two arcs do not meet, so every point is on exactly one of them.
    assert (upper ^ lower).all()
    assert upper.sum() == n - n // 2 and lower.sum() == n // 2
    assert (shifted[upper, 1] >= -1e-12).all() and (shifted[lower, 1] <= 0.5 + 1e-12).all()
    # The moons are interleaved in the output, not in two blocks.
    if n > 1:
        assert upper[: n // 2].any() and lower[: n // 2].any()


def test_two_moons_angles_are_uniform_and_data_centred():
    n = 20_000
    points = two_moons(n, noise=0.0, seed=2, dtype=torch.float64).numpy()
    shifted, upper, lower = split_moons(points)
    theta_upper = np.arctan2(shifted[upper, 1], shifted[upper, 0])
    theta_lower = np.arctan2(0.5 - shifted[lower, 1], 1 - shifted[lower, 0])
    for theta in (theta_upper, theta_lower):
        assert theta.min() >= 0 and theta.max() <= np.pi
        # Uniform on [0, pi]: mean pi / 2, variance pi^2 / 12.
        assert within(theta.mean(), np.pi / 2, np.pi / math.sqrt(12 * theta.size))
        assert within((theta < np.pi / 4).mean(), 0.25, math.sqrt(0.25 * 0.75 / theta.size))
    # Coordinate variances 3/4 and 1/2 - 4/pi^2 + (2/pi - 1/4)^2 around mean 0.
    variances = [0.75, 0.5 - 4 / np.pi**2 + (2 / np.pi - 0.25) ** 2]
    for column, variance in zip(points.T, variances, strict=True):
        assert within(column.mean(), 0.0, math.sqrt(variance / n))


@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_two_moons_noise_level(noise):
    n = 10_000
    clean = two_moons(n, noise=0.0, seed=9, dtype=torch.float64).numpy()
    noisy = two_moons(n, noise=noise, seed=9, dtype=torch.float64).numpy()
    # For a fixed seed the noise is an additive N(0, noise^2 I) perturbation of the curve.
    eps = (noisy - clean).ravel()
    assert within(eps.mean(), 0.0, noise / math.sqrt(eps.size))
    assert within(eps.std(), noise, noise / math.sqrt(2 * eps.size))
    assert within(np.mean(np.abs(eps) < noise), math.erf(1 / math.sqrt(2)),
                  math.sqrt(0.68 * 0.32 / eps.size))


# --------------------------------------------------------------------------- checkerboard


def test_checkerboard_is_uniform_on_the_black_squares():
    n = 20_000
    x = checkerboard(n, seed=5, dtype=torch.float64).numpy()
    assert (x >= -2).all() and (x <= 2).all()
    cell = np.floor(x + 2).astype(int)
    assert (cell.sum(1) % 2 == 0).all()  # black: column + row even, bottom-left included
    counts = np.zeros((4, 4), dtype=int)
    np.add.at(counts, (cell[:, 0], cell[:, 1]), 1)
    black = (np.add.outer(np.arange(4), np.arange(4)) % 2) == 0
    assert (counts[~black] == 0).all()
    assert all(within(c, n / 8, math.sqrt(n * (1 / 8) * (7 / 8))) for c in counts[black])
    # Within its square, a point is uniform: each quarter of the square gets 1/4.
    offset = x + 2 - cell
    quarter = (offset[:, 0] >= 0.5).astype(int) * 2 + (offset[:, 1] >= 0.5)
    quarter_counts = np.bincount(quarter, minlength=4)
    assert all(within(c, n / 4, math.sqrt(n * 0.25 * 0.75)) for c in quarter_counts)
    assert all(within(column.mean(), 0.5, math.sqrt(1 / 12 / n)) for column in offset.T)


# --------------------------------------------------------------------------- digits


def test_digits_need_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "pyro-vpf\[data\]"') as info:
        load_digits()
    assert "scikit-learn" in str(info.value)


@pytest.fixture(scope="module")
def raw_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    return bunch.data, bunch.target


def sorted_rows(images, labels):
    return sorted(map(tuple, np.column_stack([images, labels]).tolist()))


def test_digits_shapes_labels_and_binary_pixels(raw_digits):
    data, target = raw_digits
    digits = load_digits()
    assert digits.train.shape == (1438, 64) and digits.test.shape == (359, 64)
    assert digits.train_labels.shape == (1438,) and digits.test_labels.shape == (359,)
    assert digits.train.dtype == torch.get_default_dtype()
    assert digits.train_labels.dtype == torch.int64
    labels = torch.cat([digits.train_labels, digits.test_labels])
    assert labels.min() == 0 and labels.max() == 9 and labels.unique().numel() == 10
    images = torch.cat([digits.train, digits.test])
    assert ((images == 0) | (images == 1)).all()
    # The split is a permutation of the data set: disjoint, and nothing lost or repeated.
    assert sorted_rows(images.numpy(), labels.numpy()) == sorted_rows(data > 8, target)


def test_digits_scaled_pixels(raw_digits, float64):
    data, target = raw_digits
    digits = load_digits(binarize=False)
    images = torch.cat([digits.train, digits.test])
    assert images.dtype == torch.float64
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(images * 16, (images * 16).round())
    labels = torch.cat([digits.train_labels, digits.test_labels])
    assert sorted_rows((images * 16).numpy(), labels.numpy()) == sorted_rows(data, target)


def test_digits_threshold(raw_digits):
    data, _ = raw_digits
    low = load_digits(threshold=0.0)
    high = load_digits(threshold=12.0)
    # The same seed gives the same split, so only the pixel values change.
    assert torch.equal(low.train_labels, high.train_labels)
    assert (low.train >= high.train).all() and low.train.sum() > high.train.sum()
    assert torch.cat([low.train, low.test]).mean().item() == pytest.approx((data > 0).mean())


def test_digits_split_is_seeded(raw_digits):
    first = load_digits(seed=3, test_fraction=0.25)
    assert first.train.shape == (1348, 64) and first.test.shape == (449, 64)
    again = load_digits(seed=3, test_fraction=0.25)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    other = load_digits(seed=4, test_fraction=0.25)
    assert not torch.equal(first.test_labels, other.test_labels)


def test_digits_dtype_and_device(raw_digits):
    digits = load_digits(dtype=torch.float64, device="cpu")
    assert digits.train.dtype == torch.float64 and digits.test.dtype == torch.float64
    assert all(t.device == torch.device("cpu") for t in digits)
    assert digits.test_labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"test_fraction": 0.0}, "test_fraction"), ({"test_fraction": 1.0}, "test_fraction"),
     ({"test_fraction": "0.2"}, "test_fraction"), ({"binarize": "yes"}, "binarize"),
     ({"threshold": math.nan}, "threshold"), ({"seed": 0.5}, "seed"),
     ({"dtype": torch.int32}, "dtype")],
)
def test_digits_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} "):
        load_digits(**kwargs)
