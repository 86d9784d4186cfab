/* argv as llvm-jitlink passes it (no argv[0]), stdout and stderr, exit code 42. */
#include <stdio.h>

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    fprintf(stderr, "to stderr: %d args\n", argc);
    return 42;
}
