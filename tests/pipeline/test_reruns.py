"""After a complete run, Snakemake plans exactly the jobs a change touches, and no others.

Each test changes one thing in the session's tiny project (a copy of the checkout, so the
training code can be edited), prints the planned jobs (`pytest -n 0 -s` shows them) and puts
the project back exactly as it was (content and modification time).
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from dryruns import edited
from projectrun import downstream, dry_run, job_files, planned, planned_jobs, plans_after_edits, run_config

from fishid import codedeps

# The `fishid` subcommand each rule of the tiny run's DAG runs (its shell line).
RULE_STEPS = {
    "list_source": "list",
    "fetch_images": "fetch",
    "fetch_shard": "fetch",
    "clean_images": "clean",
    "clean_shard": "clean-shard",
    "split_dataset": "split",
    "cache_images": "cache",
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
def job_graph(tiny_project) -> dict[str, tuple[set[str], set[str]]]:
    """Every job of the tiny DAG with its files (one --forceall plan for the module)."""
    return job_files(dry_run(tiny_project, "--forceall"))


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


def test_a_new_exclusion_reruns_cleaning_and_downstream_but_no_listing_or_download(tiny_project, job_graph):
    pair = pd.read_csv(tiny_project / "results/splits/pair.tsv", sep="\t", dtype=str)
    line = f"{pair['sha256'].iloc[0]}\tblurred beyond recognition (test)\n"
    with edited(tiny_project / "config/exclusions.tsv", line):
        counts, jobs = planned(tiny_project)
    # Every step after the source listing and the download depends on the cleaned image table.
    assert jobs == {job for job in job_graph if rule_of(job) not in {"list_source", "fetch_images"}}
    assert counts["clean_images"] == 1 and counts["split_dataset"] == len(config_of(tiny_project)["datasets"])
    assert counts["attribution"] == 1 and counts["report"] == 1
    assert planned_jobs(tiny_project) == {}


def test_an_edit_to_the_training_code_reruns_the_training_rules_and_downstream(tiny_project, job_graph):
    _, training_and_after = planned(tiny_project, None, "--forcerun", "pretrain_backbone", "train_model")
    # Snakemake's own --forcerun plan is what the every-module test computes from the job graph.
    assert downstream(job_graph, {"pretrain_backbone", "train_model"}) == training_and_after
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


def test_an_edit_to_any_module_reruns_exactly_the_rules_that_run_it_and_downstream(tiny_project, job_graph):
    """For every module of the package: the rules whose step imports it (transitively, by
    fishid.codedeps, which tests/unit/test_codedeps.py checks against Python's imports) rerun with
    everything after them, and nothing else does."""
    root = tiny_project / "workflow"
    runs = {rule: {Path(f) for f in codedeps.step_files(root, step)} for rule, step in RULE_STEPS.items()}
    runs["list_source"] |= codedeps.closure(root, ["fishid.sources.synthetic"])  # the tiny run's one source kind
    assert set(RULE_STEPS) >= {rule_of(job) for job in job_graph} - {"all"}
    modules = sorted((root / "fishid").rglob("*.py"))
    plans = plans_after_edits(tiny_project, modules)
    assert list(plans) == modules
    for module, jobs in plans.items():
        rules = {rule for rule, files in runs.items() if module in files}
        expected = downstream(job_graph, rules)
        assert jobs == expected, (str(module.relative_to(root)), sorted(rules), "differing:", sorted(jobs ^ expected))
    assert planned_jobs(tiny_project) == {}
