/* ---- fault recovery: calls into JIT'd code that survive SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT --
 *
 * Appended to the cffi source by _build.py (it uses orc_cwfr and orc_wrapper_fn from there).
 *
 * A guarded call arms a per-thread recovery point (sigsetjmp) around the call into JIT'd code.
 * orc_fault_install() installs handlers for the five signals, run on a per-thread alternate
 * signal stack (so a stack overflow is caught too). The handler siglongjmps back only when
 *   - the thread that took the signal has an armed recovery point,
 *   - it is not already recovering, and
 *   - the signal is a fault (sent by the kernel) or the thread's own raise/abort;
 * otherwise it restores the disposition found at installation (normally SIG_DFL) and lets the
 * signal take effect again, so faults on threads the program started, faults in the
 * executor's own code and signals sent by other processes end the process as before. A fault
 * inside the handler ends the process (all five signals are blocked while it runs).
 *
 * While JIT'd code calls back into the executor (the dispatch function), the recovery point
 * is suspended: a fault in the executor's code there is never swallowed.
 */

#include <setjmp.h>
#include <signal.h>

typedef struct {
    int signo;     /* 0: no fault */
    int code;      /* si_code */
    uint64_t addr; /* si_addr */
} orc_fault;

struct orc_fault_thread {
    sigjmp_buf *jb;                  /* the armed recovery point, or NULL */
    volatile sig_atomic_t recovering;
    orc_fault fault;
    void *altstack;                  /* ours (munmapped at thread exit), or NULL */
    size_t altsize;
};

/* initial-exec: the handler must not reach __tls_get_addr (it may allocate). */
static __thread struct orc_fault_thread *orc_ft __attribute__((tls_model("initial-exec")));

static const int orc_fault_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
#define ORC_FAULT_NSIG (sizeof orc_fault_signals / sizeof orc_fault_signals[0])
static struct sigaction orc_fault_prev[ORC_FAULT_NSIG];
static sigset_t orc_fault_set;  /* the five signals */
static pthread_mutex_t orc_fault_lock = PTHREAD_MUTEX_INITIALIZER;
static int orc_fault_installed;
static pthread_key_t orc_fault_key;

static void orc_fault_thread_exit(void *p) {
    struct orc_fault_thread *t = (struct orc_fault_thread *)p;
    orc_ft = NULL;
    if (t->altstack) {
        stack_t ss, cur;
        if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == t->altstack) {
            memset(&ss, 0, sizeof ss);
            ss.ss_flags = SS_DISABLE;
            sigaltstack(&ss, NULL);
        }
        munmap(t->altstack, t->altsize);
    }
    free(t);
}

/* This thread's state, with an alternate signal stack unless it has one; NULL before
   orc_fault_install or if out of memory (the call then runs unguarded). */
static struct orc_fault_thread *orc_fault_thread_get(void) {
    struct orc_fault_thread *t = orc_ft;
    if (t) return t;
    if (!__atomic_load_n(&orc_fault_installed, __ATOMIC_ACQUIRE)) return NULL;
    t = (struct orc_fault_thread *)calloc(1, sizeof *t);
    if (!t) return NULL;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
        size_t size = 64 * 1024;
        long min = sysconf(_SC_SIGSTKSZ);
        if (min > 0 && (size_t)min * 4 > size) size = (size_t)min * 4;
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            stack_t ss;
            ss.ss_sp = p;
            ss.ss_size = size;
            ss.ss_flags = 0;
            if (sigaltstack(&ss, NULL) == 0) {
                t->altstack = p;
                t->altsize = size;
            } else {
                munmap(p, size);
            }
        }
    }
    orc_ft = t;
    pthread_setspecific(orc_fault_key, t);
    return t;
}

static void orc_fault_handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    struct orc_fault_thread *t = orc_ft;
    int fault = si->si_code > 0 || (si->si_code == SI_TKILL && si->si_pid == getpid());
    if (t && t->jb && !t->recovering && fault) {
        t->recovering = 1;
        t->fault.signo = sig;
        t->fault.code = si->si_code;
        t->fault.addr = sig == SIGABRT ? 0 : (uint64_t)(uintptr_t)si->si_addr;
        siglongjmp(*t->jb, 1);
    }
    /* Not recoverable: the disposition found at installation, and the signal again. A fault
       re-executes its instruction on return; a raise or kill is sent once more (it stays
       pending while this handler runs). */
    for (size_t i = 0; i < ORC_FAULT_NSIG; i++)
        if (orc_fault_signals[i] == sig) sigaction(sig, &orc_fault_prev[i], NULL);
    if (si->si_code <= 0) raise(sig);
}

/* Install the handlers (once per process). 0, or an errno value. */
static int orc_fault_install(void) {
    int err = 0;
    pthread_mutex_lock(&orc_fault_lock);
    if (!orc_fault_installed) {
        err = pthread_key_create(&orc_fault_key, orc_fault_thread_exit);
        if (!err) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = orc_fault_handler;
            sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
            sigemptyset(&orc_fault_set);
            for (size_t i = 0; i < ORC_FAULT_NSIG; i++) sigaddset(&orc_fault_set, orc_fault_signals[i]);
            sa.sa_mask = orc_fault_set;
            for (size_t i = 0; i < ORC_FAULT_NSIG && !err; i++)
                if (sigaction(orc_fault_signals[i], &sa, &orc_fault_prev[i]) != 0) err = errno;
            if (!err) __atomic_store_n(&orc_fault_installed, 1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&orc_fault_lock);
    return err;
}

static int orc_fault_is_installed(void) { return orc_fault_installed; }

/* Suspend this thread's recovery point while the executor's own code runs on it (the
   dispatch function); orc_fault_resume puts it back. */
static void *orc_fault_suspend(void) {
    struct orc_fault_thread *t = orc_ft;
    if (!t) return NULL;
    void *jb = t->jb;
    t->jb = NULL;
    return jb;
}

static void orc_fault_resume(void *jb) {
    struct orc_fault_thread *t = orc_ft;
    if (t) t->jb = (sigjmp_buf *)jb;
}

/* Result of a guarded run_as_* call whose code faulted (outside the int32/int range). */
#define ORC_FAULTED INT64_MIN

/* Arm this thread's recovery point (t: its state) in the calling function; after a
   recovered fault, that function returns FAULTED (details: orc_fault_last). The caller
   disarms with `t->jb = prev` after the call. No signal mask is saved (no syscall per
   call): after a recovery the thread keeps the mask the faulting code had, with the five
   signals (blocked while the handler ran) unblocked again. */
#define ORC_ARM(t, prev, FAULTED)                                               \
    sigjmp_buf jb_;                                                             \
    sigjmp_buf *volatile prev = (t)->jb;                                        \
    if (sigsetjmp(jb_, 0)) {                                                    \
        pthread_sigmask(SIG_UNBLOCK, &orc_fault_set, NULL);                     \
        (t)->jb = prev;                                                         \
        (t)->recovering = 0;                                                    \
        return (FAULTED);                                                       \
    }                                                                           \
    (t)->fault.signo = 0;                                                       \
    (t)->jb = &jb_

/* The calling thread's last recovered fault (signo 0 if none); returns its signal. */
static int orc_fault_last(orc_fault *f) {
    struct orc_fault_thread *t = orc_ft;
    if (!t) { memset(f, 0, sizeof *f); return 0; }
    *f = t->fault;
    return f->signo;
}

/* 0, or the signal number of a recovered fault. */
static int orc_guarded_call_wrapper(uint64_t fn, const char *data, size_t size, orc_cwfr *out) {
    struct orc_fault_thread *t = orc_fault_thread_get();
    if (!t) { orc_call_wrapper(fn, data, size, out); return 0; }
    ORC_ARM(t, prev, t->fault.signo);
    orc_call_wrapper(fn, data, size, out);
    t->jb = prev;
    return 0;
}

/* The function's result, or ORC_FAULTED. */
static int64_t orc_guarded_run_as_main(uint64_t fn, int argc, char **argv) {
    struct orc_fault_thread *t = orc_fault_thread_get();
    if (!t) return orc_run_as_main(fn, argc, argv);
    ORC_ARM(t, prev, ORC_FAULTED);
    int64_t r = orc_run_as_main(fn, argc, argv);
    t->jb = prev;
    return r;
}

static int64_t orc_guarded_run_as_void_function(uint64_t fn) {
    struct orc_fault_thread *t = orc_fault_thread_get();
    if (!t) return orc_run_as_void_function(fn);
    ORC_ARM(t, prev, ORC_FAULTED);
    int64_t r = orc_run_as_void_function(fn);
    t->jb = prev;
    return r;
}

static int64_t orc_guarded_run_as_int_function(uint64_t fn, int32_t arg) {
    struct orc_fault_thread *t = orc_fault_thread_get();
    if (!t) return orc_run_as_int_function(fn, arg);
    ORC_ARM(t, prev, ORC_FAULTED);
    int64_t r = orc_run_as_int_function(fn, arg);
    t->jb = prev;
    return r;
}

/* 0, or the signal number of a recovered fault. */
static int orc_guarded_run_void_void(uint64_t fn) {
    struct orc_fault_thread *t = orc_fault_thread_get();
    if (!t) { orc_run_void_void(fn); return 0; }
    ORC_ARM(t, prev, t->fault.signo);
    orc_run_void_void(fn);
    t->jb = prev;
    return 0;
}
/* ---- end of fault recovery ------------------------------------------------------------- */
