"""A container for a set of sequences with their times and mask."""

from dataclasses import dataclass, replace

import torch

from pyro_vpf.times import select_times

__all__ = ["SequenceData"]


@dataclass
class SequenceData:
    """Sequences ``x (N, K+1, Dx)`` at ``times`` (``(K+1,)`` shared or ``(N, K+1)``), the one
    container of the collection's data (training loops, data sets and loaders use it).

    ``times`` is ``None`` for unordered data points ``x (N, D)`` of a static model.

    ``mask`` (``(N, K+1)`` or ``(N, K+1, Dx)`` bool, ``True`` = observed) or ``None``.
    ``loc`` and ``scale`` (``(Dx,)``) undo the standardisation:
    ``original = x * scale + loc``.
    """

    x: torch.Tensor
    times: torch.Tensor | None
    mask: torch.Tensor | None = None
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, index):
        mask = None if self.mask is None else self.mask[index]
        times = None if self.times is None else select_times(self.times, index)
        return replace(self, x=self.x[index], times=times, mask=mask)

    @property
    def obs_dim(self):
        return self.x.shape[-1]

    def to(self, device=None, dtype=None):
        def move(t, floating=True):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if floating else None)

        return replace(self, x=move(self.x), times=move(self.times),
                       mask=move(self.mask, floating=False), loc=move(self.loc),
                       scale=move(self.scale))

    def unstandardise(self, values):
        """Map standardised values ``(..., Dx)`` back to the original units."""
        if self.loc is None:
            return values
        return values * self.scale.to(values) + self.loc.to(values)
