/* exit(N) called by JIT'd code while main runs: on_exit handlers (in JIT'd memory, still mapped)
 * run, buffered stdout is flushed, the executor process ends with status N and llvm-jitlink
 * reports "disconnecting" (its own exit status is then 1). */
#define _DEFAULT_SOURCE /* on_exit */
#include <stdio.h>
#include <stdlib.h>

static void on_exit_handler(int status, void *arg) {
    printf("on_exit handler: status=%d arg=%s\n", status, (const char *)arg);
}

static void second_handler(int status, void *arg) {
    (void)arg;
    printf("second handler (runs first): status=%d\n", status);
}

int main(int argc, char **argv) {
    int status = argc > 0 ? atoi(argv[0]) : 9;
    on_exit(on_exit_handler, argc > 1 ? argv[1] : "none");
    on_exit(second_handler, NULL);
    printf("main: calling exit(%d)\n", status);
    exit(status);
}
