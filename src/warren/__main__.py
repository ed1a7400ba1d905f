"""``python -m warren`` is the ``warren`` command."""

from .cli.main import main

main()
