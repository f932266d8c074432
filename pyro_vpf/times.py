"""Time grids of a batch of sequences: shared ``(K+1,)`` or one row per sequence ``(B, K+1)``.

Every function of the collection takes either layout; these two helpers are the only places
that tell them apart.
"""

__all__ = ["expand_times", "select_times"]


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
