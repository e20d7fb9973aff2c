from pamfr.cli import main

main()
