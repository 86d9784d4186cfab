/* Disconnect test: prints "ready", waits for a line on stdin (the test stops the
   controller first), then makes the first call of lazily linked scale(): the executor's
   __orc_rt_resolve_tag call can never be answered, and the test kills the controller. */
#include <stdio.h>

int scale(int x);

int main(void) {
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 9;
    printf("scale=%d\n", scale(20));
    return 0;
}
