"""The command line, ``python -m pyro_vpf {train,sample,evaluate,demo,prior} --help``: an
application built on the library (which never imports it).

:mod:`pyro_vpf.cli.config` (a run's settings, data, model and guide), :mod:`pyro_vpf.cli.run`
(train, evaluate, sample), :mod:`pyro_vpf.cli.figures` (its figures) and
:mod:`pyro_vpf.cli.main` (the argument parser).
"""

from pyro_vpf.cli.main import main

__all__ = ["main"]
