"""`python -m engine` runs the `tansaku` command line."""

from engine.cli import main

main()
