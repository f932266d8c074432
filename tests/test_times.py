"""The two layouts of a batch's times: shared ``(K+1,)`` and per sequence ``(B, K+1)``."""

import pytest
import torch

from pyro_vpf.times import expand_times, select_times


def test_select_times_keeps_shared_times_and_takes_rows_of_per_sequence_times():
    shared = torch.linspace(0, 1, 5)
    assert select_times(shared, torch.tensor([2, 0])) is shared
    assert select_times(shared, slice(1, 3)) is shared
    rows = shared + torch.arange(4.0).unsqueeze(-1)
    assert torch.equal(select_times(rows, torch.tensor([3, 1])), rows[[3, 1]])
    assert torch.equal(select_times(rows, 2), rows[2])


def test_expand_times_gives_one_row_per_sequence():
    shared = torch.linspace(0, 1, 5)
    expanded = expand_times(shared, 3)
    assert expanded.shape == (3, 5) and all(torch.equal(row, shared) for row in expanded)
    rows = torch.rand(3, 5).cumsum(-1)
    assert torch.equal(expand_times(rows, 3), rows)
    with pytest.raises(ValueError, match="times has 3 rows but there are 2 sequences"):
        expand_times(rows, 2)
