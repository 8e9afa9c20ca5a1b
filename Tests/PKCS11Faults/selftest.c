/*
 * selftest.c: drives libtrent-pkcs11-faults.so over a real token (SoftHSM or NSS softoken). Built and run by
 * selftest.sh, which prepares the token and the environment (TRENT_FAULTS_MODULE, TRENT_FAULTS_CONTROL).
 *
 *   selftest WRAPPER MODE LABEL PIN [INIT_STRING]
 *   MODE main: every fault kind through the control file; env: the TRENT_FAULTS form; refused / accepted:
 *   C_GetFunctionList must fail / succeed with this environment (TRENT_FAULTS syntax checks); log: one
 *   injected fault (selftest.sh checks stderr for it and for the PIN).
 * Prints "ok - ..." / "not ok - ..." lines and "N passed, N failed" last; exits 1 on any failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p;
static const char *label, *pin, *control;
static CK_C_INITIALIZE_ARGS init_args = {.flags = CKF_OS_LOCKING_OK};
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE session_key, token_key;
static char token_key_label[64];
static int passed, failed;
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

static const char *rv_name(CK_RV rv) {
    static __thread char buf[20];
    switch (rv) {
#define N(x) case x: return #x;
    N(CKR_OK) N(CKR_GENERAL_ERROR) N(CKR_FUNCTION_FAILED) N(CKR_ARGUMENTS_BAD) N(CKR_DEVICE_ERROR)
    N(CKR_DEVICE_MEMORY) N(CKR_DEVICE_REMOVED) N(CKR_KEY_HANDLE_INVALID) N(CKR_OBJECT_HANDLE_INVALID)
    N(CKR_OPERATION_ACTIVE) N(CKR_SESSION_CLOSED) N(CKR_SESSION_HANDLE_INVALID) N(CKR_TOKEN_NOT_PRESENT)
    N(CKR_USER_NOT_LOGGED_IN) N(CKR_USER_ALREADY_LOGGED_IN) N(CKR_CRYPTOKI_NOT_INITIALIZED)
    N(CKR_CRYPTOKI_ALREADY_INITIALIZED) N(CKR_FUNCTION_NOT_SUPPORTED) N(CKR_OPERATION_NOT_INITIALIZED)
#undef N
    }
    snprintf(buf, sizeof buf, "0x%lx", rv);
    return buf;
}

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok" : "not ok");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    ok ? passed++ : failed++;
}
#define EXPECT(call, want) do { CK_RV _rv = (call); \
    check(_rv == (want), "%s -> %s (want %s)", #call, rv_name(_rv), rv_name(want)); } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static void pause_ms(int ms) { usleep(ms * 1000); }

/* Replaces the control file atomically (a new inode), then waits out the wrapper's 50 ms check interval. */
static void set_faults(const char *text) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", control);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, control) != 0) { perror(control); exit(2); }
    pause_ms(120);
}

static CK_SESSION_HANDLE open_session(CK_RV *rv_out) {
    CK_SESSION_HANDLE h = 0;
    CK_RV rv = p->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
    if (rv_out) *rv_out = rv;
    else if (rv != CKR_OK) { fprintf(stderr, "C_OpenSession: %s\n", rv_name(rv)); exit(2); }
    return h;
}

static CK_RV login(CK_SESSION_HANDLE h) {
    CK_RV rv = p->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

static CK_ULONG session_state(CK_SESSION_HANDLE h) {
    CK_SESSION_INFO info;
    return p->C_GetSessionInfo(h, &info) == CKR_OK ? info.state : (CK_ULONG)-1;
}

static CK_RV generate_key(CK_SESSION_HANDLE h, CK_BBOOL token, const char *name, CK_OBJECT_HANDLE *key) {
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE t[] = {
        {CKA_VALUE_LEN, &len, sizeof len}, {CKA_TOKEN, &token, 1}, {CKA_PRIVATE, &yes, 1},
        {CKA_SENSITIVE, &yes, 1}, {CKA_EXTRACTABLE, &no, 1}, {CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1},
        {CKA_LABEL, (void *)name, strlen(name)},
    };
    return p->C_GenerateKey(h, &m, t, sizeof t / sizeof *t, key);
}

/* How many secret keys carry `name` (0 on any error). */
static CK_ULONG count_keys(CK_SESSION_HANDLE h, const char *name, CK_OBJECT_HANDLE *first) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)name, strlen(name)}};
    CK_OBJECT_HANDLE found[16];
    CK_ULONG n = 0;
    if (p->C_FindObjectsInit(h, t, 2) != CKR_OK) return 0;
    if (p->C_FindObjects(h, found, 16, &n) != CKR_OK) n = 0;
    p->C_FindObjectsFinal(h);
    if (n && first) *first = found[0];
    return n;
}

static CK_BYTE iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, aad[8] = "context";
static CK_GCM_PARAMS gcm = {iv, sizeof iv, 96, aad, sizeof aad, 128};
static CK_MECHANISM gcm_mech = {CKM_AES_GCM, &gcm, sizeof gcm};
static CK_BYTE plain[32] = "thirty-two bytes of plaintext...";

/* One AES-GCM encryption: the EncryptInit result if it fails, else the C_Encrypt result. */
static CK_RV encrypt(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key, CK_BYTE *out, CK_ULONG *out_len) {
    CK_BYTE buf[64];
    CK_ULONG n = sizeof buf;
    CK_RV rv = p->C_EncryptInit(h, &gcm_mech, key);
    if (rv != CKR_OK) return rv;
    rv = p->C_Encrypt(h, plain, sizeof plain, out ? out : buf, out ? out_len : &n);
    return rv;
}

/* A fresh session, one encryption with the session key, closed again: what one pooled Trent request does. */
static CK_RV probe(void) {
    CK_RV rv;
    CK_SESSION_HANDLE h = open_session(&rv);
    if (rv != CKR_OK) return rv;
    rv = encrypt(h, session_key, NULL, NULL);
    p->C_CloseSession(h);
    return rv;
}

static void load(const char *wrapper, int must_work) {
    void *lib = dlopen(wrapper, RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); exit(2); }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    CK_RV rv = get(&p);
    if (must_work < 0) {
        check(rv == CKR_GENERAL_ERROR, "C_GetFunctionList refuses the setup -> %s (want CKR_GENERAL_ERROR)", rv_name(rv));
        return;
    }
    if (must_work == 0) {
        check(rv == CKR_OK, "C_GetFunctionList accepts TRENT_FAULTS=\"%s\" -> %s", getenv("TRENT_FAULTS"), rv_name(rv));
        return;
    }
    if (rv != CKR_OK) { fprintf(stderr, "C_GetFunctionList: %s\n", rv_name(rv)); exit(2); }
}

/* C_Initialize (with the init string), the token by label, its user PIN set as Trent does for NSS, a login. */
static CK_SESSION_HANDLE start(void) {
    CK_RV rv = p->C_Initialize(&init_args);
    if (rv != CKR_OK) { fprintf(stderr, "C_Initialize: %s\n", rv_name(rv)); exit(2); }
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    slot = (CK_SLOT_ID)-1;
    if (p->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) n = 0;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        size_t l = strlen(label);
        if (p->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !memcmp(ti.label, label, l) && (l == 32 || ti.label[l] == ' ')) {
            slot = slots[i];
            if (!(ti.flags & CKF_USER_PIN_INITIALIZED)) { /* a new NSS key database: empty SO PIN, once */
                CK_SESSION_HANDLE so = open_session(NULL);
                if (p->C_Login(so, CKU_SO, (CK_UTF8CHAR_PTR)"", 0) != CKR_OK ||
                    p->C_InitPIN(so, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK) { fprintf(stderr, "InitPIN failed\n"); exit(2); }
                p->C_Logout(so);
                p->C_CloseSession(so);
            }
        }
    }
    if (slot == (CK_SLOT_ID)-1) { fprintf(stderr, "no token labelled %s\n", label); exit(2); }
    CK_SESSION_HANDLE h = open_session(NULL);
    if ((rv = login(h)) != CKR_OK) { fprintf(stderr, "C_Login: %s\n", rv_name(rv)); exit(2); }
    return h;
}

/* After a reboot or removal: log in again, find the token key, make a new session key. */
static CK_SESSION_HANDLE recover(void) {
    CK_SESSION_HANDLE h = open_session(NULL);
    login(h);
    count_keys(h, token_key_label, &token_key);
    generate_key(h, CK_FALSE, "faults-selftest-session", &session_key);
    return h;
}

/* ---- hung calls run in threads ---- */
struct hung { CK_SESSION_HANDLE h; CK_BYTE *ct; CK_ULONG ct_len; CK_RV rv; int matches; double ms; atomic_int done; };

static void *hung_decrypt(void *arg) {
    struct hung *x = arg;
    CK_BYTE out[64];
    CK_ULONG n = sizeof out;
    double t0 = now_ms();
    x->rv = p->C_DecryptInit(x->h, &gcm_mech, session_key);
    if (x->rv == CKR_OK) x->rv = p->C_Decrypt(x->h, x->ct, x->ct_len, out, &n);
    x->matches = x->rv == CKR_OK && n == sizeof plain && !memcmp(out, plain, n);
    x->ms = now_ms() - t0;
    atomic_store(&x->done, 1);
    return NULL;
}

static void *hung_session_info(void *arg) {
    struct hung *x = arg;
    CK_SESSION_INFO info;
    double t0 = now_ms();
    x->rv = p->C_GetSessionInfo(x->h, &info);
    x->ms = now_ms() - t0;
    atomic_store(&x->done, 1);
    return NULL;
}

/* ---- the stress run: four threads encrypt while the schedule flips and the partition reboots ---- */
static atomic_int stress_stop;
struct worker { long ok, injected, reopened, unexpected; CK_RV last_unexpected; };

static void *stress_worker(void *arg) {
    struct worker *w = arg;
    CK_SESSION_HANDLE h = 0;
    CK_OBJECT_HANDLE key = 0;
    int fresh = 1;
    while (!stress_stop) {
        if (fresh) {
            CK_RV rv;
            h = open_session(&rv);
            if (rv != CKR_OK || login(h) != CKR_OK || !count_keys(h, token_key_label, &key)) {
                if (rv == CKR_OK) p->C_CloseSession(h);
                pause_ms(5);
                continue;
            }
            fresh = 0;
        }
        CK_RV rv = encrypt(h, key, NULL, NULL);
        if (rv == CKR_OK) { w->ok++; continue; }
        if (rv == CKR_DEVICE_ERROR) w->injected++;
        else if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_OBJECT_HANDLE_INVALID ||
                 rv == CKR_KEY_HANDLE_INVALID)
            w->reopened++; /* a reboot: the session, the login or the key handle went away */
        else { w->unexpected++; w->last_unexpected = rv; }
        p->C_CloseSession(h); /* as Trent's pool does after such errors; an operation may still be active */
        fresh = 1;
    }
    if (!fresh) p->C_CloseSession(h);
    return NULL;
}

static void run_main(void) {
    CK_SESSION_HANDLE h = start(), h2;
    CK_RV rv;
    CK_INFO info;
    char text[256];

    printf("# pass-through\n");
    check(p->version.major == 2 && p->version.minor == 40, "the wrapper's function list is version 2.40");
    EXPECT(p->C_GetInfo(&info), CKR_OK);
    printf("# real module: %.32s %d.%d, Cryptoki %d.%d\n", info.libraryDescription, info.libraryVersion.major,
           info.libraryVersion.minor, info.cryptokiVersion.major, info.cryptokiVersion.minor);
    snprintf(token_key_label, sizeof token_key_label, "faults-selftest-%d", (int)getpid());
    EXPECT(generate_key(h, CK_FALSE, "faults-selftest-session", &session_key), CKR_OK);
    EXPECT(generate_key(h, CK_TRUE, token_key_label, &token_key), CKR_OK);
    CK_BYTE ct[64], out[64];
    CK_ULONG ct_len = sizeof ct, out_len = sizeof out;
    EXPECT(encrypt(h, session_key, ct, &ct_len), CKR_OK);
    EXPECT(p->C_DecryptInit(h, &gcm_mech, session_key), CKR_OK);
    EXPECT(p->C_Decrypt(h, ct, ct_len, out, &out_len), CKR_OK);
    check(ct_len == 48 && out_len == 32 && !memcmp(out, plain, 32), "AES-GCM round trip through the wrapper (48-byte ct)");
    EXPECT(probe(), CKR_OK);

    printf("# fail ... every 1, then the file changes\n");
    set_faults("fail C_Encrypt CKR_DEVICE_ERROR every 1   # each call\n");
    for (int i = 0; i < 3; i++) EXPECT(probe(), CKR_DEVICE_ERROR);
    CK_BYTE rnd[16];
    EXPECT(p->C_GenerateRandom(h, rnd, sizeof rnd), CKR_OK);
    set_faults("# nothing\n");
    EXPECT(probe(), CKR_OK);

    printf("# fail ... count 3\n");
    set_faults("fail C_Encrypt CKR_SESSION_HANDLE_INVALID count 3\n");
    for (int i = 0; i < 3; i++) EXPECT(probe(), CKR_SESSION_HANDLE_INVALID);
    EXPECT(probe(), CKR_OK);
    EXPECT(probe(), CKR_OK);

    printf("# fail ... every 3\n");
    set_faults("fail C_Encrypt CKR_FUNCTION_FAILED every 3\n");
    char pattern[10] = {0};
    for (int i = 0; i < 9; i++) pattern[i] = probe() == CKR_OK ? '.' : 'F';
    check(!strcmp(pattern, "..F..F..F"), "every 3 fails calls 3, 6, 9: %s", pattern);

    printf("# fail ... probability P seed S\n");
    char seq1[401] = {0}, seq2[401] = {0};
    set_faults("fail C_GenerateRandom CKR_DEVICE_MEMORY probability 0.3 seed 42\n");
    int fails = 0;
    for (int i = 0; i < 400; i++) fails += (seq1[i] = p->C_GenerateRandom(h, rnd, 16) == CKR_OK ? '.' : 'F') == 'F';
    set_faults("fail C_GenerateRandom CKR_DEVICE_MEMORY probability 0.3 seed 42   # reloaded: same sequence\n");
    for (int i = 0; i < 400; i++) seq2[i] = p->C_GenerateRandom(h, rnd, 16) == CKR_OK ? '.' : 'F';
    check(fails > 80 && fails < 160, "probability 0.3 failed %d of 400 calls", fails);
    check(!strcmp(seq1, seq2), "the same seed gives the same sequence after a reload");
    set_faults("fail C_GenerateRandom CKR_DEVICE_MEMORY probability 0 seed 1\nfail C_SeedRandom 0x30 probability 1\n");
    fails = 0;
    for (int i = 0; i < 100; i++) fails += p->C_GenerateRandom(h, rnd, 16) != CKR_OK;
    check(fails == 0, "probability 0 never fails (%d)", fails);

    printf("# codes by number, and `*`\n");
    rv = p->C_SeedRandom(h, rnd, 16);
    check(rv == CKR_DEVICE_ERROR, "fail C_SeedRandom 0x30 -> %s (want CKR_DEVICE_ERROR)", rv_name(rv));
    set_faults("fail * CKR_GENERAL_ERROR\n");
    CK_TOKEN_INFO ti;
    EXPECT(p->C_GetInfo(&info), CKR_GENERAL_ERROR);
    EXPECT(p->C_GetTokenInfo(slot, &ti), CKR_GENERAL_ERROR);
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_GENERAL_ERROR);
    set_faults("");
    EXPECT(p->C_GetInfo(&info), CKR_OK);

    printf("# plain fail leaves the real operation active; `forwarded` ends it (and does the work)\n");
    /* (a session of its own: closing h, which made the session key, would destroy the key and log out) */
    CK_SESSION_HANDLE h4 = open_session(NULL);
    set_faults("fail C_Encrypt CKR_GENERAL_ERROR count 1\n");
    EXPECT(encrypt(h4, session_key, NULL, NULL), CKR_GENERAL_ERROR);
    EXPECT(p->C_EncryptInit(h4, &gcm_mech, session_key), CKR_OPERATION_ACTIVE);
    p->C_CloseSession(h4);
    h4 = open_session(NULL);
    set_faults("fail C_Encrypt CKR_GENERAL_ERROR count 1 forwarded\nfail C_GenerateKey CKR_DEVICE_ERROR count 1 forwarded\n");
    EXPECT(encrypt(h4, session_key, NULL, NULL), CKR_GENERAL_ERROR);
    EXPECT(encrypt(h4, session_key, NULL, NULL), CKR_OK);
    CK_OBJECT_HANDLE lost;
    EXPECT(generate_key(h4, CK_FALSE, "faults-selftest-lost", &lost), CKR_DEVICE_ERROR);
    check(count_keys(h4, "faults-selftest-lost", NULL) == 1, "the forwarded C_GenerateKey created its key anyway");
    p->C_CloseSession(h4);
    set_faults("");

    printf("# delay\n");
    set_faults("delay C_GenerateRandom 200ms\n");
    double t0 = now_ms();
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_OK);
    double slow = now_ms() - t0;
    t0 = now_ms();
    EXPECT(p->C_GetInfo(&info), CKR_OK);
    double fast = now_ms() - t0;
    check(slow >= 195 && slow < 600 && fast < 100, "delay 200ms: C_GenerateRandom %.0f ms, C_GetInfo %.1f ms", slow, fast);

    printf("# hang DURATION delays only the hung call\n");
    set_faults("hang C_Decrypt 2s\n");
    struct hung hd = {.h = open_session(NULL), .ct = ct, .ct_len = ct_len};
    pthread_t thread;
    pthread_create(&thread, NULL, hung_decrypt, &hd);
    pause_ms(100);
    t0 = now_ms();
    int others_ok = 0;
    for (int i = 0; i < 20; i++) others_ok += probe() == CKR_OK;
    for (int i = 0; i < 200; i++) others_ok += p->C_GenerateRandom(h, rnd, 16) == CKR_OK;
    double others = now_ms() - t0;
    check(others_ok == 220 && others < 1000 && !atomic_load(&hd.done),
          "220 other calls went through in %.0f ms while C_Decrypt hung", others);
    pthread_join(thread, NULL);
    check(hd.rv == CKR_OK && hd.matches && hd.ms >= 1990 && hd.ms < 3000,
          "the hung C_Decrypt took %.0f ms, then was forwarded: %s, plaintext %s", hd.ms, rv_name(hd.rv),
          hd.matches ? "correct" : "WRONG");
    p->C_CloseSession(hd.h);

    printf("# hang without a duration lasts until the control file changes\n");
    set_faults("hang C_GetSessionInfo\n");
    struct hung hs = {.h = open_session(NULL)};
    pthread_create(&thread, NULL, hung_session_info, &hs);
    pause_ms(500);
    check(!atomic_load(&hs.done), "C_GetSessionInfo still hangs after 500 ms");
    EXPECT(probe(), CKR_OK);
    t0 = now_ms();
    set_faults("");
    pthread_join(thread, NULL);
    double after = now_ms() - t0;
    check(hs.rv == CKR_OK && after < 500, "it returned %s %.0f ms after the file changed", rv_name(hs.rv), after);
    p->C_CloseSession(hs.h);

    printf("# remove 1s\n");
    h2 = open_session(NULL);
    CK_OBJECT_HANDLE old_session_key = session_key;
    t0 = now_ms();
    set_faults("remove 1s\n");
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_DEVICE_REMOVED);
    EXPECT(p->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    check(n == 0, "C_GetSlotList(tokenPresent) lists %lu slots while removed", n);
    n = 16;
    EXPECT(p->C_GetSlotList(CK_FALSE, slots, &n), CKR_OK);
    check(n > 0, "C_GetSlotList(all) still lists %lu slot(s)", n);
    CK_SLOT_INFO si;
    EXPECT(p->C_GetSlotInfo(slot, &si), CKR_OK);
    check(!(si.flags & CKF_TOKEN_PRESENT), "C_GetSlotInfo: CKF_TOKEN_PRESENT is clear");
    EXPECT(p->C_GetTokenInfo(slot, &ti), CKR_TOKEN_NOT_PRESENT);
    open_session(&rv);
    check(rv == CKR_TOKEN_NOT_PRESENT, "C_OpenSession -> %s (want CKR_TOKEN_NOT_PRESENT)", rv_name(rv));
    EXPECT(p->C_GetSessionInfo(h2, &(CK_SESSION_INFO){0}), CKR_DEVICE_REMOVED);
    EXPECT(p->C_GetInfo(&info), CKR_OK);
    /* Trent's module reset while the token is away: the library comes back, the token does not */
    EXPECT(p->C_Finalize(NULL), CKR_OK);
    EXPECT(p->C_Initialize(&init_args), CKR_OK);
    n = 16;
    EXPECT(p->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    check(n == 0, "after C_Finalize + C_Initialize the token is still removed (%lu slots)", n);
    double back = 0;
    while (now_ms() - t0 < 3000) {
        n = 16;
        if (p->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK && n > 0) { back = now_ms() - t0; break; }
        pause_ms(20);
    }
    check(back >= 1000 && back < 1700, "the token came back %.0f ms after the schedule was written", back);
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    EXPECT(p->C_GetSessionInfo(h2, &(CK_SESSION_INFO){0}), CKR_SESSION_HANDLE_INVALID);
    h = open_session(NULL);
    check(session_state(h) == CKS_RW_PUBLIC_SESSION, "a new session starts logged out (state %lu)", session_state(h));
    rv = p->C_EncryptInit(h, &gcm_mech, old_session_key);
    check(rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID, "the old session key is gone: %s", rv_name(rv));
    p->C_CloseSession(h);
    h = recover();
    check(token_key != 0, "after logging in again the token key is still there");
    EXPECT(encrypt(h, token_key, NULL, NULL), CKR_OK);
    set_faults("");

    printf("# reboot\n");
    void *real_lib = dlopen(getenv("TRENT_FAULTS_MODULE"), RTLD_NOW | RTLD_LOCAL);
    CK_FUNCTION_LIST_PTR raw = NULL;
    ((CK_C_GetFunctionList)dlsym(real_lib, "C_GetFunctionList"))(&raw); /* the same, initialised instance */
    h2 = open_session(NULL);
    old_session_key = session_key;
    CK_OBJECT_HANDLE old_token_key = token_key;
    set_faults("reboot 7\n");
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    EXPECT(p->C_GenerateRandom(h2, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    rv = raw->C_GetSessionInfo(h2 & 0xffffffffUL, &(CK_SESSION_INFO){0});
    check(rv == CKR_SESSION_HANDLE_INVALID, "the real module itself answers C_GetSessionInfo on a closed session with %s",
          rv_name(rv));
    printf("# and C_GenerateRandom on it with %s (the wrapper: CKR_SESSION_HANDLE_INVALID, by the epoch)\n",
           rv_name(raw->C_GenerateRandom(h2 & 0xffffffffUL, rnd, 16)));
    CK_SESSION_HANDLE h3 = open_session(NULL);
    printf("# old real handles %lu, %lu; the first new one is %lu (%s); wrapper handle 0x%lx\n", h & 0xffffffffUL,
           h2 & 0xffffffffUL, h3 & 0xffffffffUL,
           (h3 & 0xffffffffUL) == (h & 0xffffffffUL) || (h3 & 0xffffffffUL) == (h2 & 0xffffffffUL)
               ? "REUSED: only the wrapper's epoch keeps the old handle dead" : "not reused", h3);
    EXPECT(p->C_GenerateRandom(h2, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    check(session_state(h3) == CKS_RW_PUBLIC_SESSION, "logged out after the reboot (state %lu)", session_state(h3));
    rv = p->C_EncryptInit(h3, &gcm_mech, old_session_key);
    check(rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID, "the session key is gone: %s", rv_name(rv));
    EXPECT(login(h3), CKR_OK);
    rv = encrypt(h3, old_token_key, NULL, NULL);
    printf("# the token key's old handle after the reboot and a new login: %s\n", rv_name(rv));
    check(count_keys(h3, token_key_label, &token_key) == 1, "the token key is found again (handle %lu, was %lu)",
          token_key, old_token_key);
    EXPECT(encrypt(h3, token_key, NULL, NULL), CKR_OK);
    p->C_CloseSession(h3);
    h = recover();
    set_faults("reboot 7   # the same generation: no second reboot\n");
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_OK);
    set_faults("reboot 8\n");
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    h = recover();
    set_faults("reboot\n");
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_SESSION_HANDLE_INVALID);
    h = recover();
    pause_ms(200);
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_OK); /* a bare reboot fires once per load, not per check */
    set_faults("");

    printf("# C_Finalize and C_Initialize again (Trent's module reset)\n");
    EXPECT(p->C_Finalize(NULL), CKR_OK);
    rv = p->C_GetSessionInfo(h, &(CK_SESSION_INFO){0});
    check(rv == CKR_CRYPTOKI_NOT_INITIALIZED || rv == CKR_SESSION_HANDLE_INVALID,
          "after C_Finalize the real module answers an old session with %s", rv_name(rv));
    printf("# and C_GenerateRandom with %s, C_GetInfo with %s\n", rv_name(p->C_GenerateRandom(h, rnd, 16)),
           rv_name(p->C_GetInfo(&info)));
    set_faults("fail * CKR_DEVICE_ERROR   # not C_Initialize or C_Finalize\nfail C_Initialize CKR_DEVICE_ERROR count 1\n");
    EXPECT(p->C_Initialize(&init_args), CKR_DEVICE_ERROR);
    EXPECT(p->C_Initialize(&init_args), CKR_OK);
    EXPECT(p->C_GetInfo(&info), CKR_DEVICE_ERROR);
    EXPECT(p->C_Finalize(NULL), CKR_OK);
    EXPECT(p->C_Initialize(&init_args), CKR_OK);
    set_faults("");
    EXPECT(p->C_GetSessionInfo(h, &(CK_SESSION_INFO){0}), CKR_SESSION_HANDLE_INVALID);
    p->C_Finalize(NULL);
    h = start();
    check(count_keys(h, token_key_label, &token_key) == 1, "after re-initialisation the token key is found");
    EXPECT(encrypt(h, token_key, NULL, NULL), CKR_OK);
    generate_key(h, CK_FALSE, "faults-selftest-session", &session_key);

    printf("# a schedule with a bad line is ignored whole\n");
    set_faults("fail C_Encrypt CKR_DEVICE_ERROR\nfail C_Encrypt CKR_BOGUS\n");
    EXPECT(probe(), CKR_OK);

    printf("# four threads under flipping faults and reboots\n");
    struct worker workers[4] = {0};
    pthread_t threads[4];
    stress_stop = 0;
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, stress_worker, &workers[i]);
    const char *phases[] = {"", "fail C_Encrypt CKR_DEVICE_ERROR probability 0.3\n", "delay * 1ms probability 0.2\n",
                            "reboot %d\n"};
    for (int i = 0; i < 12; i++) {
        snprintf(text, sizeof text, phases[i % 4], 100 + i);
        set_faults(text);
        pause_ms(30);
    }
    stress_stop = 1;
    struct worker total = {0};
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        total.ok += workers[i].ok, total.injected += workers[i].injected, total.reopened += workers[i].reopened;
        total.unexpected += workers[i].unexpected;
        if (workers[i].unexpected) total.last_unexpected = workers[i].last_unexpected;
    }
    check(total.ok > 100 && total.injected > 0 && total.reopened > 0 && total.unexpected == 0,
          "%ld ok, %ld injected, %ld reboot errors, %ld unexpected (%s)", total.ok, total.injected, total.reopened,
          total.unexpected, rv_name(total.last_unexpected));
    set_faults("");

    h = recover();
    EXPECT(p->C_DestroyObject(h, token_key), CKR_OK);
    EXPECT(p->C_Finalize(NULL), CKR_OK);
}

static void run_env(void) {
    CK_SESSION_HANDLE h = start();
    CK_BYTE rnd[16];
    CK_INFO info;
    printf("# TRENT_FAULTS=%s\n", getenv("TRENT_FAULTS"));
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_DEVICE_MEMORY);
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_OK);
    double t0 = now_ms();
    EXPECT(p->C_GetInfo(&info), CKR_OK);
    double ms = now_ms() - t0;
    check(ms >= 95 && ms < 500, "C_GetInfo delayed %.0f ms", ms);
    EXPECT(p->C_Finalize(NULL), CKR_OK);
}

static void run_log(void) {
    CK_SESSION_HANDLE h = start();
    CK_BYTE rnd[16];
    EXPECT(p->C_GenerateRandom(h, rnd, 16), CKR_DEVICE_ERROR);
    EXPECT(p->C_Logout(h), CKR_OK);
    EXPECT(login(h), CKR_OK);
    EXPECT(p->C_Finalize(NULL), CKR_OK);
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: selftest WRAPPER MODE LABEL PIN [INIT_STRING]\n"); return 2; }
    const char *mode = argv[2];
    label = argv[3], pin = argv[4], control = getenv("TRENT_FAULTS_CONTROL");
    if (argc > 5 && *argv[5]) init_args.pReserved = argv[5];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "refused")) load(argv[1], -1);
    else if (!strcmp(mode, "accepted")) load(argv[1], 0);
    else {
        load(argv[1], 1);
        if (!strcmp(mode, "main")) {
            if (!control) { fprintf(stderr, "main needs TRENT_FAULTS_CONTROL\n"); return 2; }
            run_main();
        } else if (!strcmp(mode, "env")) run_env();
        else if (!strcmp(mode, "log")) run_log();
        else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
