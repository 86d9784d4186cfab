/* Deep (non-tail) recursion: DEPTH frames on the thread that runs main. */
#include <stdio.h>
#include <stdlib.h>

/* About 48 bytes of stack per frame: 100000 frames need ~4.6 MiB, so main must run on a thread
 * with a normal (8 MiB) stack, like the stock executor's. */
__attribute__((noinline)) static unsigned long down(unsigned long n, unsigned long acc) {
    volatile unsigned char pad[24];
    if (n == 0)
        return acc;
    pad[n % sizeof pad] = (unsigned char)n;
    unsigned long r = down(n - 1, acc * 31 + n);
    return r ^ pad[n % sizeof pad]; /* work after the call: not a tail call */
}

__attribute__((noinline)) static int is_odd(unsigned n);
__attribute__((noinline)) static int is_even(unsigned n) {
    return n == 0 ? 1 : is_odd(n - 1) + 0 * (int)n;
}
__attribute__((noinline)) static int is_odd(unsigned n) {
    return n == 0 ? 0 : is_even(n - 1) + 0 * (int)n;
}

int main(int argc, char **argv) {
    unsigned long depth = argc > 0 ? strtoul(argv[0], NULL, 10) : 1000;
    unsigned long r = down(depth, 7);
    printf("down(%lu)=%016lx\n", depth, r);
    unsigned m = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 11;
    printf("is_even(%u)=%d\n", m, is_even(m));
    return (int)(r & 0x7f);
}
