/* 8 pthreads released together by a barrier, each making the first call of its own lazily
   linked function f0..f7: 8 __orc_rt_resolve_tag calls to the controller are in flight at
   once, and every result must reach the thread that asked. Exit code 0 when all 8 match. */
#include <pthread.h>
#include <stdio.h>

int f0(int); int f1(int); int f2(int); int f3(int);
int f4(int); int f5(int); int f6(int); int f7(int);

static int (*const fns[8])(int) = {f0, f1, f2, f3, f4, f5, f6, f7};
static pthread_barrier_t barrier;
static int results[8];

static void *run(void *arg) {
    int i = (int)(long)arg;
    pthread_barrier_wait(&barrier);
    results[i] = fns[i](i * 11);
    return NULL;
}

int main(void) {
    pthread_t t[8];
    pthread_barrier_init(&barrier, NULL, 8);
    for (long i = 0; i < 8; ++i) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < 8; ++i) pthread_join(t[i], NULL);
    int ok = 0;
    for (int i = 0; i < 8; ++i) {
        int expect = (i + 1) * 1000 + i * 11;
        printf("thread %d: f%d(%d) = %d%s\n", i, i, i * 11, results[i],
               results[i] == expect ? "" : " WRONG");
        ok += results[i] == expect;
    }
    printf("%d of 8 threads got their own result\n", ok);
    return ok == 8 ? 0 : 1;
}
