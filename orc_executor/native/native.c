#define _GNU_SOURCE
#include <dlfcn.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* 0 if every byte of [addr, addr + n) can be read, else an errno value: one byte of each
   page is read through the kernel, which fails instead of faulting (no copy of the range). */
static int orc_mem_readable(uint64_t addr, size_t n) {
    if (n == 0) return 0;
    uint64_t last = addr + (n - 1);
    if (last < addr) return EFAULT; /* wraps around the address space */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    char byte;
    for (uint64_t at = addr;;) {
        int e = orc_mem_read(at, &byte, 1);
        if (e) return e;
        uint64_t next = (at & ~(page - 1)) + page;
        if (next == 0 || next > last) return 0;
        at = next;
    }
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

static void *orc_fault_suspend(void);  /* fault.c */
static void orc_fault_resume(void *jb);

/* CWrapperFunctionResult __llvm_orc_SimpleRemoteEPC_dispatch_fn(ctx, tag, data, size) */
__attribute__((visibility("default")))
orc_cwfr orc_dispatch_fn(void *ctx, const void *tag, const char *data, size_t size) {
    orc_cwfr r;
    r.Size = 0;
    r.Data.ValuePtr = NULL;
    void *armed = orc_fault_suspend();  /* the executor's code: faults are never recovered */
    int ok = orc_py_dispatch(ctx, (uint64_t)(uintptr_t)tag, data, size, &r);
    orc_fault_resume(armed);
    if (!ok) {
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
static volatile int orc_exiting;  /* set as the exit status is sent (orc_watch_launcher) */
static int orc_watch_epoll = -1;   /* (orc_watch_prepare) */

/* Stop watching `fd` (the launcher's hang-up once it has the status wakes nobody). */
static void orc_watch_forget(int fd) {
    if (orc_watch_epoll >= 0) epoll_ctl(orc_watch_epoll, EPOLL_CTL_DEL, fd, NULL);
}
static pid_t orc_status_pid;
/* Bytes of the exit status sent to a warm launcher: EXIT_STATUS_SIZE of
   orc_executor/serve/handover.py (tests/unit/serve/test_handover.py checks they agree). */
#define ORC_EXIT_STATUS_SIZE 4

static void orc_send_exit_status(int status, void *arg) {
    (void)arg;
    if (orc_status_fd < 0 || getpid() != orc_status_pid) return;  /* not in a forked child */
    orc_exiting = 1;  /* the launcher may exit now: its watcher must not kill this process */
    orc_watch_forget(orc_status_fd);
    /* Flush C stdio first: if the reader of stdout is gone, SIGPIPE ends the process here
       and the status comes from the fork server instead (killed by SIGPIPE), as it would. */
    fflush(NULL);
    unsigned char le[ORC_EXIT_STATUS_SIZE] = { (unsigned char)status, 0, 0, 0 };  /* as wait() */
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

/* ---- symbol lookup ------------------------------------------------------------------- */

/* dlsym(handle, name) of each of `count` names packed back to back in `names`, each ended
   by a NUL, into `out` (0 where dlsym finds nothing): one call for a whole lookup. */
static void orc_dlsym_all(void *handle, const char *names, size_t count, uint64_t *out) {
    for (size_t i = 0; i < count; i++) {
        out[i] = (uint64_t)(uintptr_t)dlsym(handle, names);
        names += strlen(names) + 1;
    }
}

/* ---- copy-on-write pages taken in advance ------------------------------------------- */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define ORC_PM_PRESENT (1ULL << 63)
#define ORC_PM_FILE (1ULL << 61)      /* a file page, or shared anonymous memory */
#define ORC_PM_EXCLUSIVE (1ULL << 56) /* mapped by this process alone */

/* Write-fault [lo, hi) where pages are anonymous (private copies or zero pages), present
   and mapped by other processes too (the process this one was forked from): pages still
   shared copy-on-write. Returns the bytes advised; -errno if pagemap cannot be read. */
static int64_t orc_take_shared_pages(int pagemap, uint64_t lo, uint64_t hi, uint64_t page) {
    uint64_t entries[512];
    int64_t total = 0;
    uint64_t run = 0; /* start of the current run of pages to take, 0: none */
    for (uint64_t at = lo; at < hi;) {
        size_t n = (size_t)((hi - at) / page);
        if (n > 512) n = 512;
        ssize_t got = pread(pagemap, entries, n * 8, (off_t)(at / page * 8));
        if (got < 8) return got < 0 ? -errno : total; /* (a short read cannot advance) */
        n = (size_t)got / 8;
        for (size_t k = 0; k < n; k++, at += page) {
            uint64_t e = entries[k];
            int take = (e & ORC_PM_PRESENT) && !(e & ORC_PM_FILE) && !(e & ORC_PM_EXCLUSIVE);
            if (take && !run) run = at;
            if (!take && run) {
                if (madvise((void *)(uintptr_t)run, at - run, MADV_POPULATE_WRITE) == 0)
                    total += (int64_t)(at - run);
                run = 0;
            }
        }
    }
    if (run && madvise((void *)(uintptr_t)run, hi - run, MADV_POPULATE_WRITE) == 0)
        total += (int64_t)(hi - run);
    return total;
}

/* Copy now every page of this process's private writable mappings (the heap, anonymous
   memory, libraries' data; not stacks) that is still shared copy-on-write with the process
   it was forked from, so that a session does not take those copy-on-write faults on its
   path (each a page copied, a few microseconds). Pages not present, file pages never
   written, and pages already this process's own are left alone: memory grows by what is
   still shared, nothing more. The bytes copied, or -errno (no /proc, a kernel without
   MADV_POPULATE_WRITE: nothing done). */
static int64_t orc_take_shared_memory(void) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps) return -errno;
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0) {
        int e = errno;
        fclose(maps);
        return -e;
    }
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    char line[512];
    int64_t total = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8], path[256] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255[^\n]", &lo, &hi, perms, path) < 3)
            continue;
        if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p') continue;
        const char *name = path;
        while (*name == ' ') name++;
        if (*name == '[' && strcmp(name, "[heap]") != 0) continue; /* stacks, vvar ... */
        int64_t n = orc_take_shared_pages(pagemap, lo, hi, page);
        if (n < 0) {
            total = n;
            break;
        }
        total += n;
    }
    close(pagemap);
    fclose(maps);
    return total;
}

/* ---- resolve (SimpleExecutorDylibManager, LLVM 22) --------------------------------- */

static uint64_t orc_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void orc_put_le64(uint8_t *p, uint64_t v) {
    v = htole64(v);
    memcpy(p, &v, 8);
}

static int orc_strcmp_p(const void *key, const void *item) {
    return strcmp((const char *)key, *(const char *const *)item);
}

/* The result of resolve for the SPS RemoteSymbolLookupSet `set` of `len` bytes (u64 count,
   then per symbol: u64 length, the name's bytes, u8 required), looked up through `handle`:
   the executor's own names first (`own`: `own_count` NUL-terminated names sorted by
   strcmp, `own_addrs` their addresses, a 0 among them included), else dlsym (which sees a
   name up to its first NUL). Writes SPSExpected<SPSSequence<SPSOptional<SPSExecutorSymbolDef>>>
   to `out` (room for `out_cap` bytes): a found address as (1, address, `flags`[0..1]), a
   missing one as 0 (absent) when required or unnamed, else as (1, 0, `flags`). Returns the
   length written, or -1 when `set` is malformed (counts beyond it, trailing bytes), `out`
   is too small or memory runs out: the caller then takes the generic path, which reports
   the error. */
static int64_t orc_resolve22(void *handle, const uint8_t *set, size_t len,
                             const char *const *own, const uint64_t *own_addrs,
                             size_t own_count, const uint8_t *flags, uint8_t *out,
                             size_t out_cap) {
    if (len < 8 || out_cap < 9) return -1;
    uint64_t count = orc_le64(set);
    size_t pos = 8, o = 0;
    if (count > (len - 8) / 9) return -1; /* each symbol takes at least 9 bytes */
    out[o++] = 1;                          /* Expected: a value */
    orc_put_le64(out + o, count);
    o += 8;
    char small[512];
    char *name = small;
    size_t room = sizeof small;
    int64_t result = -1;
    for (uint64_t i = 0; i < count; i++) {
        if (len - pos < 8) goto done;
        uint64_t n = orc_le64(set + pos);
        pos += 8;
        if (n > len - pos || len - pos - n < 1) goto done;
        const uint8_t *bytes = set + pos;
        pos += n;
        int required = set[pos++] != 0; /* as SPS reads a bool */
        if (n + 1 > room) {
            char *bigger = malloc(n + 1);
            if (!bigger) goto done;
            if (name != small) free(name);
            name = bigger;
            room = n + 1;
        }
        memcpy(name, bytes, n);
        name[n] = 0;
        uint64_t addr = 0;
        int own_name = 0;
        if (n && !memchr(bytes, 0, n)) {
            const char *const *hit = bsearch(name, own, own_count, sizeof *own, orc_strcmp_p);
            if (hit) {
                addr = own_addrs[hit - own];
                own_name = 1;
            }
        }
        if (n && !own_name) addr = (uint64_t)(uintptr_t)dlsym(handle, name);
        if (!addr && (required || n == 0)) {
            if (out_cap - o < 1) goto done;
            out[o++] = 0;
        } else {
            if (out_cap - o < 11) goto done;
            out[o++] = 1;
            orc_put_le64(out + o, addr);
            o += 8;
            out[o++] = flags[0];
            out[o++] = flags[1];
        }
    }
    if (pos == len) result = (int64_t)o;
done:
    if (name != small) free(name);
    return result;
}

/* ---- the process's fds at exit ------------------------------------------------------ */

static pid_t orc_release_pid;                /* the process that asked (orc_release_fds_at_exit) */
static unsigned long long orc_release_adds;  /* objects loaded then (dl_iterate_phdr's count) */

static int orc_adds_of(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}

/* How many times an object was loaded into this process (dlpi_adds: never decreases). */
static unsigned long long orc_objects_loaded(void) {
    unsigned long long adds = 0;
    dl_iterate_phdr(orc_adds_of, &adds);
    return adds;
}

/* An on_exit handler, registered when the first session of this process begins: it runs
   after every exit handler registered since (the JIT'd program's: atexit, __cxa_atexit,
   on_exit) and before those registered earlier, which are the executor's own (the C
   libraries it loaded, such as OpenSSL's cleanup, which takes a millisecond to free its
   tables). If no library was loaded since orc_release_fds_at_exit (a library the program
   opened may have a destructor, in _dl_fini, that still writes), flush C stdio, send the
   exit status to a warm launcher (orc_report_exit_status), and let go of every fd now (0-2
   then point at /dev/null), so that whoever reads the program's output or the session's
   pipes sees EOF here rather than after the executor's own exit handlers and the kernel's
   teardown of this process's memory (which exit(2) does before it closes the fds, and
   which takes milliseconds for a Python process; see orc_idle_teardown). Otherwise the fds
   close as usual, at the very end. */
static int orc_released;  /* orc_release_fds let go of the fds (in orc_release_pid) */

static void orc_release_fds(int status, void *arg) {
    (void)arg;
    if (orc_release_pid == 0 || getpid() != orc_release_pid) return;
    if (orc_objects_loaded() != orc_release_adds) return;
    fflush(NULL);
    orc_send_exit_status(status, NULL);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; fd++) {
        if (null >= 0) dup2(null, fd);
        else close(fd);
    }
    syscall(SYS_close_range, 3U, ~0U, 0U);
    orc_released = 1;
}

/* This module's ELF destructor, in _dl_fini after every exit handler: once the fds were let
   go (orc_release_fds), nothing anyone waits for is left but the process's end, and the
   kernel's teardown of its memory runs at the lowest priority, off the CPU the controller's
   own exit wants. (Not earlier, in orc_release_fds: the executor's own exit handlers would
   then also run at SCHED_IDLE, and on a busy machine a process whose exit a server waits
   for could take seconds to end.) */
__attribute__((destructor)) static void orc_idle_teardown(void) {
    if (!orc_released || getpid() != orc_release_pid) return;
    struct sched_param idle;
    memset(&idle, 0, sizeof idle);
    sched_setscheduler(0, SCHED_IDLE, &idle);
}

static int orc_release_registered;  /* orc_release_fds is in this process's on_exit list
                                       (a forked child inherits the list and this flag) */

/* Have this process close its fds as it exits, after the exit handlers registered from now
   on and before the others (the handler is registered once: by the first call in this
   process or in the process it was forked from), unless a library is loaded from now on
   (see orc_release_fds). Only the calling process, not a child forked afterwards. 0, or
   ENOMEM if the handler cannot be registered (the fds then close at the very end, as in
   any process). */
static int orc_release_fds_at_exit(void) {
    if (!orc_release_registered) {
        if (on_exit(orc_release_fds, NULL) != 0) return ENOMEM;
        orc_release_registered = 1;
    }
    orc_release_adds = orc_objects_loaded();
    orc_release_pid = getpid();
    return 0;
}

/* C exit(status) from the thread that calls it, with errno 0 for the exit handlers (as in
   a C program's main thread returning from main). */
static void orc_exit(int status) {
    errno = 0;
    exit(status);
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

/* Load libgcc_s and look up the two entry points now (once per process), so that the
   work does not fall on a session's first initialize. 0 if they are available. */
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

/* ---- the launching process's state (orc_executor.launch.state) ---------------------------- */

#include <poll.h>
#include <signal.h>
extern char **environ;

/* Make `block` (entries NUL-terminated, as /proc/PID/environ) the C environ, entry for entry
   in order; the old array and strings are left alone (they may still be referenced). 0, or
   an errno value. */
static int orc_set_environ(const char *block, size_t size) {
    size_t n = 0, k = 0;
    char *copy = (char *)malloc(size + 1);
    char **env;
    if (!copy) return ENOMEM;
    memcpy(copy, block, size);
    copy[size] = 0;
    for (size_t i = 0; i < size; i++) n += copy[i] == 0;
    if (size && copy[size - 1]) n++;  /* a last entry without its NUL */
    env = (char **)malloc((n + 1) * sizeof *env);
    if (!env) {
        free(copy);
        return ENOMEM;
    }
    for (size_t i = 0; i < size; i += strlen(copy + i) + 1) env[k++] = copy + i;
    env[k] = NULL;
    environ = env;
    return 0;
}

/* Signals that report a fault of the thread that caused it: never blocked by the executor's
   own threads, and an executor handler for one is kept. */
static int orc_synchronous(int sig) {
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP ||
           sig == SIGSYS || sig == SIGABRT;
}

static sigset_t orc_program_mask, orc_executor_mask;
static pthread_mutex_t orc_mask_lock = PTHREAD_MUTEX_INITIALIZER;
static int orc_program_active;
static int orc_at_rest = 1;  /* orc_program_rest's last state (the event loop's thread only) */

/* Give the process the signal state a program gets from exec: SIG_IGN for the signals in
   `ignored` (bit N-1 = signal N), SIG_DFL for every other one (an executor handler of a
   synchronous signal stays), and `program_mask` as the program's signal mask. Signals sent
   to the process must reach the thread that runs the program's code, as they reach a C
   program's only thread (a handler interrupts its pause()): a thread takes the program's
   mask while it runs the program's code (orc_program_enter/leave), the executor's own
   threads block every asynchronous signal meanwhile, and the calling thread (the event
   loop's) has the program's mask while no program code runs (orc_program_rest), so that a
   signal then still has its effect. 0, or an errno value. */
static int orc_set_signals(uint64_t ignored, uint64_t program_mask) {
    sigset_t prog, own;
    sigemptyset(&prog);
    sigemptyset(&own);
    for (int sig = 1; sig <= 64; sig++) {
        struct sigaction sa, old;
        if (sig == SIGKILL || sig == SIGSTOP || (sig > 31 && sig < SIGRTMIN)) continue;
        if (program_mask >> (sig - 1) & 1) sigaddset(&prog, sig);
        if (!orc_synchronous(sig)) sigaddset(&own, sig);
        if (sigaction(sig, NULL, &old) != 0) continue;
        if (orc_synchronous(sig) && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
            continue;
        memset(&sa, 0, sizeof sa);
        sigemptyset(&sa.sa_mask);
        sa.sa_handler = (ignored >> (sig - 1) & 1) ? SIG_IGN : SIG_DFL;
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == sa.sa_handler) continue;
        if (sigaction(sig, &sa, NULL) != 0) return errno;
    }
    pthread_mutex_lock(&orc_mask_lock);
    orc_program_mask = prog;
    orc_executor_mask = own;
    pthread_mutex_unlock(&orc_mask_lock);
    __atomic_store_n(&orc_program_active, 1, __ATOMIC_RELEASE);
    orc_at_rest = 1;
    return pthread_sigmask(SIG_SETMASK, &prog, NULL);
}

/* A thread about to run the program's code: the program's mask. */
static void orc_program_enter(void) {
    sigset_t prog;
    if (!__atomic_load_n(&orc_program_active, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&orc_mask_lock);
    prog = orc_program_mask;
    pthread_mutex_unlock(&orc_mask_lock);
    pthread_sigmask(SIG_SETMASK, &prog, NULL);
}

/* A thread back from the program's code: the executor's mask; the mask the program left
   is the program's from now on (its sigprocmask calls last, as in a C program). */
static void orc_program_leave(void) {
    sigset_t now;
    if (!__atomic_load_n(&orc_program_active, __ATOMIC_ACQUIRE)) return;
    pthread_sigmask(SIG_SETMASK, &orc_executor_mask, &now);
    pthread_mutex_lock(&orc_mask_lock);
    orc_program_mask = now;
    pthread_mutex_unlock(&orc_mask_lock);
}

/* An executor thread that never runs the program's code: the executor's mask. */
static void orc_executor_thread(void) {
    if (__atomic_load_n(&orc_program_active, __ATOMIC_ACQUIRE))
        pthread_sigmask(SIG_SETMASK, &orc_executor_mask, NULL);
}

/* The event loop's thread: the program's mask while no program code runs (`rest`), else the
   executor's. */
static void orc_program_rest(int rest) {
    sigset_t prog;
    if (!__atomic_load_n(&orc_program_active, __ATOMIC_ACQUIRE) || rest == orc_at_rest) return;
    orc_at_rest = rest;
    if (!rest) {
        pthread_sigmask(SIG_SETMASK, &orc_executor_mask, NULL);
        return;
    }
    pthread_mutex_lock(&orc_mask_lock);
    prog = orc_program_mask;
    pthread_mutex_unlock(&orc_mask_lock);
    pthread_sigmask(SIG_SETMASK, &prog, NULL);
}


static void *orc_watch(void *arg) {
    int fd = (int)(intptr_t)arg;
    if (fd >= 0) {
        struct pollfd p;
        p.fd = fd;
        p.events = POLLRDHUP;
        p.revents = 0;
        while (poll(&p, 1, -1) < 0 && errno == EINTR) {}
    } else {  /* prepared in advance: the fd is added to the epoll set, which wakes nobody */
        struct epoll_event ev;
        while (epoll_wait(orc_watch_epoll, &ev, 1, -1) < 1) {}
    }
    if (!orc_exiting) kill(getpid(), SIGKILL);  /* the launcher is gone: so is its program */
    /* The process is exiting (the launcher left once it had the status): wait for the end
       here rather than return (the thread's exit and stack release would delay the
       process's exit_group, the controller waiting for EOF). */
    for (;;) pause();
    return NULL;
}

static int orc_watch_start(int fd) {
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  /* the thread blocks every signal */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    rc = pthread_create(&t, &attr, orc_watch, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Start the thread of orc_watch_launcher now, before the fd is known, so that a thread's
   start (or a wake-up of one) is not on the session's critical path. 0, or an errno value. */
static int orc_watch_prepare(void) {
    int rc;
    if (orc_watch_epoll >= 0) return 0;
    orc_watch_epoll = epoll_create1(EPOLL_CLOEXEC);
    if (orc_watch_epoll < 0) return errno;
    rc = orc_watch_start(-1);
    if (rc) {
        close(orc_watch_epoll);
        orc_watch_epoll = -1;
    }
    return rc;
}

/* End this process (SIGKILL, as the launcher's own process would have been) when the peer of
   the stream socket `fd` (the launcher) closes it, unless the process is already exiting.
   The watching thread blocks every signal. 0, or an errno value. */
static int orc_watch_launcher(int fd) {
    if (orc_watch_epoll >= 0) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLRDHUP | EPOLLHUP;
        ev.data.fd = fd;
        return epoll_ctl(orc_watch_epoll, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
    }
    return orc_watch_start(fd);
}

/* The calling thread's I/O priority (ioprio_get; -1 on error), setting it (0 or an errno
   value), and the process's personality (personality(2); -1 on error). */
#include <sys/personality.h>
#include <sys/syscall.h>
static int orc_get_ioprio(void) { return (int)syscall(SYS_ioprio_get, 1, 0); }
static int orc_set_ioprio(int value) {
    return syscall(SYS_ioprio_set, 1, 0, value) == 0 ? 0 : errno;
}
static int orc_personality(void) { return personality(0xffffffff); }

/* The locale a C program starts in ("C"; the interpreter set LC_CTYPE from the
   environment at its start-up). */
#include <locale.h>
static void orc_c_locale(void) { setlocale(LC_ALL, "C"); }

/* Flush C stdout and stderr, skipping one whose lock another thread holds (JIT'd code blocked
   in the middle of its own I/O). */
static void orc_flush_stdio(void) {
    FILE *streams[2] = {stdout, stderr};
    for (int i = 0; i < 2; i++) {
        if (ftrylockfile(streams[i]) == 0) {
            fflush_unlocked(streams[i]);
            funlockfile(streams[i]);
        }
    }
}
