"""Every step a rule runs, declared once, on its entry function: `@steps.declare(NAME, HELP,
*options)` above the function, in the module that runs the step, each option naming one of
the function's parameters and where the rule finds its value (steps.inp, steps.out,
steps.par, steps.Option for wildcards). Adding an input to a step is then its rule and its
module; editing one step's declaration reruns that step only.

From each declaration follow both the rule's command line (`step_shell` in
workflow/rules/common.smk writes `python {input.cli} STEP --flag {input.x} ... 2> {log}`) and
the subcommand that parses it (argparse, built here), whose options are passed to the entry
function as keyword arguments. The rules run them through workflow/fishid_step.py (`main`
below), not through the `fishid` command line, so that editing a command people type (audit,
review, ...) reruns no step; `fishid STEP` still runs each step by hand (cli.py adds them).

Nothing is imported here but the standard library, and the declarations are read from the
modules' source, not imported: the Snakefile reads them while it plans, and fishid.codedeps
takes each step's entry module from them.
"""

import argparse
import ast
import functools
import importlib
import inspect
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

# Where a rule finds an option's value, as Snakemake names it in a shell command.
SOURCES = ("input", "output", "params", "wildcards", "threads", "log")
REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One option of a step: `name` is the entry function's parameter; the rule passes
    `{source.key}` (`key` "" for the whole namespace, e.g. a rule's one output)."""

    name: str
    source: str
    key: str | None = None  # default: name
    type: str = "str"  # str, int, float, json, bool (--flag=True/False), path? ("" is none)
    nargs: int | str | None = None
    default: object = REQUIRED
    help: str = ""
    positional: bool = False
    choices: tuple | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def reference(self) -> str:
        """The rule's value of this option, as a shell command names it."""
        if self.source in ("threads", "log"):
            return f"{{{self.source}}}"
        key = self.name if self.key is None else self.key
        # :q quotes what the shell would split (JSON, an empty label) and leaves paths as they are.
        return f"{{{self.source}{'.' + key if key else ''}:q}}"

    def shell(self) -> str:
        if self.positional:
            return self.reference()
        # `=`: a value that may be empty (no backbone, no label: Snakemake's :q writes nothing for
        # it) still reads as the option's argument.
        joined = self.type in ("bool", "path?") or self.default == ""
        return f"{self.flag}{'=' if joined else ' '}{self.reference()}"


@dataclass(frozen=True)
class Step:
    name: str
    entry: str  # module:function
    help: str
    options: tuple[Option, ...]

    @property
    def module(self) -> str:
        return self.entry.partition(":")[0]

    def function(self):
        module, _, name = self.entry.partition(":")
        return getattr(importlib.import_module(module), name)


def inp(name, **kw):
    return Option(name, "input", **kw)


def out(name, **kw):
    return Option(name, "output", **kw)


def par(name, **kw):
    return Option(name, "params", **kw)


THREADS = Option("threads", "threads", type="int", default=1)
OFFLINE = par("offline", type="bool", default=False, help="fail rather than use the network")
SPEC = par("spec", type="json", help="settings as JSON")
TRAIN_OUTPUTS = (out("weights"), out("history"), out("meta"))
# The photos train_detector and detect_fish read (fishid.detect.scope).
FOUND_ON = (
    inp("clean"),
    inp("derived"),
    inp("records", nargs="+"),
    par(
        "datasets",
        type="json",
        help="every dataset's settings, as JSON: the held-out photos are those of the splits made from the clean table",
    ),
    par("synthetic_sources", key="synthetic", nargs="*", default=[], help="the sources whose boxes are known"),
    THREADS,
)


def declare(name: str, help: str, *options: Option):
    """The declaration of step `name` on its entry function (`@steps.declare(...)` above it, in the
    module that runs the step): its help and options. It changes nothing at run time; the
    declarations are read from the modules' source (`declared`) so that planning imports none of
    them (they import PyTorch, scikit-learn, matplotlib)."""

    def unchanged(function):
        return function

    return unchanged


PACKAGE = Path(__file__).resolve().parent
DECORATOR = "@steps.declare("


def _is_declaration(decorator) -> bool:
    function = decorator.func if isinstance(decorator, ast.Call) else None
    return (
        isinstance(function, ast.Attribute)
        and function.attr == "declare"
        and getattr(function.value, "id", "") == "steps"
    )


def declared(path: Path) -> list[Step]:
    """The steps whose declarations the module at `path` carries, each evaluated with this
    module as its only name (`steps.inp(...)`, `steps.SPEC`, ...)."""
    module = ".".join(("fishid", *path.relative_to(PACKAGE).with_suffix("").parts))
    found = []
    for node in ast.parse(path.read_text(), str(path)).body:
        for decorator in getattr(node, "decorator_list", []):
            if not _is_declaration(decorator):
                continue
            call = ast.Call(func=ast.Name("_step", ast.Load()), args=decorator.args, keywords=decorator.keywords)
            expression = ast.fix_missing_locations(ast.Expression(call))
            try:
                name, help, *options = eval(
                    compile(expression, str(path), "eval"), {"steps": sys.modules[__name__], "_step": lambda *a: a}
                )
            except NameError as error:
                raise ValueError(
                    f"{path}:{decorator.lineno}: a step's declaration may name only fishid.steps ({error})"
                ) from None
            found.append(Step(name, f"{module}:{node.name}", help, tuple(options)))
    return found


@functools.cache
def all_steps() -> dict[str, Step]:
    """Every step declared in the package (the modules holding @steps.declare), by name."""
    steps = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "steps.py" and DECORATOR in path.read_text():
            for s in declared(path):
                if s.name in steps:
                    raise ValueError(f"step {s.name!r} is declared twice: {steps[s.name].entry} and {s.entry}")
                steps[s.name] = s
    return steps


def step(name: str) -> Step:
    steps = all_steps()
    if name not in steps:
        raise ValueError(f"no module of the package declares a step {name!r} (known: {', '.join(sorted(steps))})")
    return steps[name]


def shell(name: str, skip=()) -> str:
    """The command a rule runs for step `name`, leaving out the options in `skip` (optional
    ones the rule has no value for), its errors and log going to the rule's log."""
    options = step(name).options
    unknown = set(skip) - {o.name for o in options if not o.required}
    if unknown:
        raise ValueError(f"step {name}: cannot leave out {sorted(unknown)} (not optional options of it)")
    parts = [o.shell() for o in options if o.name not in skip]
    return " ".join(["python {input.cli}", name, *parts, "2> {log}"])


def _json(text: str):
    return json.loads(text)


def _bool(text: str) -> bool:
    if text not in ("True", "False"):
        raise argparse.ArgumentTypeError(f"{text!r}: want True or False")
    return text == "True"


def _path_or_none(text: str):
    return text or None


TYPES = {"str": str, "int": int, "float": float, "json": _json, "bool": _bool, "path?": _path_or_none}


def add_arguments(parser: argparse.ArgumentParser, options) -> None:
    for o in options:
        kwargs = {"type": TYPES[o.type], "help": o.help or None}
        if o.choices:
            kwargs["choices"] = o.choices
        if o.type == "bool":  # `--offline` alone, as people type it, or `--offline=False`
            kwargs.update(nargs="?", const=True, default=False)
        elif o.nargs is not None:
            kwargs["nargs"] = o.nargs
        if o.nargs == 2:
            kwargs["metavar"] = ("INDEX", "COUNT")
        if o.positional:
            parser.add_argument(o.name, **kwargs)
            continue
        if o.type != "bool":
            kwargs.update({"required": True} if o.required else {"default": o.default})
        parser.add_argument(o.flag, dest=o.name, **kwargs)


def call(name: str, args: argparse.Namespace):
    """Run step `name`'s entry function with its parsed options as keyword arguments."""
    s = step(name)
    return s.function()(**{o.name: getattr(args, o.name) for o in s.options})


def add_subcommands(subparsers) -> None:
    """One subcommand per step, each calling its entry function (cli.py adds them to `fishid`)."""
    for s in all_steps().values():
        sub = subparsers.add_parser(s.name, help=s.help, description=s.help)
        add_arguments(sub, s.options)
        sub.set_defaults(func=lambda args, name=s.name: call(name, args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fishid_step", description=__doc__.splitlines()[0])
    add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def run(parser: argparse.ArgumentParser, argv=None) -> None:
    """Parse `argv` and run what it names, as both the rules' and people's command lines do."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        # Messages name what to fix; a traceback would bury them.
        logging.error("%s", error)
        sys.exit(1)


def main(argv=None) -> None:
    run(parser(), argv)


def signature_mismatches(s: Step) -> list[str]:
    """What differs between a step's options and its entry function's parameters (tests)."""
    parameters = inspect.signature(s.function()).parameters
    declared = [o.name for o in s.options]
    problems = [f"{n}: not a parameter of {s.entry}" for n in declared if n not in parameters]
    problems += [f"{n}: a parameter of {s.entry} with no option" for n in parameters if n not in declared]
    return problems
