"""Every step a rule runs, declared once: its entry function and its options.

From each declaration follow both the rule's command line (`step_shell` in
workflow/rules/common.smk writes `python {input.cli} STEP --flag {input.x} ... 2> {log}`) and
the subcommand that parses it (argparse, built here), whose options are passed to the entry
function as keyword arguments. The rules run them through workflow/fishid_step.py (`main`
below), not through the `fishid` command line, so that editing a command people type (audit,
review, ...) reruns no step; `fishid STEP` still runs each step by hand (cli.py adds them).

Nothing is imported here but the standard library: the Snakefile reads these declarations
while it plans, and fishid.codedeps takes each step's entry module from them.
"""

import argparse
import importlib
import inspect
import json
import logging
import sys
from dataclasses import dataclass

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


def _options(*options) -> tuple[Option, ...]:
    return tuple(options)


def _inp(name, **kw):
    return Option(name, "input", **kw)


def _out(name, **kw):
    return Option(name, "output", **kw)


def _par(name, **kw):
    return Option(name, "params", **kw)


THREADS = Option("threads", "threads", type="int", default=1)
OFFLINE = _par("offline", type="bool", default=False, help="fail rather than use the network")
SPEC = _par("spec", type="json", help="settings as JSON")
TRAIN_OUTPUTS = (_out("weights"), _out("history"), _out("meta"))
# The photos train_detector and detect_fish read (fishid.detect.scope).
FOUND_ON = (
    _inp("clean"),
    _inp("derived"),
    _inp("records", nargs="+"),
    _par(
        "datasets",
        type="json",
        help="every dataset's settings, as JSON: the held-out photos are those of the splits made from the clean table",
    ),
    _par("synthetic_sources", key="synthetic", nargs="*", default=[], help="the sources whose boxes are known"),
    THREADS,
)

_STEPS = (
    Step(
        "list",
        "fishid.sources.listing:list_step",
        "list one source's records",
        _options(
            Option("source", "wildcards", positional=True),
            SPEC,
            _par("seed", type="int", default=0),
            _par("download", type="json", default={}, help="HTTP client settings as JSON"),
            _par("taxonomy", type="json", default={}, help="name matching settings (taxonomy:) as JSON"),
            OFFLINE,
            _out("out", key="records"),
            _out("summary", default=None, help="per-taxon counts and notes (TSV)"),
        ),
    ),
    Step(
        "fetch",
        "fishid.download.fetch:fetch_step",
        "bring a source's images into the store",
        _options(
            _inp("records"),
            _par("store"),
            _par("spec", type="json", default={}, help="download settings and licence policy as JSON"),
            OFFLINE,
            _par("shard", type="int", nargs=2, default=None, help="do shard INDEX of COUNT"),
            _par("reuse", nargs="+", default=[], help="journals whose finished downloads stand (read only)"),
            _out("out", key=""),
        ),
    ),
    Step(
        "gather-downloads",
        "fishid.download.fetch:gather_step",
        "a source's download table from its shards' tables",
        _options(
            _inp("records"),
            _inp("shard_tables", key="shards", nargs="+"),
            _par("journal", default=None, help="the source's journal, into which the shards' journals are merged"),
            _out("out", key=""),
        ),
    ),
    Step(
        "clean",
        "fishid.clean.stage:clean_step",
        "decode, check and keep or drop every stored image",
        _options(
            _inp("records", nargs="+"),
            _inp("downloads", nargs="+"),
            _inp("exclusions"),
            _inp("relabels", default=None, help="the user's relabellings (id, label, reason, when)"),
            _par("store"),
            _out("derived"),
            _inp("shard_tables", key="shards", nargs="+", default=None, help="the clean-shard tables (else: here)"),
            SPEC,
            THREADS,
            _out("out", key="table"),
        ),
    ),
    Step(
        "clean-shard",
        "fishid.clean.stage:shard_step",
        "decode and measure one shard of the stored images",
        _options(
            _inp("records", nargs="+"),
            _inp("downloads", nargs="+"),
            _par("store"),
            _par("cache", help="the per-image cache (results/clean/measures)"),
            _par("shard", type="int", nargs=2, help="do shard INDEX of COUNT"),
            SPEC,
            THREADS,
            _out("out", key=""),
        ),
    ),
    Step(
        "split",
        "fishid.split.stage:split_step",
        "split one dataset",
        _options(
            _inp("clean"),
            Option("name", "wildcards", key="dataset"),
            SPEC,
            _out("out", key="split"),
            _out("decisions"),
            _out("counts"),
            _out("leaks", help="near-duplicate pairs across train and held-out images"),
            _par("max_distance", type="int", help="the near-duplicate distance (bits)"),
            _par("benchmarks", type="json", default={}, help="benchmark folders by name, as JSON"),
        ),
    ),
    Step(
        "cache",
        "fishid.train.imagecache:cache_step",
        "decode and resize a dataset's images once",
        _options(
            _inp("split"),
            _inp("derived"),
            Option("size", "wildcards", type="int"),
            _inp("crops", default=None, help="the detect stage's crops table: cut each photo to its fish"),
            _inp("crop_store", default=None, help="the folder the crops table's paths are in"),
            _out("out", key=""),
        ),
    ),
    Step(
        "train-detector",
        "fishid.detect.stage:train_step",
        "train the fish detector",
        _options(
            *FOUND_ON, Option("detector", "wildcards"), SPEC, _par("out", key="folder", help="the detector's folder")
        ),
    ),
    Step(
        "fetch-detector",
        "fishid.detect.detectors:fetch_step",
        "fetch a detector used as it comes",
        _options(
            Option("detector", "wildcards"),
            SPEC,
            OFFLINE,
            _par("out", key="folder", help="the detector's folder (its meta.json)"),
        ),
    ),
    Step(
        "detect",
        "fishid.detect.stage:detect_step",
        "find the fish in every kept photo and crop it",
        _options(
            *FOUND_ON,
            _par("detector"),
            _par("folder", help="the detector's folder (weights.pt, meta.json)"),
            _par("threshold", type="float"),
            _par("padding", type="float"),
            _out("boxes"),
            _out("crops"),
            _out("queue"),
            _out("quality"),
            _out("crop_store", key="store"),
            _out("sheet", help="PNG: crops beside their photos"),
            _par("found", help="the boxes found before, per detector and photo (kept)"),
        ),
    ),
    Step(
        "pretrain",
        "fishid.train.stage:pretrain_step",
        "pre-train a backbone",
        _options(_inp("cache"), SPEC, THREADS, *TRAIN_OUTPUTS),
    ),
    Step(
        "train",
        "fishid.train.stage:train_step",
        "train one model",
        _options(
            _inp("cache"),
            SPEC,
            _inp("backbone", type="path?", default=None, help="the weights the model starts from, if any"),
            _par("backbone_spec", type="json", default={}, help="the backbone's settings as JSON"),
            _par("other_label", default="", help="the dataset's pooled 'other' label, if any"),
            _par("offline", type="bool", default=False, help="never download weights"),
            THREADS,
            *TRAIN_OUTPUTS,
        ),
    ),
    Step(
        "imagenet-weights",
        "fishid.models.weights:imagenet_step",
        "torchvision's ImageNet ResNet-18 weights",
        _options(Option("cache_dir", "wildcards", key="cache"), OFFLINE),
    ),
    Step(
        "open-clip-weights",
        "fishid.models.weights:open_clip_step",
        "an open_clip model from the Hugging Face Hub",
        _options(
            _par("model", help="hf-hub:org/name"),
            Option("cache_dir", "wildcards", key="cache"),
            OFFLINE,
            _out("out", key=""),
        ),
    ),
    Step(
        "evaluate",
        "fishid.report.evaluation:evaluate_step",
        "evaluate one model and draw its figures",
        _options(
            Option("name", "wildcards", key="model"),
            SPEC,
            _inp("weights"),
            _inp("cache"),
            _inp("split", help="the dataset's split table (each photo's sources)"),
            _par("other_label", default="", help="the dataset's pooled 'other' label, if any"),
            _out("predictions"),
            _out("metrics"),
            _out("figure_data"),
            _inp("history", help="the training curves (for the figures)"),
            _par("figures", help="folder of the model's figures"),
            _par("embedding_map", choices=("tsne", "umap"), help="report.embedding_map"),
            THREADS,
        ),
    ),
    Step(
        "plot-dataset",
        "fishid.report.figures:plot_dataset_step",
        "a dataset's table of images per label and split",
        _options(Option("name", "wildcards", key="dataset"), _inp("counts"), _out("out", key="png")),
    ),
    Step(
        "report",
        "fishid.report.html:report_step",
        "the HTML report",
        _options(
            SPEC,
            _inp("clean"),
            _inp("records", nargs="+"),
            _inp("downloads", nargs="+"),
            _inp("counts", nargs="+"),
            _inp("decisions", nargs="+", default=[], help="the datasets' decisions tables (leaks)"),
            _inp("leaks", nargs="+", default=[], help="the datasets' near-duplicate pairs across roles"),
            _inp("metrics", nargs="+"),
            _inp("citation", default=None, help="results/provenance/citation.md"),
            _inp("derived", default=None, help="results/provenance/derived_dataset.tsv"),
            _inp("label_issues", default=None, help="results/review/label_issues.json (the queue's summary)"),
            _inp("detect", default=None, help="results/detect/quality.json, where there is a detect stage"),
            _inp("detect_sheet", default=None, help="results/detect/crops.png"),
            _par("figures"),
            _out("out", key=""),
        ),
    ),
    Step(
        "predict",
        "fishid.evaluate.predict:predict_step",
        "label a folder of photos with a trained model",
        _options(
            Option("model", "wildcards", help="a model name from the configuration"),
            Option("folder", "input", positional=True, help="folder of photos (searched recursively)"),
            Option("results", "params", default="results", help="the pipeline's results folder"),
            _out("out", key="", default=None, help="CSV to write (default: standard output)"),
        ),
    ),
    Step(
        "attribution",
        "fishid.report.attribution:attribution_step",
        "who to credit for every image a dataset uses",
        _options(
            _inp("records", nargs="+"),
            _inp("downloads", nargs="+"),
            _inp("clean"),
            _inp("splits", nargs="+"),
            _out("out", key=""),
        ),
    ),
    Step(
        "citation",
        "fishid.report.citation:citation_step",
        "how to cite the data the datasets use",
        _options(
            _par("spec", key="sources", type="json", help="the configuration's sources as JSON"),
            _inp("records", nargs="+"),
            _inp("downloads", nargs="+"),
            _inp("splits", nargs="+"),
            _out("out", key="citation"),
            _out("derived", help="derived_dataset.tsv: images per GBIF datasetKey"),
        ),
    ),
    Step(
        "label-issues",
        "fishid.review.label_issues:label_issues_step",
        "the review app's queue of likely label errors",
        _options(
            _inp("clean"),
            _inp("derived"),
            _par("spec", type="json", help="review.label_issues settings (resolved) as JSON"),
            _inp(
                "backbone",
                default=None,
                help="the backbone's weights (backbone: not none)",
            ),
            _inp("crops", default=None, help="the detect stage's crops table (spec crops: true)"),
            _inp("crop_store", default=None, help="the folder the crops table's paths are in"),
            _par("seed", type="int", default=0),
            THREADS,
            _out("out", key="table"),
            _out("summary", help="counts per issue type, clusters, the backbone used (JSON)"),
        ),
    ),
    Step(
        "embedding-map",
        "fishid.review.embedding_map:embedding_map_step",
        "a model's embedding map for the review app",
        _options(
            _inp("predictions"),
            _inp("metrics"),
            _inp("figure_data", help="the evaluation's figure_data.npz (its features)"),
            _par("method", choices=("tsne", "umap"), help="report.embedding_map"),
            _par("seed", type="int", default=0),
            _out("out", key=""),
        ),
    ),
)
STEPS = {step.name: step for step in _STEPS}


def step(name: str) -> Step:
    if name not in STEPS:
        raise ValueError(f"fishid.steps declares no subcommand {name!r} (known: {', '.join(sorted(STEPS))})")
    return STEPS[name]


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
    for s in _STEPS:
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
