"""Scale: a synthetic class of 200 species through the whole pipeline, measured per stage.

For each size (photos), in a fresh copy of the project (tests/projectrun.py make_project) under
--work, this generates
  - a species table (config/synthetic_species.tsv's columns, kingdom ... genus included) of
    --species species in one class, one order, at least 3 families and about 8 species per
    genus, each with seeded colours, bar count, bar width and individual variation;
  - a configuration (config/run.yaml, checked against config/schema.yaml by fishid.config):
    one synthetic source of that many photos over the species (unbalanced, seeded; the demo's
    picture size, scenes and nuisances), download.shards and clean.shards (--shards), the
    demo's cleaning; a dataset chosen by rule over the whole class (three quarters of the
    species, the most photographed, as classes; the rest pooled as "other"); the demo's `pool`
    backbone pre-trained by the pipeline on the eight most photographed species of one family
    (they are classes of the main dataset too: this measures cost, not transfer); one TL
    model at 64 px (--epochs); rule label_issues as configured by default; the report,
and runs `snakemake --profile profiles/slurm` (or profiles/local) on it from nothing, with a
`python` shim first on PATH that notes each job command's wall time, CPU time and peak RSS
(getrusage of its children). Then it reads the run's .snakemake/log (per job: rule, threads,
command, start and end), Snakemake's benchmarks/ (peak RSS of all of a job's processes, sampled),
the SLURM jobs (scontrol) and the files each stage wrote, and writes one row per stage per size,
the growth of each stage's time per photo between sizes, and a projection to 1 and 10 million
photos on N nodes.

Caveats. The peak RSS is a lower bound: getrusage gives the largest process's (the clean
stage's worker processes are counted apart), the benchmark samples every 30 s after the first
30. Under SLURM the span of a stage includes queueing and the executor's status polling, and
each job also runs a Snakemake that starts its command (its SLURM run time is shown apart).

Results go to bench/results/scale.json and .md (--name to change). The issue's sizes:

    python bench/scale.py --executor slurm                  # 5,000, 20,000 and 50,000 photos
    python bench/scale.py --sizes 500 1000 --species 40 --name scale_smoke   # a smoke run
    python bench/scale.py --remeasure ...   # the same arguments: read the runs in --work again
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "pipeline"))

from output import write_results  # noqa: E402
from projectrun import environment, make_project, snakemake_command  # noqa: E402

from fishid.config import validate  # noqa: E402
from fishid.sources.synthetic import load_patterns  # noqa: E402

CLASS = "Scalichthyes"
ORDER = "Scaliformes"
PER_GENUS = 8
GENERA_PER_FAMILY = 5
SYLLABLES = ["ba", "ce", "di", "fo", "gu", "la", "me", "ni", "po", "ru", "sa", "te", "vi", "xo", "zu"]
SPECIES_TABLE = Path("config", "scale_species.tsv")
DATASET, POOL_DATASET, MODEL = "whole_class", "pool", "TL-class"
# The stages of the issue, each by the rules that do its work; the sharded rules' jobs run
# side by side, one per shard, and spread over nodes; every other rule is one job.
STAGES = {
    "list": ["list_source"],
    "fetch": ["fetch_shard", "fetch_images"],
    "clean": ["clean_shard", "clean_images"],
    "split": ["split_dataset"],
    "cache": ["cache_images"],
    "pretrain": ["pretrain_backbone"],
    "train": ["train_model"],
    "evaluate": ["evaluate_model"],
    "label issues": ["label_issues"],
    "report": ["report", "plot_dataset"],
    "provenance": ["attribution", "citation"],
}
SHARDED = {"fetch_shard", "clean_shard"}
# What each stage writes (train's folder also holds evaluate's predictions and metrics).
FOLDERS = {
    "list": ["resources/records"],
    "fetch": ["resources/downloads", "resources/images"],
    "clean": ["results/clean"],
    "split": ["results/splits"],
    "cache": ["results/cache"],
    "pretrain": ["results/backbones"],
    "train": ["results/models"],
    "evaluate": [f"results/figures/{MODEL}"],
    "label issues": ["results/review"],
    "report": ["results/report", "results/figures/datasets"],
    "provenance": ["results/provenance"],
}
# Growth in time per photo between two sizes above this is called superlinear.
SUPERLINEAR = 1.15


# --- the synthetic class ------------------------------------------------------------------


def latin(index: int, width: int = 2) -> str:
    """A pronounceable lower-case word for an index (base len(SYLLABLES), at least `width` syllables)."""
    digits = []
    while index or len(digits) < width:
        index, digit = divmod(index, len(SYLLABLES))
        digits.append(SYLLABLES[digit])
    return "".join(reversed(digits))


def species_table(count: int, seed: int) -> pd.DataFrame:
    """`count` species in genera of PER_GENUS, the genera in at least 3 families of one order
    and class; colours, bars and their variation drawn from `seed`."""
    rng = np.random.default_rng(seed)
    genera = math.ceil(count / PER_GENUS)
    families = max(3, math.ceil(genera / GENERA_PER_FAMILY))
    rows = []
    for index in range(count):
        genus = index % genera
        bars = int(rng.integers(0, 6))
        width = round(float(rng.uniform(0.04, 0.12)), 3) if bars else 0.0
        colours = ["#" + "".join(f"{c:02x}" for c in rng.integers(0, 256, 3)) for _ in range(3)]
        other_bars = bars + (1 if bars < 3 else -1)
        rows.append(
            {
                "taxon": f"Scal{latin(genus)} {latin(index // genera + 1)}",
                "bars": bars,
                "bar_width": width,
                "bar_margin": round(float(rng.uniform(0, 0.02)), 3),
                "body_color": colours[0],
                "fin_color": colours[1],
                "tail_color": colours[2],
                # A barred species' individuals sometimes have one bar more or less, of varied widths.
                "bar_counts": f"{other_bars}:0.1" if bars and rng.random() < 0.4 else "",
                "bar_width_range": f"{max(0.02, width - 0.015):.3f}-{min(0.15, width + 0.015):.3f}" if bars else "",
                "kingdom": "Animalia",
                "phylum": "Chordata",
                "class": CLASS,
                "order": ORDER,
                "family": f"Scal{latin(genus % families)}idae",
                "genus": f"Scal{latin(genus)}",
            }
        )
    return pd.DataFrame(rows)


def photo_counts(table: pd.DataFrame, photos: int, seed: int) -> dict[str, int]:
    """`photos` spread over the species, unbalanced (log-normal shares, the same at every size),
    at least 3 each so that every species can be split."""
    shares = np.random.default_rng(seed).lognormal(0, 0.6, len(table))
    counts = np.maximum(3, np.floor(photos * shares / shares.sum())).astype(int)
    counts[np.argmax(counts)] += photos - counts.sum()
    if counts.min() < 3:
        raise SystemExit(f"{photos} photos are too few for {len(table)} species (3 each at least)")
    return dict(zip(table["taxon"], map(int, counts)))


def run_config(table: pd.DataFrame, photos: int, args) -> dict:
    """The configuration of one size: the demo's settings (config/config.yaml) where it has them."""
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    picture = {key: demo["sources"]["synthetic"][key] for key in ("size", "scenes", "nuisances")}
    counts = photo_counts(table, photos, args.seed)
    classes = len(table) - len(table) // 4
    first_family = table["family"].iloc[0]
    return {
        "seed": args.seed,
        "offline": True,
        "sources": {"synthetic": {"patterns": str(SPECIES_TABLE), **picture, "individuals": True, "counts": counts}},
        "licences": demo["licences"],
        "download": {"shards": args.shards},
        "clean": {**demo["clean"], "shards": args.shards},
        "datasets": {
            DATASET: {
                "species": {"within": CLASS, "top": classes},
                "other": {"label": "other", "size": 2 * photos // len(table), "within": CLASS},
                "val_fraction": 0.1,
                "test_fraction": 0.2,
                "cap_ratio": 3,
                "seed": 1,
            },
            POOL_DATASET: {
                "species": {"within": first_family, "top": 8},
                "val_fraction": 0.1,
                "cap_ratio": 100,
                "seed": 1,
            },
        },
        "backbones": {
            "pool": {
                **demo["backbones"]["pool"],
                "description": f"the demo's pool backbone, pre-trained here on the 8 species of {first_family} "
                "with the most kept photos",
                "dataset": POOL_DATASET,
            }
        },
        "training_defaults": demo["training_defaults"],
        "models": {
            MODEL: {"arch": "tl", "dataset": DATASET, "backbone": "pool", "image_size": 64, "epochs": args.epochs}
        },
        "report": {
            "title": f"fishid scale benchmark: {photos:,} photos of {len(table)} species",
            "embedding_map": demo["report"].get("embedding_map", "tsne"),
        },
    }


def prepare(folder: Path, photos: int, args) -> Path:
    """A fresh project under `folder` with this size's species table and configuration."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    table = species_table(args.species, args.seed)
    config = run_config(table, photos, args)
    config_file = folder / "run.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    project = make_project(folder / "project", config_file)
    table.to_csv(project / SPECIES_TABLE, sep="\t", index=False)
    load_patterns(project / SPECIES_TABLE)  # the source's own reader: a bad row fails here, not in a job
    validate(config, source=str(config_file), root=project)
    return project


# --- running ------------------------------------------------------------------------------


def slurm_arguments() -> list[str]:
    """What tests/pipeline/test_slurm.py adds to profiles/slurm for the CI cluster (status by
    squeue: it has no accounting database), without its threads (a benchmark keeps the rules')."""
    from test_slurm import CLUSTER_ARGS

    return CLUSTER_ARGS[: CLUSTER_ARGS.index("--set-threads")]


def start_cluster() -> None:
    from test_slurm import cluster_problem

    problem = cluster_problem()
    if problem is not None:
        raise SystemExit(f"no SLURM cluster: {problem} (or run with --executor local)")


# Every job's `python` (the rules run `python workflow/fishid_step.py ...`) finds this first on
# PATH: it runs the real interpreter and appends one line of what the command cost, from
# getrusage of its children: exact CPU time, and the peak RSS of its largest process, which
# Snakemake's benchmark (a sample every 30 s) can miss (evaluate at 500 photos: 756 MB
# sampled, 1,216 MB by getrusage). sbatch exports PATH, so SLURM's jobs use it too.
USAGE_SHIM = """#!{python}
import json, os, resource, subprocess, sys, time

start = time.monotonic()
code = subprocess.call([{python!r}, *sys.argv[1:]])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
line = json.dumps({{
    "argv": sys.argv[1:],
    "seconds": time.monotonic() - start,
    "cpu_seconds": usage.ru_utime + usage.ru_stime,
    "max_rss_mb": usage.ru_maxrss / 1024,
    "exit": code,
}})
out = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(out, (line + "\\n").encode())
os.close(out)
sys.exit(code)
"""


def usage_shim(folder: Path) -> tuple[Path, Path]:
    """(a folder holding the `python` shim, the file it appends to)."""
    shim_dir, usage = folder / "bin", folder / "usage.jsonl"
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "python").write_text(USAGE_SHIM.format(python=sys.executable, log=str(usage)))
    (shim_dir / "python").chmod(0o755)
    return shim_dir, usage


def run_pipeline(project: Path, executor: str, log: Path, extra: list[str]) -> tuple[float, int]:
    """(wall seconds, return code) of one `snakemake --profile profiles/<executor>` from nothing."""
    args = ["--profile", str(project / "profiles" / executor), *extra]
    env = environment()
    shim_dir, _ = usage_shim(log.parent)
    env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    # Each job in a process of its own, which the shim measures (a local run's resident worker
    # would run it in a child of its own, out of the shim's sight).
    env["FISHID_RESIDENT_WORKER"] = "0"
    if executor == "slurm":
        args += slurm_arguments()
        # sbatch exports the caller's environment: only SLURM's grant may set the GPU a job sees.
        env.pop("CUDA_VISIBLE_DEVICES", None)
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(snakemake_command(project, *args), env=env, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start, code.returncode


# --- reading what was recorded --------------------------------------------------------------


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]$")


def command_key(tokens: list[str]) -> str:
    """A job's command as its `python` sees it (the interpreter and the log's redirection left out)."""
    return json.dumps(tokens[: tokens.index("2>")] if "2>" in tokens else tokens)


def log_jobs(log_text: str) -> pd.DataFrame:
    """Each job of a Snakemake log: jobid, rule, threads, benchmark file, command (command_key),
    the mem_mb it asked for (the rules' own requests grow with the data), started and finished
    (datetimes, 1 s resolution)."""
    jobs, finished, now, current = {}, {}, None, None
    for line in log_text.splitlines():
        stamp = STAMP.match(line.strip())
        if stamp:
            now = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        rule = re.match(r"^(?:local)?rule (\w+):$", line)
        if rule:
            current = {
                "rule": rule.group(1),
                "threads": 1,
                "benchmark": "",
                "command": "",
                "mem_mb": None,
                "started": now,
            }
            continue
        field = re.match(r"^\s+(jobid|threads|benchmark|resources): (.*)$", line)
        if field and current is not None:
            key, value = field.groups()
            if key == "jobid":
                jobs[int(value)] = current
            elif key == "resources":
                asked = re.search(r"\bmem_mb=(\d+)", value)
                current["mem_mb"] = float(asked.group(1)) if asked else None
            else:
                current[key] = int(value) if key == "threads" else value
            continue
        if line.startswith("Shell command: ") and current is not None:
            current["command"] = command_key(shlex.split(line.removeprefix("Shell command: "))[1:])
            continue
        done = re.match(r"^Finished jobid: (\d+)", line) or re.match(r"^Finished job (\d+)\.", line)
        if done:
            finished[int(done.group(1))] = now
    rows = [{"jobid": jobid, **job, "finished": finished.get(jobid)} for jobid, job in jobs.items()]
    columns = ["jobid", "rule", "threads", "benchmark", "command", "mem_mb", "started", "finished"]
    return pd.DataFrame(rows, columns=columns)


def usage_rows(path: Path) -> pd.DataFrame:
    """The shim's lines per command: seconds and CPU summed over its attempts, the largest peak."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    frame = pd.DataFrame(
        [{**line, "command": command_key(line["argv"])} for line in lines],
        columns=["command", "seconds", "cpu_seconds", "max_rss_mb"],
    )
    return frame.groupby("command").agg({"seconds": "sum", "cpu_seconds": "sum", "max_rss_mb": "max"})


def benchmark_rss(project: Path, path: str) -> float:
    """The peak RSS Snakemake's benchmark sampled (every process of the job together), or 0."""
    if not path or not (project / path).exists():
        return 0.0
    return float(pd.to_numeric(pd.read_csv(project / path, sep="\t")["max_rss"], errors="coerce").fillna(0).max())


def job_costs(project: Path, jobs: pd.DataFrame, usage: pd.DataFrame) -> pd.DataFrame:
    """The jobs with the shim's seconds, CPU seconds and peak RSS; a job's peak is the larger of
    the shim's (its largest process) and the benchmark's sample (its processes together)."""
    costs = jobs.join(usage, on="command")
    sampled = costs["benchmark"].map(lambda path: benchmark_rss(project, path))
    costs["max_rss_mb"] = np.fmax(costs["max_rss_mb"], sampled.where(sampled > 0))
    return costs


def files_under(root: Path, folders: list[str]) -> tuple[int, int]:
    """(entries that are not folders, bytes of the regular files) under `folders`, links not followed."""
    count, size = 0, 0
    for folder in folders:
        for base, _dirs, names in os.walk(root / folder):
            for name in names:
                path = os.path.join(base, name)
                count += 1
                size += 0 if os.path.islink(path) else os.lstat(path).st_size
    return count, size


def slurm_table(project: Path, after: int) -> pd.DataFrame:
    """SLURM's jobs of this run (scontrol, through test_slurm's helpers): rule (the executor's
    comment names it), state, and seconds it ran (RunTime, [D-]HH:MM:SS)."""
    from test_slurm import slurm_jobs

    rows = []
    for job in slurm_jobs(project, after):
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job.get("Comment", ""))
        days, _, clock = job.get("RunTime", "0:0:0").rpartition("-")
        hours, minutes, seconds = map(int, clock.split(":"))
        total = int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
        rows.append({"rule": rule.group(1) if rule else "", "state": job["JobState"], "seconds": total})
    return pd.DataFrame(rows, columns=["rule", "state", "seconds"])


def last_job_id() -> int:
    from test_slurm import known_jobs

    return max((int(job["JobId"]) for job in known_jobs()), default=0)


def slurm_overhead(slurm: pd.DataFrame, costs: pd.DataFrame) -> float | None:
    """Median seconds a SLURM job ran beyond its command (the Snakemake inside the job that
    starts it), per rule: (SLURM's run time - the command's) per job."""
    done = slurm[slurm["state"] == "COMPLETED"].groupby("rule")["seconds"].agg(["sum", "size"])
    timed = costs.groupby("rule")["seconds"].sum()
    common = done.index.intersection(timed.index)
    if common.empty:
        return None
    return round(float(((done.loc[common, "sum"] - timed[common]) / done.loc[common, "size"]).median()), 1)


def stage_rows(project: Path, costs: pd.DataFrame, slurm: pd.DataFrame | None) -> list[dict]:
    """One row per stage: jobs, job-seconds (its commands' wall time, summed), span (first start to
    last end, from the log), CPU seconds, the largest job's peak RSS, files and MB it wrote, and
    under SLURM its SLURM jobs (retries included) and the time SLURM says they ran."""
    rows = []
    for stage, rules in STAGES.items():
        mine = costs[costs["rule"].isin(rules)]
        files, size = files_under(project, FOLDERS[stage])
        row = {
            "stage": stage,
            "jobs": len(mine),
            "job_seconds": round(float(mine["seconds"].sum()), 1),
            "sharded_seconds": round(float(mine.loc[mine["rule"].isin(SHARDED), "seconds"].sum()), 1),
            "span_seconds": span(mine),
            "cpu_seconds": round(float(mine["cpu_seconds"].sum()), 1),
            "max_rss_mb": round(float(mine["max_rss_mb"].max())) if mine["max_rss_mb"].notna().any() else None,
            # Jobs the shim saw no line of (none expected): left out of the sums.
            "unmeasured": sorted(set(mine.loc[mine["seconds"].isna(), "rule"])),
            "threads": int(mine["threads"].max()) if len(mine) else 1,
            "files": files,
            "mb": round(size / 1e6, 1),
        }
        if slurm is not None:
            row["slurm_jobs"] = int(slurm["rule"].isin(rules).sum())
            row["slurm_seconds"] = int(slurm.loc[slurm["rule"].isin(rules), "seconds"].sum())
        rows.append(row)
    return rows


def over_requests(project: Path, costs: pd.DataFrame) -> list[str]:
    """The jobs whose time or peak memory went past what they asked SLURM for (the profile's
    runtime in minutes; the mem_mb in the job's log, else the profile's, per rule or by
    default): on a cluster that enforces them, each such job would be killed."""
    profile = yaml.safe_load((project / "profiles" / "slurm" / "config.yaml").read_text())
    default, per_rule = profile.get("default-resources", {}), profile.get("set-resources", {})
    found = []
    for job in costs.itertuples():
        asked = {**default, **per_rule.get(job.rule, {})}
        if job.mem_mb is not None and not pd.isna(job.mem_mb):
            asked["mem_mb"] = job.mem_mb
        if "runtime" in asked and job.seconds > 60 * float(asked["runtime"]):
            found.append(f"{job.rule} ran {job.seconds / 60:.0f} min (runtime {asked['runtime']})")
        if "mem_mb" in asked and job.max_rss_mb > float(asked["mem_mb"]):
            found.append(f"{job.rule} peaked at {job.max_rss_mb:.0f} MB (mem_mb {asked['mem_mb']})")
    return sorted(set(found))


def span(jobs: pd.DataFrame) -> float | None:
    if jobs.empty or jobs["finished"].isna().any():
        return None
    return (jobs["finished"].max() - jobs["started"].min()).total_seconds()


def measure(folder: Path, slurm: pd.DataFrame | None) -> dict:
    project = folder / "project"
    logs = sorted((project / ".snakemake" / "log").glob("*.snakemake.log"))
    jobs = log_jobs("\n".join(path.read_text() for path in logs))
    costs = job_costs(project, jobs, usage_rows(folder / "usage.jsonl"))
    result = {"stages": stage_rows(project, costs, slurm), "jobs_by_rule": jobs["rule"].value_counts().to_dict()}
    result["over_profile"] = over_requests(project, costs)
    if slurm is not None:
        result["slurm"] = {
            "jobs": len(slurm),
            "states": slurm["state"].value_counts().to_dict(),
            "overhead_seconds": slurm_overhead(slurm, costs),
        }
    result["files"] = {}
    for top in ("results", "resources", ".snakemake"):
        count, size = files_under(project, [top])
        result["files"][top] = {"files": count, "mb": round(size / 1e6, 1)}
    return result


def run_size(photos: int, args) -> dict:
    """Run one size from nothing (unless --remeasure), then read what it recorded."""
    folder = args.work / f"photos{photos}"
    record, slurm_file = folder / "run.json", folder / "slurm_jobs.tsv"
    if not args.remeasure:
        project = prepare(folder, photos, args)
        print(f"{photos:,} photos: running snakemake in {project} (log: {folder / 'snakemake.log'})", flush=True)
        before = last_job_id() if args.executor == "slurm" else 0
        load = os.getloadavg()[0]
        wall, code = run_pipeline(project, args.executor, folder / "snakemake.log", shlex.split(args.snakemake_args))
        if code != 0:
            tail = (folder / "snakemake.log").read_text()[-4000:]
            raise SystemExit(f"snakemake failed at {photos:,} photos (exit {code}); its log's end:\n{tail}")
        # The machine may be shared: what else ran shows in the load.
        run = {"wall_seconds": round(wall, 1), "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
        record.write_text(json.dumps(run))
        if args.executor == "slurm":
            # scontrol forgets a job an hour after it ends (MinJobAge): kept for --remeasure.
            slurm_table(project, before).to_csv(slurm_file, sep="\t", index=False)
    elif not record.exists():
        raise SystemExit(f"--remeasure: no finished run at {folder} (run.json missing): run without it first")
    slurm = pd.read_csv(slurm_file, sep="\t") if slurm_file.exists() else None
    result = {"photos": photos, **json.loads(record.read_text()), **measure(folder, slurm)}
    kept = pd.read_csv(folder / "project/results/clean/images.tsv", sep="\t", usecols=["kept"], dtype=str)
    result["kept_photos"] = int((kept["kept"] == "True").sum())
    print({stage["stage"]: stage["job_seconds"] for stage in result["stages"]}, flush=True)
    return result


# --- growth and projection ----------------------------------------------------------------


def growth(sizes: list[dict]) -> list[dict]:
    """Per stage: job-seconds per photo at each size, its growth between successive sizes (1.0:
    linear), the exponent of time in photos between the two largest, and the peak memory per
    1,000 photos more between them."""
    rows = []
    for index, stage in enumerate(STAGES):
        per = [size["stages"][index] for size in sizes]
        photos = [size["photos"] for size in sizes]
        rates = [row["job_seconds"] / n for row, n in zip(per, photos)]
        rows.append(
            {
                "stage": stage,
                "ms_per_photo": [round(1000 * rate, 2) for rate in rates],
                "growth": [round(b / a, 2) if a else None for a, b in zip(rates, rates[1:])],
                "time_exponent": exponent([row["job_seconds"] for row in per[-2:]], photos[-2:]),
                "memory_mb_per_1000": marginal([row["max_rss_mb"] for row in per[-2:]], photos[-2:]),
            }
        )
    return rows


def marginal(values, photos) -> float | None:
    """Peak MB per 1,000 photos more, between two sizes (None with one size or no value)."""
    if len(values) < 2 or None in values or photos[0] == photos[1]:
        return None
    return round(1000 * (values[1] - values[0]) / (photos[1] - photos[0]), 1)


def exponent(values, photos) -> float | None:
    """b in value ~ photos^b from two sizes (None with one size or no value)."""
    if len(values) < 2 or not all(values) or photos[0] == photos[1]:
        return None
    return round(math.log(values[1] / values[0]) / math.log(photos[1] / photos[0]), 2)


def extrapolate(values: list, photos: list[int], target: int, fixed_part: bool) -> float | None:
    """A value at `target` photos: on the power law through the two largest sizes where the
    value grew more than SUPERLINEAR times as fast as the photos; else, for time
    (fixed_part=False), the largest size's value per photo times the photos (an upper bound:
    noise at small sizes makes a line's slope unreliable), and for memory (fixed_part=True) the
    straight line through the two largest sizes (a fixed part and a cost per photo, never
    falling; None with one size)."""
    if not values[-1]:
        return None
    if len(values) >= 2 and values[-2]:
        (n1, n2), (v1, v2) = photos[-2:], values[-2:]
        if (v2 / v1) / (n2 / n1) > SUPERLINEAR:
            return v2 * (target / n2) ** (math.log(v2 / v1) / math.log(n2 / n1))
        if fixed_part:
            return v2 + max(0.0, (v2 - v1) / (n2 - n1)) * (target - n2)
    return None if fixed_part else values[-1] * target / photos[-1]


def projection(sizes: list[dict], args) -> list[dict]:
    """Hours per stage at each target size on each node count (extrapolate on its job-seconds).
    The sharded rules' jobs spread over the nodes' cores (as many shards as cores, at their
    threads); every other job runs alone whatever the nodes. Peak GB: the largest job's RSS,
    extrapolated (two sizes needed)."""
    photos = [size["photos"] for size in sizes]
    rows = []
    for target in args.project:
        row = {"photos": target, "stages": {}}
        for index, stage in enumerate(sizes[-1]["stages"]):
            history = [size["stages"][index] for size in sizes]
            seconds = extrapolate([h["job_seconds"] for h in history], photos, target, fixed_part=False) or 0.0
            factor = seconds / stage["job_seconds"] if stage["job_seconds"] else 0.0
            single = (stage["job_seconds"] - stage["sharded_seconds"]) * factor
            hours = {}
            for nodes in args.nodes:
                slots = max(1, nodes * args.node_cores // stage["threads"])
                hours[nodes] = round((single + stage["sharded_seconds"] * factor / slots) / 3600, 2)
            memory = extrapolate([h["max_rss_mb"] for h in history], photos, target, fixed_part=True)
            row["stages"][stage["stage"]] = {
                "hours": hours,
                "peak_gb": None if memory is None else round(memory / 1024, 1),
            }
        row["limiting"] = {
            nodes: max(row["stages"], key=lambda s, n=nodes: row["stages"][s]["hours"][n]) for nodes in args.nodes
        }
        row["total_hours"] = {
            nodes: round(sum(s["hours"][nodes] for s in row["stages"].values()), 1) for nodes in args.nodes
        }
        rows.append(row)
    return rows


# --- the report -----------------------------------------------------------------------------


def cell(value) -> str:
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def markdown(report: dict) -> str:
    lines = [
        "# Scale: a synthetic class through the whole pipeline",
        "",
        f"`{report['command']}` on {report['machine']}, code {report['code']}; executor `{report['executor']}`, "
        f"{report['species']} species, {report['shards']} download and clean shards, TL at 64 px for "
        f"{report['epochs']} epoch(s). Jobs: Snakemake's (SLURM's, retries included, in brackets). "
        "Job-seconds and CPU: each job's command (wall and CPU time from getrusage, through a `python` shim on "
        "PATH), summed over the stage; peak RSS: the largest job's, the larger of its largest process's "
        "(getrusage) and Snakemake's benchmarks/ sample of all its processes; span: the stage's first job's "
        "start to its last job's end in Snakemake's log (under SLURM, queueing and status polling included).",
    ]
    for size in report["sizes"]:
        slurm = size.get("slurm")
        extra = " SLURM run time (s) |" if slurm else ""
        lines += [
            "",
            f"## {size['photos']:,} photos ({size['kept_photos']:,} kept): {size['wall_seconds']:,} s of wall time",
            "",
            f"| stage | jobs | job-seconds | span (s) | CPU (s) | peak RSS (MB) | files | MB written |{extra}",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if slurm else ""),
        ]
        for row in size["stages"]:
            note = f" ({', '.join(row['unmeasured'])}: not measured)" if row["unmeasured"] else ""
            jobs = f"{row['jobs']} ({row['slurm_jobs']})" if "slurm_jobs" in row else row["jobs"]
            lines.append(
                f"| {row['stage']}{note} | {jobs} | {row['job_seconds']} | {cell(row['span_seconds'])} | "
                f"{cell(row['cpu_seconds'])} | {cell(row['max_rss_mb'])} | {row['files']:,} | {row['mb']} |"
                + (f" {row['slurm_seconds']:,} |" if slurm else "")
            )
        totals = ", ".join(
            f"{top}/ {value['files']:,} files ({value['mb']} MB)" for top, value in size["files"].items()
        )
        load = "{:.1f} before, {:.1f} after".format(*size["load_average"])
        busy = sum(row["job_seconds"] for row in size["stages"])
        lines += [
            "",
            f"Job-seconds in all: {busy:,.0f} in {size['wall_seconds']:,} s of wall time. Files: {totals}. "
            f"Load average (1 min, every user of this machine): {load}.",
        ]
        over = "; ".join(size["over_profile"]) or "none"
        lines.append(f"Past what the jobs asked SLURM for (runtime, mem_mb): {over}.")
        if slurm:
            states = ", ".join(f"{count} {state}" for state, count in slurm["states"].items())
            lines.append(
                f"SLURM jobs: {slurm['jobs']} ({states}); each ran a median {cell(slurm['overhead_seconds'])} s "
                "beyond its command (the Snakemake inside the job that starts it)."
            )
    if len(report["sizes"]) > 1:
        photos = [f"{size['photos']:,}" for size in report["sizes"]]
        steps = [f"{a} → {b}" for a, b in zip(photos, photos[1:])]
        lines += [
            "",
            "## Growth",
            "",
            f"Milliseconds of job time per photo at {', '.join(photos)} photos; growth of that rate between "
            f"sizes (1.0: linear; above {SUPERLINEAR}: marked); between the two largest sizes, the exponent b of "
            "time in photos^b and the largest job's peak RSS per 1,000 photos more.",
            "",
            f"| stage | ms/photo | growth {' | growth '.join(steps)} | time b | MB per 1,000 photos |",
            "| --- | --- |" + " ---: |" * len(steps) + " ---: | ---: |",
        ]
        for row in report["growth"]:
            marks = [cell(g) + (" **superlinear**" if g and g > SUPERLINEAR else "") for g in row["growth"]]
            lines.append(
                f"| {row['stage']} | {' / '.join(map(str, row['ms_per_photo']))} | {' | '.join(marks)} | "
                f"{cell(row['time_exponent'])} | {cell(row['memory_mb_per_1000'])} |"
            )
    nodes = report["nodes"]
    lines += [
        "",
        "## Projection",
        "",
        "Hours per stage: the largest size's job-seconds per photo times the photos (an upper bound where part "
        "is a fixed cost), or for a stage marked superlinear the power law through the two largest sizes. On nodes of "
        f"{report['node_cores']} cores the shard jobs (fetch_shard, clean_shard) spread over every core; every other "
        "job runs alone on one node whatever their number. Training, pre-training and label issues were measured "
        "on this machine's device (see each model's meta.json); on a GPU they take a fraction of that. Peak GB: the "
        f"largest job's RSS on the straight line through the two largest sizes (a fixed part and a cost per photo), "
        f"or the power law where superlinear (nodes here: {report['node_memory_gb']} GB).",
        "",
        "| stage | "
        + " | ".join(f"{p['photos']:,} on {n} node(s) (h)" for p in report["projection"] for n in nodes)
        + " | "
        + " | ".join(f"peak GB at {p['photos']:,}" for p in report["projection"])
        + " |",
        "| --- |" + " ---: |" * (len(report["projection"]) * (len(nodes) + 1)),
    ]
    for stage in STAGES:
        hours = [cell(p["stages"][stage]["hours"][n]) for p in report["projection"] for n in nodes]
        memory = []
        for p in report["projection"]:
            peak = p["stages"][stage]["peak_gb"]
            memory.append(cell(peak) + (" **over**" if peak and peak > report["node_memory_gb"] else ""))
        lines.append(f"| {stage} | {' | '.join(hours)} | {' | '.join(memory)} |")
    lines.append(
        "| **total** | "
        + " | ".join(str(p["total_hours"][n]) for p in report["projection"] for n in nodes)
        + " |"
        + " |" * len(report["projection"])
    )
    lines.append("")
    for p in report["projection"]:
        limits = ", ".join(f"{p['limiting'][n]} on {n} node(s)" for n in nodes)
        lines.append(f"At {p['photos']:,} photos the stage that limits is {limits}.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000], help="photos per run")
    parser.add_argument("--species", type=int, default=200)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fishid-scale"), help="where the projects are made")
    parser.add_argument("--shards", type=int, default=4, help="download.shards and clean.shards")
    parser.add_argument("--epochs", type=int, default=3, help="the TL model's epochs")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--project", type=int, nargs="+", default=[1_000_000, 10_000_000], help="photos to project to")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 10, 100], help="node counts to project for")
    parser.add_argument("--node-cores", type=int, default=32)
    parser.add_argument("--node-memory-gb", type=int, default=256)
    parser.add_argument("--name", default="scale", help="results go to bench/results/NAME.json and .md")
    parser.add_argument(
        "--snakemake-args",
        default="",
        help="more Snakemake options (one --set-resources here replaces the whole of the profile's)",
    )
    parser.add_argument(
        "--remeasure", action="store_true", help="read the runs already in --work again instead of running them"
    )
    args = parser.parse_args()
    if args.species < 3 * GENERA_PER_FAMILY:
        parser.error(f"--species {args.species}: at least {3 * GENERA_PER_FAMILY} make three families")
    if args.executor == "slurm" and not args.remeasure:
        start_cluster()
    args.work = args.work.resolve()
    sizes = [run_size(photos, args) for photos in sorted(args.sizes)]
    report = {
        "command": "python bench/scale.py " + shlex.join(a for a in sys.argv[1:] if a != "--remeasure"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        # The code measured: the projects are copies of this checkout, edits included.
        "code": subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip(),
        "executor": args.executor,
        "species": args.species,
        "shards": args.shards,
        "epochs": args.epochs,
        "nodes": args.nodes,
        "node_cores": args.node_cores,
        "node_memory_gb": args.node_memory_gb,
        "sizes": sizes,
        "growth": growth(sizes),
    }
    report["projection"] = projection(sizes, args)
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
