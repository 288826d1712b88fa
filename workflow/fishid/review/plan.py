"""What Snakemake would rerun after a decision: dry runs in the project folder, without
taking Snakemake's lock, so that they never block (nor are blocked by) a run in progress.

Cleaning is a checkpoint: a plain dry run cannot know which datasets a new clean table
changes, and lists every split and model after it (the most a run could do). The true plan
comes from the table cleaning will write, made here from its per-image cache
(fishid.clean.stage.table_from_cache): the datasets whose rows differ (fishid.split.scope)
are split again with what follows them, the detector is trained again, and the fish found
again, only where their own rows differ (fishid.detect.scope: the photos each reads, with the
splits made from the new table), together with what else reads the clean table itself."""

import io
import re
import subprocess
import sys
from pathlib import Path

from fishid import layout
from fishid.clean.stage import CLEAN_COLUMNS, table_from_cache
from fishid.config import project_path, synthetic_sources, user_tables, with_schema_defaults
from fishid.detect import scope as detect_scope
from fishid.split import scope
from fishid.tables import read_table, table_text

# Rules that read the clean table but rerun only when their rows of it change (their params).
GATED_RULES = ("train_detector", "detect_fish")


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


def clean_tables(root, config: dict):
    """(the clean table, the one the next run writes), or None when the latter cannot be known
    here (no clean table yet, or an image that cleaning has not seen)."""
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
    return read_table(current), read_table(io.StringIO(table_text(after.reindex(columns=CLEAN_COLUMNS))))


def changed_datasets(root, config: dict) -> list[str] | None:
    """The datasets whose rows of the clean table the next run changes; None when that cannot
    be known here (no clean table yet, or an image that cleaning has not seen)."""
    tables = clean_tables(root, config)
    return None if tables is None else scope.changed_datasets(*tables, config["datasets"])


def detect_digests(root, config: dict, clean) -> dict[str, str]:
    """The params `rows` of each detect rule for the clean table `clean` (fishid.detect.scope, as
    workflow/rules/common.smk computes them); {} without a detect stage."""
    config = with_schema_defaults(config)
    if not config.get("detect"):
        return {}
    records = detect_scope.read_records([Path(root, layout.RECORDS.format(source=s)) for s in config["sources"]])
    synthetic = synthetic_sources(config["sources"])
    return detect_scope.rule_digests(clean, records, config["datasets"], config["detect"], synthetic)


def changed_rules(root, config: dict, before, after) -> list[str]:
    """The rules of the detect stage whose rows differ between two clean tables."""
    old, new = detect_digests(root, config, before), detect_digests(root, config, after)
    return sorted(rule for rule in new if old.get(rule) != new[rule])


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


def _true_jobs(root, configfiles, plain: dict, datasets: list[str], rules: list[str], timeout):
    """From the plain plan, cleaning; then, planned as if cleaning had run and changed only
    those rows (its rule not allowed to run, so that the splits read today's table), the
    changed datasets' splits, the detect stage's `rules` whose rows changed, and what else reads
    the clean table itself, forced, with everything that follows them."""
    cleaning = {job: files for job, files in plain.items() if layout.CLEAN_TABLE in files[1]}
    readers = {
        path
        for job, (inputs, outputs) in plain.items()
        if layout.CLEAN_TABLE in inputs and _rule(job) not in GATED_RULES
        for path in outputs
    }
    # By name: the plain plan lists them whenever cleaning is to run (the most a run could do).
    forced = [layout.SPLIT.format(dataset=d) for d in datasets] + sorted(readers) + sorted(rules)
    if not forced:
        return cleaning, ""
    allowed = sorted(({_rule(job) for job in plain} | set(GATED_RULES)) - {_rule(job) for job in cleaning})
    after, message = _dry_run(root, configfiles, ["--allowed-rules", *allowed, "--forcerun", *forced], timeout)
    return (None, message) if after is None else ({**cleaning, **after}, "")


def planned(root, configfiles=(), config: dict | None = None, timeout=300) -> dict:
    """{"ok": whether the plan could be made, "counts": jobs per rule, "jobs": the jobs,
    "datasets": those split again (None: unknown before cleaning runs, the plan is then the
    most a run can do), "message": the dry run's last lines on failure}."""
    jobs, message = _dry_run(root, configfiles, [], timeout)
    tables = clean_tables(root, config) if config is not None and jobs else None
    datasets = None if tables is None else scope.changed_datasets(*tables, config["datasets"])
    if tables is not None:
        rules = changed_rules(root, config, *tables)
        jobs, message = _true_jobs(root, configfiles, jobs, datasets, rules, timeout)
    if jobs is None:
        return {"ok": False, "counts": {}, "jobs": [], "datasets": datasets, "message": message}
    return {"ok": True, "counts": job_counts(jobs), "jobs": sorted(jobs), "datasets": datasets, "message": ""}
