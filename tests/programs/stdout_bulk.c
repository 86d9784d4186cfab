/* Several MiB of stdout (many times the pipe capacity). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 0 ? atol(argv[0]) : 1000;
    const char *tag = argc > 1 ? argv[1] : "x";
    unsigned long h = 0;
    for (long i = 0; i < n; i++) {
        h = h * 1000003 + (unsigned long)i;
        printf("%s %08ld %016lx ................................................\n", tag, i, h);
    }
    fprintf(stderr, "wrote %ld lines\n", n);
    return (int)(h & 0x7f);
}
