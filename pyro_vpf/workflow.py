"""Deprecated: the command line's runs moved to :mod:`pyro_vpf.cli` (``cli.config``,
``cli.run``, ``cli.figures``); these names keep working."""

import warnings

from pyro_vpf.cli.config import TrainConfig, build, load_data
from pyro_vpf.cli.figures import prior_demo
from pyro_vpf.cli.run import evaluate, evaluate_run, load_run, sample, train

warnings.warn("pyro_vpf.workflow is deprecated: import from pyro_vpf.cli.config, "
              "pyro_vpf.cli.run and pyro_vpf.cli.figures", DeprecationWarning, stacklevel=2)

__all__ = [
    "TrainConfig", "build", "evaluate", "evaluate_run", "load_data", "load_run", "prior_demo",
    "sample", "train",
]
