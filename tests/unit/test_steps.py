"""Each step declared once (fishid.steps): the declaration against its entry function, the rules'
commands built from it, and what the commands it builds parse back to."""

import inspect
import re
import shlex

import pytest
import snakemake.iocontainers as io
from conftest import REPO
from snakemake.utils import format as snakemake_format

from fishid import steps

RULES = REPO / "workflow" / "rules"


@pytest.mark.parametrize("name", sorted(steps.all_steps()))
def test_a_declaration_names_exactly_its_entry_functions_parameters(name):
    step = steps.all_steps()[name]
    assert steps.signature_mismatches(step) == []
    parameters = inspect.signature(step.function()).parameters
    # An option the command line may leave out is a parameter with a default, and only that.
    for option in step.options:
        has_default = parameters[option.name].default is not inspect.Parameter.empty
        assert has_default == (not option.required), (name, option.name)


def test_a_mismatch_is_named(monkeypatch):
    """The check above fails where a declaration and its function part."""
    step = steps.all_steps()["plot-dataset"]
    broken = steps.Step(step.name, step.entry, step.help, (*step.options[:-1], steps.Option("output", "output")))
    assert steps.signature_mismatches(broken) == [
        "output: not a parameter of fishid.report.figures:plot_dataset_step",
        "out: a parameter of fishid.report.figures:plot_dataset_step with no option",
    ]


def rule_blocks():
    """(file, rule name, its text) for every rule and checkpoint of workflow/rules."""
    for path in sorted(RULES.glob("*.smk")):
        text = path.read_text()
        starts = list(re.finditer(r"^( *)(?:rule|checkpoint) (\w+):", text, re.MULTILINE))
        for start, after in zip(starts, [*starts[1:], None][: len(starts)], strict=True):
            yield path, start.group(2), text[start.start() : after.start() if after else len(text)]


def named(block: str, section: str) -> set[str]:
    """The names a rule gives in one of its sections (input, output, params), `**DICT` expanded
    from the dict's literal in the rules."""
    match = re.search(rf"^( +){section}:\n((?:\1    .*\n|\n)+)", block, re.MULTILINE)
    if match is None:
        return set()
    indent = len(match.group(1)) + 4
    names = set(re.findall(rf"^ {{{indent}}}(\w+)=", match.group(2), re.MULTILINE))
    for spread in re.findall(rf"^ {{{indent}}}\*\*(\w+),", match.group(2), re.MULTILINE):
        literal = re.search(
            rf"^{spread} = {{\n(.*?)^}}", "".join(p.read_text() for p in RULES.glob("*.smk")), re.M | re.S
        )
        names |= set(re.findall(r'^    "(\w+)":', literal.group(1), re.MULTILINE))
    return names


def test_every_rule_that_runs_the_step_script_builds_its_command_from_a_declaration():
    runners = [(path.name, rule, block) for path, rule, block in rule_blocks() if re.search(r"\bcli=", block)]
    assert len(runners) >= 20
    for file, rule, block in runners:
        assert re.search(r'shell:\n +step_shell\(\s*"([\w-]+)"', block), (file, rule)
    for path in RULES.glob("*.smk"):
        assert "{input.cli}" not in path.read_text().replace("`python {input.cli} STEP`", ""), path.name


def test_every_value_a_rules_command_reads_is_one_the_rule_names():
    """A rule outside the default DAG (predict_folder, clean_shard, ...) would otherwise fail only
    when run: each option's {input.x}, {output.x}, {params.x} or {wildcards.x} is the rule's."""
    checked = 0
    for path, rule, block in rule_blocks():
        call = re.search(r'step_shell\(\s*"([\w-]+)"(?:,\s*skip=(.*?))?,?\s*\)\n', block, re.S)
        if call is None:
            continue
        may_skip = set(re.findall(r'"(\w+)"', call.group(2) or ""))
        # Snakemake requires a rule's log to hold the wildcards of its output.
        log = re.search(r"log:\n(.*?)\n", block).group(1)
        for option in steps.step(call.group(1)).options:
            key = option.name if option.key is None else option.key
            if option.name in may_skip or option.source == "threads":
                continue
            if option.source == "wildcards":
                assert "{" + key + "}" in log, (path.name, rule, option.name)
            elif key == "":
                assert option.source == "output", (path.name, rule, option.name)
            else:
                assert key in named(block, option.source), (path.name, rule, option.name)
            checked += 1
    assert checked > 150


def formatted(name, skip=(), **namespaces):
    """The command Snakemake runs for `name` with these values, as the arguments `python` gets."""
    values = {"input": io.InputFiles, "output": io.OutputFiles, "params": io.Params, "wildcards": io.Wildcards}
    spaces = {k: cls(fromdict=namespaces.get(k, {})) for k, cls in values.items()}
    spaces["input"] = io.InputFiles(fromdict={**namespaces.get("input", {}), "cli": "workflow/fishid_step.py"})
    command = snakemake_format(steps.shell(name, skip), **spaces, threads=2, log=io.Log(fromdict={"log": "x.log"}))
    assert command.endswith(" 2> x.log")
    return shlex.split(command.removesuffix(" 2> x.log"))


def test_an_empty_value_is_still_the_options_value():
    """No backbone and no 'other' label: Snakemake writes nothing for an empty value."""
    argv = formatted(
        "train",
        input={"cache": "c.pt", "backbone": []},
        output={"weights": "w.pt", "history": "h.csv", "meta": "m.json"},
        params={
            "spec": '{"prompt": "a photo of {species}"}',
            "backbone_spec": "{}",
            "other_label": "",
            "offline": False,
        },
    )
    assert argv[:3] == ["python", "workflow/fishid_step.py", "train"]
    args = steps.parser().parse_args(argv[2:])
    assert (args.backbone, args.other_label, args.offline, args.threads) == (None, "", False, 2)
    assert args.spec == {"prompt": "a photo of {species}"}


def test_a_rules_values_reach_the_entry_function_by_name(monkeypatch):
    argv = formatted(
        "fetch",
        input={"records": "r.tsv"},
        output={"out": "d.tsv"},
        params={"store": "store", "spec": "{}", "offline": True, "shard": ["1", "4"], "reuse": "j.journal"},
    )
    seen = {}
    monkeypatch.setattr("fishid.download.fetch.fetch_step", lambda **kwargs: seen.update(kwargs))
    steps.main(argv[2:])
    assert seen == {
        "records": "r.tsv",
        "store": "store",
        "spec": {},
        "offline": True,
        "shard": [1, 4],
        "reuse": ["j.journal"],
        "out": "d.tsv",
    }


def test_a_skipped_option_takes_its_default_and_only_optional_ones_may_be_skipped():
    argv = formatted(
        "cache",
        ["crops", "crop_store"],
        input={"split": "s.tsv", "derived": "d"},
        output={"out": "c.pt"},
        wildcards={"size": "64"},
    )
    args = steps.parser().parse_args(argv[2:])
    assert (args.crops, args.crop_store, args.size, args.out) == (None, None, 64, "c.pt")
    with pytest.raises(ValueError, match="cannot leave out"):
        steps.shell("cache", ["split"])


def test_people_keep_typing_offline_alone():
    args = steps.parser().parse_args(["imagenet-weights", "--cache-dir", "w", "--offline"])
    assert args.offline is True
    assert steps.parser().parse_args(["imagenet-weights", "--cache-dir", "w"]).offline is False


def test_the_declarations_import_nothing_heavy():
    """The Snakefile reads them while it plans (and codedeps counts this module in every step)."""
    tree = inspect.getsource(steps)
    imported = set(re.findall(r"^(?:import|from) (\w+)", tree, re.MULTILINE))
    assert imported <= {
        "argparse",
        "ast",
        "functools",
        "importlib",
        "inspect",
        "json",
        "logging",
        "sys",
        "dataclasses",
        "pathlib",
    }


def test_the_declarations_are_read_without_importing_the_modules_that_carry_them():
    """Planning reads every step's declaration from source: no stage module (nor PyTorch) is
    imported, and each step names the function its decorator is on."""
    import subprocess
    import sys

    code = (
        "import sys; from fishid import steps; found = steps.all_steps(); "
        "print(len(found), sorted(m for m in sys.modules if m.startswith('fishid.')), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split(" ", 1)[1].strip() == "['fishid.steps'] False"
    assert int(result.stdout.split()[0]) == len(steps.all_steps()) == 22
    assert steps.all_steps()["split"].entry == "fishid.split.stage:split_step"


def test_a_declaration_that_names_more_than_fishid_steps_is_refused_with_its_place(tmp_path, monkeypatch):
    package = tmp_path / "fishid"
    (package / "stage").mkdir(parents=True)
    (package / "stage" / "mod.py").write_text(
        'from fishid import steps\n\nLOCAL = 1\n\n\n@steps.declare("x", "help", steps.inp("a"))\n'
        "def ok(a):\n    pass\n\n\n"
        '@steps.declare("y", "help", steps.par("b", default=LOCAL))\ndef refused(b=1):\n    pass\n'
    )
    monkeypatch.setattr(steps, "PACKAGE", package)
    with pytest.raises(ValueError, match=r"mod.py:11: a step's declaration may name only fishid.steps"):
        steps.declared(package / "stage" / "mod.py")
    text = (package / "stage" / "mod.py").read_text()
    (package / "stage" / "mod.py").write_text(text[: text.index('@steps.declare("y"')])
    (step,) = steps.declared(package / "stage" / "mod.py")
    assert (step.name, step.entry, [o.name for o in step.options]) == ("x", "fishid.stage.mod:ok", ["a"])
