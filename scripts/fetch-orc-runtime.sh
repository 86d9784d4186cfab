#!/usr/bin/env bash
# Fetch LLVM 22's ORC runtime archive (liborc_rt-x86_64.a) from Debian's libclang-rt-22-dev
# without installing the package, and print the archive's path. Idempotent: a second run only
# prints the path.
#
#   scripts/fetch-orc-runtime.sh [DEST]   (default: <repo>/.cache/orc-rt; env ORC_RT_DIR too)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-${ORC_RT_DIR:-$repo/.cache/orc-rt}}
pkg=${ORC_RT_PACKAGE:-libclang-rt-22-dev}
rel=usr/lib/llvm-22/lib/clang/22/lib/linux/liborc_rt-x86_64.a

find_archive() {
    local a
    for a in "$dest/$rel" /"$rel"; do
        if [[ -s $a ]]; then
            printf '%s\n' "$a"
            return 0
        fi
    done
    # Layout fallback (another clang version directory).
    a=$(find "$dest" -name liborc_rt-x86_64.a -size +0 2>/dev/null | head -n 1 || true)
    [[ -n $a ]] && printf '%s\n' "$a"
}

if out=$(find_archive) && [[ -n $out ]]; then
    printf '%s\n' "$out"
    exit 0
fi

mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# apt-get download needs the package lists; refresh them once if the package is unknown.
if ! (cd "$tmp" && apt-get download "$pkg") >&2 2>"$tmp/err"; then
    cat "$tmp/err" >&2
    echo "fetch-orc-runtime: refreshing package lists" >&2
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
    (cd "$tmp" && apt-get download "$pkg") >&2
fi
deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
[[ -n $deb ]] || { echo "fetch-orc-runtime: no .deb downloaded" >&2; exit 1; }
dpkg-deb -x "$deb" "$tmp/root"
mkdir -p "$dest/$(dirname "$rel")"
src=$(find "$tmp/root" -name liborc_rt-x86_64.a | head -n 1)
[[ -n $src ]] || { echo "fetch-orc-runtime: $pkg has no liborc_rt-x86_64.a" >&2; exit 1; }
# Atomic publish: concurrent runs never see a partial archive.
cp "$src" "$tmp/liborc_rt-x86_64.a"
mv -f "$tmp/liborc_rt-x86_64.a" "$dest/$rel"
printf '%s\n' "$dest/$rel"
