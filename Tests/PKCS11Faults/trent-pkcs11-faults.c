/*
 * libtrent-pkcs11-faults.so: a PKCS#11 module that forwards every call to a real module and injects token
 * faults on a schedule, for Trent's reliability tests (design.md section 9). Trent loads it like any vendor
 * module (hsm.module); README.md in this folder is the user's guide.
 *
 * Environment (read once, at the first C_GetFunctionList):
 *   TRENT_FAULTS_MODULE   path of the real module (required), e.g. /usr/lib/softhsm/libsofthsm2.so
 *   TRENT_FAULTS_CONTROL  path of a control file (optional), re-read when it changes: its stat (inode, size,
 *                         mtime) is checked at most every 50 ms, by whichever call comes first
 *   TRENT_FAULTS          a schedule in the same syntax, lines separated by ';' (never re-read)
 *   TRENT_FAULTS_LOG=1    one stderr line per injected fault, reload, reboot and removal; never argument data
 *
 * Schedule: one rule a line, '#' starts a comment, keywords are case-insensitive.
 *   fail  FUNC CODE [TRIGGER] [forwarded]  return CODE instead of calling the real module; with `forwarded`
 *                                          the real call runs first and its result is replaced (the answer
 *                                          was lost: keys get created, operations end)
 *   delay FUNC DURATION [TRIGGER]          sleep, then forward
 *   hang  FUNC [DURATION] [TRIGGER]        the same as delay; without DURATION the call sleeps until the
 *                                          control file changes (not allowed in TRENT_FAULTS)
 *   remove DURATION                        the token is removed from when the schedule is loaded: every
 *                                          session is closed at once, then for DURATION calls taking a
 *                                          session answer CKR_DEVICE_REMOVED, calls taking a slot answer
 *                                          CKR_TOKEN_NOT_PRESENT, C_GetSlotList(TRUE) lists no slot and
 *                                          C_GetSlotInfo clears CKF_TOKEN_PRESENT; then the token is back
 *   reboot [N]                             partition reboot, once: C_CloseAllSessions on every slot of the real
 *                                          module (sessions, session objects and login gone) and every older
 *                                          session handle answers CKR_SESSION_HANDLE_INVALID from then on.
 *                                          A bare `reboot` fires at every load of the file; `reboot N` only
 *                                          when N differs from the last N fired
 *   FUNC     C_Encrypt, ... (any of the 2.40 list but C_GetFunctionList), or `*`: every function except
 *            C_Initialize and C_Finalize, which fail only when named
 *   CODE     CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID,
 *            CKR_SESSION_CLOSED, CKR_GENERAL_ERROR, CKR_DEVICE_MEMORY, CKR_FUNCTION_FAILED, or a number
 *            (0x30); never 0
 *   DURATION a number and a unit: 250us, 20ms, 1.5s, 2m
 *   TRIGGER  every N (the Nth, 2Nth... matching call; the default is every call), count N (the next N
 *            matching calls), probability P [seed S] (each call with probability P, reproducible with S)
 *
 * Every load of the control file replaces its rules whole: counters start again and a `remove` window
 * starts at the load. TRENT_FAULTS rules are kept beside them, evaluated first. For one call, every matching
 * delay/hang that triggers adds its sleep; the first fail rule that triggers decides the result (later fail
 * rules do not see the call). The sleep happens first, outside every lock, then the failure or the call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define EXPORT __attribute__((visibility("default")))
#define CHECK_INTERVAL_NS 50000000LL
#define MAX_CONTROL_FILE (64 * 1024)

/* Old session handles are recognised by an epoch in the upper 32 bits (see unwrap_session). */
_Static_assert(sizeof(CK_SESSION_HANDLE) >= 8, "session handle epochs need a 64-bit CK_ULONG");

/* ---------------------------------------------------------------------------------------------------------
 * The functions of the 2.40 list. The kind decides what a removed token answers and what `*` covers.
 */
enum kind { K_INIT, K_LIB, K_SLOT, K_SESSION };

#define FUNCTIONS(X)                                                                                         \
    X(C_Initialize, K_INIT) X(C_Finalize, K_INIT) X(C_GetInfo, K_LIB) X(C_GetFunctionList, K_INIT)           \
    X(C_GetSlotList, K_LIB) X(C_GetSlotInfo, K_LIB) X(C_GetTokenInfo, K_SLOT) X(C_GetMechanismList, K_SLOT)  \
    X(C_GetMechanismInfo, K_SLOT) X(C_InitToken, K_SLOT) X(C_InitPIN, K_SESSION) X(C_SetPIN, K_SESSION)      \
    X(C_OpenSession, K_SLOT) X(C_CloseSession, K_SESSION) X(C_CloseAllSessions, K_SLOT)                      \
    X(C_GetSessionInfo, K_SESSION) X(C_GetOperationState, K_SESSION) X(C_SetOperationState, K_SESSION)      \
    X(C_Login, K_SESSION) X(C_Logout, K_SESSION) X(C_CreateObject, K_SESSION) X(C_CopyObject, K_SESSION)     \
    X(C_DestroyObject, K_SESSION) X(C_GetObjectSize, K_SESSION) X(C_GetAttributeValue, K_SESSION)            \
    X(C_SetAttributeValue, K_SESSION) X(C_FindObjectsInit, K_SESSION) X(C_FindObjects, K_SESSION)            \
    X(C_FindObjectsFinal, K_SESSION) X(C_EncryptInit, K_SESSION) X(C_Encrypt, K_SESSION)                     \
    X(C_EncryptUpdate, K_SESSION) X(C_EncryptFinal, K_SESSION) X(C_DecryptInit, K_SESSION)                   \
    X(C_Decrypt, K_SESSION) X(C_DecryptUpdate, K_SESSION) X(C_DecryptFinal, K_SESSION)                       \
    X(C_DigestInit, K_SESSION) X(C_Digest, K_SESSION) X(C_DigestUpdate, K_SESSION) X(C_DigestKey, K_SESSION) \
    X(C_DigestFinal, K_SESSION) X(C_SignInit, K_SESSION) X(C_Sign, K_SESSION) X(C_SignUpdate, K_SESSION)     \
    X(C_SignFinal, K_SESSION) X(C_SignRecoverInit, K_SESSION) X(C_SignRecover, K_SESSION)                    \
    X(C_VerifyInit, K_SESSION) X(C_Verify, K_SESSION) X(C_VerifyUpdate, K_SESSION) X(C_VerifyFinal, K_SESSION) \
    X(C_VerifyRecoverInit, K_SESSION) X(C_VerifyRecover, K_SESSION) X(C_DigestEncryptUpdate, K_SESSION)      \
    X(C_DecryptDigestUpdate, K_SESSION) X(C_SignEncryptUpdate, K_SESSION) X(C_DecryptVerifyUpdate, K_SESSION) \
    X(C_GenerateKey, K_SESSION) X(C_GenerateKeyPair, K_SESSION) X(C_WrapKey, K_SESSION)                      \
    X(C_UnwrapKey, K_SESSION) X(C_DeriveKey, K_SESSION) X(C_SeedRandom, K_SESSION)                           \
    X(C_GenerateRandom, K_SESSION) X(C_GetFunctionStatus, K_SESSION) X(C_CancelFunction, K_SESSION)          \
    X(C_WaitForSlotEvent, K_LIB)

enum fn {
#define X(name, kind) FN_##name,
    FUNCTIONS(X)
#undef X
    FN_COUNT,
    FN_ALL = -1
};

static const struct { const char *name; enum kind kind; } functions[] = {
#define X(name, kind) {#name, kind},
    FUNCTIONS(X)
#undef X
};

static const struct { const char *name; CK_RV rv; } codes[] = {
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},       {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT}, {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},   {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},     {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
};

static const char *code_name(CK_RV rv, char buf[20]) {
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (codes[i].rv == rv) return codes[i].name;
    if (rv == CKR_OK) return "CKR_OK";
    snprintf(buf, 20, "0x%lx", (unsigned long)rv);
    return buf;
}

/* ---------------------------------------------------------------------------------------------------------
 * Schedules.
 */
enum action { FAIL, SLEEP };
enum trigger { ALWAYS, EVERY, COUNT, PROBABILITY };

struct rule {
    int line;
    enum action action;
    int fn;                 /* index into functions[], or FN_ALL */
    CK_RV rv;               /* FAIL */
    int forwarded;          /* FAIL: run the real call, then replace its result */
    long long sleep_ns;     /* SLEEP; -1: until the control file changes */
    enum trigger trigger;
    unsigned long n;        /* EVERY: the period; COUNT: calls left */
    unsigned long seen;     /* matching calls so far */
    double p;               /* PROBABILITY */
    uint64_t rng;
};

struct schedule {
    struct rule *rules;
    size_t count;
    long long remove_ns, remove_until; /* remove_until: CLOCK_MONOTONIC ns, 0 when no window */
    int reboot, has_generation;
    unsigned long generation;
};

static CK_FUNCTION_LIST_PTR real;
static CK_RV setup_rv = CKR_OK;
static int log_enabled;
static char *control_path;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;        /* the schedules and reboot bookkeeping */
static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER; /* one thread reloads at a time */
/* Every forwarded call holds this for reading, a reboot for writing: closing sessions that another thread is
 * using inside SoftHSM can crash it (sessions are not thread-safe), so a reboot waits for calls in flight. */
static pthread_rwlock_t inflight;

static struct schedule env_schedule, file_schedule;
static int have_last_generation;
static unsigned long last_generation;
static const char *pending_reason;
static atomic_int pending_close;              /* a reboot or removal is due */
static atomic_int initialized;                /* the real module is initialised through us */
static atomic_ulong epoch;                    /* reboots so far: the upper half of every session handle */
static atomic_ullong file_generation;         /* loads of the control file */
static atomic_llong next_check;               /* CLOCK_MONOTONIC_COARSE ns of the next stat */
static struct stat last_stat;
static int last_exists;

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "trent-pkcs11-faults[%d]: %s\n", (int)getpid(), line);
}
#define note(...) do { if (log_enabled) warn(__VA_ARGS__); } while (0)

static long long clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_ns(long long ns) {
    long long end = clock_ns(CLOCK_MONOTONIC) + ns;
    struct timespec t = {.tv_sec = end / 1000000000LL, .tv_nsec = end % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {}
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------------------------------------------------
 * Parsing. A schedule with any bad line is rejected whole: half a fault plan would make a test lie.
 */
static int parse_number(const char *s, unsigned long *out) {
    char *end;
    errno = 0;
    if (*s == '-') return 0;
    unsigned long v = strtoul(s, &end, 0);
    if (end == s || *end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_duration(const char *s, long long *ns) {
    char *end;
    double v = strtod(s, &end), scale;
    if (end == s || !(v >= 0)) return 0;
    if (!strcasecmp(end, "us")) scale = 1e3;
    else if (!strcasecmp(end, "ms")) scale = 1e6;
    else if (!strcasecmp(end, "s")) scale = 1e9;
    else if (!strcasecmp(end, "m")) scale = 60e9;
    else return 0;
    if (v * scale > 86400e9) return 0; /* a day: anything longer is a typo */
    *ns = (long long)(v * scale);
    return 1;
}

static int parse_function(const char *s, int *fn) {
    if (!strcmp(s, "*")) return *fn = FN_ALL, 1;
    for (int i = 0; i < FN_COUNT; i++)
        if (!strcasecmp(s, functions[i].name) && i != FN_C_GetFunctionList) return *fn = i, 1;
    return 0;
}

static int parse_code(const char *s, CK_RV *rv) {
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (!strcasecmp(s, codes[i].name)) return *rv = codes[i].rv, 1;
    unsigned long v;
    if (!parse_number(s, &v) || v == CKR_OK) return 0;
    *rv = v;
    return 1;
}

/* Parses one line (already split into words) into *s; returns NULL or what is wrong with it. */
static const char *parse_words(char **w, int n, int line, int allow_wait, struct schedule *s) {
    const char *verb = w[0];
    if (!strcasecmp(verb, "remove")) {
        if (n != 2 || s->remove_ns || !parse_duration(w[1], &s->remove_ns) || s->remove_ns == 0)
            return "usage: remove DURATION, once per schedule";
        return NULL;
    }
    if (!strcasecmp(verb, "reboot")) {
        if (n > 2 || s->reboot) return "usage: reboot [N], once per schedule";
        s->reboot = 1;
        if (n == 2 && !(s->has_generation = parse_number(w[1], &s->generation))) return "reboot N: N is a number";
        return NULL;
    }
    struct rule r = {.line = line, .trigger = ALWAYS};
    int i = 2;
    if (!strcasecmp(verb, "fail")) {
        r.action = FAIL;
        if (n < 3 || !parse_code(w[2], &r.rv)) return "usage: fail FUNC CODE [TRIGGER] [forwarded]";
        i = 3;
    } else if (!strcasecmp(verb, "delay") || !strcasecmp(verb, "hang")) {
        r.action = SLEEP;
        r.sleep_ns = -1;
        if (n > 2 && parse_duration(w[2], &r.sleep_ns)) i = 3;
        else if (!strcasecmp(verb, "delay")) return "usage: delay FUNC DURATION [TRIGGER]";
        else if (!allow_wait) return "a hang without a duration needs the control file";
    } else {
        return "unknown verb (fail, delay, hang, remove, reboot)";
    }
    if (n < 2 || !parse_function(w[1], &r.fn)) return "unknown function (C_Encrypt, ..., or *)";
    int seeded = 0;
    uint64_t seed = 0;
    for (; i < n; i++) {
        int has_arg = i + 1 < n;
        if (!strcasecmp(w[i], "forwarded") && r.action == FAIL) {
            r.forwarded = 1;
        } else if (!strcasecmp(w[i], "every") || !strcasecmp(w[i], "count")) {
            if (r.trigger != ALWAYS || !has_arg || !parse_number(w[i + 1], &r.n) || r.n == 0)
                return "one trigger: every N or count N, N >= 1";
            r.trigger = !strcasecmp(w[i++], "every") ? EVERY : COUNT;
        } else if (!strcasecmp(w[i], "probability")) {
            char *end;
            if (r.trigger != ALWAYS || !has_arg) return "one trigger: probability P";
            r.p = strtod(w[++i], &end);
            if (*end || !(r.p >= 0 && r.p <= 1)) return "probability P: 0 <= P <= 1";
            r.trigger = PROBABILITY;
        } else if (!strcasecmp(w[i], "seed")) {
            unsigned long v;
            if (!has_arg || !parse_number(w[++i], &v)) return "seed S: S is a number";
            seeded = 1;
            seed = v;
        } else {
            return "unknown word after the rule (every N, count N, probability P [seed S], forwarded)";
        }
    }
    if (seeded && r.trigger != PROBABILITY) return "seed goes with probability";
    r.rng = seeded ? seed : (uint64_t)clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)line;
    struct rule *grown = realloc(s->rules, (s->count + 1) * sizeof *grown);
    if (!grown) return "out of memory";
    s->rules = grown;
    s->rules[s->count++] = r;
    return NULL;
}

/* Parses a whole schedule; lines end at '\n' or, for the environment form, ';'. */
static int parse_schedule(const char *text, const char *separators, const char *origin, int allow_wait,
                          struct schedule *out) {
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
        const char *error = n < 0 ? "too many words" : n > 0 ? parse_words(words, n, line, allow_wait, &s) : NULL;
        if (error) {
            warn("%s:%d: %s; the whole schedule is ignored", origin, line, error);
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

/* Under mu: whether a schedule's reboot line fires now. */
static int reboot_due(const struct schedule *s) {
    if (!s->reboot) return 0;
    if (s->has_generation) {
        if (have_last_generation && last_generation == s->generation) return 0;
        have_last_generation = 1;
        last_generation = s->generation;
    }
    return 1;
}

/* Under mu: starts what a freshly loaded schedule asks for at load time. */
static void arm(struct schedule *s) {
    if (s->remove_ns) {
        s->remove_until = clock_ns(CLOCK_MONOTONIC) + s->remove_ns;
        pending_reason = "token removed";
        atomic_store(&pending_close, 1);
    }
    if (reboot_due(s)) {
        pending_reason = "partition reboot";
        atomic_store(&pending_close, 1);
    }
}

static char *read_control_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *text = malloc(MAX_CONTROL_FILE + 1);
    size_t n = text ? fread(text, 1, MAX_CONTROL_FILE + 1, f) : 0;
    int bad = ferror(f) || n > MAX_CONTROL_FILE;
    fclose(f);
    if (!text || bad) {
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}

/* Under reload_mu: loads the control file if its stat changed (a missing file is an empty schedule). */
static void check_control_file(void) {
    struct stat st;
    int exists = stat(control_path, &st) == 0;
    if (exists == last_exists &&
        (!exists || (st.st_ino == last_stat.st_ino && st.st_dev == last_stat.st_dev &&
                     st.st_size == last_stat.st_size && st.st_mtim.tv_sec == last_stat.st_mtim.tv_sec &&
                     st.st_mtim.tv_nsec == last_stat.st_mtim.tv_nsec)))
        return;
    last_exists = exists;
    if (exists) last_stat = st;
    struct schedule s = {0};
    if (exists) {
        char *text = read_control_file(control_path);
        if (!text) warn("%s: cannot read it (or over %d bytes); no faults from it", control_path, MAX_CONTROL_FILE);
        else parse_schedule(text, "\n", control_path, 1, &s);
        free(text);
    }
    pthread_mutex_lock(&mu);
    free(file_schedule.rules);
    file_schedule = s;
    arm(&file_schedule);
    atomic_fetch_add(&file_generation, 1);
    pthread_mutex_unlock(&mu);
    note("%s: loaded %zu rule(s)%s%s", control_path, s.count, s.remove_ns ? ", remove" : "", s.reboot ? ", reboot" : "");
}

/* Cheap on the hot path: one coarse clock read and one atomic load, unless 50 ms have passed. */
static void maybe_reload(void) {
    if (!control_path) return;
    long long now = clock_ns(CLOCK_MONOTONIC_COARSE);
    if (now < atomic_load_explicit(&next_check, memory_order_relaxed)) return;
    if (pthread_mutex_trylock(&reload_mu) != 0) return; /* someone else is checking */
    if (now >= atomic_load(&next_check)) {
        atomic_store(&next_check, now + CHECK_INTERVAL_NS);
        check_control_file();
    }
    pthread_mutex_unlock(&reload_mu);
}

/* The reboot itself, also the start of a removal: with no call in flight, close every session of every slot
 * in the real module, and move to a new epoch so that no older handle is ever served again. */
static void run_pending_close(void) {
    if (!atomic_load(&pending_close)) return;
    pthread_rwlock_wrlock(&inflight);
    if (atomic_exchange(&pending_close, 0)) {
        pthread_mutex_lock(&mu);
        const char *reason = pending_reason;
        pthread_mutex_unlock(&mu);
        CK_ULONG n = 0, closed = 0;
        CK_SLOT_ID *slots = NULL;
        if (atomic_load(&initialized) && real->C_GetSlotList(CK_FALSE, NULL, &n) == CKR_OK && n > 0 &&
            (slots = calloc(n, sizeof *slots)) && real->C_GetSlotList(CK_FALSE, slots, &n) == CKR_OK)
            for (CK_ULONG i = 0; i < n; i++) closed += real->C_CloseAllSessions(slots[i]) == CKR_OK;
        free(slots);
        unsigned long e = atomic_fetch_add(&epoch, 1) + 1;
        note("%s: C_CloseAllSessions on %lu slot(s), session handle epoch %lu", reason, (unsigned long)closed, e);
    }
    pthread_rwlock_unlock(&inflight);
}

/* ---------------------------------------------------------------------------------------------------------
 * Deciding one call.
 */
struct call {
    enum fn fn;
    int locked;      /* holds inflight for reading */
    int removed;     /* token removed: the slot-list functions hide it */
    CK_RV late_rv;   /* a `forwarded` failure */
    int late_line;
};

struct decision {
    CK_RV rv;
    int line;        /* 0 with rv set: the token is removed */
    long long sleep;
    int sleep_line;
    int wait_for_change;
    unsigned long long generation;
};

static int matches(const struct rule *r, enum fn fn) {
    return r->fn == (int)fn || (r->fn == FN_ALL && functions[fn].kind != K_INIT);
}

static int fires(struct rule *r) {
    r->seen++;
    switch (r->trigger) {
    case ALWAYS: return 1;
    case EVERY: return r->seen % r->n == 0;
    case COUNT: return r->n > 0 ? (r->n--, 1) : 0;
    case PROBABILITY: return (double)(splitmix64(&r->rng) >> 11) * 0x1.0p-53 < r->p;
    }
    return 0;
}

/* Under mu. */
static void decide(struct call *c, struct decision *d) {
    long long now = clock_ns(CLOCK_MONOTONIC);
    enum kind kind = functions[c->fn].kind;
    if (env_schedule.remove_until > now || file_schedule.remove_until > now) {
        if (kind == K_SESSION) { d->rv = CKR_DEVICE_REMOVED; return; }
        if (kind == K_SLOT) { d->rv = CKR_TOKEN_NOT_PRESENT; return; }
        c->removed = kind == K_LIB;
    }
    struct schedule *schedules[2] = {&env_schedule, &file_schedule};
    int chosen = 0;
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < schedules[k]->count; i++) {
            struct rule *r = &schedules[k]->rules[i];
            if (!matches(r, c->fn) || (r->action == FAIL && chosen) || !fires(r)) continue;
            if (r->action == SLEEP) {
                if (r->sleep_ns < 0) d->wait_for_change = 1;
                else if (d->sleep < 86400000000000LL) d->sleep += r->sleep_ns;
                if (!d->sleep_line) d->sleep_line = r->line;
            } else if (r->forwarded) {
                chosen = 1, c->late_rv = r->rv, c->late_line = r->line;
            } else {
                chosen = 1, d->rv = r->rv, d->line = r->line;
            }
        }
    }
    d->generation = atomic_load(&file_generation);
}

/* Runs before every forwarded call: returns CKR_OK to forward (holding inflight), or the code to return. */
static CK_RV enter(enum fn fn, struct call *c) {
    char buf[20];
    *c = (struct call){.fn = fn};
    maybe_reload();
    run_pending_close();
    struct decision d = {0};
    pthread_mutex_lock(&mu);
    decide(c, &d);
    pthread_mutex_unlock(&mu);
    if (d.rv != CKR_OK && d.line == 0) {
        note("%s -> %s (token removed)", functions[fn].name, code_name(d.rv, buf));
        return d.rv;
    }
    if (d.sleep || d.wait_for_change) {
        note("%s: sleeping %lld ms%s (line %d)", functions[fn].name, d.sleep / 1000000,
             d.wait_for_change ? ", then until the control file changes" : "", d.sleep_line);
        sleep_ns(d.sleep);
        while (d.wait_for_change && atomic_load(&file_generation) == d.generation) {
            sleep_ns(CHECK_INTERVAL_NS / 2);
            maybe_reload();
        }
        run_pending_close();
    }
    if (d.rv != CKR_OK) {
        note("%s -> %s (line %d)", functions[fn].name, code_name(d.rv, buf), d.line);
        return d.rv;
    }
    /* C_WaitForSlotEvent may block for ever inside the module: it must not hold off a reboot. */
    if (fn != FN_C_WaitForSlotEvent) {
        pthread_rwlock_rdlock(&inflight);
        c->locked = 1;
    }
    return CKR_OK;
}

/* Runs after every forwarded call. */
static CK_RV finish(struct call *c, CK_RV rv) {
    char buf[20], buf2[20];
    if (c->locked) pthread_rwlock_unlock(&inflight);
    if (c->late_rv == CKR_OK) return rv;
    note("%s -> %s after forwarding, the real call returned %s (line %d)", functions[c->fn].name,
         code_name(c->late_rv, buf), code_name(rv, buf2), c->late_line);
    return c->late_rv;
}

/* Session handles carry the epoch in their upper half; before the first reboot they equal the real ones.
 * The real module alone is not enough to kill old handles: NSS softoken's C_GenerateRandom and C_SeedRandom
 * never look at the handle (CKR_OK on a closed session), and modules may hand a freed number out again
 * (SoftHSM restarts at 1 after C_Initialize), which would let an old handle address another thread's session. */
static int unwrap_session(CK_SESSION_HANDLE h, CK_SESSION_HANDLE *real_handle) {
    if ((h >> 32) != atomic_load(&epoch)) return 0;
    *real_handle = h & 0xffffffffUL;
    return 1;
}

static CK_RV stale(struct call *c) {
    pthread_rwlock_unlock(&inflight);
    note("%s -> CKR_SESSION_HANDLE_INVALID (handle from before a reboot)", functions[c->fn].name);
    return CKR_SESSION_HANDLE_INVALID;
}

/* ---------------------------------------------------------------------------------------------------------
 * Forwarders.
 */
#define ARGS(...) __VA_ARGS__
#define REAL(name, args) (real->name ? real->name args : CKR_FUNCTION_NOT_SUPPORTED)

#define PLAIN_FN(name, params, args)                                                                         \
    static CK_RV fw_##name params {                                                                          \
        struct call c;                                                                                       \
        CK_RV rv = enter(FN_##name, &c);                                                                     \
        return rv != CKR_OK ? rv : finish(&c, REAL(name, args));                                             \
    }

#define SESSION_FN(name, params, args)                                                                       \
    static CK_RV fw_##name(CK_SESSION_HANDLE session, ARGS params) {                                         \
        struct call c;                                                                                       \
        CK_SESSION_HANDLE h;                                                                                 \
        CK_RV rv = enter(FN_##name, &c);                                                                     \
        if (rv != CKR_OK) return rv;                                                                         \
        if (!unwrap_session(session, &h)) return stale(&c);                                                  \
        return finish(&c, REAL(name, (h, ARGS args)));                                                       \
    }

#define SESSION_FN0(name)                                                                                    \
    static CK_RV fw_##name(CK_SESSION_HANDLE session) {                                                      \
        struct call c;                                                                                       \
        CK_SESSION_HANDLE h;                                                                                 \
        CK_RV rv = enter(FN_##name, &c);                                                                     \
        if (rv != CKR_OK) return rv;                                                                         \
        if (!unwrap_session(session, &h)) return stale(&c);                                                  \
        return finish(&c, REAL(name, (h)));                                                                  \
    }

typedef CK_BYTE_PTR B;
typedef CK_ULONG L;
typedef CK_ULONG_PTR LP;
typedef CK_MECHANISM_PTR M;
typedef CK_OBJECT_HANDLE O;
typedef CK_OBJECT_HANDLE_PTR OP;
typedef CK_ATTRIBUTE_PTR A;

PLAIN_FN(C_GetInfo, (CK_INFO_PTR info), (info))
PLAIN_FN(C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info), (slot, info))
PLAIN_FN(C_GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, LP n), (slot, list, n))
PLAIN_FN(C_GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR info), (slot, t, info))
PLAIN_FN(C_InitToken, (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, L n, CK_UTF8CHAR_PTR label), (slot, pin, n, label))
PLAIN_FN(C_CloseAllSessions, (CK_SLOT_ID slot), (slot))
PLAIN_FN(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR r), (flags, slot, r))
SESSION_FN(C_InitPIN, (CK_UTF8CHAR_PTR pin, L n), (pin, n))
SESSION_FN(C_SetPIN, (CK_UTF8CHAR_PTR o, L on, CK_UTF8CHAR_PTR p, L pn), (o, on, p, pn))
SESSION_FN0(C_CloseSession)
SESSION_FN(C_GetSessionInfo, (CK_SESSION_INFO_PTR info), (info))
SESSION_FN(C_GetOperationState, (B s, LP n), (s, n))
SESSION_FN(C_SetOperationState, (B s, L n, O e, O a), (s, n, e, a))
SESSION_FN(C_Login, (CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, L n), (u, pin, n))
SESSION_FN0(C_Logout)
SESSION_FN(C_CreateObject, (A t, L n, OP o), (t, n, o))
SESSION_FN(C_CopyObject, (O o, A t, L n, OP out), (o, t, n, out))
SESSION_FN(C_DestroyObject, (O o), (o))
SESSION_FN(C_GetObjectSize, (O o, LP n), (o, n))
SESSION_FN(C_GetAttributeValue, (O o, A t, L n), (o, t, n))
SESSION_FN(C_SetAttributeValue, (O o, A t, L n), (o, t, n))
SESSION_FN(C_FindObjectsInit, (A t, L n), (t, n))
SESSION_FN(C_FindObjects, (OP o, L max, LP n), (o, max, n))
SESSION_FN0(C_FindObjectsFinal)
SESSION_FN(C_EncryptInit, (M m, O k), (m, k))
SESSION_FN(C_Encrypt, (B d, L dn, B e, LP en), (d, dn, e, en))
SESSION_FN(C_EncryptUpdate, (B d, L dn, B e, LP en), (d, dn, e, en))
SESSION_FN(C_EncryptFinal, (B e, LP en), (e, en))
SESSION_FN(C_DecryptInit, (M m, O k), (m, k))
SESSION_FN(C_Decrypt, (B e, L en, B d, LP dn), (e, en, d, dn))
SESSION_FN(C_DecryptUpdate, (B e, L en, B d, LP dn), (e, en, d, dn))
SESSION_FN(C_DecryptFinal, (B d, LP dn), (d, dn))
SESSION_FN(C_DigestInit, (M m), (m))
SESSION_FN(C_Digest, (B d, L dn, B o, LP on), (d, dn, o, on))
SESSION_FN(C_DigestUpdate, (B d, L dn), (d, dn))
SESSION_FN(C_DigestKey, (O k), (k))
SESSION_FN(C_DigestFinal, (B o, LP on), (o, on))
SESSION_FN(C_SignInit, (M m, O k), (m, k))
SESSION_FN(C_Sign, (B d, L dn, B s, LP sn), (d, dn, s, sn))
SESSION_FN(C_SignUpdate, (B d, L dn), (d, dn))
SESSION_FN(C_SignFinal, (B s, LP sn), (s, sn))
SESSION_FN(C_SignRecoverInit, (M m, O k), (m, k))
SESSION_FN(C_SignRecover, (B d, L dn, B s, LP sn), (d, dn, s, sn))
SESSION_FN(C_VerifyInit, (M m, O k), (m, k))
SESSION_FN(C_Verify, (B d, L dn, B s, L sn), (d, dn, s, sn))
SESSION_FN(C_VerifyUpdate, (B d, L dn), (d, dn))
SESSION_FN(C_VerifyFinal, (B s, L sn), (s, sn))
SESSION_FN(C_VerifyRecoverInit, (M m, O k), (m, k))
SESSION_FN(C_VerifyRecover, (B s, L sn, B d, LP dn), (s, sn, d, dn))
SESSION_FN(C_DigestEncryptUpdate, (B d, L dn, B e, LP en), (d, dn, e, en))
SESSION_FN(C_DecryptDigestUpdate, (B e, L en, B d, LP dn), (e, en, d, dn))
SESSION_FN(C_SignEncryptUpdate, (B d, L dn, B e, LP en), (d, dn, e, en))
SESSION_FN(C_DecryptVerifyUpdate, (B e, L en, B d, LP dn), (e, en, d, dn))
SESSION_FN(C_GenerateKey, (M m, A t, L n, OP k), (m, t, n, k))
SESSION_FN(C_GenerateKeyPair, (M m, A pt, L pn, A st, L sn, OP pk, OP sk), (m, pt, pn, st, sn, pk, sk))
SESSION_FN(C_WrapKey, (M m, O w, O k, B out, LP n), (m, w, k, out, n))
SESSION_FN(C_UnwrapKey, (M m, O u, B in, L inn, A t, L n, OP k), (m, u, in, inn, t, n, k))
SESSION_FN(C_DeriveKey, (M m, O b, A t, L n, OP k), (m, b, t, n, k))
SESSION_FN(C_SeedRandom, (B s, L n), (s, n))
SESSION_FN(C_GenerateRandom, (B r, L n), (r, n))
SESSION_FN0(C_GetFunctionStatus)
SESSION_FN0(C_CancelFunction)

/* pInitArgs goes through untouched: the caller's flags, mutex callbacks and pReserved (NSS's init string). */
static CK_RV fw_C_Initialize(CK_VOID_PTR args) {
    struct call c;
    CK_RV rv = enter(FN_C_Initialize, &c);
    if (rv != CKR_OK) return rv;
    rv = real->C_Initialize(args);
    if (rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) atomic_store(&initialized, 1);
    return finish(&c, rv);
}

/* The real module stays loaded (RTLD_NODELETE), so a later C_Initialize re-initialises the same instance. */
static CK_RV fw_C_Finalize(CK_VOID_PTR reserved) {
    struct call c;
    CK_RV rv = enter(FN_C_Finalize, &c);
    if (rv != CKR_OK) return rv;
    rv = real->C_Finalize(reserved);
    if (rv == CKR_OK) atomic_store(&initialized, 0);
    return finish(&c, rv);
}

static CK_RV fw_C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count) {
    struct call c;
    CK_RV rv = enter(FN_C_GetSlotList, &c);
    if (rv != CKR_OK) return rv;
    if (c.removed && token_present) {
        CK_ULONG n = 0;
        rv = real->C_GetSlotList(CK_FALSE, NULL, &n); /* for its errors, such as CKR_CRYPTOKI_NOT_INITIALIZED */
        if (rv == CKR_OK && !count) rv = CKR_ARGUMENTS_BAD;
        if (rv == CKR_OK) *count = 0;
        note("C_GetSlotList: no slot with a token (token removed)");
    } else {
        rv = real->C_GetSlotList(token_present, list, count);
    }
    return finish(&c, rv);
}

static CK_RV fw_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) {
    struct call c;
    CK_RV rv = enter(FN_C_GetSlotInfo, &c);
    if (rv != CKR_OK) return rv;
    rv = real->C_GetSlotInfo(slot, info);
    if (rv == CKR_OK && c.removed) info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    return finish(&c, rv);
}

static CK_RV fw_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                              CK_SESSION_HANDLE_PTR session) {
    struct call c;
    CK_SESSION_HANDLE h = 0;
    CK_RV rv = enter(FN_C_OpenSession, &c);
    if (rv != CKR_OK) return rv;
    rv = real->C_OpenSession(slot, flags, app, notify, session ? &h : NULL);
    if (rv == CKR_OK && (h >> 32) != 0) {
        real->C_CloseSession(h);
        warn("the real module returned session handle 0x%lx, above 32 bits: this wrapper cannot carry it", h);
        rv = CKR_GENERAL_ERROR;
    } else if (rv == CKR_OK) {
        *session = h | ((CK_SESSION_HANDLE)atomic_load(&epoch) << 32);
    }
    return finish(&c, rv);
}

#define fw_C_GetFunctionList C_GetFunctionList
EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out);

/* Always the 2.40 layout: the version field describes this struct, not the real module. */
static CK_FUNCTION_LIST list = {
    .version = {2, 40},
#define X(name, kind) .name = fw_##name,
    FUNCTIONS(X)
#undef X
};

/* ---------------------------------------------------------------------------------------------------------
 * Loading.
 */
static void setup(void) {
    const char *log = getenv("TRENT_FAULTS_LOG");
    log_enabled = log && !strcmp(log, "1");
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* glibc prefers readers by default: under steady load a reboot would wait for ever. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&inflight, &attr);
    pthread_rwlockattr_destroy(&attr);

    const char *path = getenv("TRENT_FAULTS_MODULE");
    if (!path || !*path) {
        warn("TRENT_FAULTS_MODULE is not set: it names the real PKCS#11 module to wrap");
        setup_rv = CKR_GENERAL_ERROR;
        return;
    }
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    CK_C_GetFunctionList get = library ? (CK_C_GetFunctionList)dlsym(library, "C_GetFunctionList") : NULL;
    /* Pointed at itself, the wrapper would re-enter this pthread_once and hang: refuse before calling. */
    int self = get == C_GetFunctionList;
    CK_RV rv = get && !self ? get(&real) : CKR_GENERAL_ERROR;
    if (rv != CKR_OK || !real) {
        warn("cannot use %s as the real module: %s", path,
             !library ? dlerror() : !get ? "no C_GetFunctionList" : self ? "it is this wrapper" : "C_GetFunctionList failed");
        real = NULL;
        setup_rv = CKR_GENERAL_ERROR;
        return;
    }
    const char *text = getenv("TRENT_FAULTS");
    if (text && !parse_schedule(text, ";\n", "TRENT_FAULTS", 0, &env_schedule)) {
        setup_rv = CKR_GENERAL_ERROR;
        return;
    }
    pthread_mutex_lock(&mu);
    arm(&env_schedule);
    pthread_mutex_unlock(&mu);
    const char *control = getenv("TRENT_FAULTS_CONTROL");
    if (control && *control && !(control_path = strdup(control))) setup_rv = CKR_HOST_MEMORY;
    if (control_path) {
        pthread_mutex_lock(&reload_mu);
        atomic_store(&next_check, clock_ns(CLOCK_MONOTONIC_COARSE) + CHECK_INTERVAL_NS);
        check_control_file();
        pthread_mutex_unlock(&reload_mu);
    }
    note("wrapping %s; %zu rule(s) from TRENT_FAULTS; control file %s", path, env_schedule.count,
         control_path ? control_path : "none");
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
    pthread_once(&once, setup);
    if (setup_rv != CKR_OK) return setup_rv;
    if (!out) return CKR_ARGUMENTS_BAD;
    *out = &list;
    return CKR_OK;
}

#if CRYPTOKI_VERSION_MAJOR >= 3
/* Built against a 3.x header, the wrapper offers exactly one interface, "PKCS 11" 2.40 over the list above:
 * it forwards no 3.0 function, so it must not claim any, even when the real module (NSS) has them. */
static CK_INTERFACE interface = {.pInterfaceName = (char *)"PKCS 11", .pFunctionList = &list, .flags = 0};

EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR interfaces, CK_ULONG_PTR count) {
    pthread_once(&once, setup);
    if (setup_rv != CKR_OK) return setup_rv;
    if (!count) return CKR_ARGUMENTS_BAD;
    if (interfaces && *count < 1) return *count = 1, CKR_BUFFER_TOO_SMALL;
    if (interfaces) interfaces[0] = interface;
    *count = 1;
    return CKR_OK;
}

EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR out, CK_FLAGS flags) {
    pthread_once(&once, setup);
    if (setup_rv != CKR_OK) return setup_rv;
    if (!out) return CKR_ARGUMENTS_BAD;
    if ((name && strcmp((const char *)name, "PKCS 11") != 0) || (version && (version->major != 2 || version->minor != 40)) ||
        (flags & ~interface.flags))
        return CKR_ARGUMENTS_BAD; /* what NSS and p11-kit answer for an interface they do not have */
    *out = &interface;
    return CKR_OK;
}
#endif
