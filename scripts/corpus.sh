#!/usr/bin/env bash
# Build the corpus of real third-party programs the corpus e2e test and `scripts/bench.py
# --corpus` run (idempotent; called by scripts/bootstrap.sh):
#
#   scripts/corpus.sh DIR
#
# Sources are Debian's (the distribution's own source packages, fetched with `apt-get source`
# from deb-src; this script adds a deb-src entry for the running release if none is
# configured) unpacked with their Debian patches by dpkg-source. Each program is compiled
# with gcc -c -fPIC -O2 and pre-linked with `ld -r` into one relocatable object,
# DIR/<name>.o, that llvm-jitlink links and runs; the C library and libm come from the
# executor's process. Programs: lua (Lua 5.4 interpreter), sqlite3 (the SQLite shell, from
# the amalgamation), zstd (the Zstandard CLI, multithreaded), bc and dc (GNU bc).
# DIR/versions.txt records the source package versions; DIR/.stamp makes a re-run with the
# same script a no-op. Build log: DIR/build.log.
#
# Adaptations for JITLink (documented, no other source change):
# * Lua's luaconf.h marks its internal functions visibility("internal"), which JITLink
#   rejects: the build copy uses visibility("hidden") (same linkage in one object).
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PROGRAMS=(lua sqlite3 zstd bc dc)
PACKAGES=(lua5.4 sqlite3 libzstd bc)

stamp=$(sha256sum "$HERE/corpus.sh" | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ]; then
    ok=1
    for p in "${PROGRAMS[@]}"; do [ -f "$OUT/$p.o" ] || ok=0; done
    [ "$ok" = 1 ] && exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt() { flock /tmp/apt.lock $SUDO "$@"; }

# Build tools: dpkg-source (dpkg-dev), tclsh (sqlite's amalgamation generator), make, xz.
need=()
for p in gcc make binutils dpkg-dev tcl xz-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt apt-get install -y -qq "${need[@]}" >/dev/null
fi

# deb-src for the running release.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
if ! apt-cache showsrc "${PACKAGES[0]}" 2>/dev/null | grep -q '^Package:'; then
    if ! grep -rqs -e '^Types:.*deb-src' -e '^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$codename" | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    fi
    apt apt-get update -qq
fi

BUILD="$OUT/build"
rm -rf "$BUILD"
mkdir -p "$BUILD/dl" "$BUILD/src"
LOG="$OUT/build.log"
: >"$LOG"
sqlite_pid=""
failed() {
    [ -z "$sqlite_pid" ] || { pkill -P "$sqlite_pid"; kill "$sqlite_pid"; } 2>/dev/null || true
    tail -20 "$LOG" >&2
    echo "corpus: build failed (log: $LOG)" >&2
}
trap 'rc=$?; [ $rc -eq 0 ] || failed' EXIT
t0=$(date +%s)

# Fetch (as the invoking user into the build dir) and unpack with the Debian patches.
(cd "$BUILD/dl" && apt-get source --download-only -qq "${PACKAGES[@]}" >>"$LOG" 2>&1)
: >"$OUT/versions.txt.new"
for p in "${PACKAGES[@]}"; do
    dsc=$(ls "$BUILD/dl/${p}"_*.dsc | head -1)
    dpkg-source --no-check -x "$dsc" "$BUILD/src/$p" >>"$LOG" 2>&1
    echo "$p $(basename "$dsc" .dsc | cut -d_ -f2)" >>"$OUT/versions.txt.new"
done

CFLAGS="-fPIC -O2"
JOBS=$(nproc)
# cc OUTDIR FLAGS... -- SOURCES...: compile each source into OUTDIR, $JOBS at a time.
cc() {
    local dir=$1; shift
    local flags=()
    while [ "$1" != "--" ]; do flags+=("$1"); shift; done
    shift
    mkdir -p "$dir"
    printf '%s\n' "$@" | xargs -P "$JOBS" -I{} sh -c \
        'src=$1; shift; gcc -c '"$CFLAGS"' "$@" "$src" -o "$0/$(echo "${src#./}" | tr / _).o"' \
        "$dir" {} "${flags[@]}" >>"$LOG" 2>&1
}

# SQLite: generate the amalgamation (sqlite3.c, shell.c) with its own configure + tclsh and
# compile sqlite3.c (the long pole) in the background while the others build.
(
    set -e
    cd "$BUILD/src/sqlite3" && mkdir -p bld && cd bld
    ../configure --disable-tcl --disable-readline >>"$LOG" 2>&1
    make sqlite3.c shell.c >>"$LOG" 2>&1
    exec gcc -c $CFLAGS sqlite3.c -o sqlite3.o
) &
sqlite_pid=$!

# Lua 5.4: the interpreter (lua.c) and the library, without luac.
(
    cd "$BUILD/src/lua5.4/src"
    sed -i 's/__attribute__((visibility("internal")))/__attribute__((visibility("hidden")))/' luaconf.h
    # What debian/rules generates (the search path of C modules).
    printf '#define DEB_HOST_MULTIARCH "%s"\n' "$(gcc -print-multiarch)" >lua5.4-deb-multiarch.h
    cc "$BUILD/o/lua" -DLUA_USE_LINUX -- $(ls ./*.c | grep -v luac.c)
    ld -r "$BUILD"/o/lua/*.o -o "$OUT/lua.o.new"
)

# zstd: the CLI (programs/) and the library with its x86-64 assembly, multithreaded; no
# legacy formats, no zlib/lzma/lz4.
(
    cd "$BUILD/src/libzstd"
    cc "$BUILD/o/zstd" -DZSTD_MULTITHREAD -DZSTD_LEGACY_SUPPORT=0 -Ilib -Ilib/common -- \
        lib/common/*.c lib/compress/*.c lib/decompress/*.c lib/decompress/*.S \
        lib/dictBuilder/*.c programs/*.c
    ld -r "$BUILD"/o/zstd/*.o -o "$OUT/zstd.o.new"
)

# GNU bc and dc: their own configure and Makefiles (the build runs a bootstrap bc, fbc, to
# generate libmath.h), our CFLAGS; documentation not built.
(
    cd "$BUILD/src/bc"
    ./configure CFLAGS="$CFLAGS" >>"$LOG" 2>&1
    # Debian patches bc/Makefile.am; its generated Makefile.in (upstream's) is used as is.
    am=(AUTOMAKE=true ACLOCAL=true AUTOCONF=true AUTOHEADER=true MAKEINFO=true)
    make -C lib -j"$JOBS" "${am[@]}" >>"$LOG" 2>&1
    make -C bc -j"$JOBS" "${am[@]}" bc >>"$LOG" 2>&1
    make -C dc -j"$JOBS" "${am[@]}" dc >>"$LOG" 2>&1
    libbc=(lib/getopt.o lib/getopt1.o lib/vfprintf.o lib/number.o)
    ld -r bc/main.o bc/bc.o bc/scan.o bc/execute.o bc/load.o bc/storage.o bc/util.o \
        bc/global.o bc/warranty.o "${libbc[@]}" -o "$OUT/bc.o.new"
    ld -r dc/dc.o dc/misc.o dc/eval.o dc/stack.o dc/array.o dc/numeric.o dc/string.o \
        "${libbc[@]}" -o "$OUT/dc.o.new"
)

wait "$sqlite_pid"
(
    cd "$BUILD/src/sqlite3/bld"
    gcc -c $CFLAGS shell.c -o shell.o
    ld -r sqlite3.o shell.o -o "$OUT/sqlite3.o.new"
)

# JITLink rejects visibility("internal") symbols: none may be left.
for p in "${PROGRAMS[@]}"; do
    if readelf -sW "$OUT/$p.o.new" | grep -q ' INTERNAL '; then
        echo "corpus: $p.o has visibility(\"internal\") symbols (JITLink rejects them)" >&2
        exit 1
    fi
done
for p in "${PROGRAMS[@]}"; do mv "$OUT/$p.o.new" "$OUT/$p.o"; done
mv "$OUT/versions.txt.new" "$OUT/versions.txt"
rm -rf "$BUILD"
echo "$stamp" >"$OUT/.stamp"
echo "corpus: built ${PROGRAMS[*]} in $OUT in $(( $(date +%s) - t0 )) s" >&2
