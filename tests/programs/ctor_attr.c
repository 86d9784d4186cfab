/* __attribute__((constructor/destructor)): llvm-jitlink runs them only with -orc-runtime. */
#include <stdio.h>
#include <stdlib.h>

static int ctor_value;

__attribute__((constructor)) static void ctor(void) {
    ctor_value = 42;
    printf("constructor ran\n");
}

__attribute__((destructor)) static void dtor(void) {
    printf("destructor ran\n");
}

int main(int argc, char **argv) {
    printf("main: argc=%d ctor_value=%d\n", argc, ctor_value);
    return ctor_value + (argc > 0 ? atoi(argv[0]) : 0);
}
