#!/usr/bin/env bash
# Set up everything (scripts/bootstrap.sh) and run the whole test suite: lint, types, then
# unit, protocol and end-to-end tests against LLVM's real tools.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check orc_executor tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
