#!/usr/bin/env bash
# Self-test for the faultfs LD_PRELOAD shim (tests only; see faultfs.c).
# Builds the shim with the project's command, builds a small C test program, and runs it
# under LD_PRELOAD in several configurations. Prints "faultfs selftest: ok" on success;
# exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cc=${CC:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
work=$(cd "$work" && pwd -P) # canonical, like a real data dir

fail() {
    echo "faultfs selftest: FAIL: $*" >&2
    exit 1
}

# 1. The shim, built exactly as the project builds it; any warning is a failure.
(cd "$work" && "$cc" -shared -fPIC -O2 -Wall -Wextra -o libfaultfs.so "$here/faultfs.c" -ldl) \
    2>"$work/cc.log" || { cat "$work/cc.log" >&2; fail "shim does not compile"; }
if [ -s "$work/cc.log" ]; then
    cat "$work/cc.log" >&2
    fail "shim compiles with warnings"
fi
exports=$(nm -D --defined-only "$work/libfaultfs.so")
for sym in write pwrite pwrite64 writev pwritev fallocate posix_fallocate fsync fdatasync \
    sync_file_range; do
    grep -qE " T $sym\$" <<<"$exports" || fail "shim does not export $sym"
done

# 2. The test program.
cat >"$work/t.c" <<'EOF'
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const char *mode, *root, *ctl, *outside, *sibling;
static long expected; /* fsync/fdatasync calls made on fds under the root */

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            int e_ = errno;                                                     \
            fprintf(stderr, "faultfs selftest [%s] FAIL at line %d: ", mode,    \
                    __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, " (errno %d: %s)\n", e_, strerror(e_));             \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

static void path_in(char *out, const char *dir, const char *name)
{
    snprintf(out, 4096, "%s/%s", dir, name);
}

/* ctl files are outside the root, so plain open/write/close are never faulted. */
static void ctl_set(const char *name, const char *content)
{
    char p[4096];
    path_in(p, ctl, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "create ctl file %s", p);
    size_t n = strlen(content);
    CHECK(write(fd, content, n) == (ssize_t)n, "write ctl file %s", p);
    CHECK(close(fd) == 0, "close ctl file");
}

static void ctl_rm(const char *name)
{
    char p[4096];
    path_in(p, ctl, name);
    CHECK(unlink(p) == 0, "remove ctl file %s", p);
}

static int ctl_exists(const char *name)
{
    char p[4096];
    path_in(p, ctl, name);
    return access(p, F_OK) == 0;
}

/* Value in <ctl>/fsyncs, -1 if absent. */
static long read_fsyncs(void)
{
    char p[4096], buf[64];
    path_in(p, ctl, "fsyncs");
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK(n > 0, "fsyncs is empty");
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    CHECK(end != buf && (*end == '\n' || *end == '\0'), "fsyncs holds '%s'", buf);
    return v;
}

static int open_in(const char *dir, const char *name)
{
    char p[4096];
    path_in(p, dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open %s", p);
    return fd;
}

static void expect_content(int fd, const char *want)
{
    struct stat st;
    CHECK(fstat(fd, &st) == 0, "fstat");
    CHECK((size_t)st.st_size == strlen(want), "file size %lld, want %zu",
          (long long)st.st_size, strlen(want));
    char buf[256] = {0};
    CHECK(pread(fd, buf, sizeof buf - 1, 0) == (ssize_t)strlen(want), "pread");
    CHECK(strcmp(buf, want) == 0, "file holds '%s', want '%s'", buf, want);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void say(const char *msg)
{
    /* Also proves fd 2 is never faulted. */
    char line[512];
    int n = snprintf(line, sizeof line, "  [%s] %s\n", mode, msg);
    CHECK(write(2, line, (size_t)n) == n, "write to stderr");
}

static void shim_loaded(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL, "open /proc/self/maps");
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libfaultfs.so"))
            found = 1;
    fclose(f);
    CHECK(found, "libfaultfs.so is not loaded (LD_PRELOAD ignored?)");
}

#define ERR(call, err)                                                          \
    do {                                                                        \
        errno = 0;                                                              \
        long r_ = (long)(call);                                                 \
        CHECK(r_ == -1 && errno == (err), "%s returned %ld, want -1/%s", #call, \
              r_, strerror(err));                                               \
    } while (0)

#define THREADS 4
#define PER_THREAD 25

static void *sync_worker(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        CHECK(pwrite(fd, "x", 1, i) == 1, "worker pwrite");
        CHECK(fdatasync(fd) == 0, "worker fdatasync");
    }
    return NULL;
}

static void run_on(void)
{
    char sub[4096];
    path_in(sub, root, "sub");
    mkdir(sub, 0755);

    int fd = open_in(root, "data");
    int sfd = open_in(sub, "deep");
    int ofd = open_in(outside, "data");
    int bfd = open_in(sibling, "data"); /* <root>x: shares the prefix, not the dir */
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe");

    /* Normal operation. */
    CHECK(write(fd, "hello", 5) == 5, "write");
    CHECK(fdatasync(fd) == 0, "fdatasync"); expected++;
    CHECK(fsync(fd) == 0, "fsync"); expected++;
    errno = EILSEQ;
    CHECK(write(fd, "", 0) == 0 && errno == EILSEQ, "errno not preserved by write");
    CHECK(fdatasync(fd) == 0 && errno == EILSEQ, "errno not preserved by fdatasync"); expected++;
    CHECK(write(ofd, "a", 1) == 1 && errno == EILSEQ, "errno not preserved (outside)");
    CHECK(!ctl_exists("fsyncs"), "fsyncs written although count is absent");
    expect_content(fd, "hello");
    say("normal write + fdatasync + fsync: ok");

    /* enospc */
    ctl_set("enospc", "");
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    ERR(write(fd, "XXXX", 4), ENOSPC);
    ERR(pwrite(fd, "XXXX", 4, 0), ENOSPC);
    ERR(pwrite64(fd, "XXXX", 4, 0), ENOSPC);
    ERR(writev(fd, iov, 2), ENOSPC);
    ERR(pwritev(fd, iov, 2, 0), ENOSPC);
    ERR(pwritev2(fd, iov, 2, 0, 0), ENOSPC);
    ERR(fallocate(fd, 0, 0, 4096), ENOSPC);
    errno = 0;
    CHECK(posix_fallocate(fd, 0, 4096) == ENOSPC && errno == 0, "posix_fallocate");
    ERR(write(sfd, "XXXX", 4), ENOSPC);
    expect_content(fd, "hello");
    expect_content(sfd, "");
    say("enospc: write/pwrite/pwrite64/writev/pwritev/pwritev2/fallocate fail, file unchanged");
    CHECK(write(ofd, "b", 1) == 1, "write outside the root under enospc");
    CHECK(pwrite64(ofd, "c", 1, 2) == 1, "pwrite64 outside the root under enospc");
    CHECK(write(bfd, "b", 1) == 1, "write to <root>x under enospc");
    CHECK(write(pfd[1], "p", 1) == 1, "write to a pipe under enospc");
    CHECK(fdatasync(fd) == 0, "fdatasync under enospc"); expected++;
    say("enospc: stderr, pipe, <root>x and a file outside the root still writable");
    ctl_rm("enospc");

    CHECK(write(fd, " world", 6) == 6, "write after enospc removed");
    CHECK(pwrite64(fd, "H", 1, 0) == 1, "pwrite64 after enospc removed");
    CHECK(pwrite(fd, "W", 1, 6) == 1, "pwrite after enospc removed");
    expect_content(fd, "Hello World");
    say("enospc removed: writes work again");

    /* fsync_eio */
    ctl_set("fsync_eio", "");
    ERR(fdatasync(fd), EIO); expected++;
    ERR(fsync(fd), EIO); expected++;
    ERR(sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE), EIO);
    CHECK(fsync(ofd) == 0, "fsync outside the root under fsync_eio");
    CHECK(write(fd, "!", 1) == 1, "write under fsync_eio");
    ctl_rm("fsync_eio");
    CHECK(fdatasync(fd) == 0, "fdatasync after fsync_eio removed"); expected++;
    CHECK(sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0, "sync_file_range");
    say("fsync_eio: fdatasync/fsync/sync_file_range fail with EIO, then recover");

    /* fsync_delay_ms */
    char msg[160];
    ctl_set("fsync_delay_ms", "300\n");
    double t0 = now_ms();
    CHECK(fdatasync(fd) == 0, "delayed fdatasync"); expected++;
    double t1 = now_ms();
    double d1 = t1 - t0;
    CHECK(d1 >= 300.0, "fdatasync took %.1f ms, want >= 300", d1);
    CHECK(fsync(fd) == 0, "delayed fsync"); expected++;
    double t2 = now_ms();
    double d2 = t2 - t1;
    CHECK(d2 >= 300.0, "fsync took %.1f ms, want >= 300", d2);
    ctl_set("fsync_delay_ms", "2000");
    t0 = now_ms();
    CHECK(fdatasync(ofd) == 0, "fdatasync outside the root");
    t1 = now_ms();
    CHECK(t1 - t0 < 2000.0, "fdatasync outside the root was delayed (%.1f ms)", t1 - t0);
    ctl_rm("fsync_delay_ms");
    snprintf(msg, sizeof msg,
             "fsync_delay_ms=300: fdatasync %.0f ms, fsync %.0f ms; outside fd %.0f ms", d1, d2,
             t1 - t0);
    say(msg);

    /* write_delay_ms */
    ctl_set("write_delay_ms", "200");
    t0 = now_ms();
    CHECK(write(fd, "?", 1) == 1, "delayed write");
    t1 = now_ms();
    CHECK(t1 - t0 >= 200.0, "write took %.1f ms, want >= 200", t1 - t0);
    CHECK(pwrite64(fd, "?", 1, 0) == 1, "delayed pwrite64");
    t2 = now_ms();
    CHECK(t2 - t1 >= 200.0, "pwrite64 took %.1f ms, want >= 200", t2 - t1);
    CHECK(writev(fd, iov, 2) == 4, "delayed writev");
    CHECK(now_ms() - t2 >= 200.0, "writev was not delayed");
    ctl_rm("write_delay_ms");
    say("write_delay_ms=200: write, pwrite64, writev each took >= 200 ms");

    /* count / fsyncs */
    CHECK(read_fsyncs() == -1, "fsyncs exists before count was created");
    ctl_set("count", "");
    CHECK(fdatasync(fd) == 0, "fdatasync with count"); expected++;
    CHECK(read_fsyncs() == expected, "fsyncs = %ld, want %ld", read_fsyncs(), expected);
    CHECK(fsync(fd) == 0, "fsync with count"); expected++;
    CHECK(read_fsyncs() == expected, "fsyncs = %ld, want %ld", read_fsyncs(), expected);
    CHECK(fsync(ofd) == 0 && fdatasync(bfd) == 0, "syncs outside the root");
    CHECK(read_fsyncs() == expected, "outside syncs counted: %ld, want %ld", read_fsyncs(),
          expected);

    pthread_t th[THREADS];
    int tfd[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        tfd[i] = open_in(root, name);
        CHECK(pthread_create(&th[i], NULL, sync_worker, &tfd[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        close(tfd[i]);
    }
    expected += THREADS * PER_THREAD;
    CHECK(read_fsyncs() == expected, "after threads fsyncs = %ld, want %ld", read_fsyncs(),
          expected);
    DIR *d = opendir(ctl);
    CHECK(d != NULL, "opendir ctl");
    struct dirent *de;
    while ((de = readdir(d)))
        CHECK(strncmp(de->d_name, ".fsyncs.tmp.", 12) != 0, "left over %s", de->d_name);
    closedir(d);
    ctl_rm("count");
    CHECK(fdatasync(fd) == 0, "fdatasync without count"); expected++;
    CHECK(read_fsyncs() == expected - 1, "fsyncs updated without count: %ld", read_fsyncs());
    snprintf(msg, sizeof msg, "count: fsyncs = %ld as expected (incl. %d from %d threads)",
             expected - 1, THREADS * PER_THREAD, THREADS);
    say(msg);

    ctl_rm("fsyncs");
    close(fd), close(sfd), close(ofd), close(bfd), close(pfd[0]), close(pfd[1]);
}

/* The shim is loaded but must do nothing, whatever the ctl dir holds. */
static void run_off(void)
{
    ctl_set("enospc", "");
    ctl_set("fsync_eio", "");
    ctl_set("fsync_delay_ms", "2000");
    ctl_set("write_delay_ms", "2000");
    ctl_set("count", "");
    int fd = open_in(root, "data");
    double t0 = now_ms();
    CHECK(write(fd, "hello", 5) == 5, "write");
    CHECK(pwrite64(fd, "H", 1, 0) == 1, "pwrite64");
    CHECK(fdatasync(fd) == 0, "fdatasync");
    CHECK(fsync(fd) == 0, "fsync");
    CHECK(now_ms() - t0 < 2000.0, "calls were delayed");
    CHECK(posix_fallocate(fd, 0, 4096) == 0, "posix_fallocate");
    CHECK(read_fsyncs() == -1, "fsyncs written");
    close(fd);
    ctl_rm("enospc");
    ctl_rm("fsync_eio");
    ctl_rm("fsync_delay_ms");
    ctl_rm("write_delay_ms");
    ctl_rm("count");
    say("all ctl files present, no fault injected");
}

int main(int argc, char **argv)
{
    CHECK(argc == 6, "usage: t on|off root ctl outside sibling");
    mode = argv[1], root = argv[2], ctl = argv[3], outside = argv[4], sibling = argv[5];
    shim_loaded();
    if (strcmp(mode, "off") == 0)
        run_off();
    else
        run_on();
    return 0;
}
EOF
"$cc" -O2 -Wall -Wextra -Werror -pthread -o "$work/t" "$work/t.c" || fail "test program does not compile"
# The test program must reach both pwrite and pwrite64 through the dynamic symbol table.
imports=$(nm -D --undefined-only "$work/t")
for sym in pwrite pwrite64; do
    grep -qE " $sym(@|\$)" <<<"$imports" || fail "test program does not import $sym"
done

root="$work/data"
ctl="$work/ctl"
outside="$work/outside"
sibling="$work/datax"
mkdir -p "$root" "$ctl" "$outside" "$sibling"
ln -s "$root" "$work/data-link"
shim="$work/libfaultfs.so"

run() { # run <label> <mode> [env...]
    local label=$1 m=$2
    shift 2
    rm -rf "${ctl:?}"/* "${ctl:?}"/.fsyncs.tmp.* 2>/dev/null || true
    echo "faultfs selftest: $label" >&2
    env -u RAFTD_FAULTFS_CTL -u RAFTD_FAULTFS_ROOT "$@" LD_PRELOAD="$shim" \
        "$work/t" "$m" "$root" "$ctl" "$outside" "$sibling" || fail "$label"
}

run "faults on" on RAFTD_FAULTFS_CTL="$ctl" RAFTD_FAULTFS_ROOT="$root"
run "faults on, root with trailing slash" on RAFTD_FAULTFS_CTL="$ctl" RAFTD_FAULTFS_ROOT="$root/"
run "faults on, root via a symlink" on RAFTD_FAULTFS_CTL="$ctl" RAFTD_FAULTFS_ROOT="$work/data-link"
run "RAFTD_FAULTFS_CTL unset" off RAFTD_FAULTFS_ROOT="$root"
run "RAFTD_FAULTFS_ROOT unset" off RAFTD_FAULTFS_CTL="$ctl"
run "root is a sibling prefix (<root>x)" off RAFTD_FAULTFS_CTL="$ctl" RAFTD_FAULTFS_ROOT="${root}x"

echo "faultfs selftest: ok"
