import functools
import json
import os
import re
import sys
from pathlib import Path

# Relative to the working directory (the project's folder), as every other input is: the
# rules' code inputs stay the same files when the project folder is moved (or copied with
# its modification times), so that it plans nothing.
PACKAGE_DIR = Path(os.path.relpath(Path(workflow.basedir, "workflow")))
sys.path.insert(0, str(PACKAGE_DIR.resolve()))

from fishid import codedeps, layout, memory, steps, variants  # noqa: E402
from fishid.clean.stage import per_image_settings, settings_with_defaults  # noqa: E402
from fishid.config import (
    backbone_settings,
    default,
    model_settings,
    synthetic_sources,
    validate,
    with_schema_defaults,
)  # noqa: E402
from fishid.detect import scope as detect_scope  # noqa: E402
from fishid.report.figure_list import STEMS  # noqa: E402
from fishid.review.label_issues import issue_settings  # noqa: E402
from fishid.sources.base import source_kind  # noqa: E402
from fishid.split import scope  # noqa: E402
from fishid.tables import read_table  # noqa: E402
import fishid_worker  # noqa: E402  (workflow/, beside the package)

validate(
    config,
    source="the configuration ({}, with any --config)".format(
        " + ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml"
    ),
)

# Every default is filled in here, from config/schema.yaml: rules read complete settings.
config.update(with_schema_defaults(config))

# Every rule runs its step through this script (an input of each rule), so that jobs use
# this checkout's package; it runs the steps of fishid.steps only.
CLI = str(PACKAGE_DIR / "fishid_step.py")

ENV = "../../envs/fishid.yaml"

# The resident worker of this run, if any (onstart starts it, onsuccess and onerror stop it).
RESIDENT_WORKER = []


def start_resident_worker():
    """On one machine, jobs run in children of one process that imported PyTorch once
    (workflow/fishid_worker.py says why and what it changes); jobs that run elsewhere (a
    cluster) or in their own environment (conda, containers) start on their own."""
    if (
        not workflow.local_exec
        or workflow.deployment_settings.deployment_method
        # A run of a job or two does not pay back the worker's own imports (about 6 CPU-s).
        or sum(1 for _ in workflow.dag.needrun_jobs()) < 3
    ):
        return None
    import shutil

    return fishid_worker.start_for_jobs(
        shutil.which("python") or sys.executable, ".snakemake/log/fishid-worker.log"
    )


def stop_resident_worker(started):
    for process in filter(None, started):
        fishid_worker.stop_for_jobs(process)


STORE = layout.STORE
DERIVED = layout.DERIVED
MODELS = list(config["models"])
# Folders of photos to keep out of training: the split counts near duplicates of them.
BENCHMARKS = config.get("benchmarks", {})
NEAR_DUPLICATE_DISTANCE = settings_with_defaults(config["clean"])["near_duplicates"][
    "max_distance"
]
DATASETS = list(config["datasets"])


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    backbone="[A-Za-z0-9_-]+",
    source="|".join(config["sources"]),
    size=r"\d+",


# The figures of each model, in the order the report shows them.
MODEL_FIGURES = list(STEMS)


def model_figure(name):
    """A model's figure, also placed in `snakemake --report` with its caption."""
    return report(
        f"results/figures/{{model}}/{name}.png",
        caption=f"../report/{name}.rst",
        category="Models",
        subcategory="{model}",
    )


def step_code(step):
    """The package files the rule's step runs, from their imports (fishid.codedeps):
    editing any of them reruns the rule and what follows, editing any other file does not.
    """
    return codedeps.step_files(PACKAGE_DIR, step)


def step_shell(step, skip=()):
    """The rule's command: `python {input.cli} STEP` with each option of the step's declaration
    (fishid.steps) from the rule's input, output, params, wildcards or threads, less the
    optional ones in `skip`, and `2> {log}`."""
    return steps.shell(step, skip)


def source_code(spec, name):
    """The listing's files: those of `fishid list` but only its own kind's module."""
    adapter = source_kind(name, spec).module
    return sorted(
        {*step_code("list"), *map(str, codedeps.closure(PACKAGE_DIR, [adapter]))}
    )


def as_json(value):
    return json.dumps(value, sort_keys=True)


def memory_mb(step, units):
    """A `mem_mb` for `step` (fishid.memory.NEEDS) from `units(wildcards, input)`. Snakemake
    calls it again once the inputs are there (before that a missing input leaves it to be
    decided) and with the attempt, which doubles it on a retry."""
    return lambda wildcards, input, attempt: memory.request_mb(
        step, units(wildcards, input), attempt
    )


def split_pixels_mb(wildcards, input):
    return memory.pixels_mb(memory.table_rows(input.split), int(wildcards.size))


def cache_mb(wildcards, input):
    return memory.file_mb(input.cache)


def model_spec(name):
    return model_settings(config, name)


@functools.cache
def _clean_table(path, modified):
    return read_table(path)


def dataset_rows(wildcards):
    """The digest of the dataset's rows of the clean table (fishid.split.scope), read once the
    cleaning checkpoint is done."""
    table = checkpoints.clean_images.get().output.table
    return scope.digest(
        _clean_table(table, os.stat(table).st_mtime_ns),
        config["datasets"][wildcards.dataset],
    )


# Rules train_detector and detect_fish make every dataset's split themselves from the clean table
# (fishid.detect.scope), and take no split table as input: a job downstream of a split that
# reruns, through inputs that are all ancient, is never checked for its own reasons (its
# params) by Snakemake's planning (dag.py's masked jobs), so a decision would not retrain the
# detector even where its photos change. The datasets' settings are a param of theirs too: a
# change to them reruns both, as it did when they read the splits.
DATASET_SPECS = as_json(config["datasets"])


@functools.cache
def _detect_digests(clean_key, records_key):
    return detect_scope.rule_digests(
        _clean_table(*clean_key),
        detect_scope.read_records([path for path, _ in records_key]),
        config["datasets"],
        DETECT,
        SYNTHETIC_SOURCES,
    )


def detect_rows(rule):
    """A params function: the digest of the photos `rule` (train_detector, detect_fish) reads
    (fishid.detect.scope), with every dataset's split made from the clean table, once the
    cleaning checkpoint is done: the split tables on disk may be those this run replaces.
    """

    def rows(wildcards):
        table = checkpoints.clean_images.get().output.table
        records = expand(layout.RECORDS, source=config["sources"])
        return _detect_digests(
            (table, os.stat(table).st_mtime_ns),
            tuple((path, os.stat(path).st_mtime_ns) for path in records),
        )[rule]

    return rows


def after_cleaning(path):
    """An input function for `path` that waits for the cleaning checkpoint. After a checkpoint
    Snakemake plans again only the jobs whose inputs wait for it; a job further down keeps the
    reason it was first planned with (a split that might change) and reruns though nothing it
    reads did. So each rule after the splits takes one input (its CLI script, whose path is
    fixed: the plan still shows its other inputs) through this."""

    def inputs(wildcards):
        checkpoints.clean_images.get()
        return path

    return inputs


def training_priority(wildcards):
    """Models that train a whole network take longest: started first, they leave no core
    working alone at the end of a run (the demo's R18-scratch4, picked last, ran alone for 40 s).
    """
    return int(variants.needs(model_spec(wildcards.model)["arch"]).recipe == "network")


def other_label(dataset):
    """The label of a dataset's pooled 'other' class, or '' without one."""
    return config["datasets"][dataset].get("other", {}).get("label", "")


def predict_folder():
    if "predict_folder" not in config:
        raise ValueError(
            "set predict_folder (a folder of photos), e.g. --config predict_folder=my_photos"
        )
    return config["predict_folder"]


def cache_for(settings):
    """The image cache a model reads: its dataset's photos at its size, or their crops."""
    crops = "-crops" if "crop" in settings else ""
    return f"results/cache/{settings['dataset']}/{settings['image_size']}px{crops}.pt"


def hub_record(spec):
    """Rule open_clip_weights' record of an `hf-hub:org/name` model, beside its folder
    models--org--name in the backbone's cache."""
    repo = "--".join(Path(spec["model"].removeprefix("hf-hub:")).parts)
    return str(
        Path(spec.get("cache", "resources/weights/open_clip"), f"models--{repo}.json")
    )


def backbone_file(settings):
    """The weights a model starts from; none for a random backbone, an RI model, or an
    open_clip backbone by tag (open_clip keeps its own cache). For a Hugging Face Hub one
    (hf-hub:), the record of its download, so that training waits for it."""
    name = variants.backbone_name(settings)
    if name is None:
        return []
    spec = config["backbones"][name]
    if spec["source"] == "open_clip":
        return hub_record(spec) if spec["model"].startswith("hf-hub:") else []
    if spec["source"] == "imagenet":
        return str(
            Path(spec.get("cache", "resources/weights"), "resnet18-f37072fd.pth")
        )
    return f"results/backbones/{name}/weights.pt"


def backbone_spec(settings):
    """The settings of the backbone a model starts from ({} for none), for backbones that
    are loaded by name (open_clip) rather than from a file."""
    name = variants.backbone_name(settings)
    return {} if name is None else backbone_settings(config, name)


# Shards: the per-image work of downloading (per source) and cleaning, split into this many
# jobs (download: by record id hash; clean: by SHA-256 prefix); one keeps one job.
# Taken out of the configuration (validated above): the count changes the jobs, not any
# step's settings or results, so no rule's params see it.
DOWNLOAD_SHARDS = config.get("download", {}).pop(
    "shards", default("download", "shards")
)
CLEAN_SHARDS = config["clean"].pop("shards")


def shard_names(count):
    return [f"{index}-of-{count}" for index in range(count)]


def shard_args(wildcards):
    """[INDEX, COUNT] of a shard wildcard such as 2-of-4."""
    return wildcards.shard.split("-of-")


def per_image_spec():
    """The clean settings the per-image work reads (fishid.clean.stage.PER_IMAGE_SETTINGS)."""
    names = ["max_side", "min_side", "max_pixels"]
    return as_json({k: v for k, v in config["clean"].items() if k in names})


# Rule label_issues' settings, defaults filled in (review.label_issues).
LABEL_ISSUES = issue_settings(config)


def label_issues_backbone():
    """The weights file of the backbone whose features the queue reads ([] for none), as a TL
    model on it would read them: a new file reruns the queue."""
    name = LABEL_ISSUES["backbone"]
    return [] if name == "none" else backbone_file({"arch": "tl", "backbone": name})


def label_issues_skipped():
    """The options label_issues has no value for (so its command leaves them out): the crops
    where it reads whole photos, the backbone where it has none."""
    crops = [] if LABEL_ISSUES["crops"] else ["crops", "crop_store"]
    return crops + ([] if label_issues_backbone() else ["backbone"])


# The detect stage (detect.smk), where the configuration has a `detect` section (its defaults
# filled in above, with every other section's); None where it has none.
DETECT = config.get("detect")
DETECTOR_FOLDER = "results/detect/{detector}"
CROPS = "results/detect/crops.tsv"
CROP_STORE = "results/detect/crops"
SYNTHETIC_SOURCES = synthetic_sources(config["sources"])


def detector_folder():
    return DETECTOR_FOLDER.format(detector=DETECT["detector"])


def detectors_by_training(trained):
    """The detectors the pipeline trains (rule train_detector), or fetches (fetch_detector)."""
    names = [n for n, t in variants.TRAINED_DETECTORS.items() if t == trained]
    return "|".join(map(re.escape, names))


def crop_settings():
    """The detect settings a photo's crop depends on, besides the detector's files."""
    return {key: DETECT[key] for key in ("detector", "threshold", "padding")}


def detector_files():
    """What detect_fish reads of its detector: a trained one's weights and record, or the
    record of the files fetched for one used as it comes."""
    trained = variants.TRAINED_DETECTORS[DETECT["detector"]]
    names = ["weights.pt", "meta.json"] if trained else ["meta.json"]
    return [f"{detector_folder()}/{name}" for name in names]
