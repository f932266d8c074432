import pytest
import torch

from pyro_vpf.data import simulate_lorenz, stochastic_lorenz


def rk4_lorenz(state, t_end, num_steps, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    def f(s):
        x, y, z = s.unbind(-1)
        return torch.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], -1)

    h = t_end / num_steps
    for _ in range(num_steps):
        k1 = f(state)
        k2 = f(state + h / 2 * k1)
        k3 = f(state + h / 2 * k2)
        k4 = f(state + h * k3)
        state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return state


def test_euler_maruyama_without_noise_converges_to_the_ode():
    initial = torch.randn(4, 3, dtype=torch.float64)
    path = simulate_lorenz(initial, 0.5, 20_000, diffusion=0.0)
    expected = rk4_lorenz(initial, 0.5, 2_000)
    assert torch.allclose(path[:, -1], expected, rtol=1e-2, atol=1e-2)


def test_multiplicative_noise_has_the_right_scale():
    # Over one small step dt, Var[dx | x] = (alpha x)^2 dt.
    initial = torch.full((20_000, 3), 2.0, dtype=torch.float64)
    path = simulate_lorenz(initial, 1e-4, 1, diffusion=0.15)
    increment = path[:, 1] - path[:, 0]
    assert increment.std(0).div(0.15 * 2.0 * 1e-2).sub(1).abs().max() < 0.03


def test_stochastic_lorenz_splits_standardises_and_is_seeded():
    train, test = stochastic_lorenz(100, 21, seed=3, test_fraction=0.25)
    assert train.x.shape == (75, 21, 3) and test.x.shape == (25, 21, 3)
    assert train.times.shape == (21,)
    assert torch.allclose(train.x.mean((0, 1)), torch.zeros(3), atol=0.01)
    assert torch.allclose(train.x.std((0, 1)), torch.ones(3), atol=0.02)
    again, _ = stochastic_lorenz(100, 21, seed=3, test_fraction=0.25)
    assert torch.equal(train.x, again.x)
    original = train.unstandardise(train.x)
    assert original.abs().max() > 5  # Lorenz units, not standardised ones


def test_irregular_times_and_masks():
    train, _ = stochastic_lorenz(40, 11, irregular=True, missing_rate=0.3, seed=1)
    assert train.times.shape == (32, 11)
    assert (train.times[:, 0] == 0).all() and (train.times.diff(dim=-1) > 0).all()
    assert not torch.equal(train.times[0], train.times[1])
    assert train.mask.shape == (32, 11) and train.mask[:, 0].all()
    assert 0.15 < 1 - train.mask.float().mean() < 0.4
    entries, _ = stochastic_lorenz(40, 11, missing_rate=0.3, missing="entries", seed=1)
    assert entries.mask.shape == (32, 11, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="missing_rate"):
        stochastic_lorenz(10, 5, missing_rate=1.0)
    with pytest.raises(ValueError, match="missing"):
        stochastic_lorenz(10, 5, missing="bogus")
