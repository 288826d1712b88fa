"""What Snakemake would rerun after a decision: a dry run in the project folder, without
taking Snakemake's lock, so that it never blocks (nor is blocked by) a run in progress."""

import re
import subprocess
import sys


def dry_run_command(root, configfiles=()) -> list[str]:
    configs = ["--configfile", *map(str, configfiles)] if configfiles else []
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--dry-run",
        "--nolock",
        "--cores",
        "1",
        "--directory",
        str(root),
        *configs,
    ]


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from a dry run's "Job stats" table ({} for "Nothing to be done")."""
    if "Job stats:" not in output:
        return {}
    stats = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE) if rule != "total"}


def planned(root, configfiles=(), timeout=300) -> dict:
    """{"counts": jobs per rule, "ok": whether the dry run worked, "message": its last lines on failure}."""
    try:
        result = subprocess.run(
            dry_run_command(root, configfiles), cwd=root, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "counts": {}, "message": f"the dry run took over {timeout} s"}
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return {"ok": False, "counts": {}, "message": output[-2000:]}
    return {"ok": True, "counts": job_counts(output), "message": ""}
