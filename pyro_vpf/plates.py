"""The plate over sequences that every model and guide of the collection opens."""

from contextlib import contextmanager

import pyro

from pyro_vpf.sites import SEQUENCES
from pyro_vpf.times import select_times

__all__ = ["sequence_plate"]


@contextmanager
def sequence_plate(x, times, mask, num_sequences, batch_size=None):
    """Open the plate ``"sequences"`` (dim -1) and yield the data of its subsample.

    Model and guide both open it with the same ``batch_size``; under SVI the guide draws the
    subsample indices and the model replays them, and the plate rescales the log-densities.

    Yields:
        tuple: ``(x, times, mask)`` restricted to the subsample (``x`` or ``mask`` may be
        ``None``; shared ``(K+1,)`` times are passed through).
    """
    # the subsample indices live on the data's device (Pyro's default is torch's default one)
    device = times.device if x is None else x.device
    with pyro.plate(SEQUENCES, num_sequences, subsample_size=batch_size, dim=-1,
                    device=device) as idx:
        yield (None if x is None else x[idx],
               select_times(times, idx),
               None if mask is None else mask[idx])
