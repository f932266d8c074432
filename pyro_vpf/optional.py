"""Imports of the optional dependencies, with an error that names the extra to install."""

import importlib

__all__ = ["optional_import"]


def optional_import(module, *, needed_by, package, extra="data"):
    """Import ``module``, or raise ``ImportError`` saying which extra provides it.

    Args:
        module (str): dotted module name, e.g. ``"statsmodels.datasets.co2"``.
        needed_by (str): the function that needs it (for the message).
        package (str): the pip distribution that provides it.
        extra (str): the extra of pyro-vpf that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{needed_by} needs {package}, an optional dependency; install it with "
            f'`pip install "pyro-vpf[{extra}]"` (or `pip install {package}`)'
        ) from error
