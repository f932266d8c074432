r"""The linear-Gaussian chain engine: one associative scan, its operators, two executions.

:mod:`~pyro_vpf.chain.associative` holds the scan
(:func:`~pyro_vpf.chain.associative.parallel_scan`,
:func:`~pyro_vpf.chain.associative.sequential_scan` and
:func:`~pyro_vpf.chain.associative.choose_execution`, the rule that picks between them),
:mod:`~pyro_vpf.chain.elements` the associative operators of affine recurrences, covariance
recurrences and Kalman filtering, and :mod:`~pyro_vpf.chain.readout` the filter of a chain
seen through a noiseless readout. The distributions, guides and exact evaluation of the
library run their chains through them.
"""

from pyro_vpf.chain.associative import (
    EXECUTIONS,
    choose_execution,
    parallel_scan,
    scan,
    sequential_scan,
)
from pyro_vpf.chain.elements import (
    affine_combine,
    covariance_combine,
    gaussian_combine,
    scalar_affine_combine,
)

__all__ = ["EXECUTIONS", "affine_combine", "choose_execution", "covariance_combine",
           "gaussian_combine", "parallel_scan", "scalar_affine_combine", "scan",
           "sequential_scan"]
