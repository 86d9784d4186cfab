/* main returns a negative value: -atoi(argv[0]), or -1 without arguments. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int v = argc > 0 ? -atoi(argv[0]) : -1;
    printf("returning %d\n", v);
    return v;
}
