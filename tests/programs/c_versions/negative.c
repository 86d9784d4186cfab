/* main returns -1: run_as_main sign-extends it, llvm-jitlink exits with 255. */
#include <stdio.h>

int main(void) {
    fputs("returning -1\n", stderr);
    return -1;
}
