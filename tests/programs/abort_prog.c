/* abort(): flushed stdout survives, unflushed stdout is lost, stderr is unbuffered. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("before abort: %s (flushed)\n", argc > 0 ? argv[0] : "");
    fflush(stdout);
    printf("this line stays in the stdio buffer and is lost\n");
    fprintf(stderr, "stderr: about to abort (%d args)\n", argc);
    abort();
}
