"""A run killed mid-training resumes with --rerun-incomplete and ends with valid outputs.

(A job that fails once and is retried: tests/pipeline/test_slurm.py, through the SLURM profile.)
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import torch
import yaml
from projectrun import environment, run_config_path, snakemake, snakemake_command

EPOCHS = 60  # long enough for the kill to land mid-training


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_killed_mid_training_resumes_with_rerun_incomplete(tiny_project, tmp_path):
    # A copy of the finished run, so the session's run stays as it is. Code inputs now live
    # at other absolute paths, so only modification times decide what is out of date here.
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)
    config_path = run_config_path(project)
    config = yaml.safe_load(config_path.read_text())
    config["models"]["RI2"]["epochs"] = EPOCHS
    config_path.write_text(yaml.safe_dump(config))
    target = "results/models/RI2/metrics.json"
    same_inputs = ["--rerun-triggers", "mtime"]
    log = project / "logs/train_model/RI2.log"
    log.unlink()

    run = subprocess.Popen(
        snakemake_command(project, target, "--cores", "2", "--forcerun", "train_model", *same_inputs),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: log.exists() and "epoch 3 " in log.read_text(), 300, "RI2's training to reach epoch 3")
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its job, with no chance to clean up
        run.wait(timeout=60)
    assert f"epoch {EPOCHS} " not in log.read_text()
    weights = project / "results/models/RI2/weights.pt"
    # What a kill during torch.save would leave: the first half of a weights file.
    weights.write_bytes((tiny_project / "results/models/RI2/weights.pt").read_bytes()[:2000])

    # Snakemake knows the job never finished: it will not take its outputs as done...
    refused = snakemake(project, target, "--cores", "2", *same_inputs)
    assert refused.returncode != 0
    assert "IncompleteFilesException" in refused.stderr and "results/models/RI2/weights.pt" in refused.stderr
    assert weights.stat().st_size == 2000
    # ...and a killed Snakemake leaves its lock behind, which the user lifts (the README says how).
    locked = snakemake(project, target, "--profile", str(project / "profiles/local"), *same_inputs)
    assert locked.returncode != 0 and "cannot be locked" in locked.stderr, locked.stderr[-3000:]
    assert snakemake(project, "--unlock").returncode == 0

    resumed = snakemake(project, target, "--profile", str(project / "profiles/local"), *same_inputs)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert f"epoch {EPOCHS} " in log.read_text()
    state = torch.load(weights, weights_only=True)
    assert state["classes"] == ["Amphiprion clarkii", "Amphiprion perideraion"]
    history = pd.read_csv(project / "results/models/RI2/history.csv")
    assert len(history) == EPOCHS
    assert json.loads((project / "results/models/RI2/meta.json").read_text())["settings"]["epochs"] == EPOCHS
    metrics = json.loads((project / target).read_text())
    predictions = pd.read_csv(project / "results/models/RI2/predictions.tsv", sep="\t")
    assert (
        metrics["n"] == len(predictions)
        and metrics["correct"] == (predictions["label"] == predictions["predicted"]).sum()
    )
