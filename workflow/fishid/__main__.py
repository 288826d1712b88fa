from fishid.cli import main

main()
