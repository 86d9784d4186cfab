"""``python -m orc_executor ...``: the same entry point, and the same commands (``serve``,
``install-launcher``, the launch specs and options), as the ``orc-executor`` command."""

from .launch import main

main()
