#!/usr/bin/env bash
# Prepare orc-executor for another architecture in DIR, run under qemu-user (idempotent):
#
#   scripts/cross.sh aarch64 DIR
#
# DIR/sysroot        Debian's arm64 CPython 3.11 and the libraries it and JIT'd programs need
#                    (apt-get download + dpkg -x, after dpkg --add-architecture arm64: nothing
#                    is installed for the host), plus the reference executor
#                    (llvm-22's arm64 llvm-jitlink-executor) and the aarch64 ORC runtime
#                    (libclang-rt-22-dev: usr/lib/llvm-22/lib/clang/22/lib/linux/liborc_rt-aarch64.a)
# DIR/sysroot/usr/lib/python3/dist-packages
#                    orc_executor (this checkout, with its cffi extension and native launcher
#                    cross-compiled by aarch64-linux-gnu-gcc against libpython3.11-dev:arm64)
#                    and its pure-Python dependencies (pip wheels; cffi's _cffi_backend as its
#                    manylinux aarch64 wheel)
# DIR/bin/orc-executor           runs orc-executor under qemu-aarch64 with its arguments (the
#                                aarch64 launcher DIR/lib/orc-executor: warm handover to a
#                                `DIR/bin/orc-executor serve`, else the cold start)
# DIR/bin/llvm-jitlink-executor  runs the arm64 reference executor the same way
# DIR/lib/python3                runs the aarch64 interpreter under qemu (host shell script)
# DIR/liborc_rt-aarch64.a        the aarch64 ORC runtime (a link into the sysroot)
#
# Prints DIR's absolute path. Installs what it needs on the host (qemu-user, the cross
# compilers); apt and dpkg run under `flock /tmp/apt.lock`. Re-running refreshes the copy of
# orc_executor and rebuilds only what changed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 2 ]] || { echo "usage: $0 aarch64 DIR" >&2; exit 2; }
case $1 in
    aarch64|arm64)
        arch=aarch64 debarch=arm64 gnu=aarch64-linux-gnu qemu=qemu-aarch64
        wheel_platform=manylinux2014_aarch64 ;;
    *) echo "cross.sh: unsupported architecture $1 (supported: aarch64)" >&2; exit 2 ;;
esac
mkdir -p "$2"
dir=$(cd "$2" && pwd)
# One run at a time per DIR (concurrent test sessions and benchmarks refresh the same build).
exec 9>"$dir/.cross.lock"
flock 9
sysroot=$dir/sysroot
site=$sysroot/usr/lib/python3/dist-packages
pyver=3.11
llvm=22

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_locked() { $SUDO flock /tmp/apt.lock "$@"; }
log() { echo "cross.sh: $*" >&2; }

# ---- host tools ------------------------------------------------------------------------------
need=()
for p in qemu-user "gcc-$gnu" "g++-$gnu" "libc6-dev-$debarch-cross"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
    log "dpkg --add-architecture $debarch"
    apt_locked dpkg --add-architecture "$debarch"
    apt_locked apt-get update -qq
elif ! apt-cache show "python$pyver-minimal:$debarch" >/dev/null 2>&1; then
    apt_locked apt-get update -qq
fi
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt_locked apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi

# ---- the arm64 sysroot -------------------------------------------------------------------------
# CPython and what it loads, the C/C++ runtime of JIT'd programs, libpython headers for the
# extension, the reference executor's libraries, and the ORC runtime.
pkgs=(
    libc6 libgcc-s1 libstdc++6 gcc-12-base libcrypt1 zlib1g libbz2-1.0 liblzma5 libzstd1
    libexpat1 libffi8 libssl3 libsqlite3-0 libuuid1 libdb5.3 libncursesw6 libtinfo6
    libreadline8 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
    libcom-err2 libkeyutils1
    "libpython$pyver-minimal" "libpython$pyver-stdlib" "python$pyver-minimal"
    "libpython$pyver-dev" "libpython$pyver"
    libz3-4 "llvm-$llvm" "libclang-rt-$llvm-dev"
)
debs=$dir/debs
mkdir -p "$debs" "$sysroot"
for p in "${pkgs[@]}"; do
    [ -e "$debs/$p.unpacked" ] && continue
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    (cd "$tmp" && flock /tmp/apt.lock apt-get download -q -o APT::Sandbox::User="$(id -un)" \
        "$p:$debarch" >/dev/null)
    deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
    [ -n "$deb" ] || { log "apt-get download $p:$debarch gave no .deb"; exit 1; }
    if [ "$p" = "llvm-$llvm" ]; then
        # Only the reference executor (the package is 85 MB unpacked; the executor links LLVM
        # statically and needs libz3, zlib, zstd and the C/C++ runtimes).
        dpkg-deb -x "$deb" "$tmp/root"
        install -D -m 755 "$tmp/root/usr/lib/llvm-$llvm/bin/llvm-jitlink-executor" \
            "$sysroot/usr/lib/llvm-$llvm/bin/llvm-jitlink-executor"
    else
        dpkg-deb -x "$deb" "$sysroot"
    fi
    rm -rf "$tmp"
    touch "$debs/$p.unpacked"
done
orc_rt=$sysroot/usr/lib/llvm-$llvm/lib/clang/$llvm/lib/linux/liborc_rt-$arch.a
[ -s "$orc_rt" ] || { log "no $orc_rt in libclang-rt-$llvm-dev:$debarch"; exit 1; }

run_py() { "$qemu" -L "$sysroot" "$sysroot/usr/bin/python$pyver" -I "$@"; }

# Debian byte-compiles the standard library at install time (postinst); dpkg -x does not.
if [ ! -e "$debs/stdlib.compiled" ]; then
    log "byte-compiling the $arch standard library (under $qemu)"
    run_py -m compileall -q -j 0 -x '/(test|tests|idlelib|tkinter|lib2to3|turtledemo)/' \
        "$sysroot/usr/lib/python$pyver" >/dev/null || true
    touch "$debs/stdlib.compiled"
fi

# ---- pure-Python dependencies (and cffi's backend) -------------------------------------------
host_py=$repo/.venv/bin/python
[ -x "$host_py" ] || host_py=python3
host_version() { "$host_py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
reqs=()
for d in trio cffi click; do
    v=$(host_version "$d" 2>/dev/null || true)
    reqs+=("$d${v:+==$v}")
done
stamp="${reqs[*]}"
if [ "$(cat "$dir/wheels.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "pip download ${reqs[*]} for $wheel_platform"
    rm -rf "$dir/wheels"
    "$host_py" -m pip download -q --only-binary=:all: --platform "$wheel_platform" \
        --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 \
        --abi none -d "$dir/wheels" "${reqs[@]}" >&2
    mkdir -p "$site"
    for w in "$dir"/wheels/*.whl; do
        "$host_py" -m zipfile -e "$w" "$site"
    done
    printf '%s' "$stamp" >"$dir/wheels.stamp"
fi

# ---- orc_executor, its cffi extension and the native launcher ----------------------------------
pkg=$site/orc_executor
rm -rf "$pkg.new"
"$host_py" -c 'import shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2], ignore=shutil.ignore_patterns(
    "__pycache__", "*.so", "*.pyc", "orc-executor-launcher"))' "$repo/orc_executor" "$pkg.new"

ext=_native.cpython-${pyver/./}-$gnu.so
build=$dir/build
mkdir -p "$build"
"$host_py" - "$repo/orc_executor/native/_build.py" "$build/_native.c.new" >/dev/null <<'EOF'
import runpy, sys
runpy.run_path(sys.argv[1])["ffibuilder"].emit_c_code(sys.argv[2])
EOF
if ! cmp -s "$build/_native.c.new" "$build/_native.c" || [ ! -s "$build/$ext" ]; then
    log "cross-compiling the cffi extension ($gnu-gcc)"
    "$gnu-gcc" -shared -fPIC -O2 -fno-strict-aliasing -pthread \
        -I "$sysroot/usr/include/python$pyver" -idirafter "$sysroot/usr/include" \
        -x c "$build/_native.c.new" -o "$build/$ext.tmp" -ldl -lpthread -lrt \
        2>"$build/cc.log" || { cat "$build/cc.log" >&2; exit 1; }
    mv "$build/$ext.tmp" "$build/$ext"
    mv "$build/_native.c.new" "$build/_native.c"
fi
rm -f "$build/_native.c.new"
cp "$build/$ext" "$pkg.new/native/$ext"
if [ ! -s "$build/orc-executor-launcher" ] \
        || [ "$repo/orc_executor/launch/launcher.c" -nt "$build/orc-executor-launcher" ]; then
    log "cross-compiling the native launcher"
    "$gnu-gcc" -O2 -Wall -Wextra -static -o "$build/orc-executor-launcher" \
        "$repo/orc_executor/launch/launcher.c"
fi
cp "$build/orc-executor-launcher" "$pkg.new/launch/orc-executor-launcher"
rm -rf "$pkg.old"
[ -d "$pkg" ] && mv "$pkg" "$pkg.old"
mv "$pkg.new" "$pkg"
rm -rf "$pkg.old"
# Package metadata (orc-executor --version reads it).
version=$(host_version orc-executor 2>/dev/null || echo 0)
rm -rf "$site"/orc_executor-*.dist-info
mkdir -p "$site/orc_executor-$version.dist-info"
printf 'Metadata-Version: 2.1\nName: orc-executor\nVersion: %s\n' "$version" \
    >"$site/orc_executor-$version.dist-info/METADATA"
run_py -m compileall -q "$pkg" "$site" >/dev/null

# ---- the wrappers -------------------------------------------------------------------------------
# qemu-user without binfmt_misc cannot exec an aarch64 binary from an emulated process, but the
# host kernel runs shell scripts: DIR/lib/python3 starts the aarch64 interpreter under qemu, and
# is where the native launcher (DIR/lib/orc-executor) finds "python3 next to itself" for its
# cold path, and what sys.executable names (a .pth file) for the warm server's fork server.
# -L instead of QEMU_LD_PREFIX: the JIT'd program's environment is the caller's, as with a
# native executor. -I: no working directory, user site or PYTHON* variables.
qemu_path=$(command -v "$qemu")
mkdir -p "$dir/bin" "$dir/lib"
write_wrapper() {
    local path=$1; shift
    local tmp
    tmp="$(dirname "$path")/.$(basename "$path").tmp"
    {
        echo '#!/bin/sh'
        echo "# $(basename "$path") for $arch under $qemu (generated by orc-executor's scripts/cross.sh)"
        printf 'exec %s -L %s' "$qemu_path" "$sysroot"
        printf ' %s' "$@"
        echo ' "$@"'
    } >"$tmp"
    chmod 755 "$tmp"
    mv "$tmp" "$path"
}
install -m 755 "$build/orc-executor-launcher" "$dir/lib/orc-executor"
write_wrapper "$dir/lib/python3" "$sysroot/usr/bin/python$pyver" -I
write_wrapper "$dir/bin/orc-executor" "$dir/lib/orc-executor"
write_wrapper "$dir/bin/llvm-jitlink-executor" "$sysroot/usr/lib/llvm-$llvm/bin/llvm-jitlink-executor"
# (a .pth file: Debian's own sitecustomize in the standard library would shadow one here)
rm -f "$site/sitecustomize.py"
printf "import sys; sys.executable = '%s'  # scripts/cross.sh: run Python through qemu\n" \
    "$dir/lib/python3" >"$site/orc_executor_qemu.pth"
ln -sfn "$orc_rt" "$dir/liborc_rt-$arch.a"

"$dir/bin/orc-executor" --version >/dev/null \
    || { log "the $arch orc-executor does not start"; exit 1; }
printf '%s\n' "$dir"
