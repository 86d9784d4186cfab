/* Built with -g for the gdb test: a breakpoint on jitted_fn must hit. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int jitted_fn(int x) {
    int y = x * 3 + 1;
    printf("jitted_fn(%d) = %d\n", x, y);
    return y;
}

int main(int argc, char **argv) {
    int v = argc > 0 ? atoi(argv[0]) : 0;
    return jitted_fn(v) & 0x7f;
}
