/* errno from libc calls made by JIT'd code: fopen of a missing file, strtol overflow. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *path = argc > 0 ? argv[0] : "/nonexistent/file";
    errno = 0;
    FILE *f = fopen(path, "r");
    int saved = errno;
    if (f) {
        printf("fopen(%s) unexpectedly succeeded\n", path);
        fclose(f);
        return 0;
    }
    printf("fopen(%s): errno=%d (%s)\n", path, saved, strerror(saved));
    fprintf(stderr, "stderr: %s: %s\n", path, strerror(saved));

    errno = 0;
    long v = strtol(argc > 1 ? argv[1] : "99999999999999999999", NULL, 10);
    printf("strtol: value=%ld errno=%d (%s)\n", v, errno, strerror(errno));

    errno = 0;
    FILE *d = fopen("/", "w");
    printf("fopen(/, w): %s errno=%d (%s)\n", d ? "ok" : "failed", errno, strerror(errno));
    if (d)
        fclose(d);
    return saved;
}
