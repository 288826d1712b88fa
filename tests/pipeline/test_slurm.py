"""The tiny DAG, cut to two models (CLUSTER_MODELS), through `--profile profiles/slurm` on a
real one-node SLURM cluster.

The cluster (Debian's munged, slurmctld and slurmd, one GPU declared as a generic resource)
is started by .ci/start-slurm. What is asserted comes from SLURM itself (`scontrol show
job`): every rule ran as a SLURM job, the training jobs asked for a GPU on the GPU partition
and no other job did, and a job that failed once was submitted again (the profile's
`retries`) and the run completed.

Without a cluster this module SKIPS, saying why, on a developer's machine; under CI
(CI=true) it FAILS instead, so that a check that did not run never passes for one that did.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from projectrun import TINY_CONFIG, environment, make_project, planned, snakemake, snakemake_command

from fishid import memory

GPU_RULES = {"train_model", "pretrain_backbone", "label_issues", "train_detector", "detect_fish"}
# What the tests add to the profile, for this cluster only: it has no accounting database
# (so squeue, not sacct, reports job states), and its jobs take seconds, not hours.
CLUSTER_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
    # The local profile's threads, so that this run's numbers can be compared with the tiny
    # run's (tests/conftest.py): the same seeds and threads give the same numbers anywhere.
    "--set-threads",
    "train_model=1",
    "pretrain_backbone=1",
    "evaluate_model=1",
]
FAULTY_JOB = "train_model[model=RI2]"
CLUSTER_MODELS = ["RI2", "TL3o"]

# Every `python` the jobs run passes through this stand-in first: it notes the SLURM job and
# the GPU SLURM granted, and makes RI2's first training attempt fail like a lost node would.
# Before a step that writes a meta.json (training, pre-training) runs, it asks PyTorch, in the
# job itself, whether CUDA is usable there, and notes the answer with the job's log (its stderr).
PYTHON_SHIM = """#!/bin/bash
echo "${{SLURM_JOB_ID:-none}} ${{CUDA_VISIBLE_DEVICES-unset}} $*" >> {calls}
case " $* " in
  *" train "*"--weights results/models/RI2/weights.pt"*)
    if [ ! -e {marker} ]; then
      touch {marker}
      echo "injected fault: first attempt at RI2's training fails" >&2
      exit 1
    fi;;
esac
case " $* " in
  *" --meta "*)
    seen="$({python} -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null)"
    echo "${{SLURM_JOB_ID:-none}} ${{seen:-unknown}} $(readlink /proc/$$/fd/2) $*" >> {devices};;
esac
exec {python} "$@"
"""


def cluster_config(path: Path) -> Path:
    """The tiny configuration with CLUSTER_MODELS only: every rule still runs (training with
    and without a pre-trained backbone among them), in half the tiny DAG's jobs."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["models"] = {name: config["models"][name] for name in CLUSTER_MODELS}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cluster_problem() -> str | None:
    """Start the test cluster if it is not up; say why it cannot be, or None."""
    if shutil.which("sbatch") is None or not Path("/usr/sbin/slurmctld").exists():
        return "SLURM is not installed (Debian: apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "starting the test SLURM cluster needs root"
    result = subprocess.run(["bash", str(REPO / ".ci/start-slurm")], capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        return f".ci/start-slurm failed: {result.stderr.strip()[-2000:]}"
    return None


def require_cluster(problem: str | None):
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the SLURM test must run in CI, but: {problem}")
    pytest.skip(problem)


def known_jobs() -> list[dict]:
    """Every job SLURM still knows of (MinJobAge is an hour), with its fields."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, check=True)
    # With none, scontrol says "No jobs in the system".
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines() if "JobId=" in line]


def slurm_jobs(workdir: Path, after: int) -> list[dict]:
    """The jobs that ran in `workdir` with ids above `after`: a run's own, not those of an
    earlier session's run in a folder of the same name (pytest reuses its numbering)."""
    return [job for job in known_jobs() if job.get("WorkDir") == str(workdir) and int(job["JobId"]) > after]


def plugin_comment(job: str) -> str:
    """The SLURM job comment the executor plugin gives a job, from its `rule[w=a, v=b]` name."""
    rule, _, wildcards = job.partition("[")
    values = [pair.split("=", 1)[1] for pair in wildcards.rstrip("]").split(", ")] if wildcards else []
    return f"rule_{rule}_wildcards_{'_'.join(values)}" if values else f"rule_{rule}"


def gpu_request(job: dict) -> dict:
    """The GPU fields of a job: `--gpus=1` shows as TresPerJob=gres:gpu:1, `--gres=gpu:2` as
    TresPerNode=gres:gpu:2 (checked with sbatch on the CI cluster's SLURM)."""
    fields = ("TresPerJob", "TresPerNode", "TresPerTask", "TresPerSocket", "Gres")
    return {field: job[field] for field in fields if "gpu" in job.get(field, "")}


class ClusterRun:
    """The tiny DAG through profiles/slurm, started in the background by the tiny project's
    fixture before its own run (tests/conftest.py): most of its wall time is the plugin waiting
    between status checks, which the tiny run and the tests after it fill."""

    def __init__(self, root: Path):
        self.problem = cluster_problem()
        if self.problem is not None:
            return
        self.project = make_project(root / "project", cluster_config(root / "cluster.yaml"))
        shim_dir = root / "bin"
        shim_dir.mkdir()
        self.calls, self.marker = root / "python-calls.txt", root / "fault-injected"
        self.devices = root / "devices-seen.txt"
        (shim_dir / "python").write_text(
            PYTHON_SHIM.format(calls=self.calls, marker=self.marker, devices=self.devices, python=sys.executable)
        )
        (shim_dir / "python").chmod(0o755)
        env = environment()
        # sbatch exports the caller's environment: only SLURM's grant may set the GPU a job sees.
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
        _, self.expected = planned(self.project)
        self.last_job_before = max((int(job["JobId"]) for job in known_jobs()), default=0)
        self.log = root / "snakemake.log"
        command = snakemake_command(self.project, "--profile", str(self.project / "profiles/slurm"), *CLUSTER_ARGS)
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout=1500) -> tuple[int, str]:
        returncode = self.process.wait(timeout=timeout)
        return returncode, self.log.read_text()

    def stop(self):
        if self.problem is None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


BACKGROUND: list[ClusterRun] = []


def start_in_background(root: Path) -> None:
    BACKGROUND.append(ClusterRun(root))


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, tiny_project):
    run = BACKGROUND[0] if BACKGROUND else ClusterRun(tmp_path_factory.mktemp("slurm"))
    require_cluster(run.problem)
    returncode, output = run.wait()
    print(output[-3000:])
    assert returncode == 0, output[-8000:]
    return {
        "project": run.project,
        "expected": run.expected,
        "jobs": slurm_jobs(run.project, run.last_job_before),
        "calls": [line.split(" ", 2) for line in run.calls.read_text().splitlines()],
        "devices": [line.split(" ", 3) for line in run.devices.read_text().splitlines()],
        "marker": run.marker,
        "local": tiny_project,
    }


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    expected = {plugin_comment(job) for job in slurm_run["expected"] - {"all"}}
    completed = [job["Comment"] for job in slurm_run["jobs"] if job["JobState"] == "COMPLETED"]
    print(f"{len(completed)} SLURM jobs completed:", *sorted(completed), sep="\n  ")
    assert sorted(completed) == sorted(expected)  # each exactly once
    # `all` only collects the outputs: it runs in Snakemake itself, not on the cluster.
    assert "all" in slurm_run["expected"] and "rule_all" not in completed


def test_training_jobs_asked_for_a_gpu_and_no_other_job_did(slurm_run):
    for job in slurm_run["jobs"]:
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job["Comment"]).group(1)
        if rule in GPU_RULES:
            assert gpu_request(job) == {"TresPerJob": "gres:gpu:1"} and job["Partition"] == "gpu", job
        else:
            assert gpu_request(job) == {} and job["Partition"] == "cpu", job
    # SLURM handed the granted GPU to the training processes, the label-error queue's and the
    # detector's (CUDA_VISIBLE_DEVICES), and to no other.
    for job_id, visible, command in slurm_run["calls"]:
        assert job_id != "none", command
        on_gpu = re.search(r"fishid_step.py (train|pretrain|label-issues|train-detector|detect) ", command) is not None
        assert (visible == "0") if on_gpu else (visible == "unset"), command


def test_training_ran_where_its_job_allowed_and_said_so(slurm_run):
    """The cluster's GPU is declared in gres.conf; where CUDA cannot use it, training falls back
    to the CPU and says so in its log. What each job could use is asked inside the job (the
    python shim), never of the machine running pytest: the job's meta.json and log agree with it."""
    project = slurm_run["project"]
    granted = {job_id: visible for job_id, visible, _ in slurm_run["calls"]}
    written = []
    for job_id, seen, log, command in slurm_run["devices"]:
        meta = project / re.search(r" --meta (\S+)", f" {command}").group(1)
        assert seen in ("cuda", "cpu") and granted[job_id] == "0", (job_id, seen, command)
        assert json.loads(meta.read_text())["device"] == seen, meta
        assert ("CUDA is not usable here: training on the CPU" in Path(log).read_text()) == (seen == "cpu"), log
        # A cluster's job runs in its own process on its node, never in a local resident worker.
        assert "fishid worker:" not in Path(log).read_text(), log
        written.append(meta)
    # Every model and backbone was trained in one job that was asked (RI2 by its retry only).
    assert sorted(written) == sorted(
        [*project.glob("results/models/*/meta.json"), *project.glob("results/backbones/*/meta.json")]
    )


def test_a_job_that_failed_once_was_retried_and_the_run_completed(slurm_run):
    assert slurm_run["marker"].exists()
    attempts = [job for job in slurm_run["jobs"] if job["Comment"] == plugin_comment(FAULTY_JOB)]
    assert [job["JobState"] for job in sorted(attempts, key=lambda j: int(j["JobId"]))] == ["FAILED", "COMPLETED"]
    weights = torch.load(slurm_run["project"] / "results/models/RI2/weights.pt", weights_only=True)
    assert weights["classes"] == ["Amphiprion clarkii", "Amphiprion perideraion"]


def memory_mb(job: dict) -> int:
    """A job's MinMemoryNode (`--mem`) in MB: scontrol writes 2000M, or 8G for 8192M."""
    number, unit = re.fullmatch(r"([0-9.]+)([MGT])", job["MinMemoryNode"]).groups()
    return round(float(number) * {"M": 1, "G": 1024, "T": 1024**2}[unit])


def test_each_job_asked_slurm_for_its_memory_and_the_retry_for_twice_that(slurm_run):
    """The tiny data leaves every step that holds a dataset at its floor (fishid.memory); the
    profile's set-resources and default-resources give the rest. The retried job's second
    try asked for twice the first's (Snakemake's attempt)."""
    profile = yaml.safe_load((slurm_run["project"] / "profiles/slurm/config.yaml").read_text())
    asked, expected = {}, {}
    for job in sorted(slurm_run["jobs"], key=lambda job: int(job["JobId"])):
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job["Comment"]).group(1)
        given = profile["set-resources"].get(rule, {}).get("mem_mb")
        floor = memory.NEEDS[rule].floor_mb if rule in memory.NEEDS else profile["default-resources"]["mem_mb"]
        asked.setdefault(job["Comment"], []).append(memory_mb(job))
        expected.setdefault(job["Comment"], []).append(given or floor)
    faulty = plugin_comment(FAULTY_JOB)
    first = memory.NEEDS["train_model"].floor_mb
    assert asked.pop(faulty) == [first, 2 * first]
    expected.pop(faulty)
    assert asked == expected
    assert {mb for mbs in asked.values() for mb in mbs} >= {2000, 8000}


def test_all_outputs_are_there_and_up_to_date(slurm_run):
    project = slurm_run["project"]
    for path in ["results/report/index.html", "results/provenance/attribution.csv"]:
        assert (project / path).stat().st_size > 0, path
    # Snakemake, asked again, finds nothing missing, nothing older than its inputs.
    counts, _ = planned(project)
    assert counts == {}
    result = snakemake(project, "--cores", "1", "--summary")
    assert result.returncode == 0 and "missing" not in result.stdout, result.stdout[-3000:]


def test_the_cluster_run_gives_the_local_runs_numbers(slurm_run):
    """A run from nothing in another folder, through another executor, with the same seeds
    and threads per job: the data's tables and every model's numbers are the same as the local
    run's."""
    if any(seen == "cuda" for _, seen, _, _ in slurm_run["devices"]):
        pytest.skip("on CUDA, float16 autocast and cuDNN's kernel choice change the last digits: CPU-only check")
    cluster, local = slurm_run["project"], slurm_run["local"]
    for table in ["results/clean/images.tsv", *(f"results/splits/{name}.tsv" for name in ("pair", "trio_other"))]:
        assert (cluster / table).read_bytes() == (local / table).read_bytes(), table
    for folder in (local / "results/models" / name for name in CLUSTER_MODELS):
        for file in ("metrics.json", "predictions.tsv"):
            assert (cluster / "results/models" / folder.name / file).read_text() == (folder / file).read_text(), (
                folder.name,
                file,
            )
        # History without its wall-time columns.
        first, second = (
            pd.read_csv(root / "results/models" / folder.name / "history.csv").filter(regex="^(?!.*seconds$)")
            for root in (local, cluster)
        )
        assert first.equals(second), folder.name
