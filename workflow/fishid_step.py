"""What the rules run: started as a script, this file puts workflow/ on sys.path, so every
job uses the fishid package of this checkout, in whatever environment (venv, conda) it runs.
It runs the pipeline's steps only (fishid.steps), so that editing a command people type
(fishid.cli) reruns none. Where a local run has a resident worker (fishid_worker.py), the step
runs in a child of it and this script only hands it over, importing nothing heavy."""

import sys

import fishid_worker

ENTRY = "fishid.steps:main"

if (status := fishid_worker.forward(ENTRY, sys.argv[1:])) is not None:
    sys.exit(status)

from fishid.steps import main  # noqa: E402

main()
