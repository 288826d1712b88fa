"""The rules' code inputs are the import closure of what each step runs (fishid.codedeps)."""

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO

from fishid import codedeps, steps

ROOT = REPO / "workflow"
PACKAGE = ROOT / "fishid"
# __main__ runs the CLI when imported.
MODULES = sorted(codedeps.module_name(ROOT, p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def names(paths, root=ROOT) -> set[str]:
    return {codedeps.module_name(root, Path(p)) for p in paths}


RUNTIME_SCRIPT = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "fishid" or m.startswith("fishid.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
    found[name] = sorted(m for m in sys.modules if m == "fishid" or m.startswith("fishid."))
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def loaded_on_import() -> dict[str, set[str]]:
    """Python's own import machinery, one module at a time: the package modules importing
    each one loads (its top-level imports, transitively; not those inside functions)."""
    run = subprocess.run(
        [sys.executable, "-c", RUNTIME_SCRIPT, *MODULES], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {name: set(imported) for name, imported in json.loads(run.stdout).items()}


def test_every_module_a_module_imports_at_run_time_is_in_its_closure(loaded_on_import):
    """Python's imports against the AST walk: nothing Python loads is missing."""
    for name, imported in loaded_on_import.items():
        missing = imported - names(codedeps.closure(ROOT, [name]))
        assert not missing, (name, missing)


@cache
def deferred_imports(name: str) -> set[str]:
    """The package modules a module's import statements name, wherever they stand (inside
    functions and under `if TYPE_CHECKING` too, which Python does not run on import): each
    statement's module and, for `from a import b`, a.b where that is a module."""
    path = codedeps.module_file(ROOT, name)
    tree = ast.parse(path.read_text())
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            package = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")
            base = node.module or ""
            if node.level:  # counted from the module's package: one dot is the package itself
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            named |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
    return named & set(MODULES)


def loadable_from(name: str, loaded_on_import: dict) -> set[str]:
    """Every package module that running `name`'s code can load: what Python loads on importing
    it, and, for each import statement of those modules that runs later, what Python loads on
    importing that, until nothing new comes in."""
    found, todo = set(), [name]
    while todo:
        module = todo.pop()
        for loaded in loaded_on_import[module] - found:
            found.add(loaded)
            todo += sorted(deferred_imports(loaded) - found)
    return found


def test_a_modules_closure_holds_nothing_its_imports_cannot_load(loaded_on_import):
    """The other direction: a closure that wrongly held more (the whole package, a sibling
    stage) would rerun rules that an edit cannot change."""
    for name in MODULES:
        extra = names(codedeps.closure(ROOT, [name])) - loadable_from(name, loaded_on_import)
        assert not extra, (name, extra)


@pytest.mark.parametrize(
    "step, holds, lacks",
    [
        # The examples the hand-kept lists got wrong.
        (
            "evaluate",
            {
                "fishid.evaluate.metrics",
                "fishid.evaluate.inference",
                "fishid.train.imagecache",
                "fishid.report.figures",
                "fishid.steps",
            },
            # Evaluation runs a trained model, never the training loop or a recipe.
            {"fishid.clean.stage", "fishid.train.loop", "fishid.train.recipes"},
        ),
        (
            "train",
            {
                "fishid.train.stage",
                "fishid.train.recipes",
                "fishid.train.loop",
                "fishid.train.features",
                "fishid.train.record",
                "fishid.models.openset",
            },
            {"fishid.evaluate.metrics", "fishid.review.label_issues"},
        ),
        ("pretrain", {"fishid.train.stage", "fishid.train.loop", "fishid.train.record"}, {"fishid.evaluate.metrics"}),
        # The label-error queue trains by the loop but keeps no run record.
        ("label-issues", {"fishid.train.recipes", "fishid.train.loop"}, {"fishid.train.record", "fishid.train.stage"}),
        ("fetch", {"fishid.sources.synthetic", "fishid.download.store", "fishid.web"}, {"fishid.train.loop"}),
        ("plot-dataset", {"fishid.report.figures", "fishid.steps"}, {"fishid.evaluate.metrics"}),
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


# Whole stages a step must not run: an edit anywhere in them must not rerun the step.
NOT_RUN_BY = {
    "split": ["fishid.train", "fishid.models", "fishid.report", "fishid.evaluate", "fishid.detect", "fishid.review"],
    "report": ["fishid.train", "fishid.models", "fishid.evaluate", "fishid.clean", "fishid.download"],
    "clean": ["fishid.split", "fishid.train", "fishid.models", "fishid.report", "fishid.evaluate"],
    "fetch": ["fishid.clean", "fishid.split", "fishid.train", "fishid.models", "fishid.report"],
}


@pytest.mark.parametrize("step", sorted(NOT_RUN_BY))
def test_a_steps_files_hold_no_module_of_the_stages_it_does_not_run(step):
    stages = NOT_RUN_BY[step]
    outside = {m for m in MODULES if any(m == s or m.startswith(f"{s}.") for s in stages)}
    assert {m.split(".")[1] for m in outside} == {s.split(".")[1] for s in stages}  # every stage named exists
    assert not names(codedeps.step_files(ROOT, step)) & outside


@pytest.mark.parametrize("step", sorted(steps.all_steps()))
def test_a_step_runs_its_declared_entry_module_and_no_command_people_type(step):
    """The rules run fishid_step.py, not the `fishid` command line: editing `fishid review` (cli.py)
    reruns nothing, and each step's files hold the module its declaration names."""
    found = names(codedeps.step_files(ROOT, step))
    assert {steps.all_steps()[step].module, "fishid.steps"} <= found
    assert "fishid.cli" not in found and "fishid.review.server" not in found


def test_an_unknown_step_is_named():
    with pytest.raises(ValueError, match="no module of the package declares a step 'nope'"):
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
