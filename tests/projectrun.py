"""A throwaway copy of the project (Snakefile, workflow, config, envs, profiles), with
tests/config/tiny.yaml as its config unless a test runs the demo, and Snakemake run in it.

Tests that edit the project's code (the training module, the exclusion table) or that
run it through another executor work on such a copy, never on the checkout.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_PARTS = ["Snakefile", "workflow", "config", "envs", "profiles"]
TINY_CONFIG = REPO / "tests" / "config" / "tiny.yaml"


def make_project(dest: Path, config: Path | None = TINY_CONFIG) -> Path:
    """`config=None` keeps the demo's config/config.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / part)
    if config is not None:
        shutil.copy(config, dest / "config" / "config.yaml")
    return dest


def environment(**extra) -> dict:
    """Jobs run `python` from PATH: make it this interpreter, as `make` does with the venv."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return {**env, **extra}


def snakemake_command(project: Path, *args, configfiles=()) -> list[str]:
    """`args` first: Snakemake options that take several values (--configfile, --forcerun,
    --rerun-triggers) would otherwise swallow a target that follows them."""
    configs = [project / "config" / "config.yaml", *configfiles]
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(project / "Snakefile"),
        "--directory",
        str(project),
        "--configfile",
        *map(str, configs),
    ]


def snakemake(project: Path, *args, env=None, timeout=900, configfiles=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(project, *args, configfiles=configfiles),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or environment(),
    )


def planned(project: Path, config=None, *args) -> tuple[dict[str, int], set[str]]:
    """What a dry run would run: (jobs by rule, the jobs as `rule[wildcards]`). Printed, so
    that `pytest -s` and a failing test show the whole plan."""
    configfiles = []
    if config is not None:
        changed = project / "config" / "changed.yaml"
        changed.write_text(yaml.safe_dump(config))
        configfiles.append(changed)
    result = snakemake(project, "--cores", "2", "--dry-run", *args, configfiles=configfiles)
    assert result.returncode == 0, result.stderr[-5000:]
    output = result.stdout + result.stderr
    stats = output.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in output else ""
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE) if rule != "total"}
    jobs = set()
    for block in re.split(r"^(?=(?:local)?rule \w+:)", output, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        jobs.add(f"{rule}[{wildcards.group(1)}]" if wildcards else rule)
    print(f"planned jobs: {counts or 'none'}")
    for job in sorted(jobs):
        print(f"  {job}")
    return counts, jobs


def planned_jobs(project: Path, config=None) -> dict[str, int]:
    """Jobs a dry run would run, by rule."""
    return planned(project, config)[0]
