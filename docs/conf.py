"""Sphinx configuration of the pyro_vpf documentation.

    make docs          # full build into docs/_build/html, notebooks executed (fast mode)
    make docs-check    # the quick build of `make test`: -W, notebooks not executed

The API reference is generated from the docstrings (autodoc + napoleon for the Google-style
``Args:``/``Returns:``, MathJax for the math). The notebooks of ``notebooks/`` are copied into
``docs/notebooks/`` at every build and executed by myst-nb with ``PYRO_VPF_FAST=1`` (the sizes
the test suite uses); ``-D nb_execution_mode=off`` renders them unexecuted. No intersphinx: the
build needs no network.
"""

import os
import pathlib
import shutil

import pyro_vpf

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "pyro_vpf"
author = "the pyro_vpf authors"
copyright = "the pyro_vpf authors, Apache-2.0"
release = version = pyro_vpf.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_generated", "scripts", "Thumbs.db", ".DS_Store",
                    "**.ipynb_checkpoints"]
templates_path = []

# -- autodoc / napoleon ---------------------------------------------------------------------

autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings give the shapes; there are no annotations to show
autodoc_inherit_docstrings = False  # torch's and pyro's own docstrings are not ours to render
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no second description of a NamedTuple's fields

# Unresolved references to this package's own objects fail the build (``-W``); the types of
# the libraries it builds on are left as plain text, since without intersphinx (no network at
# build time) there is nothing to link them to.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|numpy|pandas|lightning)\..*"),
    # the plain-language types of the Google-style "Args:" sections (builtins need no entry)
    (r"py:class", r"callable|optional|sequence|array-like|Constraint|ELBO|lightning Strategy"),
]

# -- myst / myst-nb -------------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # the kernels' import-time warnings (tqdm, ...) are noise on a page

# The notebooks run in fast mode (the sizes of the test suite). ipykernel sets the inline
# matplotlib backend unless MPLBACKEND says otherwise, so a headless "Agg" inherited from the
# caller would leave the executed pages without figures.
os.environ["PYRO_VPF_FAST"] = "1"
if os.environ.get("MPLBACKEND", "").lower() == "agg":
    del os.environ["MPLBACKEND"]


def _copy_notebooks():
    """Mirror ``notebooks/*.ipynb`` into ``docs/notebooks/`` (a build product, git-ignored):
    Sphinx reads sources under ``docs/`` only. Unchanged files keep their time stamps, so an
    incremental build does not re-read them."""
    source, target = ROOT / "notebooks", DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {p.name for p in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in wanted:
        src, dst = source / name, target / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


_copy_notebooks()


def _write_cli_help():
    """``docs/_generated/cli_<command>.txt``: the ``--help`` of each command, as this version
    prints it (the command-line page includes them). Rewritten only when changed."""
    import contextlib
    import io

    from pyro_vpf.cli.main import main

    target = DOCS / "_generated"
    target.mkdir(exist_ok=True)
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "92"  # argparse wraps the help to the terminal's width
    try:
        for command in ("train", "sample", "evaluate", "prior"):
            text = io.StringIO()
            with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
                main([command, "--help"])
            path = target / f"cli_{command}.txt"
            if not path.exists() or path.read_text() != text.getvalue():
                path.write_text(text.getvalue())
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


_write_cli_help()


def _public_bases(app, name, obj, options, bases):
    """Show a class's private bases (``_LocationScale``, ...) as their own public bases: the
    private ones are not documented, so a link to them would dangle."""
    public = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if base.__name__.startswith("_"):
            pending[:0] = base.__bases__
        elif base not in public:
            public.append(base)
    bases[:] = public


def setup(app):
    app.connect("autodoc-process-bases", _public_bases)


# -- HTML -----------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"pyro_vpf {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
