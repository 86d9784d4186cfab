/* The environment is inherited from llvm-jitlink: prints getenv() of each argument. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int set = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = getenv(argv[i]);
        printf("%s=%s%s%s\n", argv[i], v ? "\"" : "", v ? v : "(unset)", v ? "\"" : "");
        set += v != NULL;
    }
    return set;
}
