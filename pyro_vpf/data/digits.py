r"""The 8x8 handwritten digits bundled with scikit-learn, as tensors with a seeded split."""

import math
import numbers
from typing import NamedTuple

import torch

from pyro_vpf.data.toy2d import _resolve_dtype
from pyro_vpf.optional import optional_import

__all__ = ["Digits", "load_digits"]


class Digits(NamedTuple):
    """A train/test split of the digits.

    Attributes:
        train (torch.Tensor): ``(N_train, 64)`` images, one flattened 8x8 image a row.
        test (torch.Tensor): ``(N_test, 64)`` images.
        train_labels (torch.Tensor): ``(N_train,)`` ``int64`` digits ``0..9``.
        test_labels (torch.Tensor): ``(N_test,)`` ``int64`` digits ``0..9``.
    """

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor


def load_digits(*, binarize=True, threshold=8.0, test_fraction=0.2, seed=0, dtype=None,
                device=None):
    r"""The 1797 scikit-learn digits, 64 pixels each, binarised or scaled to :math:`[0, 1]`.

    The data ship inside scikit-learn (no download). Pixels :math:`v \in \{0, \dots, 16\}`
    become

    .. math::

        x = \mathbb{1}[v > \tau] \quad \text{(binarised, for a Bernoulli decoder)}, \qquad
        x = v / 16 \quad \text{(otherwise)},

    with :math:`\tau` = ``threshold``. The images are split at random with a private generator
    seeded with ``seed``: ``round(test_fraction * 1797)`` of them (at least one, at most 1796)
    form the test set, the rest the training set, both in the order of the permutation.

    scikit-learn is an optional dependency: ``pip install "pyro-vpf[data]"``.

    Args:
        binarize (bool): threshold the pixels to 0/1 rather than scaling them.
        threshold (float): :math:`\tau`, used when ``binarize`` is ``True``.
        test_fraction (float): share of the images held out, in :math:`(0, 1)`.
        seed (int): seed of the split.
        dtype (torch.dtype): floating-point dtype of the images (default: torch's default).
        device (torch.device or str): device of all four tensors (default: CPU).

    Returns:
        Digits: ``(train, test, train_labels, test_labels)``.

    Raises:
        ImportError: if scikit-learn is not installed.
    """
    if not isinstance(binarize, bool):
        raise ValueError(f"binarize must be a bool, got {binarize!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite real number, got {threshold!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    dtype = _resolve_dtype(dtype)
    datasets = optional_import("sklearn.datasets", needed_by="load_digits",
                               package="scikit-learn")
    bunch = datasets.load_digits()
    pixels = torch.as_tensor(bunch.data, dtype=torch.float64)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    images = (pixels > float(threshold)).to(torch.float64) if binarize else pixels / 16.0
    total = images.shape[0]
    num_test = min(max(1, round(test_fraction * total)), total - 1)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    test_index, train_index = order[:num_test], order[num_test:]
    images = images.to(dtype)
    return Digits(images[train_index].to(device=device), images[test_index].to(device=device),
                  labels[train_index].to(device=device), labels[test_index].to(device=device))
