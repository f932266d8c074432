r"""Seeded masks that hide observed entries, for interpolation benchmarks."""

import torch

__all__ = ["hide_blocks", "hide_entries"]


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (B, K+1, Dx) with positive sizes, got {shape}")
    return shape


def hide_entries(shape, fraction, *, seed=0, device=None):
    r"""Hide ``round(fraction * (K+1) * Dx)`` entries of each sequence, chosen uniformly.

    Every sequence loses the same number of entries, drawn without replacement from its
    :math:`(K+1) D_x` entries (a private generator seeded with ``seed``).

    Returns:
        torch.Tensor: ``hidden`` ``(B, K+1, Dx)`` bool, ``True`` = hidden.
    """
    B, K1, D = _check_shape(shape)
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    count = round(fraction * K1 * D)
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.rand(B, K1 * D, generator=gen).argsort(-1).argsort(-1)
    return (ranks < count).reshape(B, K1, D).to(device)


def hide_blocks(shape, length, *, seed=0, device=None):
    r"""Hide one block of ``length`` consecutive time points (every channel) per sequence.

    The block's first index is uniform on :math:`\{0, \dots, K+1-\text{length}\}` (a private
    generator seeded with ``seed``).

    Returns:
        torch.Tensor: ``hidden`` ``(B, K+1, Dx)`` bool, ``True`` = hidden.
    """
    B, K1, D = _check_shape(shape)
    if not 1 <= int(length) < K1:
        raise ValueError(f"length must lie in [1, {K1 - 1}], got {length}")
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, K1 - int(length) + 1, (B, 1), generator=gen)
    index = torch.arange(K1).unsqueeze(0)
    hidden = (index >= start) & (index < start + int(length))
    return hidden.unsqueeze(-1).expand(B, K1, D).to(device)
