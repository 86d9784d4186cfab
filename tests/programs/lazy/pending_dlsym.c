/* Disconnect test: like pending_lazy.c, but the pending executor->controller call is the
   ORC runtime's dlsym (__orc_rt_elfnix_symbol_lookup_tag), whose failure JIT'd code sees
   as an error it can report: the dispatch must fail with "disconnecting". */
#include <stdio.h>

extern void *__dso_handle;
void *__orc_rt_jit_dlsym(void *handle, const char *name);
char *__orc_rt_jit_dlerror(void);

int target(void) { return 5; }

int main(void) {
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 9;
    void *p = __orc_rt_jit_dlsym(&__dso_handle, "target");
    if (p) {
        printf("found target() = %d\n", ((int (*)(void))p)());
        return 0;
    }
    fprintf(stderr, "dlsym failed: %s\n", __orc_rt_jit_dlerror());
    return 7;
}
