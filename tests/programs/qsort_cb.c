/* Function pointers and callbacks through libc: qsort/bsearch with comparators in JIT'd code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_asc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static int cmp_desc(const void *a, const void *b) {
    return cmp_asc(b, a);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int calls;
static int counting_cmp(const void *a, const void *b) {
    calls++;
    return cmp_asc(a, b);
}

struct order {
    const char *name;
    int (*cmp)(const void *, const void *);
};
static const struct order orders[] = {{"asc", cmp_asc}, {"desc", cmp_desc}};

/* usage: ORDER KEY N... */
int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: asc|desc KEY N...\n");
        return 2;
    }
    int (*cmp)(const void *, const void *) = cmp_asc;
    for (unsigned i = 0; i < sizeof orders / sizeof orders[0]; i++)
        if (strcmp(argv[0], orders[i].name) == 0)
            cmp = orders[i].cmp;
    int n = argc - 2;
    long *v = malloc(sizeof *v * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++)
        v[i] = strtol(argv[i + 2], NULL, 10);
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("%s:", argv[0]);
    for (int i = 0; i < n; i++)
        printf(" %ld", v[i]);
    printf("\n");

    qsort(v, (size_t)n, sizeof *v, counting_cmp);
    long key = strtol(argv[1], NULL, 10);
    long *hit = bsearch(&key, v, (size_t)n, sizeof *v, cmp_asc);
    printf("bsearch(%ld): %s", key, hit ? "found at " : "not found");
    if (hit)
        printf("%td", hit - v);
    printf(" (comparator called: %s)\n", calls > 0 ? "yes" : "no");

    char **words = malloc(sizeof *words * (size_t)argc);
    memcpy(words, argv, sizeof *words * (size_t)argc);
    qsort(words, (size_t)argc, sizeof *words, cmp_str);
    printf("strings:");
    for (int i = 0; i < argc; i++)
        printf(" %s", words[i]);
    printf("\n");
    free(words);
    int ret = n > 0 ? (int)(v[n - 1] & 0x7f) : 0;
    free(v);
    return ret;
}
