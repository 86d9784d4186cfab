#!/usr/bin/env bash
# Set up everything, then JIT-link a C program with llvm-jitlink 22 and run it inside
# orc-executor (pipes), then again over TCP.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/demo.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(int argc, char **argv) {
    int v[16];
    for (int i = 0; i < argc && i < 16; i++) v[i] = atoi(argv[i]);
    qsort(v, argc, sizeof v[0], cmp);
    printf("sorted inside orc-executor:");
    for (int i = 0; i < argc; i++) printf(" %d", v[i]);
    printf("\n");
    return argc;
}
C
gcc -c -fPIC -O1 "$work/demo.c" -o "$work/demo.o"
JITLINK=/usr/lib/llvm-22/bin/llvm-jitlink
EXE="$PWD/.venv/bin/orc-executor"
echo "\$ llvm-jitlink -oop-executor=$EXE demo.o -args 5 3 9 1"
set +e
"$JITLINK" -oop-executor="$EXE" "$work/demo.o" -args 5 3 9 1
echo "exit code: $? (main returned argc)"
port=$(( 20000 + RANDOM % 20000 ))
"$EXE" --listen "127.0.0.1:$port" --once &  # one session, then exit (a plain --listen is a daemon)
sleep 1  # let it bind (a probe connection would become the session)
echo "\$ llvm-jitlink -oop-executor-connect=127.0.0.1:$port demo.o -args 7 2"
"$JITLINK" -oop-executor-connect="127.0.0.1:$port" "$work/demo.o" -args 7 2
echo "exit code: $?"
wait
