/* Registers a libc function (puts, with a heap copy of argv[0]) with __cxa_atexit and returns
 * normally: the handler runs when the executor process itself exits normally, after the JIT
 * session ended (the JIT'd code and data are already unmapped then, so the handler and its
 * argument must not live there). Its output appears only if the executor ends via exit(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);

int main(int argc, char **argv) {
    const char *msg = argc > 0 ? argv[0] : "late handler";
    size_t len = strlen(msg);
    char *copy = malloc(len + 32);
    memcpy(copy, "late exit handler: ", 19);
    memcpy(copy + 19, msg, len + 1);
    __cxa_atexit((void (*)(void *))(void (*)(void))puts, copy, NULL);
    printf("main: registered handler for '%s'\n", msg);
    return (int)(len & 0x7f);
}
