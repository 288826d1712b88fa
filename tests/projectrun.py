"""A throwaway copy of the project (Snakefile, workflow, config, envs, profiles), and
Snakemake run in it the way users run it: another configuration than the demo's is passed
with --configfile (copied beside the project's own as config/run.yaml), never copied over
config/config.yaml.

Tests that edit the project's code (the training module, the exclusion table) or that
run it through another executor work on such a copy, never on the checkout.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fishid.review.plan import jobs_of

REPO = Path(__file__).resolve().parents[1]
PROJECT_PARTS = ["Snakefile", "workflow", "config", "envs", "profiles"]
TINY_CONFIG = REPO / "tests" / "config" / "tiny.yaml"
RUN_CONFIG = Path("config", "run.yaml")
# The options of every dry run the tests make (dry_run, and plans_after_edits through dryruns.py).
DRY_RUN = ("--cores", "2", "--dry-run")


def make_project(dest: Path, config: Path | None = TINY_CONFIG) -> Path:
    """`config=None` runs the demo's config/config.yaml, as a plain `snakemake` does."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / part)
    if config is not None:
        shutil.copy(config, dest / RUN_CONFIG)
    return dest


def run_config_path(project: Path) -> Path:
    """The file holding the configuration the project's runs use."""
    given = project / RUN_CONFIG
    return given if given.exists() else project / "config" / "config.yaml"


def run_config(project: Path) -> dict:
    return yaml.safe_load(run_config_path(project).read_text())


def environment(**extra) -> dict:
    """Jobs run `python` from PATH: make it this interpreter, as `make` does with the venv."""
    # CUDA_VISIBLE_DEVICES passes through: jobs train on whatever GPU the machine offers. (A
    # run through SLURM drops it: there SLURM's grant must be what sets it, for training only.)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return {**env, **extra}


def snakemake_command(project: Path, *args, configfiles=()) -> list[str]:
    return [sys.executable, "-m", "snakemake", *snakemake_arguments(project, *args, configfiles=configfiles)]


def snakemake_arguments(project: Path, *args, configfiles=()) -> list[str]:
    """`args` first: Snakemake options that take several values (--configfile, --forcerun,
    --rerun-triggers) would otherwise swallow a target that follows them. `configfiles` are
    merged, in order, over the project's run configuration."""
    configs = [*([project / RUN_CONFIG] if (project / RUN_CONFIG).exists() else []), *configfiles]
    return [
        *args,
        "--snakefile",
        str(project / "Snakefile"),
        "--directory",
        str(project),
        *(["--configfile", *map(str, configs)] if configs else []),
    ]


def snakemake(project: Path, *args, env=None, timeout=900, configfiles=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(project, *args, configfiles=configfiles),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or environment(),
    )


def dry_run(project: Path, *args, configfiles=()) -> str:
    """What `snakemake --dry-run` prints; a failed dry run fails the test with its error."""
    result = snakemake(project, *DRY_RUN, *args, configfiles=configfiles)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout + result.stderr


def plans_after_edits(project: Path, files) -> dict[Path, set[str]]:
    """The jobs a dry run plans after an edit to each of `files`, one at a time (each put
    back before the next): tests/dryruns.py, in one process instead of one per file."""
    arguments = snakemake_arguments(project, *DRY_RUN)
    command = [sys.executable, str(REPO / "tests" / "dryruns.py"), *map(str, files), "--", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment())
    assert result.returncode == 0, result.stderr[-5000:]
    return {Path(file): plan_of(output)[1] for file, output in json.loads(result.stdout).items()}


def planned(project: Path, config=None, *args, configfiles=()) -> tuple[dict[str, int], set[str]]:
    """What a dry run would run: (jobs by rule, the jobs as `rule[wildcards]`). Printed, so
    that `pytest -n 0 -s` and a failing test show the whole plan. `config` (a dict) is merged over
    the run configuration, as a user's extra --configfile would be."""
    configfiles = list(configfiles)
    if config is not None:
        changed = project / "config" / "changed.yaml"
        changed.write_text(yaml.safe_dump(config))
        configfiles.append(changed)
    counts, jobs = plan_of(dry_run(project, *args, configfiles=configfiles))
    print(f"planned jobs: {counts or 'none'}")
    for job in sorted(jobs):
        print(f"  {job}")
    return counts, jobs


def plan_of(output: str) -> tuple[dict[str, int], set[str]]:
    """Parse a dry run's output; an output that is neither a plan nor "Nothing to be done" fails."""
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, f"neither a plan nor 'Nothing to be done':\n{output[-3000:]}"
        return {}, set()
    stats = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE) if rule != "total"}
    assert counts, f"no job counts under 'Job stats:':\n{stats}"
    return counts, set(job_files(output))


def job_files(output: str) -> dict[str, tuple[set[str], set[str]]]:
    """A dry run's jobs, as `rule[wildcards]`, each with its input and output files."""
    return jobs_of(output)


def downstream(jobs: dict[str, tuple[set[str], set[str]]], rules) -> set[str]:
    """The jobs of `rules` and every job that reads, directly or not, what they write: what
    `--forcerun rules` plans, computed from one --forceall plan instead of one dry run each."""
    found = {job for job in jobs if job.split("[", 1)[0] in rules}
    todo = list(found)
    while todo:
        written = jobs[todo.pop()][1]
        for job, (inputs, _) in jobs.items():
            if job not in found and inputs & written:
                found.add(job)
                todo.append(job)
    return found


def planned_jobs(project: Path, config=None) -> dict[str, int]:
    """Jobs a dry run would run, by rule."""
    return planned(project, config)[0]


# The fetch step's own command line, on a loopback server (private hosts allowed).
FETCH_SPEC = {
    "download": {
        "workers": 2,
        "per_host": 2,
        "rate": 0,
        "backoff": 0.01,
        "read_timeout": 5,
        "allow_private_hosts": True,
    }
}


def fetch_command(work, spec=FETCH_SPEC):
    return [
        sys.executable,
        str(REPO / "workflow" / "fishid_cli.py"),
        "fetch",
        "--records",
        str(work / "records.tsv"),
        "--store",
        str(work / "store"),
        "--spec",
        json.dumps(spec),
        "--out",
        str(work / "downloads.tsv"),
    ]


def fetches_that_wait(work, commands, timeout=120):
    """Run `commands` (fetches of work/records.tsv into work/store) while this process holds
    their lock, until each has logged that it waits; then let them go. Two fetches started at
    once need not overlap (the first may finish before the second starts); this makes sure.
    Returns their return codes and logs."""
    import fcntl
    import time

    sys.path.insert(0, str(REPO / "workflow"))
    from fishid.download.fetch import source_lock

    lock = source_lock(work / "store", work / "records.tsv", None)
    lock.parent.mkdir(parents=True, exist_ok=True)
    logs = [work / f"fetch{i}.log" for i in range(len(commands))]
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        runs = [subprocess.Popen(command, stderr=log.open("w")) for command, log in zip(commands, logs)]
        deadline = time.monotonic() + timeout
        while not all("another fetch holds the records" in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(run.poll() is not None for run in runs):
                break
            time.sleep(0.1)
        fcntl.flock(held, fcntl.LOCK_UN)
    codes = [run.wait(timeout=timeout) for run in runs]
    return codes, [log.read_text() for log in logs]
