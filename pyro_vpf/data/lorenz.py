r"""The stochastic Lorenz system, simulated and observed."""

import math

import torch

from pyro_vpf.data.sequences import SequenceData

__all__ = ["stochastic_lorenz", "simulate_lorenz"]


def simulate_lorenz(initial, t_end, num_steps, *, sigma=10.0, rho=28.0, beta=8.0 / 3.0,
                    diffusion=0.15, generator=None):
    r"""Euler--Maruyama paths of the stochastic Lorenz system on a uniform fine grid.

    .. math::

        dx = \sigma(y - x)\,dt + \alpha x\,dW_1,\quad
        dy = (x(\rho - z) - y)\,dt + \alpha y\,dW_2,\quad
        dz = (xy - \beta z)\,dt + \alpha z\,dW_3,

    with multiplicative diffusion :math:`\alpha` = ``diffusion`` (Li et al., 2020, §7).

    Args:
        initial (torch.Tensor): ``(N, 3)`` states at time 0.
        t_end (float): final time.
        num_steps (int): Euler--Maruyama steps.

    Returns:
        torch.Tensor: ``(N, num_steps + 1, 3)`` states on the grid.
    """
    dt = t_end / num_steps
    sqrt_dt = math.sqrt(dt)
    state = initial.clone()
    path = [state]
    # A simulator integrates step by step: this loop is the SDE solver that the models
    # themselves avoid. It is vectorised over sequences.
    for _ in range(num_steps):
        x, y, z = state.unbind(-1)
        drift = torch.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], dim=-1)
        noise = torch.randn(state.shape, generator=generator, dtype=state.dtype)
        state = state + drift * dt + diffusion * state * noise * sqrt_dt
        path.append(state)
    return torch.stack(path, dim=1)


def check_lorenz_settings(num_sequences, num_points, t_end, obs_noise, missing_rate,
                          missing="points", test_fraction=0.2):
    """The checks of :func:`stochastic_lorenz`'s settings (``ValueError`` naming the
    setting), for callers that validate before any work (the command line's settings)."""
    if num_points < 2 or num_sequences < 2:
        raise ValueError(f"need num_points >= 2 and num_sequences >= 2, got {num_points} and "
                         f"{num_sequences}")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must lie in [0, 1), got {missing_rate}")
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be positive and finite, got {t_end}")
    if not (math.isfinite(obs_noise) and obs_noise >= 0):
        raise ValueError(f"obs_noise must be finite and >= 0, got {obs_noise}")
    if missing not in ("points", "entries"):
        raise ValueError(f"missing must be 'points' or 'entries', got {missing!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")


def stochastic_lorenz(num_sequences=1024, num_points=41, t_end=1.0, *, obs_noise=0.01,
                      inner_steps=20, irregular=False, missing_rate=0.0, missing="points",
                      test_fraction=0.2, seed=0, dtype=torch.float32, **lorenz_kwargs):
    r"""Stochastic Lorenz sequences, standardised, with optional irregular times and gaps.

    Initial states are standard normal; each observation interval is integrated with
    ``inner_steps`` Euler--Maruyama steps. Channels are standardised with the training set's
    mean and standard deviation, then Gaussian noise of standard deviation ``obs_noise`` is
    added.

    Args:
        num_sequences (int): total number of sequences (train + test).
        num_points (int): observations per sequence, ``K+1``.
        t_end (float): observation horizon ``[0, t_end]``.
        obs_noise (float): observation noise (standardised units).
        inner_steps (int): Euler--Maruyama steps per observation interval.
        irregular (bool): if ``True`` each sequence gets its own ``num_points`` times, drawn
            without replacement from a grid four times finer (the first time always 0).
        missing_rate (float): probability that an entry is missing (mask ``False``).
        missing (str): ``"points"`` (whole time points, mask ``(N, K+1)``) or ``"entries"``
            (single channels, mask ``(N, K+1, 3)``). The first time point is always observed.
        test_fraction (float): share of sequences held out.
        seed (int): seed of a private generator: the data do not depend on global state.

    Returns:
        tuple: ``(train, test)``, two :class:`SequenceData`.
    """
    check_lorenz_settings(num_sequences, num_points, t_end, obs_noise, missing_rate, missing,
                          test_fraction)
    g = torch.Generator().manual_seed(seed)
    refine = 4 if irregular else 1
    grid_points = (num_points - 1) * refine + 1
    initial = torch.randn(num_sequences, 3, generator=g, dtype=torch.float64)
    fine = simulate_lorenz(initial, t_end, (grid_points - 1) * inner_steps, generator=g,
                           **lorenz_kwargs)
    states = fine[:, ::inner_steps]  # (N, grid_points, 3)
    grid = torch.linspace(0.0, t_end, grid_points, dtype=torch.float64)
    if irregular:
        # The first time is kept for every sequence; the others are a random subset.
        picks = torch.rand(num_sequences, grid_points - 1, generator=g).argsort(-1)
        index = torch.sort(picks[:, : num_points - 1] + 1, dim=-1).values
        index = torch.cat([torch.zeros(num_sequences, 1, dtype=torch.long), index], dim=-1)
        states = torch.gather(states, 1, index.unsqueeze(-1).expand(-1, -1, 3))
        times = grid[index]
    else:
        times = grid
    num_test = max(1, int(round(test_fraction * num_sequences)))
    num_train = num_sequences - num_test
    loc = states[:num_train].mean((0, 1))
    scale = states[:num_train].std((0, 1))
    x = (states - loc) / scale
    x = x + obs_noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
    mask = None
    if missing_rate > 0:
        shape = x.shape[:2] if missing == "points" else x.shape
        mask = torch.rand(shape, generator=g) >= missing_rate
        mask[:, 0] = True
    data = SequenceData(x.to(dtype), times.to(dtype), mask, loc.to(dtype), scale.to(dtype))
    return data[:num_train], data[num_train:]
