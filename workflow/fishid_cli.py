"""`fishid` as a script (`python workflow/fishid_cli.py COMMAND`): started as one, this file puts
workflow/ on sys.path, so that it uses the fishid package of this checkout. The rules run
fishid_step.py instead, which holds only the pipeline's steps."""

from fishid.cli import main

main()
