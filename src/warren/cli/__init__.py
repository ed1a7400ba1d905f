"""The command line: Typer + rich. Talks to the server only through ``warren.client`` (the
``server`` and ``demo`` commands start one). Errors are one line on stderr and exit status 1."""
