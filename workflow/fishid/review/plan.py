"""What Snakemake would rerun after a decision: dry runs in the project folder, without
taking Snakemake's lock, so that they never block (nor are blocked by) a run in progress.

Cleaning is a checkpoint: a plain dry run cannot know which datasets a new clean table
changes, and lists every split and model after it (the most a run could do). The true plan
comes from the table cleaning will write, made here from its per-image cache
(fishid.clean.stage.table_from_cache): the datasets whose rows differ (fishid.split.scope)
are split again with what follows them, together with what reads the clean table itself."""

import io
import re
import subprocess
import sys
from pathlib import Path

from fishid import layout
from fishid.clean.stage import table_from_cache
from fishid.config import project_path, user_tables
from fishid.split import scope
from fishid.tables import CLEAN_COLUMNS, read_table, table_text


def dry_run_command(root, configfiles=(), extra=()) -> list[str]:
    configs = ["--configfile", *map(str, configfiles)] if configfiles else []
    return [
        sys.executable,
        "-m",
        "snakemake",
        *extra,
        "--dry-run",
        "--nolock",
        "--cores",
        "1",
        "--directory",
        str(root),
        *configs,
    ]


def jobs_of(output: str) -> dict[str, tuple[set[str], set[str]]]:
    """A dry run's jobs, as `rule[wildcards]`, each with its input and output files."""
    jobs = {}
    for block in re.split(r"^(?=(?:local)?(?:rule|checkpoint) \w+:)", output, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block).group(1)
        fields = dict(re.findall(r"^\s+(wildcards|input|output): (.*)$", block, re.MULTILINE))
        job = f"{rule}[{fields['wildcards']}]" if "wildcards" in fields else rule
        jobs[job] = tuple(set(fields[key].split(", ")) if key in fields else set() for key in ("input", "output"))
    return jobs


def job_counts(jobs) -> dict[str, int]:
    counts = {}
    for job in sorted(jobs):
        rule = _rule(job)
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def changed_datasets(root, config: dict) -> list[str] | None:
    """The datasets whose rows of the clean table the next run changes; None when that cannot
    be known here (no clean table yet, or an image that cleaning has not seen)."""
    root = Path(root)
    current = root / layout.CLEAN_TABLE
    if not current.exists():
        return None
    tables, sources = user_tables(config), list(config["sources"])
    after = table_from_cache(
        [root / layout.RECORDS.format(source=s) for s in sources],
        [root / layout.DOWNLOADS.format(source=s) for s in sources],
        *(project_path(root, tables[key], key) for key in ("clean.exclusions", "clean.relabels")),
        root / layout.STORE,
        root / layout.CLEAN_CACHE,
        config["clean"],
    )
    if after is None:
        return None
    # Compared as the run will read it: written and read back as the table's text.
    after = read_table(io.StringIO(table_text(after.reindex(columns=CLEAN_COLUMNS))))
    return scope.changed_datasets(read_table(current), after, config["datasets"])


def _dry_run(root, configfiles, extra, timeout) -> tuple[dict | None, str]:
    try:
        result = subprocess.run(
            dry_run_command(root, configfiles, extra), cwd=root, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, f"the dry run took over {timeout} s"
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return None, output[-2000:]
    return jobs_of(output), ""


def _rule(job: str) -> str:
    return job.split("[", 1)[0]


def _true_jobs(root, configfiles, plain: dict, datasets: list[str], timeout) -> tuple[dict | None, str]:
    """From the plain plan, cleaning; then, planned as if cleaning had run and changed only
    those rows (its rule not allowed to run, so that the splits read today's table), the
    changed datasets' splits and what reads the clean table itself, forced, with everything
    that follows them."""
    cleaning = {job: files for job, files in plain.items() if layout.CLEAN_TABLE in files[1]}
    readers = {path for inputs, outputs in plain.values() if layout.CLEAN_TABLE in inputs for path in outputs}
    forced = [layout.SPLIT.format(dataset=d) for d in datasets] + sorted(readers)
    if not forced:
        return cleaning, ""
    allowed = sorted({_rule(job) for job in plain} - {_rule(job) for job in cleaning})
    after, message = _dry_run(root, configfiles, ["--allowed-rules", *allowed, "--forcerun", *forced], timeout)
    return (None, message) if after is None else ({**cleaning, **after}, "")


def planned(root, configfiles=(), config: dict | None = None, timeout=300) -> dict:
    """{"ok": whether the plan could be made, "counts": jobs per rule, "jobs": the jobs,
    "datasets": those split again (None: unknown before cleaning runs, the plan is then the
    most a run can do), "message": the dry run's last lines on failure}."""
    jobs, message = _dry_run(root, configfiles, [], timeout)
    datasets = changed_datasets(root, config) if config is not None and jobs else None
    if datasets is not None:
        jobs, message = _true_jobs(root, configfiles, jobs, datasets, timeout)
    if jobs is None:
        return {"ok": False, "counts": {}, "jobs": [], "datasets": datasets, "message": message}
    return {"ok": True, "counts": job_counts(jobs), "jobs": sorted(jobs), "datasets": datasets, "message": ""}
