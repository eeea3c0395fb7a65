"""``python -m sync.cli_main``: the CLI without the installed console script."""

from sync.cli import main

main()
