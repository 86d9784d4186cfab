/* Several objects with cross references (functions and data, both directions); see multi_lib.c. */
#include <stdio.h>
#include <stdlib.h>

/* Defined in multi_lib.c */
extern int lib_counter;
extern const char lib_name[];
extern int *lib_ptr_to_main_value;
extern int lib_compute(int x);
extern int lib_square(int x);
extern int lib_negate(int x);
extern int lib_call_main_hook(int x);

/* Used by multi_lib.c */
int main_value = 1000;
const int main_table[4] = {3, 5, 7, 11};
int main_hook_calls;
int main_hook(int x) {
    main_hook_calls++;
    return x * 100 + main_table[x & 3];
}

/* Data relocations pointing at another object's functions. */
int (*const main_ops[])(int) = {lib_square, lib_negate, lib_compute};

int main(int argc, char **argv) {
    int x = argc > 0 ? atoi(argv[0]) : 1;
    printf("lib_name=%s lib_counter=%d\n", lib_name, lib_counter);
    for (unsigned i = 0; i < sizeof main_ops / sizeof main_ops[0]; i++)
        printf("main_ops[%u](%d)=%d\n", i, x, main_ops[i](x));
    int hooked = lib_call_main_hook(x);
    printf("lib_call_main_hook(%d)=%d hook_calls=%d\n", x, hooked, main_hook_calls);
    *lib_ptr_to_main_value += x;
    printf("main_value=%d lib_counter=%d\n", main_value, lib_counter);
    return (lib_counter + main_value) & 0x7f;
}
