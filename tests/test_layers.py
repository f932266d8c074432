"""The package's layers point one way: building blocks <- model and guide programs <- training
and evaluation <- applications. Checked on the source's import statements."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ["pyro_vpf/ops.py", "pyro_vpf/validation.py", "pyro_vpf/sites.py", "pyro_vpf/plates.py",
          "pyro_vpf/times.py",
          "pyro_vpf/params.py",
          "pyro_vpf/refine.py", "pyro_vpf/prior.py", "pyro_vpf/nn", "pyro_vpf/transforms",
          "pyro_vpf/processes", "pyro_vpf/distributions"]
PROGRAMS = ["models", "guides"]
ABOVE_PROGRAMS = ("pyro_vpf.infer", "pyro_vpf.workflow", "pyro_vpf.cli")
ABOVE_BLOCKS = ABOVE_PROGRAMS + ("pyro_vpf.models", "pyro_vpf.guides", "pyro_vpf.evaluation")


def _imports(path, module_level_only=False):
    """``(line, module)`` of every import in ``path`` (``from a import b`` gives ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _files(entries):
    for entry in entries:
        path = ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _violations(entries, forbidden, module_level_only=False):
    return [f"{path.relative_to(ROOT)}:{line} imports {name}"
            for path in _files(entries)
            for line, name in _imports(path, module_level_only)
            if name.startswith(forbidden)]


def test_the_checked_files_exist():
    assert all((ROOT / entry).exists() for entry in BLOCKS + PROGRAMS)
    assert len(list(_files(PROGRAMS))) >= 8


@pytest.mark.parametrize("module", ["pyro_vpf.infer", "pyro_vpf.infer.refine",
                                    "pyro_vpf.evaluation"])
def test_the_check_sees_every_kind_of_import(tmp_path, module):
    source = tmp_path / "m.py"
    source.write_text(f"import torch\nfrom {module} import thing\n\ndef f():\n"
                      f"    import {module}\n")
    found = [name for _, name in _imports(source)]
    assert f"{module}.thing" in found and module in found
    assert module not in [name for _, name in _imports(source, module_level_only=True)]


def test_model_and_guide_programs_do_not_import_the_training_layer():
    assert _violations(PROGRAMS, ABOVE_PROGRAMS) == []


def test_model_and_guide_programs_do_not_depend_on_evaluation():
    # a deprecated alias may forward to the evaluation layer from inside a function
    assert _violations(PROGRAMS, ("pyro_vpf.evaluation",), module_level_only=True) == []


def test_building_blocks_import_no_program_and_no_training():
    assert _violations(BLOCKS, ABOVE_BLOCKS) == []


def test_the_library_never_imports_the_command_line():
    library = [path for path in (ROOT / "pyro_vpf").rglob("*.py")
               if "cli" not in path.relative_to(ROOT / "pyro_vpf").parts
               and path.name not in ("workflow.py", "__main__.py")]
    library += list(_files(PROGRAMS))
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in library
             for line, name in _imports(path) if name.startswith(("pyro_vpf.cli",
                                                                   "pyro_vpf.workflow"))]
    assert found == []
