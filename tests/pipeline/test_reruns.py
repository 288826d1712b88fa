"""After a complete run, Snakemake plans exactly the jobs a change touches, and no others.

Each test changes one thing in the session's tiny project (a copy of the checkout, so the
training code can be edited), prints the planned jobs (`pytest -n 0 -s` shows them) and puts
the project back exactly as it was (content and modification time).
"""

import hashlib
import shutil
from pathlib import Path

import pytest
from dryruns import edited
from projectrun import (
    RUN_CONFIG,
    downstream,
    dry_run,
    job_files,
    planned,
    planned_jobs,
    plans_after_edits,
    run_config,
    snakemake,
)

from fishid import codedeps
from fishid.review import plan as review_plan
from fishid.tables import read_table

# The `fishid` subcommand each rule of the tiny run's DAG runs (its shell line).
RULE_STEPS = {
    "list_source": "list",
    "fetch_images": "fetch",
    "fetch_shard": "fetch",
    "clean_images": "clean",
    "clean_shard": "clean-shard",
    "split_dataset": "split",
    "cache_images": "cache",
    "cache_crops": "cache",
    "train_detector": "train-detector",
    "detect_fish": "detect",
    "pretrain_backbone": "pretrain",
    "train_model": "train",
    "evaluate_model": "evaluate",
    "plot_dataset": "plot-dataset",
    "report": "report",
    "attribution": "attribution",
    "citation": "citation",
    "label_issues": "label-issues",
}


def rule_of(job: str) -> str:
    return job.split("[", 1)[0]


def config_of(project):
    return run_config(project)


@pytest.fixture(scope="module")
def job_graphs(tiny_project) -> dict:
    """Every job of the tiny DAG with its files, twice. Cleaning is a checkpoint: while it is
    to run, a plan shows the inputs of the jobs that wait for it as to be determined (<TBD>),
    read here as cleaning's outputs (Snakemake plans them all, the most a run could do). Once
    it has run, their inputs are known: cleaning and what comes before it are planned with
    --until, what follows with each later rule forced."""
    forceall = job_files(dry_run(tiny_project, "--forceall"))
    cleaning = forceall["clean_images"][1]
    waiting = {job: ((i - {"<TBD>"}) | (cleaning if "<TBD>" in i else set()), o) for job, (i, o) in forceall.items()}
    upstream = job_files(dry_run(tiny_project, "--forceall", "--until", "clean_images"))
    later = {rule_of(job) for job in forceall} - set(map(rule_of, upstream))
    cleaned = {**upstream, **job_files(dry_run(tiny_project, "--forcerun", *sorted(later)))}
    return {"cleaning": waiting, "cleaned": cleaned, "upstream": set(map(rule_of, upstream))}


def expected_plan(graphs: dict, rules) -> set[str]:
    """What a dry run plans when `rules` must rerun: what follows them, through the cleaning
    checkpoint's placeholders when cleaning is among them or after them."""
    return downstream(graphs["cleaning"] if set(rules) & graphs["upstream"] else graphs["cleaned"], rules)


def test_nothing_changed_plans_nothing(tiny_project):
    assert planned_jobs(tiny_project) == {}


def test_a_moved_project_plans_nothing(tiny_project, tmp_path):
    """A user moves the project folder (`mv`, or `cp -a`, which keeps modification times):
    nothing is out of date, so nothing reruns."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_project, moved, symlinks=True)  # copy2: modification times kept
    assert planned_jobs(moved) == {}


def test_one_models_learning_rate_reruns_that_model_and_the_report(tiny_project):
    config = config_of(tiny_project)
    config["models"]["RI2"]["lr"] = 0.002
    counts, jobs = planned(tiny_project, config)
    assert counts == {"train_model": 1, "evaluate_model": 1, "report": 1, "all": 1}
    assert jobs == {"train_model[model=RI2]", "evaluate_model[model=RI2]", "report", "all"}


def files_of(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder`: its modification time and the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_an_exclusion_resplits_only_the_datasets_holding_the_photo(tiny_project, tmp_path):
    """One photo of A. ocellaris (a class of trio_other only) excluded: the review app's plan,
    then the real run, split trio_other again and retrain its models, and nothing of pair and
    pool (their splits, caches, backbones and models) is written again."""
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)  # modification times kept
    config = config_of(project)
    clean = read_table(project / "results/clean/images.tsv")
    photo = clean.loc[(clean["taxon"] == "Amphiprion ocellaris") & (clean["kept"] == "True"), "sha256"].iloc[0]
    before = files_of(project / "results")
    with open(project / "config/exclusions.tsv", "a") as table:
        table.write(f"{photo}\tblurred (test)\n")

    plan = review_plan.planned(project, [RUN_CONFIG], config)
    trio_models = sorted(m for m, spec in config["models"].items() if spec["dataset"] == "trio_other")
    # The detector learns from every kept photo that no dataset holds out, so one photo fewer
    # retrains it, finds the fish again and retrains every model on crops, whatever its dataset.
    crop_models = sorted(m for m, spec in config["models"].items() if "crop" in spec)
    detection = {
        "train_detector[detector=synthetic]",
        "detect_fish",
        *(
            f"cache_crops[dataset={spec['dataset']}, size={spec['image_size']}]"
            for spec in map(config["models"].get, crop_models)
        ),
        *(f"{rule}[model={m}]" for m in crop_models for rule in ("train_model", "evaluate_model")),
    }
    assert crop_models and not set(crop_models) & set(trio_models)
    expected = {
        "clean_images",
        "label_issues",
        "attribution",
        "citation",
        "report",
        "all",
        "split_dataset[dataset=trio_other]",
        "cache_images[dataset=trio_other, size=32]",
        *(f"{rule}[model={m}]" for m in trio_models for rule in ("train_model", "evaluate_model")),
        *detection,
    }
    assert plan["ok"] and plan["datasets"] == ["trio_other"]
    assert set(plan["jobs"]) == expected, sorted(set(plan["jobs"]) ^ expected)

    result = snakemake(project, "--profile", str(project / "profiles/local"))
    assert result.returncode == 0, result.stderr[-5000:]
    assert set(review_plan.jobs_of(result.stderr)) == expected
    after = files_of(project / "results")
    rewritten = {path for path in before if after.get(path) != before[path]}
    others = ("splits/pair", "splits/pool", "cache/pair", "cache/pool", "backbones/")
    other_models = [f"models/{m}/" for m in config["models"] if m not in trio_models + crop_models]
    rewritten_others = [p for p in rewritten if p.startswith(others) or any(p.startswith(m) for m in other_models)]
    assert [p for p in rewritten_others if not p.endswith("px-crops.pt")] == []
    assert {"splits/trio_other.tsv", "splits/trio_other.decisions.tsv", "clean/images.tsv"} <= rewritten
    assert {f"models/{m}/weights.pt" for m in trio_models} <= rewritten
    decisions = read_table(project / "results/splits/trio_other.decisions.tsv")
    assert decisions.loc[decisions["sha256"] == photo, "reason"].str.contains("blurred (test)", regex=False).all()
    assert photo not in set(read_table(project / "results/splits/trio_other.tsv")["sha256"])
    assert planned_jobs(project) == {}


def test_an_edit_to_the_training_code_reruns_the_training_rules_and_downstream(tiny_project, job_graphs):
    _, training_and_after = planned(tiny_project, None, "--forcerun", "pretrain_backbone", "train_model")
    # Snakemake's own --forcerun plans are what the every-module test computes from the job graphs.
    assert expected_plan(job_graphs, {"pretrain_backbone", "train_model"}) == training_and_after
    _, cleaning_and_after = planned(tiny_project, None, "--forcerun", "clean_images")
    assert expected_plan(job_graphs, {"clean_images"}) == cleaning_and_after
    with edited(tiny_project / "workflow/fishid/train/loop.py"):
        counts, jobs = planned(tiny_project)
    assert jobs == training_and_after
    assert counts["train_model"] == len(config_of(tiny_project)["models"])
    # Nothing before training: the data are the same.
    assert not {rule_of(job) for job in jobs} & {
        "list_source",
        "fetch_images",
        "clean_images",
        "split_dataset",
        "cache_images",
        "attribution",
    }
    assert planned_jobs(tiny_project) == {}


def test_an_edit_to_any_module_reruns_exactly_the_rules_that_run_it_and_downstream(tiny_project, job_graphs):
    """For every module of the package: the rules whose step imports it (transitively, by
    fishid.codedeps, which tests/unit/test_codedeps.py checks against Python's imports) rerun with
    everything after them, and nothing else does."""
    root = tiny_project / "workflow"
    runs = {rule: {Path(f) for f in codedeps.step_files(root, step)} for rule, step in RULE_STEPS.items()}
    runs["list_source"] |= codedeps.closure(root, ["fishid.sources.synthetic"])  # the tiny run's one source kind
    assert set(RULE_STEPS) >= {rule_of(job) for job in job_graphs["cleaned"]} - {"all"}
    modules = sorted((root / "fishid").rglob("*.py"))
    plans = plans_after_edits(tiny_project, modules)
    assert list(plans) == modules
    for module, jobs in plans.items():
        rules = {rule for rule, files in runs.items() if module in files}
        expected = expected_plan(job_graphs, rules)
        assert jobs == expected, (str(module.relative_to(root)), sorted(rules), "differing:", sorted(jobs ^ expected))
    assert planned_jobs(tiny_project) == {}
