r"""The BasicMotions smartwatch recordings bundled with aeon, as labelled sequences."""

import os
from typing import NamedTuple

import torch

from pyro_vpf.data.sequences import SequenceData
from pyro_vpf.data.toy2d import _resolve_dtype
from pyro_vpf.optional import optional_import

__all__ = ["BasicMotions", "load_basic_motions"]

_SPLITS = ("all", "train", "test")


class BasicMotions(NamedTuple):
    """Labelled BasicMotions sequences.

    Attributes:
        data (SequenceData): ``(N, 100, 6)`` sequences at shared times ``(100,)``, no mask.
        labels (torch.Tensor): ``(N,)`` ``int64`` indices into ``class_names``.
        class_names (list of str): ``["standing", "running", "walking", "badminton"]``.
    """

    data: SequenceData
    labels: torch.Tensor
    class_names: list


def _read_split(load_from_ts_file, directory, name):
    """``(values (n, 100, 6) float64, label strings, class names)`` of one ``.ts`` file."""
    path = os.path.join(directory, f"BasicMotions_{name}.ts")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"aeon does not ship {path}; reinstall aeon")
    values, labels, meta = load_from_ts_file(path, return_meta_data=True,
                                             return_type="numpy3D")
    # aeon gives (cases, channels, steps); torch.tensor copies the array.
    values = torch.tensor(values, dtype=torch.float64).transpose(1, 2)
    return values, [str(label) for label in labels], [str(c) for c in meta["class_values"]]


def load_basic_motions(*, split="all", standardise=True, dtype=None, device=None):
    r"""BasicMotions: 80 smartwatch recordings of four activities, 6 channels, 100 steps.

    The data are the UEA archive's ``BasicMotions`` problem as shipped inside the aeon package
    (``aeon/datasets/data/BasicMotions/BasicMotions_TRAIN.ts`` and ``_TEST.ts``), read with
    ``aeon.datasets.load_from_ts_file`` from those files: nothing is downloaded. aeon is an
    optional dependency: ``pip install "pyro-vpf[data]"``.

    Four students wore a smartwatch recording a 3-D accelerometer and a 3-D gyroscope (the
    6 channels) while standing, running, walking and playing badminton. The files hold
    40 training and 40 test recordings, 10 of each class in each split, every one of
    100 steps with no missing values.

    **Times** are seconds, :math:`t_k = k / 10` for :math:`k = 0, \dots, 99` (so
    :math:`0, 0.1, \dots, 9.9`), shared by every sequence: the header of the ``.ts`` files
    states that the data are "sampled once every tenth of a second, for a ten second period".

    **Standardisation** (``standardise=True``), per channel :math:`c`:
    :math:`x_c = (v_c - \mu_c) / \sigma_c` with :math:`\mu_c` the mean and :math:`\sigma_c`
    the sample standard deviation (divisor :math:`n - 1`) of channel :math:`c` over all
    steps of the 40 *training* recordings, whatever ``split`` is returned; ``loc`` and
    ``scale`` of the :class:`SequenceData` hold :math:`\mu, \sigma` (``(6,)``). With
    ``standardise=False`` the values are the raw sensor readings and ``loc``/``scale`` are
    ``None``.

    **Labels** are ``int64`` indices into ``class_names``, which lists the classes in the
    order of the files' header: ``["standing", "running", "walking", "badminton"]``.

    Args:
        split (str): ``"train"`` (40 recordings), ``"test"`` (40) or ``"all"`` (80: the
            training recordings, then the test ones, each in file order).
        standardise (bool): standardise per channel with the training statistics.
        dtype (torch.dtype): floating-point dtype of values and times (default: torch's
            default).
        device (torch.device or str): device of every tensor (default: CPU).

    Returns:
        BasicMotions: ``(data, labels, class_names)``, see :class:`BasicMotions`.

    Raises:
        ImportError: if aeon is not installed.
    """
    if not isinstance(split, str) or split not in _SPLITS:
        valid = ", ".join(repr(name) for name in _SPLITS)
        raise ValueError(f"split must be one of {valid}, got {split!r}")
    if not isinstance(standardise, bool):
        raise ValueError(f"standardise must be a bool, got {standardise!r}")
    dtype = _resolve_dtype(dtype)
    datasets = optional_import("aeon.datasets", needed_by="load_basic_motions", package="aeon")
    directory = os.path.join(os.path.dirname(datasets.__file__), "data", "BasicMotions")
    reader = datasets.load_from_ts_file
    train_x, train_y, class_names = _read_split(reader, directory, "TRAIN")
    test_x, test_y, _ = _read_split(reader, directory, "TEST")
    values, names = {"all": (torch.cat([train_x, test_x]), train_y + test_y),
                     "train": (train_x, train_y), "test": (test_x, test_y)}[split]
    labels = torch.tensor([class_names.index(name) for name in names], dtype=torch.int64)
    loc = scale = None
    if standardise:
        loc, scale = train_x.mean(dim=(0, 1)), train_x.std(dim=(0, 1))
        values = (values - loc) / scale
        loc, scale = loc.to(device=device, dtype=dtype), scale.to(device=device, dtype=dtype)
    times = torch.arange(values.shape[1], dtype=torch.float64) / 10.0
    data = SequenceData(values.to(device=device, dtype=dtype),
                        times.to(device=device, dtype=dtype), None, loc, scale)
    return BasicMotions(data, labels.to(device=device), class_names)
