/* A segmentation fault in JIT'd code. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("before segv: %s\n", argc > 0 ? argv[0] : "");
    fflush(stdout);
    fprintf(stderr, "stderr: about to crash\n");
    volatile int *p = (volatile int *)(argc > 100 ? (void *)argv : NULL);
    *p = argc;
    printf("not reached\n");
    return 0;
}
