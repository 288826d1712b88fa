"""What the rules run: started as a script, this file puts workflow/ on sys.path, so every
job uses the fishid package of this checkout, in whatever environment (venv, conda) it runs.
It runs the pipeline's steps only (fishid.steps), so that editing a command people type
(fishid.cli) reruns none."""

from fishid.steps import main

main()
