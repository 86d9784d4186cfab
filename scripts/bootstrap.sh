#!/usr/bin/env bash
# Install everything orc-executor needs on a fresh Debian/Ubuntu machine (idempotent):
# compilers, LLVM 22 (the controllers and the reference executor), clang-repl 22 and its
# ORC runtime (clang-tools-22, libclang-rt-22-dev), gdb, perf, the venv with the
# package (its cffi extension is compiled on install) and test tools, and the ORC runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=()
for p in gcc g++ gdb binutils python3-venv llvm-14 llvm-19 llvm-22 clang-tools-22 \
         libclang-rt-22-dev linux-perf openssh-client openssh-server iproute2 ${ORC_EXTRA_APT:-}; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "bootstrap: apt-get install ${need_pkgs[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# editable_mode=compat: a plain path entry in a .pth file instead of an import-hook finder,
# which costs every cold `orc-executor` start ~5 ms.
.venv/bin/python -m pip install -e '.[test]' --config-settings editable_mode=compat \
    >.venv/pip-install.log 2>&1 \
    || { cat .venv/pip-install.log >&2; echo "bootstrap: pip install failed" >&2; exit 1; }
# Bytecode written now: a cold start must not compile the package (with
# PYTHONDONTWRITEBYTECODE set, it would on every start: ~20 ms).
.venv/bin/python -m compileall -q orc_executor >/dev/null
.venv/bin/python -c "import orc_executor.native._native" \
    || { echo "bootstrap: the native module did not build" >&2; exit 1; }
# pip installed bin/orc-executor: the native launcher (setup.py; the Python entry point is
# bin/orc-executor-py).
[ "$(head -c4 .venv/bin/orc-executor)" = "$(printf '\177ELF')" ] \
    || { echo "bootstrap: .venv/bin/orc-executor is not the native launcher" >&2; exit 1; }

if [ -x scripts/fetch-orc-runtime.sh ]; then
    scripts/fetch-orc-runtime.sh >/dev/null
fi
# The aarch64 build the cross tests use (tests/cross): qemu-user, the cross compilers and an
# arm64 sysroot (scripts/cross.sh installs and unpacks what it needs; a re-run is quick).
scripts/cross.sh aarch64 .cross/aarch64 >/dev/null \
    || { echo "bootstrap: scripts/cross.sh aarch64 failed" >&2; exit 1; }
# The corpus of real third-party programs (tests/e2e/test_corpus.py, scripts/bench.py
# --corpus): Debian's sources of Lua, SQLite, zstd and bc, built into .corpus/ (a re-run is quick).
scripts/corpus.sh .corpus || { echo "bootstrap: scripts/corpus.sh failed" >&2; exit 1; }
echo "bootstrap: ready ($(.venv/bin/orc-executor --version 2>/dev/null || echo orc-executor))" >&2
