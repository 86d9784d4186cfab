/* Argument handling: print argc/argv, exit with a value computed from the arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    unsigned long hash = 1469598103934665603ul; /* FNV-1a over all argument bytes */
    long sum = 0;
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);
        if (argc <= 16)
            printf("argv[%d]=\"%s\" len=%zu\n", i, argv[i], len);
        for (size_t j = 0; j <= len; j++) {
            hash ^= (unsigned char)argv[i][j];
            hash *= 1099511628211ul;
        }
        sum += atol(argv[i]);
    }
    printf("argv[argc]=%s\n", argv[argc] == NULL ? "NULL" : "non-NULL");
    printf("sum=%ld hash=%016lx\n", sum, hash);
    return argc == 0 ? 7 : (int)(sum & 0xff);
}
