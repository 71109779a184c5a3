"""`python -m wetmap` runs the command line."""

from wetmap.cli import main

main()
