"""C test programs run under ``llvm-jitlink -oop-executor`` (see ``cases.py``)."""
