/*
 * libtrent-io-faults.so: an LD_PRELOAD library that makes file writes, fsyncs and truncations fail for files
 * under chosen paths, for Trent's storage-fault tests (design.md section 9, "Storage faults"). It interposes
 * libc's dynamic symbols, so it sees what SQLite (libsqlite3), Foundation's FileHandle and Trent itself call;
 * every call it does not fail goes to the real libc function unchanged. README.md in this folder is the guide.
 *
 * Environment (read once, when the library is loaded):
 *   TRENT_IO_FAULTS_CONTROL  a control file, re-read when its stat (inode, size, mtime) changes; checked at most
 *                            every 20 ms, by whichever intercepted call comes first
 *   TRENT_IO_FAULTS          rules in the same syntax, separated by ';' (never re-read)
 *   TRENT_IO_FAULTS_LOG=1    one stderr line per injected fault and per reload (the call, errno and file path:
 *                            never the bytes written)
 *
 * Rules, one a line, '#' starts a comment, keywords case-insensitive:
 *   fail ERRNO OPS PREFIX [after N] [count N]
 *        calls of OPS on a file whose path starts with PREFIX fail with ERRNO, nothing done. `after N` lets the
 *        first N matching calls through; `count N` fails N calls, then no more
 *   full PREFIX [BYTES]
 *        a full file system: files under PREFIX may grow by BYTES in all from the load (default 0). A write past
 *        the end writes what still fits (a short write), then fails with ENOSPC; writes inside a file, fsync and
 *        ftruncate work (a shrinking one frees room that can be written again, a growing one makes a hole, which
 *        takes none); fallocate past the end fails with ENOSPC
 *   ERRNO  ENOSPC, EIO, EDQUOT, EFBIG, EROFS, EINTR or a number
 *   OPS    comma-separated: write (write, pwrite, pwrite64, writev, pwritev, pwritev64, pwritev2), fsync (fsync,
 *          fdatasync, sync_file_range), truncate (ftruncate, ftruncate64), allocate (fallocate, fallocate64,
 *          posix_fallocate, posix_fallocate64), or *
 *   PREFIX an absolute path, resolved with realpath when it (or its parent folder) exists; a file matches when
 *          its /proc/self/fd path starts with it, so "/data/audit/" is a folder and "/data/trent.sqlite" is
 *          the database with its -wal and -shm files
 *
 * The first rule that triggers decides a call; rules that match but let the call through (`after`) still count
 * it. Every load of the control file replaces its rules whole (counters and allowances start again); a missing or
 * empty file means no faults from it, a file with a bad line too (the reason goes to stderr). TRENT_IO_FAULTS
 * rules are tried before the file's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define CHECK_INTERVAL_NS 20000000LL
#define MAX_CONTROL_FILE (64 * 1024)
#define MAX_RULES 64

/* ---------------------------------------------------------------------------------------------------------
 * The real functions, found with dlsym(RTLD_NEXT) at load (or at the first call, if that comes first).
 */
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev64_fn)(int, const struct iovec *, int, off64_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*fd_fn)(int);
typedef int (*sync_file_range_fn)(int, off64_t, off64_t, unsigned int);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*ftruncate64_fn)(int, off64_t);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*fallocate64_fn)(int, int, off64_t, off64_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);
typedef int (*posix_fallocate64_fn)(int, off64_t, off64_t);

#define REAL_FUNCTIONS(X)                                                                                    \
    X(write, write_fn) X(pwrite, pwrite_fn) X(pwrite64, pwrite64_fn) X(writev, writev_fn)                    \
    X(pwritev, pwritev_fn) X(pwritev64, pwritev64_fn) X(pwritev2, pwritev2_fn) X(fsync, fd_fn)               \
    X(fdatasync, fd_fn) X(sync_file_range, sync_file_range_fn) X(ftruncate, ftruncate_fn)                    \
    X(ftruncate64, ftruncate64_fn) X(fallocate, fallocate_fn) X(fallocate64, fallocate64_fn)                 \
    X(posix_fallocate, posix_fallocate_fn) X(posix_fallocate64, posix_fallocate64_fn)

#define X(name, type) static type real_##name;
REAL_FUNCTIONS(X)
#undef X

static void resolve(void) {
#define X(name, type) if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name);
    REAL_FUNCTIONS(X)
#undef X
}
#define REAL(name) (real_##name ? real_##name : (resolve(), real_##name))

/* ---------------------------------------------------------------------------------------------------------
 * Rules.
 */
enum op { OP_WRITE = 1, OP_FSYNC = 2, OP_TRUNCATE = 4, OP_ALLOCATE = 8, OP_ALL = 15 };
enum kind { FAIL, FULL };

struct rule {
    enum kind kind;
    int line;
    int err;              /* FAIL */
    unsigned ops;         /* FAIL */
    char prefix[PATH_MAX];
    size_t prefix_len;
    unsigned long after;  /* FAIL: matching calls let through first */
    long long count;      /* FAIL: calls left to fail; -1 = no limit */
    unsigned long seen;   /* FAIL: matching calls so far */
    long long allowance;  /* FULL: bytes files may still grow by */
};

struct schedule {
    struct rule *rules;
    size_t count;
};

static int log_enabled;
static char *control_path;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;        /* the schedules and their counters */
static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static struct schedule env_schedule, file_schedule;
static atomic_int active;              /* some schedule has rules: only then are paths looked up */
static atomic_llong next_check;        /* CLOCK_MONOTONIC_COARSE ns of the next stat of the control file */
static struct stat last_stat;
static int last_exists;
/* Set while this library runs its own code on this thread: its logging and reloads write and read files
 * too, and must neither recurse into the rules nor take a lock it holds. */
static __thread int inside;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char line[PATH_MAX + 256];
    int n = snprintf(line, sizeof line, "trent-io-faults[%d]: ", (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    int saved = errno;
    (void)!REAL(write)(2, line, (size_t)n);
    errno = saved;
}

static long long clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static const struct { const char *name; int err; } errnos[] = {
    {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EDQUOT", EDQUOT}, {"EFBIG", EFBIG}, {"EROFS", EROFS}, {"EINTR", EINTR},
};

static const char *errno_name(int err, char buf[16]) {
    for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
        if (errnos[i].err == err) return errnos[i].name;
    snprintf(buf, 16, "errno %d", err);
    return buf;
}

static int parse_number(const char *s, unsigned long *out) {
    char *end;
    errno = 0;
    if (*s == '-' || !*s) return 0;
    unsigned long v = strtoul(s, &end, 0);
    if (*end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_errno(const char *s, int *err) {
    for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
        if (!strcasecmp(s, errnos[i].name)) return *err = errnos[i].err, 1;
    unsigned long v;
    if (!parse_number(s, &v) || v == 0 || v > 4095) return 0;
    *err = (int)v;
    return 1;
}

static int parse_ops(const char *s, unsigned *ops) {
    char copy[128], *save = NULL;
    if (strlen(s) >= sizeof copy) return 0;
    strcpy(copy, s);
    *ops = 0;
    for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (!strcmp(w, "*")) *ops |= OP_ALL;
        else if (!strcasecmp(w, "write")) *ops |= OP_WRITE;
        else if (!strcasecmp(w, "fsync")) *ops |= OP_FSYNC;
        else if (!strcasecmp(w, "truncate")) *ops |= OP_TRUNCATE;
        else if (!strcasecmp(w, "allocate")) *ops |= OP_ALLOCATE;
        else return 0;
    }
    return *ops != 0;
}

/* The prefix as the kernel names files: through realpath when the path or its folder exists. */
static int parse_prefix(const char *s, struct rule *r) {
    if (s[0] != '/' || strlen(s) >= PATH_MAX) return 0;
    char resolved[PATH_MAX];
    size_t len = strlen(s);
    int slash = s[len - 1] == '/';
    if (realpath(s, resolved)) {
        snprintf(r->prefix, sizeof r->prefix, "%s%s", resolved, slash && strcmp(resolved, "/") ? "/" : "");
    } else {
        char folder[PATH_MAX];
        strcpy(folder, s);
        char *last = strrchr(folder, '/');
        const char *name = s + (last - folder) + 1;
        *last = '\0';
        size_t rlen, nlen = strlen(name);
        if (last != folder && realpath(folder, resolved) && (rlen = strlen(resolved)) + nlen + 2 < PATH_MAX) {
            memcpy(r->prefix, resolved, rlen);
            r->prefix[rlen] = '/';
            memcpy(r->prefix + rlen + 1, name, nlen + 1);
        } else {
            strcpy(r->prefix, s);
        }
    }
    r->prefix_len = strlen(r->prefix);
    return 1;
}

static const char *parse_words(char **w, int n, int line, struct schedule *s) {
    struct rule r = {.line = line, .count = -1};
    if (!strcasecmp(w[0], "fail")) {
        r.kind = FAIL;
        if (n < 4 || !parse_errno(w[1], &r.err) || !parse_ops(w[2], &r.ops) || !parse_prefix(w[3], &r))
            return "usage: fail ERRNO OPS /PREFIX [after N] [count N]";
        for (int i = 4; i < n; i += 2) {
            unsigned long v;
            if (i + 1 >= n || !parse_number(w[i + 1], &v)) return "after N / count N: N is a number";
            if (!strcasecmp(w[i], "after")) r.after = v;
            else if (!strcasecmp(w[i], "count")) r.count = (long long)v;
            else return "unknown word after the rule (after N, count N)";
        }
    } else if (!strcasecmp(w[0], "full")) {
        r.kind = FULL;
        unsigned long bytes = 0;
        if (n < 2 || n > 3 || !parse_prefix(w[1], &r) || (n == 3 && !parse_number(w[2], &bytes)))
            return "usage: full /PREFIX [BYTES]";
        r.allowance = (long long)bytes;
    } else {
        return "unknown verb (fail, full)";
    }
    if (s->count == MAX_RULES) return "too many rules";
    struct rule *grown = realloc(s->rules, (s->count + 1) * sizeof *grown);
    if (!grown) return "out of memory";
    s->rules = grown;
    s->rules[s->count++] = r;
    return NULL;
}

/* A whole schedule, or nothing: half a fault plan would make a test lie. */
static int parse_schedule(const char *text, const char *separators, const char *origin, struct schedule *out) {
    struct schedule s = {0};
    char *copy = strdup(text);
    if (!copy) return 0;
    int line = 0, ok = 1;
    for (char *p = copy; ok && *p;) {
        size_t len = strcspn(p, separators);
        char *next = p + len + (p[len] != '\0');
        p[len] = '\0';
        line++;
        p[strcspn(p, "#")] = '\0';
        char *words[16], *save = NULL;
        int n = 0;
        for (char *word = strtok_r(p, " \t\r", &save); word; word = strtok_r(NULL, " \t\r", &save)) {
            if (n == 16) { n = -1; break; }
            words[n++] = word;
        }
        const char *error = n < 0 ? "too many words" : n > 0 ? parse_words(words, n, line, &s) : NULL;
        if (error) {
            say("%s:%d: %s; the whole schedule is ignored", origin, line, error);
            ok = 0;
        }
        p = next;
    }
    free(copy);
    if (!ok) {
        free(s.rules);
        return 0;
    }
    *out = s;
    return 1;
}

/* Under reload_mu: loads the control file if its stat changed (a missing file is an empty schedule). */
static void check_control_file(void) {
    struct stat st;
    int exists = stat(control_path, &st) == 0;
    if (exists == last_exists &&
        (!exists || (st.st_ino == last_stat.st_ino && st.st_dev == last_stat.st_dev && st.st_size == last_stat.st_size &&
                     st.st_mtim.tv_sec == last_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == last_stat.st_mtim.tv_nsec)))
        return;
    last_exists = exists;
    if (exists) last_stat = st;
    struct schedule s = {0};
    if (exists) {
        FILE *f = fopen(control_path, "re");
        char *text = f ? malloc(MAX_CONTROL_FILE + 1) : NULL;
        size_t n = text ? fread(text, 1, MAX_CONTROL_FILE + 1, f) : 0;
        int bad = !f || !text || ferror(f) || n > MAX_CONTROL_FILE;
        if (f) fclose(f);
        if (bad) {
            say("%s: cannot read it (or over %d bytes); no faults from it", control_path, MAX_CONTROL_FILE);
        } else {
            text[n] = '\0';
            parse_schedule(text, "\n", control_path, &s);
        }
        free(text);
    }
    pthread_mutex_lock(&mu);
    free(file_schedule.rules);
    file_schedule = s;
    atomic_store(&active, env_schedule.count + file_schedule.count > 0);
    pthread_mutex_unlock(&mu);
    if (log_enabled) say("%s: loaded %zu rule(s)", control_path, s.count);
}

/* One coarse clock read on the hot path; a stat at most every CHECK_INTERVAL_NS. */
static void maybe_reload(void) {
    if (!control_path) return;
    long long now = clock_ns(CLOCK_MONOTONIC_COARSE);
    if (now < atomic_load_explicit(&next_check, memory_order_relaxed)) return;
    if (pthread_mutex_trylock(&reload_mu) != 0) return;
    atomic_store(&next_check, now + CHECK_INTERVAL_NS);
    check_control_file();
    pthread_mutex_unlock(&reload_mu);
}

__attribute__((constructor)) static void load(void) {
    inside = 1;
    resolve();
    const char *flag = getenv("TRENT_IO_FAULTS_LOG");
    log_enabled = flag && *flag && strcmp(flag, "0");
    const char *schedule = getenv("TRENT_IO_FAULTS");
    if (schedule && *schedule && !parse_schedule(schedule, ";\n", "TRENT_IO_FAULTS", &env_schedule))
        say("TRENT_IO_FAULTS is not a valid schedule: no faults from it");
    const char *control = getenv("TRENT_IO_FAULTS_CONTROL");
    if (control && *control) control_path = strdup(control);
    atomic_store(&active, env_schedule.count > 0);
    if (control_path) {
        pthread_mutex_lock(&reload_mu);
        check_control_file();
        pthread_mutex_unlock(&reload_mu);
    }
    if (log_enabled)
        say("loaded: %zu rule(s) from TRENT_IO_FAULTS, control file %s", env_schedule.count,
            control_path ? control_path : "(none)");
    inside = 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Deciding one call.
 */
struct call {
    const char *name;
    enum op op;
    int fd;
    /* For writes, truncations and allocations: where the file would end afterwards, and how many bytes the call
     * means to write (for a short write under `full`). -1 when it cannot be known (then `full` refuses it). */
    long long offset;  /* -1: the file position (write, writev), -2: none */
    long long length;
};

/* The file's path, as /proc/self/fd names it; 0 when it has none (a socket, a pipe). */
static int fd_path(int fd, char *path, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, size - 1);
    if (n <= 0 || path[0] != '/') return 0;
    path[n] = '\0';
    return 1;
}

/* Where a write of the call starts, and the file's size now; 0 when they cannot be read. */
static int extent(const struct call *c, long long *start, long long *size) {
    struct stat st;
    if (fstat(c->fd, &st) != 0) return 0;
    *size = (long long)st.st_size;
    int flags = fcntl(c->fd, F_GETFL);
    if (flags < 0) return 0;
    if (flags & O_APPEND) *start = *size; /* Linux appends even a pwrite on an O_APPEND descriptor */
    else if (c->offset >= 0) *start = c->offset;
    else if ((*start = (long long)lseek(c->fd, 0, SEEK_CUR)) < 0) return 0;
    return 1;
}

/* Applies the rules to one call. Returns 0 to forward it as it is; -1 with *err set to fail it; 1 with
 * *allowed set to forward only that many bytes (a short write under `full`). */
static int decide(const struct call *c, int *err, long long *allowed) {
    if (!atomic_load_explicit(&active, memory_order_relaxed) || inside) return 0;
    int saved = errno;
    char path[PATH_MAX];
    if (!fd_path(c->fd, path, sizeof path)) { errno = saved; return 0; }
    int result = 0, line = 0;
    const char *origin = "";
    inside = 1;
    pthread_mutex_lock(&mu);
    struct schedule *schedules[] = {&env_schedule, &file_schedule};
    for (int k = 0; k < 2 && !result; k++) {
        for (size_t i = 0; i < schedules[k]->count && !result; i++) {
            struct rule *r = &schedules[k]->rules[i];
            if (strncmp(path, r->prefix, r->prefix_len) != 0) continue;
            if (r->kind == FAIL) {
                if (!(r->ops & c->op)) continue;
                if (++r->seen <= r->after || r->count == 0) continue;
                if (r->count > 0) r->count--;
                *err = r->err;
                result = -1;
            } else if (c->op == OP_WRITE || c->op == OP_ALLOCATE || c->op == OP_TRUNCATE) {
                long long start, size;
                if (!extent(c, &start, &size)) {
                    *err = ENOSPC;
                    result = -1;
                } else {
                    long long end = c->op == OP_TRUNCATE ? c->length : start + c->length;
                    long long growth = end > size ? end - size : 0;
                    if (c->op == OP_TRUNCATE) {
                        /* A shrinking file gives its room back; a growing one gets a hole, which takes no room
                         * (as on ext4 or XFS: SQLite sizes its -shm file that way). */
                        if (end < size) r->allowance += size - end;
                    } else if (growth <= r->allowance) {
                        r->allowance -= growth;
                    } else if (c->op == OP_WRITE && size + r->allowance > start) {
                        *allowed = size + r->allowance - start; /* what still fits */
                        r->allowance = 0;
                        result = 1;
                    } else {
                        *err = ENOSPC;
                        result = -1;
                    }
                }
            }
            if (result) {
                line = r->line;
                origin = k == 0 ? "TRENT_IO_FAULTS" : "control file";
            }
        }
    }
    pthread_mutex_unlock(&mu);
    if (result && log_enabled) {
        char buf[16];
        if (result < 0) say("%s on %s of %s (%s:%d)", errno_name(*err, buf), c->name, path, origin, line);
        else say("short write (%lld of %lld bytes) on %s of %s: disk full (%s:%d)", *allowed, c->length, c->name, path, origin, line);
    }
    inside = 0;
    errno = saved;
    return result;
}

static size_t iov_length(const struct iovec *iov, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    return total;
}

/* Runs the checks common to every wrapper: the reload, then the rules. */
#define DECIDE(call_name, opcode, fd_, offset_, length_)                                                     \
    maybe_reload_guarded();                                                                                  \
    int err_ = 0;                                                                                            \
    long long allowed_ = 0;                                                                                  \
    const struct call call_ = {call_name, opcode, fd_, offset_, length_};                                    \
    int verdict_ = decide(&call_, &err_, &allowed_);                                                         \
    if (verdict_ < 0) { errno = err_; return -1; }

static void maybe_reload_guarded(void) {
    if (inside) return;
    int saved = errno;
    inside = 1;
    maybe_reload();
    inside = 0;
    errno = saved;
}

/* ---------------------------------------------------------------------------------------------------------
 * The wrappers. A short write under `full` forwards the part that fits; the next call then gets ENOSPC.
 */
EXPORT ssize_t write(int fd, const void *buf, size_t count) {
    DECIDE("write", OP_WRITE, fd, -1, (long long)count)
    return REAL(write)(fd, buf, verdict_ > 0 ? (size_t)allowed_ : count);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    DECIDE("pwrite", OP_WRITE, fd, (long long)offset, (long long)count)
    return REAL(pwrite)(fd, buf, verdict_ > 0 ? (size_t)allowed_ : count, offset);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    DECIDE("pwrite64", OP_WRITE, fd, (long long)offset, (long long)count)
    return REAL(pwrite64)(fd, buf, verdict_ > 0 ? (size_t)allowed_ : count, offset);
}

/* Vectored writes are not shortened: under `full` one that does not fit fails whole (as a write may). */
EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    DECIDE("writev", OP_WRITE, fd, -1, (long long)iov_length(iov, iovcnt))
    if (verdict_ > 0) { errno = ENOSPC; return -1; }
    return REAL(writev)(fd, iov, iovcnt);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    DECIDE("pwritev", OP_WRITE, fd, (long long)offset, (long long)iov_length(iov, iovcnt))
    if (verdict_ > 0) { errno = ENOSPC; return -1; }
    return REAL(pwritev)(fd, iov, iovcnt, offset);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t offset) {
    DECIDE("pwritev64", OP_WRITE, fd, (long long)offset, (long long)iov_length(iov, iovcnt))
    if (verdict_ > 0) { errno = ENOSPC; return -1; }
    return REAL(pwritev64)(fd, iov, iovcnt, offset);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    DECIDE("pwritev2", OP_WRITE, fd, offset < 0 ? -1 : (long long)offset, (long long)iov_length(iov, iovcnt))
    if (verdict_ > 0) { errno = ENOSPC; return -1; }
    return REAL(pwritev2)(fd, iov, iovcnt, offset, flags);
}

EXPORT int fsync(int fd) {
    DECIDE("fsync", OP_FSYNC, fd, -2, 0)
    return REAL(fsync)(fd);
}

EXPORT int fdatasync(int fd) {
    DECIDE("fdatasync", OP_FSYNC, fd, -2, 0)
    return REAL(fdatasync)(fd);
}

EXPORT int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    DECIDE("sync_file_range", OP_FSYNC, fd, -2, 0)
    return REAL(sync_file_range)(fd, offset, nbytes, flags);
}

EXPORT int ftruncate(int fd, off_t length) {
    DECIDE("ftruncate", OP_TRUNCATE, fd, -2, (long long)length)
    return REAL(ftruncate)(fd, length);
}

EXPORT int ftruncate64(int fd, off64_t length) {
    DECIDE("ftruncate64", OP_TRUNCATE, fd, -2, (long long)length)
    return REAL(ftruncate64)(fd, length);
}

EXPORT int fallocate(int fd, int mode, off_t offset, off_t len) {
    DECIDE("fallocate", OP_ALLOCATE, fd, (long long)offset, (long long)len)
    return REAL(fallocate)(fd, mode, offset, len);
}

EXPORT int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
    DECIDE("fallocate64", OP_ALLOCATE, fd, (long long)offset, (long long)len)
    return REAL(fallocate64)(fd, mode, offset, len);
}

/* posix_fallocate answers an error number instead of setting errno. */
EXPORT int posix_fallocate(int fd, off_t offset, off_t len) {
    int saved = errno;
    int err = 0;
    long long allowed = 0;
    maybe_reload_guarded();
    const struct call c = {"posix_fallocate", OP_ALLOCATE, fd, (long long)offset, (long long)len};
    if (decide(&c, &err, &allowed) != 0) { errno = saved; return err ? err : ENOSPC; }
    return REAL(posix_fallocate)(fd, offset, len);
}

EXPORT int posix_fallocate64(int fd, off64_t offset, off64_t len) {
    int saved = errno;
    int err = 0;
    long long allowed = 0;
    maybe_reload_guarded();
    const struct call c = {"posix_fallocate64", OP_ALLOCATE, fd, (long long)offset, (long long)len};
    if (decide(&c, &err, &allowed) != 0) { errno = saved; return err ? err : ENOSPC; }
    return REAL(posix_fallocate64)(fd, offset, len);
}
