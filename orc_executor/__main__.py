"""``python -m orc_executor ...``: the same entry point as the ``orc-executor`` command."""

from .launch.client import main

main()
