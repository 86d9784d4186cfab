"""Build hook: the cffi API-mode extension ``orc_executor.memmap._native`` is compiled on install."""

from setuptools import setup

setup(cffi_modules=["orc_executor/memmap/_build.py:ffibuilder"])
