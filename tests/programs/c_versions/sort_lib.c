/* The library half of sort_main.c. */
int calls;                        /* .bss */
const char *lib_name = "sortlib"; /* .data pointing into .rodata */

int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    calls++;
    return (x > y) - (x < y);
}

int sum(const int *v, int n) {
    int s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}
