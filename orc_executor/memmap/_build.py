"""cffi API-mode builder for ``orc_executor.memmap._native`` (compiled at install time).

The native module holds everything that must be real machine code in the executor process:
libc memory calls, safe memory access (``process_vm_readv``/``writev`` on ourselves), the C
wrapper-function ABI (``CWrapperFunctionResult fn(const char *, size_t)``), the JIT dispatch
function called by JIT'd code (an ``extern "Python"`` callback behind a C trampoline), the
EH-frame registrar and the GDB JIT interface (``__jit_debug_descriptor``).
"""

from __future__ import annotations

from cffi import FFI

CDEF = r"""
typedef struct {
    union { char *ValuePtr; char Value[8]; } Data;
    size_t Size;
} orc_cwfr;

#define PROT_NONE ...
#define PROT_READ ...
#define PROT_WRITE ...
#define PROT_EXEC ...
#define RTLD_LAZY ...
#define RTLD_NOW ...
#define RTLD_GLOBAL ...
#define RTLD_NOLOAD ...

void *orc_reserve(size_t size);
int orc_release(uint64_t addr, size_t size);
int orc_protect(uint64_t addr, size_t size, int prot);
int orc_discard(uint64_t addr, size_t size);
void *memset(void *s, int c, size_t n);
void *malloc(size_t size);
void free(void *ptr);
int fflush(void *stream);
void exit(int status);
void _exit(int status);
int orc_errno(void);
void orc_reset_stdio(void);
char *strerror(int errnum);

/* the warm launcher's exit status, sent as the process exits (see orc_report_exit_status) */
int orc_report_exit_status(int fd);

/* instruction-cache coherence after writing code (no-op on x86) */
void orc_sync_icache(uint64_t addr, size_t size);

/* shared memory (ExecutorSharedMemoryMapperService) */
void *orc_shm_reserve(const char *name, size_t size);
int orc_shm_unlink(const char *name);

/* safe access to our own memory: 0 or an errno value */
int orc_mem_read(uint64_t addr, void *dst, size_t n);
int orc_mem_write(uint64_t addr, const void *src, size_t n);
int64_t orc_strnlen_safe(uint64_t addr, size_t max);
int orc_addr_in_image(uint64_t addr);

/* dynamic libraries */
void *dlopen(const char *filename, int flags);
void *dlsym(void *handle, const char *symbol);
char *dlerror(void);

/* calling native code */
void orc_call_wrapper(uint64_t fn, const char *data, size_t size, orc_cwfr *out);
void orc_cwfr_dispose(orc_cwfr *r);
int orc_cwfr_is_oob(const orc_cwfr *r);
const char *orc_cwfr_data(const orc_cwfr *r);
int64_t orc_run_as_main(uint64_t fn, int argc, char **argv);
int32_t orc_run_as_void_function(uint64_t fn);
int32_t orc_run_as_int_function(uint64_t fn, int32_t arg);
void orc_run_void_void(uint64_t fn);

/* JIT dispatch: executor -> controller calls from JIT'd code */
extern "Python" int orc_py_dispatch(void *ctx, uint64_t tag, const char *data, size_t size,
                                    orc_cwfr *out);
uint64_t orc_dispatch_fn_addr(void);
uint64_t orc_dispatch_ctx_addr(void);
uint64_t orc_tag_base(void);
size_t orc_tag_count(void);

/* EH frames and GDB JIT interface */
int orc_register_eh_frame(uint64_t addr);
int orc_eh_frame_preload(void);
int orc_deregister_eh_frame(uint64_t addr);
int orc_gdb_register(uint64_t addr, uint64_t size, int notify);
int orc_gdb_deregister(uint64_t addr);
uint64_t orc_gdb_last_entry(uint64_t *size);
uint64_t orc_gdb_descriptor_addr(void);
"""

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct {
    union { char *ValuePtr; char Value[8]; } Data;
    size_t Size;
} orc_cwfr;

static int orc_errno(void) { return errno; }

/* Give C stdio the buffering a plain C program gets (Python's -u / PYTHONUNBUFFERED makes
   them unbuffered). Must run before any I/O on those streams. */
static void orc_reset_stream(FILE *f, int fd) {
    /* An explicit buffer is needed: after _IONBF glibc keeps its 1-byte buffer, and
       setvbuf(f, NULL, _IOFBF, n) would keep using it (each byte written separately).
       glibc's default size is the fd's st_blksize. The buffer lives as long as the process. */
    struct stat st;
    size_t size = BUFSIZ;
    if (fstat(fd, &st) == 0 && st.st_blksize > 0) size = (size_t)st.st_blksize;
    char *buf = (char *)malloc(size);
    if (!buf) return;
    if (setvbuf(f, buf, isatty(fd) ? _IOLBF : _IOFBF, size) != 0) free(buf);
}

static void orc_reset_stdio(void) {
    orc_reset_stream(stdin, 0);
    orc_reset_stream(stdout, 1);
    setvbuf(stderr, NULL, _IONBF, 0);
}

static void *orc_reserve(size_t size) {
    /* Zero pages, readable and writable like the stock executors' reservations (LLVM 19's
       llvm-jitlink with the ORC runtime registers an object's eh-frame before finalizing its
       allocation; libgcc reads the zero terminator there). MAP_NORESERVE: nothing is
       committed until a page is touched. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    /* Large slabs (bulk content): transparent huge pages where the system allows them, so
       copying content in costs a few 2 MiB faults instead of one fault per 4 KiB page. */
    if (size >= (4u << 20)) madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

static int orc_release(uint64_t addr, size_t size) {
    return munmap((void *)(uintptr_t)addr, size) == 0 ? 0 : errno;
}

static int orc_protect(uint64_t addr, size_t size, int prot) {
    return mprotect((void *)(uintptr_t)addr, size, prot) == 0 ? 0 : errno;
}

static int orc_discard(uint64_t addr, size_t size) {
    return madvise((void *)(uintptr_t)addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

/* ---- instruction cache (aarch64 and other non-x86 targets) ---------------------------- */

/* Make [addr, addr + size) coherent between the data and instruction caches after code was
   written there (on aarch64: clean to the point of unification, invalidate the icache). The
   range must be mapped and readable. Compiles to nothing on x86. */
static void orc_sync_icache(uint64_t addr, size_t size) {
    char *p = (char *)(uintptr_t)addr;
    __builtin___clear_cache(p, p + size);
}

/* ---- shared memory -------------------------------------------------------------------- */

static void *orc_shm_reserve(const char *name, size_t size) {
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0700);
    if (fd < 0) return NULL;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name);
        errno = e;
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_NONE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) { shm_unlink(name); errno = e; return NULL; }
    return p;
}

/* 0, or errno (ENOENT when the controller already unlinked the name, as llvm-jitlink does). */
static int orc_shm_unlink(const char *name) {
    return shm_unlink(name) == 0 ? 0 : errno;
}

/* ---- safe copies without process_vm_readv/writev (qemu-user has neither) ------------- */

/* Copy n bytes from src to dst through a pipe: the kernel (or qemu-user) checks both buffers
   and fails with EFAULT instead of faulting. 0 or an errno value. One pipe per process (a
   forked child makes its own), used under a lock. */
static pthread_mutex_t orc_pipe_lock = PTHREAD_MUTEX_INITIALIZER;
static int orc_pipe_fds[2] = { -1, -1 };
static pid_t orc_pipe_pid;

static int orc_pipe_copy(void *dst, const void *src, size_t n) {
    char drain[4096];
    int err = 0;
    pthread_mutex_lock(&orc_pipe_lock);
    if (orc_pipe_fds[0] < 0 || orc_pipe_pid != getpid()) {
        if (orc_pipe_fds[0] >= 0) { close(orc_pipe_fds[0]); close(orc_pipe_fds[1]); }
        orc_pipe_fds[0] = orc_pipe_fds[1] = -1;
        if (pipe2(orc_pipe_fds, O_CLOEXEC) != 0) {
            err = errno;
            pthread_mutex_unlock(&orc_pipe_lock);
            return err;
        }
        orc_pipe_pid = getpid();
    }
    while (n && !err) {
        ssize_t w = write(orc_pipe_fds[1], src, n < sizeof drain ? n : sizeof drain);
        if (w < 0) { if (errno != EINTR) err = errno; continue; }
        size_t got = 0;
        while (got < (size_t)w) {
            ssize_t r = read(orc_pipe_fds[0], (char *)dst + got, (size_t)w - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                err = r < 0 ? errno : EIO;
                while (got < (size_t)w) {  /* empty the pipe for the next copy */
                    r = read(orc_pipe_fds[0], drain, (size_t)w - got);
                    if (r <= 0 && errno != EINTR) break;
                    if (r > 0) got += (size_t)r;
                }
                break;
            }
            got += (size_t)r;
        }
        src = (const char *)src + w;
        dst = (char *)dst + w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&orc_pipe_lock);
    return err;
}

/* process_vm_readv/writev returned ENOSYS once: use orc_pipe_copy from then on. */
static int orc_no_vm_rw;

static int orc_mem_read(uint64_t addr, void *dst, size_t n) {
    if (n == 0) return 0;
    if (orc_no_vm_rw) return orc_pipe_copy(dst, (const void *)(uintptr_t)addr, n);
    struct iovec local = { dst, n }, remote = { (void *)(uintptr_t)addr, n };
    ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (r < 0 && errno == ENOSYS) {
        orc_no_vm_rw = 1;
        return orc_pipe_copy(dst, (const void *)(uintptr_t)addr, n);
    }
    if (r < 0) return errno;
    return (size_t)r == n ? 0 : EFAULT;
}

static int orc_mem_write(uint64_t addr, const void *src, size_t n) {
    if (n == 0) return 0;
    if (orc_no_vm_rw) return orc_pipe_copy((void *)(uintptr_t)addr, src, n);
    struct iovec local = { (void *)src, n }, remote = { (void *)(uintptr_t)addr, n };
    ssize_t r = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
    if (r < 0 && errno == ENOSYS) {
        orc_no_vm_rw = 1;
        return orc_pipe_copy((void *)(uintptr_t)addr, src, n);
    }
    if (r < 0) return errno;
    return (size_t)r == n ? 0 : EFAULT;
}

/* Length of the NUL-terminated string at addr (at most max), or -errno if unreadable. */
static int64_t orc_strnlen_safe(uint64_t addr, size_t max) {
    char chunk[256];
    size_t len = 0;
    while (len < max) {
        size_t want = 256 - ((addr + len) & 255);
        if (want > max - len) want = max - len;
        int e = orc_mem_read(addr + len, chunk, want);
        if (e) return -(int64_t)e;
        void *z = memchr(chunk, 0, want);
        if (z) return (int64_t)(len + ((char *)z - chunk));
        len += want;
    }
    return (int64_t)len;
}

/* True if addr lies in an executable (PF_X) PT_LOAD segment of a loaded image: data and
   bss of a library are not code, and jumping there would crash the executor. */
struct orc_code_probe { uint64_t addr; int found; };

static int orc_code_probe_cb(struct dl_phdr_info *info, size_t size, void *data) {
    struct orc_code_probe *p = (struct orc_code_probe *)data;
    (void)size;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t lo = (uint64_t)info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && p->addr >= lo &&
            p->addr - lo < ph->p_memsz) {
            p->found = 1;
            return 1;
        }
    }
    return 0;
}

static int orc_addr_in_image(uint64_t addr) {
    struct orc_code_probe p = { addr, 0 };
    dl_iterate_phdr(orc_code_probe_cb, &p);
    return p.found;
}

typedef orc_cwfr (*orc_wrapper_fn)(const char *, size_t);

static void orc_call_wrapper(uint64_t fn, const char *data, size_t size, orc_cwfr *out) {
    *out = ((orc_wrapper_fn)(uintptr_t)fn)(data, size);
}

static int orc_cwfr_is_oob(const orc_cwfr *r) { return r->Size == 0 && r->Data.ValuePtr != NULL; }

static const char *orc_cwfr_data(const orc_cwfr *r) {
    return r->Size > 8 || orc_cwfr_is_oob(r) ? r->Data.ValuePtr : r->Data.Value;
}

static void orc_cwfr_dispose(orc_cwfr *r) {
    if (r->Size > 8 || orc_cwfr_is_oob(r)) free(r->Data.ValuePtr);
    r->Size = 0;
    r->Data.ValuePtr = NULL;
}

static int64_t orc_run_as_main(uint64_t fn, int argc, char **argv) {
    return (int64_t)((int (*)(int, char **))(uintptr_t)fn)(argc, argv);
}
static int32_t orc_run_as_void_function(uint64_t fn) {
    return ((int32_t (*)(void))(uintptr_t)fn)();
}
static int32_t orc_run_as_int_function(uint64_t fn, int32_t arg) {
    return ((int32_t (*)(int32_t))(uintptr_t)fn)(arg);
}
static void orc_run_void_void(uint64_t fn) { ((void (*)(void))(uintptr_t)fn)(); }

/* ---- JIT dispatch ------------------------------------------------------------------ */

static int orc_py_dispatch(void *ctx, uint64_t tag, const char *data, size_t size,
                           orc_cwfr *out);

/* The token passed back as ctx (bootstrap symbol __llvm_orc_SimpleRemoteEPC_dispatch_ctx). */
static char orc_dispatch_ctx_token[16];

static orc_cwfr orc_oob(const char *msg) {
    orc_cwfr r;
    size_t n = strlen(msg) + 1;
    r.Data.ValuePtr = (char *)malloc(n);
    if (r.Data.ValuePtr) memcpy(r.Data.ValuePtr, msg, n);
    r.Size = 0;
    return r;
}

/* CWrapperFunctionResult __llvm_orc_SimpleRemoteEPC_dispatch_fn(ctx, tag, data, size) */
__attribute__((visibility("default")))
orc_cwfr orc_dispatch_fn(void *ctx, const void *tag, const char *data, size_t size) {
    orc_cwfr r;
    r.Size = 0;
    r.Data.ValuePtr = NULL;
    if (!orc_py_dispatch(ctx, (uint64_t)(uintptr_t)tag, data, size, &r)) {
        orc_cwfr_dispose(&r);
        return orc_oob("jit_dispatch not available (EPC server shut down)");
    }
    return r;
}

static uint64_t orc_dispatch_fn_addr(void) { return (uint64_t)(uintptr_t)&orc_dispatch_fn; }
static uint64_t orc_dispatch_ctx_addr(void) { return (uint64_t)(uintptr_t)orc_dispatch_ctx_token; }

/* Distinct, stable executor addresses for the executor's own bootstrap functions and
   instances: one byte each in a static array no JIT allocation can overlap. */
#define ORC_TAG_COUNT 256
static char orc_tags[ORC_TAG_COUNT];
static uint64_t orc_tag_base(void) { return (uint64_t)(uintptr_t)orc_tags; }
static size_t orc_tag_count(void) { return ORC_TAG_COUNT; }

/* ---- exit status for the warm launcher ------------------------------------------------- */

static int orc_status_fd = -1;
static pid_t orc_status_pid;

static void orc_send_exit_status(int status, void *arg) {
    (void)arg;
    if (orc_status_fd < 0 || getpid() != orc_status_pid) return;  /* not in a forked child */
    /* Flush C stdio first: if the reader of stdout is gone, SIGPIPE ends the process here
       and the status comes from the fork server instead (killed by SIGPIPE), as it would. */
    fflush(NULL);
    unsigned char le[4] = { (unsigned char)status, 0, 0, 0 };  /* what wait() would see */
    send(orc_status_fd, le, sizeof le, MSG_NOSIGNAL);
    close(orc_status_fd);
    orc_status_fd = -1;
}

/* Send the process's exit status (4 bytes, little-endian) on ``fd`` from an ``on_exit``
   handler: registered before the JIT'd program's, it runs after those, when the status is
   known; only ``_dl_fini`` and the last stdio flush follow. 0, or an errno value. */
static int orc_report_exit_status(int fd) {
    orc_status_fd = fd;
    orc_status_pid = getpid();
    return on_exit(orc_send_exit_status, NULL) == 0 ? 0 : ENOMEM;
}

/* ---- EH frames ---------------------------------------------------------------------- */

static void (*p_register_frame)(void *);
static void (*p_deregister_frame)(void *);
static pthread_once_t eh_once = PTHREAD_ONCE_INIT;

static void eh_init(void) {
    void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!h) return;
    p_register_frame = (void (*)(void *))dlsym(h, "__register_frame");
    p_deregister_frame = (void (*)(void *))dlsym(h, "__deregister_frame");
}

/* Load libgcc_s and look up the two entry points now (once per process): ~0.2 ms that
   would otherwise fall on a session's first initialize. 0 if they are available. */
static int orc_eh_frame_preload(void) {
    pthread_once(&eh_once, eh_init);
    return p_register_frame && p_deregister_frame ? 0 : -1;
}

static int orc_register_eh_frame(uint64_t addr) {
    pthread_once(&eh_once, eh_init);
    if (!p_register_frame) return -1;
    p_register_frame((void *)(uintptr_t)addr);
    return 0;
}

static int orc_deregister_eh_frame(uint64_t addr) {
    pthread_once(&eh_once, eh_init);
    if (!p_deregister_frame) return -1;
    p_deregister_frame((void *)(uintptr_t)addr);
    return 0;
}

/* ---- GDB JIT interface (gdb/jit.h) ---------------------------------------------------- */

typedef enum { JIT_NOACTION = 0, JIT_REGISTER_FN, JIT_UNREGISTER_FN } jit_actions_t;

struct jit_code_entry {
    struct jit_code_entry *next_entry;
    struct jit_code_entry *prev_entry;
    const char *symfile_addr;
    uint64_t symfile_size;
};

struct jit_descriptor {
    uint32_t version;
    uint32_t action_flag;
    struct jit_code_entry *relevant_entry;
    struct jit_code_entry *first_entry;
};

__attribute__((visibility("default"), noinline, used))
void __jit_debug_register_code(void) { __asm__ volatile("" ::: "memory"); }

__attribute__((visibility("default"), used))
struct jit_descriptor __jit_debug_descriptor = { 1, 0, NULL, NULL };

static pthread_mutex_t gdb_lock = PTHREAD_MUTEX_INITIALIZER;

static int orc_gdb_register(uint64_t addr, uint64_t size, int notify) {
    struct jit_code_entry *e = (struct jit_code_entry *)calloc(1, sizeof *e);
    if (!e) return ENOMEM;
    e->symfile_addr = (const char *)(uintptr_t)addr;
    e->symfile_size = size;
    pthread_mutex_lock(&gdb_lock);
    e->next_entry = __jit_debug_descriptor.first_entry;
    if (e->next_entry) e->next_entry->prev_entry = e;
    __jit_debug_descriptor.first_entry = e;
    __jit_debug_descriptor.relevant_entry = e;
    __jit_debug_descriptor.action_flag = JIT_REGISTER_FN;
    if (notify) __jit_debug_register_code();
    pthread_mutex_unlock(&gdb_lock);
    return 0;
}

static int orc_gdb_deregister(uint64_t addr) {
    pthread_mutex_lock(&gdb_lock);
    struct jit_code_entry *e = __jit_debug_descriptor.first_entry;
    while (e && (uint64_t)(uintptr_t)e->symfile_addr != addr) e = e->next_entry;
    if (!e) { pthread_mutex_unlock(&gdb_lock); return ENOENT; }
    if (e->prev_entry) e->prev_entry->next_entry = e->next_entry;
    else __jit_debug_descriptor.first_entry = e->next_entry;
    if (e->next_entry) e->next_entry->prev_entry = e->prev_entry;
    __jit_debug_descriptor.relevant_entry = e;
    __jit_debug_descriptor.action_flag = JIT_UNREGISTER_FN;
    __jit_debug_register_code();
    pthread_mutex_unlock(&gdb_lock);
    free(e);
    return 0;
}

static uint64_t orc_gdb_last_entry(uint64_t *size) {
    struct jit_code_entry *e = __jit_debug_descriptor.relevant_entry;
    *size = e ? e->symfile_size : 0;
    return e ? (uint64_t)(uintptr_t)e->symfile_addr : 0;
}

static uint64_t orc_gdb_descriptor_addr(void) {
    return (uint64_t)(uintptr_t)&__jit_debug_descriptor;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "orc_executor.memmap._native",
    SOURCE,
    libraries=["dl", "pthread", "rt"],
    extra_compile_args=["-O2", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
