/* A weak undefined function and a weak undefined variable: each LLVM version encodes "not
 * found" differently in its lookup reply (docs/protocol.md §6.1). Exit code 3. */
#include <stdio.h>

extern int optional_function(void) __attribute__((weak));
extern int optional_variable __attribute__((weak));

int main(void) {
    printf("optional_function %s\n", optional_function ? "present" : "missing");
    printf("optional_variable %s\n", &optional_variable ? "present" : "missing");
    puts("done");
    return 3;
}
