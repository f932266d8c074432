"""Time grids of a batch of sequences: shared ``(K+1,)`` or one row per sequence ``(B, K+1)``.

Every function of the collection takes either layout; :func:`select_times` and
:func:`expand_times` are the places that tell them apart. A ragged panel is padded at the end
with unobserved points: :func:`last_observed` finds where each sequence's real points end.
"""

import torch

__all__ = ["expand_times", "last_observed", "select_times"]


def select_times(times, rows):
    """The times of the sequences ``rows`` (an index, slice or index tensor): those rows of
    per-sequence ``(B, K+1)`` times; shared ``(K+1,)`` times are every subset's own and are
    returned as they are (so models keep their once-per-time-point work)."""
    return times[rows] if times.dim() == 2 else times


def expand_times(times, num_sequences):
    """``(B, K+1)`` times, one row per sequence: a view of shared ``(K+1,)`` times, or
    per-sequence times themselves (which must have ``B`` rows)."""
    if times.dim() == 2 and times.shape[0] != num_sequences:
        raise ValueError(f"times has {times.shape[0]} rows but there are {num_sequences} "
                         "sequences")
    return times.expand(num_sequences, times.shape[-1])


def last_observed(mask, num_points):
    """``(B,)`` index of each sequence's last observed time point (one with any observed
    entry): where a ragged panel's real points end and its trailing padding begins.

    Args:
        mask: ``(B, K+1)`` or ``(B, K+1, Dx)`` bool, or ``None`` (every point observed).
        num_points (int): ``K+1``.

    Returns:
        torch.Tensor: long ``(B,)`` (0 for a sequence with no observed point), or ``None``
        when ``mask`` is ``None``.
    """
    if mask is None:
        return None
    present = mask if mask.dim() == 2 else mask.any(-1)
    index = torch.arange(num_points, device=mask.device)
    return torch.where(present, index, -1).amax(-1).clamp_min(0)
