"""The resident worker (workflow/fishid_worker.py): a command handed to it (fishid_worker.forward,
as workflow/fishid_step.py hands over each rule's step) gives what the same command gives on
its own (its output bytes, its error, its exit status), a job whose client is killed is ended
with it, and a worker that is not there leaves the job to run in its own process. The `fishid`
commands people type serve here as jobs: they print to standard output, and `review` runs
until stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import fishid_worker

REPO = Path(__file__).resolve().parents[2]
STEP_SCRIPT = REPO / "workflow" / "fishid_step.py"
# fishid_step.py's hand-over, for the whole command line.
CLIENT = """
import sys, fishid_worker
status = fishid_worker.forward("fishid.cli:main", sys.argv[1:])
if status is None:
    from fishid.cli import main
    main()
sys.exit(status)
"""
WORKER_LINE = "fishid worker: the job ran in a child of the resident worker"


@pytest.fixture(scope="module")
def worker():
    # A short folder: a Unix socket's path holds at most 107 bytes.
    folder = tempfile.mkdtemp(prefix="fishid-worker-test-")
    address = os.path.join(folder, "socket")
    log_path = os.path.join(folder, "log")
    with open(log_path, "wb") as log:
        process = fishid_worker.start(address, sys.executable, log)
    assert os.path.exists(address), "start() returns once the worker listens"
    yield address, process, log_path
    process.terminate()
    process.wait(timeout=30)
    assert not os.path.exists(address), "the worker removes its socket when it stops"
    shutil.rmtree(folder)


def environment(address=None, **more) -> dict:
    env = {k: v for k, v in os.environ.items() if k != fishid_worker.ADDRESS}
    env["PYTHONPATH"] = str(REPO / "workflow")
    return {**env, **({fishid_worker.ADDRESS: address} if address else {}), **more}


def fishid(*args, address=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLIENT, *args], capture_output=True, env=environment(address), timeout=120, **kwargs
    )


def test_a_command_in_the_worker_writes_the_bytes_and_status_it_writes_alone(worker, tmp_path):
    address, process, _ = worker
    alone = fishid("init", "Amphiprion", "--offline")
    forwarded = fishid("init", "Amphiprion", "--offline", address=address)
    assert alone.returncode == forwarded.returncode == 0
    assert forwarded.stdout == alone.stdout and b"names: [Amphiprion]" in alone.stdout
    assert WORKER_LINE not in alone.stderr.decode()
    assert WORKER_LINE in forwarded.stderr.decode()
    # Its working folder is the client's: a relative path is read from there.
    failed_alone = fishid("audit", "RI2", "--root", "nowhere", cwd=tmp_path)
    failed = fishid("audit", "RI2", "--root", "nowhere", address=address, cwd=tmp_path)
    assert failed_alone.returncode == failed.returncode == 1
    message = failed_alone.stderr.decode().splitlines()[-1].split(" ERROR ")[1]
    assert str(tmp_path / "nowhere") not in message and "nowhere/resources/records" in message
    assert message in failed.stderr.decode()
    # A usage error exits 2, as argparse does on its own.
    assert fishid("no-such-step", address=address).returncode == fishid("no-such-step").returncode == 2
    assert process.poll() is None, "the worker outlives its jobs"


def test_the_job_runs_on_the_threads_snakemake_gave_it_not_the_workers(worker):
    address, process, log_path = worker
    # The case to check is a torch the worker imported before the job existed: wait for it.
    deadline = time.monotonic() + 120
    while '"preloaded": [' not in Path(log_path).read_text() and time.monotonic() < deadline:
        assert process.poll() is None, Path(log_path).read_text()
        time.sleep(0.1)
    logged = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    assert "torch" in [line for line in logged if "preloaded" in line][0]["preloaded"]
    for threads in ("1", "2"):
        env = environment(address, OMP_NUM_THREADS=threads)
        result = subprocess.run(
            [sys.executable, "-c", CLIENT, "init", "Amphiprion", "--offline"], capture_output=True, env=env, timeout=120
        )
        assert f"torch threads {threads}," in result.stderr.decode()


def children_of(process) -> list[psutil.Process]:
    return psutil.Process(process.pid).children()


def test_killing_the_client_ends_its_job_and_the_worker_goes_on(worker, tmp_path):
    address, process, _ = worker
    # `fishid review` serves until stopped: a job that never ends on its own.
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, "review", "--root", str(REPO), "--port", "0"],
        env=environment(address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not children_of(process) and time.time() < deadline:
        time.sleep(0.1)
    (job,) = children_of(process)
    client.send_signal(signal.SIGKILL)
    client.wait()
    job.wait(timeout=10)
    assert not children_of(process)
    assert fishid("init", "Amphiprion", "--offline", address=address).returncode == 0


def test_the_rules_script_runs_the_step_itself_where_no_worker_answers(tmp_path):
    gone = str(tmp_path / "no-socket")
    run = [sys.executable, str(STEP_SCRIPT), "cache", "--split", "nowhere.tsv"]
    alone = subprocess.run(run, capture_output=True, env=environment(), timeout=120)
    result = subprocess.run(run, capture_output=True, env=environment(gone), timeout=120)
    # The step's own usage error (argparse: the cache step's other options are required), here.
    assert result.returncode == alone.returncode == 2 and b"required" in alone.stderr
    assert alone.stderr in result.stderr
    assert f"the resident worker at {gone} is not reachable".encode() in result.stderr
    assert WORKER_LINE.encode() not in result.stderr


def test_snakemake_starts_the_worker_only_for_local_runs_it_can_serve():
    assert fishid_worker.wanted({}) and fishid_worker.wanted({"FISHID_RESIDENT_WORKER": "1"})
    assert not fishid_worker.wanted({"FISHID_RESIDENT_WORKER": "0"})
    assert fishid_worker.exit_status(0) == 0
    assert fishid_worker.exit_status(3 << 8) == 3
    assert fishid_worker.exit_status(signal.SIGKILL) == 128 + signal.SIGKILL
