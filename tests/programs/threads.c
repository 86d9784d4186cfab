/* JIT'd code creating and joining POSIX threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct job {
    int id;
    unsigned long from, to, sum;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long total;

static void *worker(void *arg) {
    struct job *j = arg;
    for (unsigned long i = j->from; i < j->to; i++)
        j->sum += i * i % 1000003;
    pthread_mutex_lock(&lock);
    total += j->sum;
    pthread_mutex_unlock(&lock);
    return j;
}

int main(int argc, char **argv) {
    int n = argc > 0 ? atoi(argv[0]) : 4;
    unsigned long per = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    if (n < 1 || n > 64)
        return 2;
    pthread_t tids[64];
    struct job jobs[64];
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct job){i, per * (unsigned long)i, per * (unsigned long)(i + 1), 0};
        if (pthread_create(&tids[i], NULL, worker, &jobs[i]) != 0) {
            perror("pthread_create");
            return 3;
        }
    }
    for (int i = 0; i < n; i++) {
        void *ret;
        pthread_join(tids[i], &ret);
        printf("thread %d: sum=%lu\n", ((struct job *)ret)->id, ((struct job *)ret)->sum);
    }
    printf("threads=%d total=%lu\n", n, total);
    return (int)(total % 100);
}
