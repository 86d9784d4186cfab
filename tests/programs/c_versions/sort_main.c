/* Two objects (with sort_lib.c), built with -g (GDB JIT registration): data, bss and rodata
 * across objects, a JIT'd comparator called back from libc's qsort, malloc/free.
 * Prints the sorted values and a summary; exit code = the sum (20). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int calls;
extern const char *lib_name;
int compare_ints(const void *a, const void *b);
int sum(const int *v, int n);

static int values[] = {8, -5, 13, 1, 3};

int main(void) {
    int n = (int)(sizeof values / sizeof values[0]);
    int *copy = malloc(sizeof values);
    memcpy(copy, values, sizeof values);
    qsort(copy, (size_t)n, sizeof *copy, compare_ints);
    printf("sorted:");
    for (int i = 0; i < n; i++)
        printf(" %d", copy[i]);
    printf("\n");
    int s = sum(copy, n);
    printf("%s: sum=%d compares>0=%d\n", lib_name, s, calls > 0);
    free(copy);
    return s;
}
