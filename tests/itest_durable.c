/* lorad — tests/itest_durable.c: durable before visible (SPEC.md 8), with
 * real faults, no mocks:
 *   - a write-size limit (RLIMIT_FSIZE, as systemd's LimitFSIZE= sets it,
 *     lowered on the running daemon with prlimit(2); no root needed): a
 *     swap and a canary start that would write a larger state file are
 *     507 not_durable; a rollback that shrinks it works;
 *   - a full file system (a 64 KiB tmpfs mounted by the test, root only):
 *     a swap and a rollback are 507; after freeing space the next swap
 *     works;
 *   - a read-only directory (that tmpfs remounted read-only as root, else
 *     chmod 0555): a canary percent change, a promote and a rollback are
 *     507; writable again, they work;
 *   - a directory where the state file was: the rename fails after the
 *     flip, which is undone (507), and the undone version is not reissued.
 * Each refused change leaves /status (stable, canary, history, generation,
 * next_version), the state file's bytes and the answers of /infer exactly
 * as they were, turns state_file.ok false with an error naming the path,
 * and counts in lorad_state_write_failures_total; the next good write sets
 * ok true, error null. /infer is answered and checked against the
 * independent reference by a background client throughout. After each
 * test a restart serves exactly what served before the stop.
 * Also: a /swap still staging when the drain ends gets an answer (or a
 * clean close) and lorad exits 0. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "itestutil.h"

static struct itu_model *M;
static double *X; /* one row */
static struct itu_adapter *RA, *RB, *RC;
static char MNT_B[512], MNT_C[512]; /* tmpfs mount points (root only) */

static const struct itu_adapter *ref_of(const char *name)
{
    if (!name[0])
        return NULL;
    if (!strcmp(name, "demo-a"))
        return RA;
    if (!strcmp(name, "demo-b"))
        return RB;
    if (!strcmp(name, "demo-c"))
        return RC;
    return (const struct itu_adapter *)-1;
}

/* ---- the background verifying client ---- */

struct verifier {
    pthread_t th;
    int port;
    atomic_bool stop;
    long ok, bad;
    char why[800];
};

static void *verifier_main(void *arg)
{
    struct verifier *v = arg;
    struct itu_client *c = itu_client_new(v->port);
    double *want = malloc(sizeof(double) * (size_t)M->out);
    while (!atomic_load(&v->stop)) {
        struct itu_infer res;
        bool ok = itu_infer_do(c, X, 1, M->in, M->out, false, false, NULL, NULL, &res);
        const struct itu_adapter *ref = ok ? ref_of(res.adapter) : NULL;
        if (ok && ref == (const struct itu_adapter *)-1) {
            ok = false;
            snprintf(res.why, sizeof(res.why), "unexpected adapter %s", res.adapter);
        }
        if (ok) {
            itu_forward(M, ref, X, 1, want);
            if (itu_match(res.out, want, (size_t)M->out) > 1.0) {
                ok = false;
                snprintf(res.why, sizeof(res.why), "%s v%lld: outputs differ from the reference",
                         res.adapter, res.version);
            }
        }
        if (ok) {
            v->ok++;
        } else {
            if (!v->bad)
                snprintf(v->why, sizeof(v->why), "%s", res.why);
            v->bad++;
        }
        itu_infer_free(&res);
        usleep(2000);
    }
    free(want);
    itu_client_free(&c);
    return NULL;
}

static void verifier_start(struct verifier *v, const struct itu_daemon *d)
{
    memset(v, 0, sizeof(*v));
    v->port = d->port;
    ck_assert(pthread_create(&v->th, NULL, verifier_main, v) == 0);
}

static void verifier_stop(struct verifier *v)
{
    atomic_store(&v->stop, true);
    pthread_join(v->th, NULL);
    ck_assert_msg(v->bad == 0, "/infer during the faults: %ld of %ld wrong or failed; first: %s",
                  v->bad, v->bad + v->ok, v->why);
    ck_assert_msg(v->ok > 0, "the verifying client got no answer");
}

/* ---- what serves, what is on disk ---- */

struct seen {
    cJSON *serving; /* stable, canary, history, generation, next_version of /status */
    char *file;     /* the state file's bytes */
    size_t len;
    double failures; /* lorad_state_write_failures_total */
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 > cap)
            ck_assert((buf = realloc(buf, cap = cap * 2 + 8192)) != NULL);
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static double failures_metric(struct itu_daemon *d)
{
    struct itu_resp r;
    ck_assert_int_eq(itu_get(d, "/metrics", &r), 200);
    const char *p = strstr(r.body, "\nlorad_state_write_failures_total ");
    ck_assert_msg(p != NULL, "/metrics has no lorad_state_write_failures_total");
    double v = strtod(p + strlen("\nlorad_state_write_failures_total "), NULL);
    itu_resp_free(&r);
    return v;
}

static void seen_take(struct itu_daemon *d, const char *state_path, struct seen *s)
{
    static const char *const keys[] = {"stable", "canary", "history", "generation", "next_version"};
    cJSON *st = itu_status(d);
    s->serving = cJSON_CreateObject();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(st, keys[i]);
        ck_assert_msg(v != NULL, "/status has no %s", keys[i]);
        cJSON_AddItemToObject(s->serving, keys[i], v);
    }
    cJSON_Delete(st);
    s->file = slurp(state_path, &s->len);
    s->failures = failures_metric(d);
}

static void seen_free(struct seen *s)
{
    cJSON_Delete(s->serving);
    free(s->file);
    memset(s, 0, sizeof(*s));
}

/* /status state_file: ok and, when not ok, an error naming `path`. */
static void expect_state_file(struct itu_daemon *d, const char *path, bool ok, const char *errtext)
{
    cJSON *st = itu_status(d);
    const cJSON *sf = itu_jget(st, "state_file");
    ck_assert_msg(sf && cJSON_IsObject(sf), "/status has no state_file object");
    ck_assert_str_eq(itu_jstr(st, "state_file.path"), path);
    const cJSON *okj = itu_jget(st, "state_file.ok");
    ck_assert_msg(cJSON_IsBool(okj) && cJSON_IsTrue(okj) == ok, "state_file.ok is not %s",
                  ok ? "true" : "false");
    const cJSON *e = itu_jget(st, "state_file.error");
    if (ok) {
        ck_assert_msg(cJSON_IsNull(e), "state_file.error is not null after a good write");
    } else {
        ck_assert_msg(cJSON_IsString(e), "state_file.error is not a string after a failure");
        ck_assert_msg(strstr(e->valuestring, path) && strstr(e->valuestring, errtext),
                      "state_file.error \"%s\" does not name %s and \"%s\"", e->valuestring, path,
                      errtext);
    }
    cJSON_Delete(st);
}

/* POST path body must be refused 507 not_durable (the message naming the
 * state file and `errtext`), changing nothing of `before`. */
static void expect_refused(struct itu_daemon *d, const char *state_path, const char *path,
                           const char *body, const char *errtext, const struct seen *before)
{
    struct itu_resp r;
    const char *why;
    long st = itu_post(d, path, body, &r);
    ck_assert_msg(st == 507, "POST %s %s under the fault: %s (expected 507)", path, body,
                  itu_describe(&r));
    ck_assert_msg(itu_error_shape_ok(&r, &why), "507 answer: %s", why);
    ck_assert_str_eq(itu_error_code(&r), "not_durable");
    const char *msg = itu_jstr(r.json, "error.message");
    ck_assert_msg(strstr(msg, state_path) && strstr(msg, errtext),
                  "507 message \"%s\" does not name %s and \"%s\"", msg, state_path, errtext);
    itu_resp_free(&r);
    struct seen after;
    seen_take(d, state_path, &after);
    ck_assert_msg(cJSON_Compare(before->serving, after.serving, true),
                  "POST %s refused, but /status changed:\nbefore %s\nafter %s", path,
                  cJSON_PrintUnformatted(before->serving), cJSON_PrintUnformatted(after.serving));
    ck_assert_msg(after.len == before->len && !memcmp(after.file, before->file, after.len),
                  "POST %s refused, but the state file changed", path);
    ck_assert_msg(after.failures >= before->failures + 1,
                  "lorad_state_write_failures_total did not count the refusal (%g then %g)",
                  before->failures, after.failures);
    seen_free(&after);
    expect_state_file(d, state_path, false, errtext);
}

/* Stops (SIGTERM, exit 0), restarts in the same dir with `ovr` and checks
 * that what serves is what served before the stop. */
static struct itu_daemon *restart_same(struct itu_daemon *d, const char *dir, const char *ovr,
                                       const char *state_path)
{
    struct seen before, after;
    seen_take(d, state_path, &before);
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "exit status %d; log:\n%s", rc, itu_log_tail(d, 2000));
    itu_daemon_free(&d);
    d = itu_daemon_start(dir, ovr);
    seen_take(d, state_path, &after);
    cJSON *b = before.serving, *a = after.serving;
    /* restored snapshots are staged anew: compare what identifies them */
    ck_assert_int_eq((int)itu_jnum(a, "stable.version", -1),
                     (int)itu_jnum(b, "stable.version", -2));
    const char *sa = itu_jstr(a, "stable.adapter"), *sb = itu_jstr(b, "stable.adapter");
    ck_assert_msg((!sa && !sb) || (sa && sb && !strcmp(sa, sb)), "restart serves %s, not %s",
                  sa ? sa : "base", sb ? sb : "base");
    ck_assert_int_eq(itu_jsize(a, "history"), itu_jsize(b, "history"));
    for (int i = 0; i < itu_jsize(b, "history"); i++) {
        char k[64];
        snprintf(k, sizeof(k), "history.%d.version", i);
        ck_assert_int_eq((int)itu_jnum(a, k, -1), (int)itu_jnum(b, k, -2));
    }
    ck_assert_int_eq(cJSON_IsNull(itu_jget(a, "canary")), cJSON_IsNull(itu_jget(b, "canary")));
    ck_assert_msg(itu_jnum(a, "next_version", 0) >= itu_jnum(b, "next_version", 1),
                  "next_version went back after the restart");
    struct itu_infer res;
    ck_assert_msg(itu_infer_do(d->client, X, 1, M->in, M->out, false, false, NULL, NULL, &res),
                  "%s", res.why);
    ck_assert_msg(!strcmp(res.adapter, sb ? sb : "") &&
                      res.version == (long long)itu_jnum(b, "stable.version", -1),
                  "after the restart /infer names %s v%lld", res.adapter, res.version);
    itu_infer_free(&res);
    seen_free(&before);
    seen_free(&after);
    return d;
}

static void post_ok(struct itu_daemon *d, const char *path, const char *body)
{
    cJSON_Delete(itu_post_ok(d, path, body));
}

/* ---- (a) RLIMIT_FSIZE ---- */

START_TEST(test_fsize_limit)
{
    char *dir = itu_tmpdir();
    char state[600];
    snprintf(state, sizeof(state), "%s/state.json", dir);
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    post_ok(d, "/swap", "{\"adapter\": \"demo-b\"}"); /* history gains demo-a */
    struct verifier v;
    verifier_start(&v, d);

    struct seen before;
    seen_take(d, state, &before);
    /* the daemon may write files up to a few bytes more than this one */
    struct rlimit lim = {before.len + 8, RLIM_INFINITY};
    ck_assert_msg(prlimit(d->pid, RLIMIT_FSIZE, &lim, NULL) == 0, "prlimit: %s", strerror(errno));
    expect_refused(d, state, "/swap", "{\"adapter\": \"demo-c\"}", "File too large", &before);
    expect_refused(d, state, "/swap", "{\"adapter\": \"demo-c\", \"canary_percent\": 10}",
                   "File too large", &before);
    /* a smaller file fits: the rollback drops demo-b and a history entry */
    cJSON *rb = itu_post_ok(d, "/rollback", "{}");
    ck_assert_str_eq(itu_jstr(rb, "adapter"), "demo-a");
    cJSON_Delete(rb);
    expect_state_file(d, state, true, NULL);
    verifier_stop(&v);
    seen_free(&before);
    lim.rlim_cur = RLIM_INFINITY;
    ck_assert(prlimit(d->pid, RLIMIT_FSIZE, &lim, NULL) == 0);
    d = restart_same(d, dir, NULL, state);
    ck_assert_int_eq(itu_daemon_stop(d, 15000), 0);
    itu_daemon_free(&d);
    free(dir);
}
END_TEST

/* ---- (b) a full file system ---- */

static bool mount_tmpfs(const char *path)
{
    mkdir(path, 0755);
    if (mount("tmpfs", path, "tmpfs", 0, "size=64k") == 0)
        return true;
    fprintf(stderr, "itest_durable: mount tmpfs %s: %s\n", path, strerror(errno));
    return false;
}

/* Fills the file system holding `path` (a file of that name) until ENOSPC. */
static void fill(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert(fd >= 0);
    static char block[4096];
    while (write(fd, block, sizeof(block)) > 0)
        ;
    ck_assert_int_eq(errno, ENOSPC);
    while (write(fd, block, 1) > 0) /* the last partial page */
        ;
    close(fd);
}

START_TEST(test_disk_full)
{
    if (geteuid() != 0) {
        printf("SKIP: test_disk_full needs root (it mounts a tmpfs)\n");
        return;
    }
    char *dir = itu_tmpdir();
    ck_assert(mount_tmpfs(MNT_B));
    char state[600], filler[600], ovr[800];
    snprintf(state, sizeof(state), "%s/state.json", MNT_B);
    snprintf(filler, sizeof(filler), "%s/filler", MNT_B);
    snprintf(ovr, sizeof(ovr), "{\"state_file\": \"%s\"}", state);
    struct itu_daemon *d = itu_daemon_start(dir, ovr);
    post_ok(d, "/swap", "{\"adapter\": \"demo-b\"}");
    struct verifier v;
    verifier_start(&v, d);
    struct seen before;
    seen_take(d, state, &before);
    fill(filler);
    expect_refused(d, state, "/swap", "{\"adapter\": \"demo-c\"}", "No space left on device",
                   &before);
    expect_refused(d, state, "/rollback", "{}", "No space left on device", &before);
    ck_assert(unlink(filler) == 0);
    cJSON *sw = itu_post_ok(d, "/swap", "{\"adapter\": \"demo-c\"}");
    /* the refused swap issued no version: this one gets the next */
    ck_assert_int_eq((int)itu_jnum(sw, "version", -1),
                     (int)itu_jnum(before.serving, "next_version", -2));
    cJSON_Delete(sw);
    expect_state_file(d, state, true, NULL);
    verifier_stop(&v);
    seen_free(&before);
    d = restart_same(d, dir, ovr, state);
    ck_assert_int_eq(itu_daemon_stop(d, 15000), 0);
    itu_daemon_free(&d);
    umount2(MNT_B, MNT_DETACH);
    free(dir);
}
END_TEST

/* ---- (c) a read-only directory ---- */

START_TEST(test_read_only)
{
    bool root = geteuid() == 0;
    char *dir = itu_tmpdir();
    char sdir[600], state[700], ovr[800];
    if (root) {
        ck_assert(mount_tmpfs(MNT_C));
        snprintf(sdir, sizeof(sdir), "%s", MNT_C);
    } else {
        snprintf(sdir, sizeof(sdir), "%s/st", dir);
        ck_assert(mkdir(sdir, 0755) == 0);
    }
    snprintf(state, sizeof(state), "%s/state.json", sdir);
    snprintf(ovr, sizeof(ovr), "{\"state_file\": \"%s\"}", state);
    const char *errtext = root ? "Read-only file system" : "Permission denied";
    struct itu_daemon *d = itu_daemon_start(dir, ovr);
    post_ok(d, "/swap", "{\"adapter\": \"demo-b\", \"canary_percent\": 10}");
    struct verifier v;
    verifier_start(&v, d);
    struct seen before;
    seen_take(d, state, &before);
    if (root)
        ck_assert_msg(mount(NULL, sdir, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0, "remount ro: %s",
                      strerror(errno));
    else
        ck_assert(chmod(sdir, 0555) == 0);
    expect_refused(d, state, "/canary", "{\"percent\": 50}", errtext, &before);
    expect_refused(d, state, "/promote", "{}", errtext, &before);
    expect_refused(d, state, "/rollback", "{}", errtext, &before);
    if (root)
        ck_assert(mount(NULL, sdir, NULL, MS_REMOUNT, NULL) == 0);
    else
        ck_assert(chmod(sdir, 0755) == 0);
    cJSON *c = itu_post_ok(d, "/canary", "{\"percent\": 50}");
    ck_assert_int_eq((int)itu_jnum(c, "percent", -1), 50);
    cJSON_Delete(c);
    expect_state_file(d, state, true, NULL);
    post_ok(d, "/promote", "{}");
    verifier_stop(&v);
    seen_free(&before);
    d = restart_same(d, dir, ovr, state);
    cJSON *st = itu_status(d);
    ck_assert_str_eq(itu_jstr(st, "stable.adapter"), "demo-b");
    cJSON_Delete(st);
    ck_assert_int_eq(itu_daemon_stop(d, 15000), 0);
    itu_daemon_free(&d);
    if (root)
        umount2(MNT_C, MNT_DETACH);
    free(dir);
}
END_TEST

/* ---- the rename fails after the flip: the flip is undone ---- */

START_TEST(test_rename_fails)
{
    char *dir = itu_tmpdir();
    char state[600];
    snprintf(state, sizeof(state), "%s/state.json", dir);
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    post_ok(d, "/swap", "{\"adapter\": \"demo-b\"}");
    struct verifier v;
    verifier_start(&v, d);
    cJSON *st = itu_status(d);
    cJSON *stable = cJSON_Duplicate(itu_jget(st, "stable"), true);
    cJSON *hist = cJSON_Duplicate(itu_jget(st, "history"), true);
    double gen = itu_jnum(st, "generation", -1), next = itu_jnum(st, "next_version", -1);
    cJSON_Delete(st);
    double fails = failures_metric(d);
    /* a directory where the file was: the temp file is written, the
     * rename over it fails (EISDIR) after the flip */
    ck_assert(unlink(state) == 0 && mkdir(state, 0700) == 0);
    struct itu_resp r;
    ck_assert_msg(itu_post(d, "/swap", "{\"adapter\": \"demo-c\"}", &r) == 507, "%s",
                  itu_describe(&r));
    ck_assert_str_eq(itu_error_code(&r), "not_durable");
    ck_assert_msg(strstr(itu_jstr(r.json, "error.message"), "rename") &&
                      strstr(itu_jstr(r.json, "error.message"), "Is a directory"),
                  "%s", itu_describe(&r));
    itu_resp_free(&r);
    st = itu_status(d);
    ck_assert_msg(cJSON_Compare(itu_jget(st, "stable"), stable, true) &&
                      cJSON_Compare(itu_jget(st, "history"), hist, true) &&
                      itu_jnum(st, "generation", -2) == gen,
                  "the undone swap left /status changed");
    /* the undone version may have been seen: it is not issued again */
    ck_assert(itu_jnum(st, "next_version", -2) == next + 1);
    cJSON_Delete(st);
    ck_assert(failures_metric(d) >= fails + 1);
    expect_state_file(d, state, false, "Is a directory");
    struct itu_infer res;
    ck_assert_msg(itu_infer_do(d->client, X, 1, M->in, M->out, false, false, NULL, NULL, &res),
                  "%s", res.why);
    ck_assert_str_eq(res.adapter, "demo-b");
    itu_infer_free(&res);
    ck_assert(rmdir(state) == 0);
    cJSON *sw = itu_post_ok(d, "/swap", "{\"adapter\": \"demo-c\"}");
    ck_assert_int_eq((int)itu_jnum(sw, "version", -1), (int)next + 1);
    cJSON_Delete(sw);
    expect_state_file(d, state, true, NULL);
    verifier_stop(&v);
    cJSON_Delete(stable);
    cJSON_Delete(hist);
    d = restart_same(d, dir, NULL, state);
    ck_assert_int_eq(itu_daemon_stop(d, 15000), 0);
    itu_daemon_free(&d);
    free(dir);
}
END_TEST

/* ---- a /swap still staging when the drain ends ---- */

/* An adapter "big" of rank `r` on every layer, F16 zeros (a sparse file:
 * staging converts and hashes every byte). */
static void write_big_adapter(const char *adir, int r)
{
    char path[900], hdr[8192];
    snprintf(path, sizeof(path), "%s/big", adir);
    tu_mkdir(path);
    snprintf(path, sizeof(path), "%s/big/adapter_config.json", adir);
    tu_write_text(path,
                  "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %d, "
                  "\"target_modules\": [\"proj\"]}",
                  r, r);
    size_t off = 0, n = 0;
    n += (size_t)snprintf(hdr + n, sizeof(hdr) - n, "{");
    for (size_t l = 0; l < M->n; l++) {
        const struct itu_ref_layer *L = &M->L[l];
        size_t a = (size_t)r * (size_t)L->in * 2, b = (size_t)L->out * (size_t)r * 2;
        n += (size_t)snprintf(hdr + n, sizeof(hdr) - n,
                              "%s\"base_model.model.%s.lora_A.weight\": {\"dtype\": \"F16\", "
                              "\"shape\": [%d, %d], \"data_offsets\": [%zu, %zu]}, "
                              "\"base_model.model.%s.lora_B.weight\": {\"dtype\": \"F16\", "
                              "\"shape\": [%d, %d], \"data_offsets\": [%zu, %zu]}",
                              l ? ", " : "", L->name, r, L->in, off, off + a, L->name, L->out, r,
                              off + a, off + a + b);
        off += a + b;
    }
    n += (size_t)snprintf(hdr + n, sizeof(hdr) - n, "}");
    while (n % 8)
        hdr[n++] = ' ';
    snprintf(path, sizeof(path), "%s/big/adapter_model.safetensors", adir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(fd >= 0);
    uint64_t hl = n;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    ck_assert(write(fd, le, 8) == 8 && write(fd, hdr, n) == (ssize_t)n);
    ck_assert(ftruncate(fd, (off_t)(8 + n + off)) == 0);
    close(fd);
}

struct swapper {
    pthread_t th;
    int port;
    struct itu_resp r;
};

static void *swapper_main(void *arg)
{
    struct swapper *s = arg;
    struct itu_client *c = itu_client_new(s->port);
    const char *body = "{\"adapter\": \"big\"}";
    itu_client_do(c, "POST", "/swap", body, strlen(body), "application/json", NULL, 60000, &s->r);
    itu_client_free(&c);
    return NULL;
}

static bool log_has(const struct itu_daemon *d, const char *what)
{
    size_t len;
    char *t = slurp(d->log_path, &len);
    bool has = strstr(t, what) != NULL;
    free(t);
    return has;
}

START_TEST(test_drain_while_staging)
{
    char *dir = itu_tmpdir();
    char adir[700], src[900], dst[900], ovr[1200];
    snprintf(adir, sizeof(adir), "%s/adapters", dir);
    tu_mkdir(adir);
    snprintf(dst, sizeof(dst), "%s/demo-a", adir);
    tu_mkdir(dst);
    static const char *const files[] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        size_t len;
        snprintf(src, sizeof(src), "%s/demo-a/%s", itu_adapters_dir(), files[i]);
        char *b = slurp(src, &len);
        snprintf(dst, sizeof(dst), "%s/demo-a/%s", adir, files[i]);
        tu_write_file(dst, b, len);
        free(b);
    }
    write_big_adapter(adir, 16384); /* 64 MiB of F16 on a 4 x 256 model */
    snprintf(ovr, sizeof(ovr),
             "{\"adapter_dir\": \"%s\", \"max_rank\": 16384, \"drain_timeout_ms\": 0, "
             "\"workers\": 1}",
             adir);
    struct itu_daemon *d = itu_daemon_start(dir, ovr);
    struct swapper sw;
    memset(&sw, 0, sizeof(sw));
    sw.port = d->port;
    ck_assert(pthread_create(&sw.th, NULL, swapper_main, &sw) == 0);
    for (int i = 0; i < 20000 && !log_has(d, "event=swap_staging"); i++)
        usleep(500);
    ck_assert_msg(log_has(d, "event=swap_staging"), "the /swap never began staging");
    itu_daemon_signal(d, SIGTERM);
    int rc = itu_daemon_wait(d, 30000);
    pthread_join(sw.th, NULL);
    ck_assert_msg(rc == 0, "exit status %d with a /swap staging; log:\n%s", rc,
                  itu_log_tail(d, 3000));
    const char *why;
    bool staged_out = log_has(d, "refused_staging=1");
    if (sw.r.status == 503) {
        ck_assert_msg(itu_error_shape_ok(&sw.r, &why), "503: %s", why);
        ck_assert_str_eq(itu_error_code(&sw.r), "draining");
    } else {
        /* the staging won the race: it committed and was answered */
        ck_assert_msg(sw.r.status == 200,
                      "the staging /swap got %s (expected 503 draining or "
                      "200); log:\n%s",
                      itu_describe(&sw.r), itu_log_tail(d, 3000));
    }
    printf("itest_durable: SIGTERM while staging: /swap answered %ld, %s, exit %d\n", sw.r.status,
           staged_out ? "refused at the drain deadline" : "staging ended before the deadline", rc);
    itu_resp_free(&sw.r);
    itu_daemon_free(&d);
    free(dir);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(12, 1, M->in);
    RA = itu_demo_adapter(M, "demo-a");
    RB = itu_demo_adapter(M, "demo-b");
    RC = itu_demo_adapter(M, "demo-c");
    snprintf(MNT_B, sizeof(MNT_B), "%s/mnt-full", itu_root());
    snprintf(MNT_C, sizeof(MNT_C), "%s/mnt-ro", itu_root());
    Suite *s = suite_create("itest_durable");
    TCase *tc = tcase_create("durable");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fsize_limit);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_read_only);
    tcase_add_test(tc, test_rename_fails);
    tcase_add_test(tc, test_drain_while_staging);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    if (geteuid() == 0) { /* a failed test may have left them mounted */
        umount2(MNT_B, MNT_DETACH);
        umount2(MNT_C, MNT_DETACH);
    }
    itu_adapter_free(&RA);
    itu_adapter_free(&RB);
    itu_adapter_free(&RC);
    itu_model_free(&M);
    free(X);
    itu_cleanup();
    return failed ? 1 : 0;
}
