/*
 * faultfs: an LD_PRELOAD shim that injects disk faults into a running raftd,
 * for end-to-end tests only. It is never built into or shipped with raftd.
 *
 * Build:
 *   cc -shared -fPIC -O2 -Wall -Wextra -o libfaultfs.so faultfs.c -ldl
 * Use:
 *   LD_PRELOAD=/path/libfaultfs.so RAFTD_FAULTFS_CTL=/ctl RAFTD_FAULTFS_ROOT=/data raftd ...
 * Self-test: selftest.sh next to this file.
 *
 * Environment (read once, at the first intercepted call):
 *   RAFTD_FAULTFS_CTL   control directory. Unset or empty: the shim does nothing,
 *                       every call goes straight to libc.
 *   RAFTD_FAULTFS_ROOT  path prefix, e.g. the node's data dir. A fault applies only
 *                       to an fd whose path (readlink /proc/self/fd/N) is the prefix
 *                       or lies under it (component boundary: /a/b matches /a/b and
 *                       /a/b/x, not /a/bc). Unset or empty: no fd matches. It is
 *                       canonicalised with realpath() if it exists; trailing slashes
 *                       are ignored. fds 0, 1 and 2 never match, nor do sockets,
 *                       pipes or anything else whose link is not a path under it.
 *
 * Control files in the ctl dir, looked up afresh at every intercepted call on a
 * matching fd (no caching), so a test can switch faults on and off at any time:
 *   enospc          exists: write, pwrite, pwrite64, writev, pwritev, pwritev64,
 *                   pwritev2, pwritev64v2, fallocate, fallocate64 fail with -1/ENOSPC;
 *                   posix_fallocate(64) returns ENOSPC. Nothing is written.
 *   fsync_eio       exists: fsync, fdatasync, sync_file_range fail with -1/EIO;
 *                   the real call is not made.
 *   fsync_delay_ms  decimal milliseconds: fsync and fdatasync sleep that long, then
 *                   call the real function (fsync_eio, if present, wins: no sleep).
 *   write_delay_ms  decimal milliseconds: the write family above sleeps that long,
 *                   then calls the real function (enospc, if present, wins: no sleep).
 *   count           exists: after each fsync/fdatasync on a matching fd, the shim
 *                   stores the process's count of such calls, in decimal with a
 *                   trailing newline, in <ctl>/fsyncs. The file is written as
 *                   <ctl>/.fsyncs.tmp.<pid> and renamed over fsyncs, so a reader
 *                   never sees it empty or half written.
 * The counter counts every fsync/fdatasync call on a matching fd since the process
 * started, whether `count` existed at the time or not, and whatever the outcome
 * (injected EIO included); it is bumped when the call returns. Directory fsyncs
 * count too if the directory is under the root. sync_file_range does not count.
 * Use one ctl dir per process: two processes would overwrite each other's fsyncs.
 *
 * Only calls that go through the dynamic symbol table are seen: libc-internal writes
 * (stdio's fwrite/fflush, for instance) and copy_file_range, sendfile, splice,
 * mmap'd writes are not intercepted. Rust std uses write, writev, pwrite64, pwritev,
 * fsync and fdatasync for files, all of which are.
 */

#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h> /* rename */
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#if defined(_FILE_OFFSET_BITS) && _FILE_OFFSET_BITS == 64
#error "build faultfs.c without -D_FILE_OFFSET_BITS=64: it defines pwrite and pwrite64 separately"
#endif

#define EXPORT __attribute__((visibility("default")))

/* ---- real functions --------------------------------------------------------- */

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev64_fn)(int, const struct iovec *, int, off64_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef ssize_t (*pwritev64v2_fn)(int, const struct iovec *, int, off64_t, int);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*fallocate64_fn)(int, int, off64_t, off64_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);
typedef int (*posix_fallocate64_fn)(int, off64_t, off64_t);
typedef int (*fsync_fn)(int);
typedef int (*sync_file_range_fn)(int, off64_t, off64_t, unsigned int);

static struct {
    write_fn write;
    pwrite_fn pwrite;
    pwrite64_fn pwrite64;
    writev_fn writev;
    pwritev_fn pwritev;
    pwritev64_fn pwritev64;
    pwritev2_fn pwritev2;
    pwritev64v2_fn pwritev64v2;
    fallocate_fn fallocate;
    fallocate64_fn fallocate64;
    posix_fallocate_fn posix_fallocate;
    posix_fallocate64_fn posix_fallocate64;
    fsync_fn fsync;
    fsync_fn fdatasync;
    sync_file_range_fn sync_file_range;
} real;

/* ---- configuration, fixed after init ----------------------------------------- */

static int enabled;          /* ctl and root both set */
static char root[PATH_MAX];  /* no trailing slash unless it is "/" */
static size_t root_len;
static char p_enospc[PATH_MAX];
static char p_fsync_eio[PATH_MAX];
static char p_fsync_delay[PATH_MAX];
static char p_write_delay[PATH_MAX];
static char p_count[PATH_MAX];
static char p_fsyncs[PATH_MAX];
static char p_fsyncs_tmp[PATH_MAX]; /* prefix; the pid is appended per write */
static size_t p_fsyncs_tmp_len;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Set while this thread runs the shim's own logic (or init): any intercepted call
 * made meanwhile goes straight to the real function. */
static __thread int busy __attribute__((tls_model("initial-exec")));

static unsigned long long fsync_count; /* __atomic builtins only */
static pthread_mutex_t fsyncs_lock = PTHREAD_MUTEX_INITIALIZER;

/* dst = a + b; 0 if it does not fit. */
static int join(char *dst, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > PATH_MAX)
        return 0;
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb + 1);
    return 1;
}

static void init(void)
{
    busy++;
    /* memcpy, not a cast: ISO C has no object-to-function pointer conversion. */
#define RESOLVE_AS(field, sym)                    \
    do {                                          \
        void *p_ = dlsym(RTLD_NEXT, sym);         \
        memcpy(&real.field, &p_, sizeof p_);      \
    } while (0)
#define RESOLVE(name) RESOLVE_AS(name, #name)
    RESOLVE(write);
    RESOLVE(pwrite);
    RESOLVE(pwrite64);
    RESOLVE(writev);
    RESOLVE(pwritev);
    RESOLVE(pwritev64);
    RESOLVE(pwritev2);
    RESOLVE(pwritev64v2);
    RESOLVE(fallocate);
    RESOLVE(fallocate64);
    RESOLVE(posix_fallocate);
    RESOLVE(posix_fallocate64);
    RESOLVE(fsync);
    RESOLVE(fdatasync);
    RESOLVE(sync_file_range);
#undef RESOLVE
#undef RESOLVE_AS

    const char *ctl = getenv("RAFTD_FAULTFS_CTL");
    const char *r = getenv("RAFTD_FAULTFS_ROOT");
    if (ctl && *ctl && r && *r) {
        char canon[PATH_MAX];
        if (!realpath(r, canon)) {
            if (strlen(r) >= sizeof canon)
                goto out;
            strcpy(canon, r);
        }
        size_t n = strlen(canon);
        while (n > 1 && canon[n - 1] == '/')
            canon[--n] = '\0';
        memcpy(root, canon, n + 1);
        root_len = n;

        if (join(p_enospc, ctl, "/enospc") && join(p_fsync_eio, ctl, "/fsync_eio") &&
            join(p_fsync_delay, ctl, "/fsync_delay_ms") &&
            join(p_write_delay, ctl, "/write_delay_ms") && join(p_count, ctl, "/count") &&
            join(p_fsyncs, ctl, "/fsyncs") &&
            strlen(ctl) + sizeof "/.fsyncs.tmp." + 24 <= PATH_MAX) {
            join(p_fsyncs_tmp, ctl, "/.fsyncs.tmp.");
            p_fsyncs_tmp_len = strlen(p_fsyncs_tmp);
            enabled = 1;
        }
    }
out:
    busy--;
}

/* True if the shim's logic should run for this call. Initialises on first use. */
static int active(void)
{
    if (busy)
        return 0;
    pthread_once(&init_once, init);
    return enabled;
}

/* ---- helpers (called with busy set) ------------------------------------------ */

/* Writes the decimal form of v at p (no terminator); returns its length. */
static size_t fmt_u64(char *p, unsigned long long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static int fd_matches(int fd)
{
    if (fd <= 2)
        return 0;
    char link[32] = "/proc/self/fd/";
    size_t n = strlen(link);
    link[n + fmt_u64(link + n, (unsigned long long)fd)] = '\0';

    char path[PATH_MAX];
    ssize_t len = readlink(link, path, sizeof path);
    if (len <= 0 || (size_t)len < root_len)
        return 0;
    if (memcmp(path, root, root_len) != 0)
        return 0;
    if ((size_t)len == root_len)
        return 1;
    return root_len == 1 || path[root_len] == '/';
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Milliseconds in the file, 0 if it is absent, empty or not a number. */
static unsigned long long read_ms(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = buf;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    unsigned long long ms = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (ms > 1000ULL * 1000 * 1000 * 1000)
            break; /* absurd; stop growing */
        ms = ms * 10 + (unsigned long long)(*p - '0');
    }
    return ms;
}

static void sleep_ms(unsigned long long ms)
{
    if (ms == 0)
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static ssize_t raw_write(int fd, const void *buf, size_t len)
{
    if (real.write)
        return real.write(fd, buf, len);
    return syscall(SYS_write, fd, buf, len);
}

/* Publishes the current count to <ctl>/fsyncs if <ctl>/count exists. */
static void publish_count(void)
{
    if (!exists(p_count))
        return;
    pthread_mutex_lock(&fsyncs_lock);
    /* Load under the lock: the last writer always stores the newest value. */
    unsigned long long v = __atomic_load_n(&fsync_count, __ATOMIC_SEQ_CST);
    char tmp[PATH_MAX];
    memcpy(tmp, p_fsyncs_tmp, p_fsyncs_tmp_len);
    tmp[p_fsyncs_tmp_len + fmt_u64(tmp + p_fsyncs_tmp_len, (unsigned long long)getpid())] =
        '\0';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        char text[24];
        size_t n = fmt_u64(text, v);
        text[n++] = '\n';
        ssize_t w = raw_write(fd, text, n);
        close(fd);
        if (w == (ssize_t)n)
            rename(tmp, p_fsyncs);
        else
            unlink(tmp);
    }
    pthread_mutex_unlock(&fsyncs_lock);
}

static void count_fsync(void)
{
    __atomic_add_fetch(&fsync_count, 1, __ATOMIC_SEQ_CST);
    publish_count();
}

/* ---- the write family ---------------------------------------------------------- */

/* Returns an errno value the call must fail with, or 0 to go ahead (after any
 * configured delay). Preserves errno. */
static int write_fault(int fd)
{
    if (!active())
        return 0;
    int saved = errno;
    int err = 0;
    busy++;
    if (fd_matches(fd)) {
        if (exists(p_enospc))
            err = ENOSPC;
        else
            sleep_ms(read_ms(p_write_delay));
    }
    busy--;
    errno = saved;
    return err;
}

/* Like write_fault but without the delay, for fallocate. */
static int alloc_fault(int fd)
{
    if (!active())
        return 0;
    int saved = errno;
    int err = 0;
    busy++;
    if (fd_matches(fd) && exists(p_enospc))
        err = ENOSPC;
    busy--;
    errno = saved;
    return err;
}

#define WRITE_WRAPPER(call)       \
    do {                          \
        int err_ = write_fault(fd); \
        if (err_) {               \
            errno = err_;         \
            return -1;            \
        }                         \
        return call;              \
    } while (0)

EXPORT ssize_t write(int fd, const void *buf, size_t count)
{
    WRITE_WRAPPER(raw_write(fd, buf, count));
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
    WRITE_WRAPPER(real.pwrite ? real.pwrite(fd, buf, count, off)
                              : syscall(SYS_pwrite64, fd, buf, count, off));
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t off)
{
    WRITE_WRAPPER(real.pwrite64 ? real.pwrite64(fd, buf, count, off)
                                : syscall(SYS_pwrite64, fd, buf, count, off));
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    WRITE_WRAPPER(real.writev ? real.writev(fd, iov, iovcnt)
                              : syscall(SYS_writev, fd, iov, iovcnt));
}

static ssize_t no_real(void)
{
    errno = ENOSYS;
    return -1;
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    WRITE_WRAPPER(real.pwritev ? real.pwritev(fd, iov, iovcnt, off) : no_real());
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t off)
{
    WRITE_WRAPPER(real.pwritev64 ? real.pwritev64(fd, iov, iovcnt, off) : no_real());
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
    WRITE_WRAPPER(real.pwritev2 ? real.pwritev2(fd, iov, iovcnt, off, flags) : no_real());
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off64_t off, int flags)
{
    WRITE_WRAPPER(real.pwritev64v2 ? real.pwritev64v2(fd, iov, iovcnt, off, flags)
                                   : no_real());
}

EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
    int err = alloc_fault(fd);
    if (err) {
        errno = err;
        return -1;
    }
    if (real.fallocate)
        return real.fallocate(fd, mode, off, len);
    return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

EXPORT int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    int err = alloc_fault(fd);
    if (err) {
        errno = err;
        return -1;
    }
    if (real.fallocate64)
        return real.fallocate64(fd, mode, off, len);
    return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

/* posix_fallocate reports errors in its return value and leaves errno alone. */
EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
    int err = alloc_fault(fd);
    if (err)
        return err;
    return real.posix_fallocate ? real.posix_fallocate(fd, off, len) : ENOSYS;
}

EXPORT int posix_fallocate64(int fd, off64_t off, off64_t len)
{
    int err = alloc_fault(fd);
    if (err)
        return err;
    return real.posix_fallocate64 ? real.posix_fallocate64(fd, off, len) : ENOSYS;
}

/* ---- the sync family ----------------------------------------------------------- */

/* datasync: 0 for fsync, 1 for fdatasync. */
static int real_sync(int fd, int datasync)
{
    fsync_fn fn = datasync ? real.fdatasync : real.fsync;
    if (fn)
        return fn(fd);
    return (int)syscall(datasync ? SYS_fdatasync : SYS_fsync, fd);
}

static int sync_common(int fd, int datasync)
{
    if (!active())
        return real_sync(fd, datasync);
    int saved = errno;
    busy++;
    int matched = fd_matches(fd);
    if (matched && exists(p_fsync_eio)) {
        count_fsync();
        busy--;
        errno = EIO;
        return -1;
    }
    if (matched)
        sleep_ms(read_ms(p_fsync_delay));
    busy--;
    errno = saved;

    int r = real_sync(fd, datasync);
    if (matched) {
        int e = errno;
        busy++;
        count_fsync();
        busy--;
        errno = e;
    }
    return r;
}

EXPORT int fsync(int fd)
{
    return sync_common(fd, 0);
}

EXPORT int fdatasync(int fd)
{
    return sync_common(fd, 1);
}

EXPORT int sync_file_range(int fd, off64_t off, off64_t nbytes, unsigned int flags)
{
    if (active()) {
        int saved = errno;
        busy++;
        int fail = fd_matches(fd) && exists(p_fsync_eio);
        busy--;
        errno = saved;
        if (fail) {
            errno = EIO;
            return -1;
        }
    }
    if (real.sync_file_range)
        return real.sync_file_range(fd, off, nbytes, flags);
    return (int)syscall(SYS_sync_file_range, fd, off, nbytes, flags);
}
