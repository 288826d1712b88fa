"""The rules' code inputs are the import closure of what each step runs (fishid.codedeps)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from fishid import codedeps

ROOT = REPO / "workflow"
PACKAGE = ROOT / "fishid"
# __main__ runs the CLI when imported.
MODULES = sorted(codedeps.module_name(ROOT, p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def names(paths, root=ROOT) -> set[str]:
    return {codedeps.module_name(root, Path(p)) for p in paths}


def test_every_module_a_module_imports_at_run_time_is_in_its_closure():
    """Python's own import machinery, one module at a time, against the AST walk."""
    script = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "fishid" or m.startswith("fishid.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
    found[name] = sorted(m for m in sys.modules if m == "fishid" or m.startswith("fishid."))
print(json.dumps(found))
"""
    run = subprocess.run(
        [sys.executable, "-c", script, *MODULES], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name, imported in json.loads(run.stdout).items():
        missing = set(imported) - names(codedeps.closure(ROOT, [name]))
        assert not missing, (name, missing)


@pytest.mark.parametrize(
    "step, holds, lacks",
    [
        # The examples the hand-kept lists got wrong.
        (
            "evaluate",
            {
                "fishid.evaluate.metrics",
                "fishid.evaluate.inference",
                "fishid.train.loop",
                "fishid.report.figures",
                "fishid.cli",
            },
            {"fishid.clean.stage"},
        ),
        ("fetch", {"fishid.sources.synthetic", "fishid.download.store", "fishid.web"}, {"fishid.train.loop"}),
        ("plot-dataset", {"fishid.report.figures", "fishid.cli"}, {"fishid.evaluate.metrics"}),
        ("split", {"fishid.split.stage", "fishid.tables"}, {"fishid.train.loop", "fishid.clean.stage"}),
        (
            "clean",
            {"fishid.clean.photo_filters", "fishid.clean.decode", "fishid.clean.near_duplicates"},
            {"fishid.split.stage"},
        ),
    ],
)
def test_a_steps_files_hold_what_it_runs_and_not_what_other_steps_run(step, holds, lacks):
    found = names(codedeps.step_files(ROOT, step))
    assert holds <= found and not lacks & found, found


def test_an_unknown_step_is_named():
    with pytest.raises(ValueError, match="no subcommand 'nope'"):
        codedeps.step_files(ROOT, "nope")


def test_relative_imports_and_packages_are_followed(tmp_path):
    package = tmp_path / "fishid"
    (package / "stage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage" / "__init__.py").write_text("from .part import x\n")
    (package / "stage" / "part.py").write_text("def x():\n    from ..core import y\n")
    (package / "core.py").write_text("y = 1\n")
    (package / "unused.py").write_text("")
    found = names(codedeps.closure(tmp_path, ["fishid.stage"]), tmp_path)
    assert found == {"fishid", "fishid.stage", "fishid.stage.part", "fishid.core"}
