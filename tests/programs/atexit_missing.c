/* atexit() is not exported by glibc's libc.so (it lives in libc_nonshared.a), so without the ORC
 * runtime the link fails with "Symbols not found: [ atexit ]" and main never runs. */
#include <stdio.h>
#include <stdlib.h>

static void handler(void) {
    printf("atexit handler\n");
}

int main(int argc, char **argv) {
    atexit(handler);
    printf("main %d %s\n", argc, argc > 0 ? argv[0] : "");
    return 3;
}
