"""Peak memory of the steps that read a dataset's images, at the sizes of a scale run, for one or
more checkouts of this code: each step's command is taken from the run's Snakemake log and run
again in the project's folder by the checkout's workflow/fishid_step.py (no resident worker),
its outputs written to a scratch folder. Peak RSS is the child's own (wait4); peak anonymous
memory (RssAnon, sampled every 50 ms) leaves out the mapped cache's pages.

    python bench/step_memory.py --runs /tmp/fishid-scale/photos20000 /tmp/fishid-scale/photos50000 \\
        --code before=/path/to/old/checkout after=. --name step_memory

A scale run (bench/scale.py) must have made the projects; their results are not changed.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from output import write_results

# The dataset of bench/scale.py's model.
DATASET = "whole_class"


def step_command(log: str, step: str) -> list[str]:
    """The first job of `step` in the log that reads DATASET, as arguments after fishid_step.py."""
    for line in re.findall(r"^Shell command: python workflow/fishid_step.py (.*)$", log, re.MULTILINE):
        argv = shlex.split(line.split(" 2> ")[0])
        if argv[0] == step and any(DATASET in a for a in argv):
            return argv
    raise SystemExit(f"no {step} job for {DATASET} in the log")


COLUMNS = {"peak_rss_mb": "peak RSS MB", "peak_anonymous_mb": "peak anonymous MB", "seconds": "s"}
# Each step's options that name what it writes. Not read from the steps' declarations:
# evaluate's `--figures` is a folder passed as a param (its rule's outputs are the files in it).
OUTPUTS = {
    "cache": {"--out"},
    "train": {"--weights", "--history", "--meta"},
    "evaluate": {"--predictions", "--metrics", "--figure-data", "--figures"},
}


def redirected(argv: list[str], scratch: Path) -> list[str]:
    """`argv` with each output of its step moved under `scratch`."""
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg in OUTPUTS[argv[0]]:
            out[i + 1] = str(scratch / argv[i + 1].replace("/", "_"))
    return out


def measure(code: Path, project: Path, argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FISHID_WORKER"}
    started = time.perf_counter()
    # Its log goes to a file, not a pipe: a pipe nobody reads until the step ends could fill.
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            ["python", str(code / "workflow/fishid_step.py"), *argv],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        # Anonymous memory is what the step holds; RSS also counts the pages of the mapped image
        # cache that it has read, which the kernel drops when it needs the room.
        anonymous = 0
        while (waited := os.wait4(child.pid, os.WNOHANG))[0] == 0:
            anonymous = max(anonymous, resident_anonymous_kb(child.pid))
            time.sleep(0.05)
        _, status, usage = waited
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{argv[0]} failed in {project}:\n{log.read().decode()[-2000:]}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "peak_anonymous_mb": round(anonymous / 1024),
    }


def resident_anonymous_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="bench/scale.py's run folders")
    parser.add_argument("--code", nargs="+", required=True, help="LABEL=CHECKOUT, in the order to compare")
    parser.add_argument("--steps", nargs="+", choices=list(OUTPUTS), default=list(OUTPUTS))
    parser.add_argument("--name", default="step_memory")
    args = parser.parse_args()
    codes = dict(item.split("=", 1) for item in args.code)
    results = []
    steps = args.steps
    for run in args.runs:
        project, log = run / "project", (run / "snakemake.log").read_text()
        photos = len((project / f"results/splits/{DATASET}.tsv").read_text().splitlines()) - 1
        for step in steps:
            for label, code in codes.items():
                with tempfile.TemporaryDirectory() as scratch:
                    argv = redirected(step_command(log, step), Path(scratch))
                    row = {"run": run.name, "photos": photos, "step": step, "code": label}
                    results.append({**row, **measure(Path(code).resolve(), project, argv)})
                    print(results[-1], flush=True)
    lines = [
        f"# Peak memory of the steps that read a dataset's images ({DATASET}, 64 px)",
        "",
        "`python bench/step_memory.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| photos | step | " + " | ".join(f"{label}: {COLUMNS[key]}" for key in COLUMNS for label in codes) + " |",
        "| ---: | --- | " + " | ".join("---:" for _ in range(3 * len(codes))) + " |",
    ]
    for run in args.runs:
        for step in steps:
            rows = {r["code"]: r for r in results if r["run"] == run.name and r["step"] == step}
            photos = next(iter(rows.values()))["photos"]
            lines.append(
                f"| {photos:,} | {step} | " + " | ".join(f"{rows[c][key]:,}" for key in COLUMNS for c in codes) + " |"
            )
    write_results(
        args.name, {"runs": [str(r) for r in args.runs], "code": codes, "results": results}, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
