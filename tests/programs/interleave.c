/* stdout/stderr interleaving: explicit fflush keeps the order; the last stdout line is left in the
 * buffer and appears after the final stderr line (stdout is a pipe, hence fully buffered). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int n = argc > 0 ? atoi(argv[0]) : 3;
    for (int i = 1; i <= n; i++) {
        printf("out %d/%d\n", i, n);
        fflush(stdout);
        fprintf(stderr, "err %d/%d\n", i, n);
    }
    printf("out unflushed\n");
    fprintf(stderr, "err last\n");
    return n;
}
