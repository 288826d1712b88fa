"""Which package files a pipeline step runs, read from the imports in the code itself.

Each rule runs one step; its code inputs are the files of the modules that the step's entry
module (as its declaration names it, read by fishid.steps) and fishid.steps can import,
transitively (imports inside functions included), so that editing any of them reruns the rule
and nothing else does. Nothing is imported to find out: the files (and the declarations) are
parsed (ast), which keeps building the DAG fast and free of torch.
"""

import ast
from functools import cache
from pathlib import Path

from fishid import steps

PACKAGE = "fishid"


def module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` (fishid.x.y) under `root` (the folder holding fishid/), or
    None when the name is not a package module (an attribute such as fishid.tables.read_table)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(nodes, current: str, is_package: bool) -> set[str]:
    """Every dotted name the import statements among `nodes` (and below them) may load.
    `from a import b` may load module a.b, so both a and a.b are named."""
    names = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import counts from the current package.
                anchor = current.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def with_parents(name: str) -> list[str]:
    """Importing fishid.a.b runs fishid/__init__.py and fishid/a/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def closure(root: Path, names) -> set[Path]:
    """The files of the package modules `names` import, transitively, themselves included."""
    root = Path(root)
    seen, todo = set(), [n for name in names for n in with_parents(name)]
    while todo:
        path = module_file(root, todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += _module_imports(root, path)
    return seen


@cache
def _module_imports(root: Path, path: Path) -> list[str]:
    """The names a module file may load, with their parents (every rule's closure asks again)."""
    found = imported_names(_parsed(path).body, module_name(root, path), path.name == "__init__.py")
    return [n for name in found for n in with_parents(name)]


def step_files(root, step: str) -> list[str]:
    """The files a pipeline step runs: its entry module, as its declaration names it, the
    steps module that parses its options and calls it, and every package module those import
    (transitively, imports inside functions included)."""
    entry = steps.step(step).module
    return sorted(str(p) for p in closure(Path(root), [PACKAGE, steps.__name__, entry]))
