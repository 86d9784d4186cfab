/* main.o for `llvm-jitlink -orc-runtime=... lazy_main.o -lazy lazy_a.o -lazy lazy_b.o`:
   each first call goes through a reentry stub, the executor asks the controller
   (__orc_rt_resolve_tag) and waits while the controller links the object. */
#include <stdio.h>

int scale(int x);   /* lazy_a.o */
int offset(int x);  /* lazy_b.o */
int chain(int x);   /* lazy_a.o, calls offset() */

int main(int argc, char **argv) {
    int (*fp)(int) = scale; /* address of the stub: calls through it work too */
    printf("scale(20)=%d\n", scale(20));
    printf("offset(2)=%d\n", offset(2));
    printf("chain(3)=%d\n", chain(3));
    printf("fp(5)=%d\n", fp(5));
    printf("scale again=%d\n", scale(1));
    return argc + scale(0) + 10;
}
