"""What the rules run: started as a script, this file puts workflow/ on sys.path, so every
job uses the fishid package of this checkout, in whatever environment (venv, conda) it runs."""

from fishid.cli import main

main()
