/* lorad — tests/itest_fleet.c: a fleet of three real lorad instances behind
 * a real HAProxy on loopback (deploy/haproxy.cfg with the ports
 * substituted), driven by scripts/fleet-rollout.sh while four client
 * threads put load through HAProxy:
 *   - a fleet rollout of a good adapter (demo-b) ends with all three serving
 *     it; `--rollback` then puts every instance back on demo-a v1;
 *   - a rollout of a bad adapter (demo-overflow: stages fine, answers
 *     non-finite rows) fails the canary gate and leaves every instance on
 *     what it served before;
 *   - a wave whose second instance refuses the swap rolls the canary and
 *     the wave's first instance back (exit 2);
 *   - a rolling restart (SIGTERM one instance at a time, start it again)
 *     restores every instance's state.
 * In all three, every request through HAProxy is answered 200, names its
 * (adapter, version) and the instance (X-Lorad-Server, set by HAProxy), and
 * its output equals the independent reference of the adapter it names; no
 * (instance, version) pair ever names two adapters. Skips, with a message,
 * only when no haproxy binary exists (HAPROXY_BIN, /usr/sbin/haproxy, PATH).
 * Source files come from $LORAD_SRCDIR (default: the current directory).
 */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "itestutil.h"

#define FL_N 3            /* instances */
#define FL_CLIENTS 4      /* load threads */
#define FL_ROWS 16        /* known rows */
#define FL_MAXV 4096      /* versions tracked per instance */
#define FL_MAX_REQ 200000 /* request bound per client */

enum { AD_A, AD_B, AD_OVF, AD_N };
static const char *const ad_names[AD_N] = {"demo-a", "demo-b", "demo-overflow"};

static struct itu_model *M;
static double *X;          /* [FL_ROWS][in] */
static double *WANT[AD_N]; /* [FL_ROWS][out] */
static char *HAPROXY;      /* the binary, NULL: skip */

/* ---- helpers: files and processes ---- */

static const char *src_dir(void)
{
    const char *s = getenv("LORAD_SRCDIR");
    return s && *s ? s : ".";
}

static char *find_haproxy(void)
{
    const char *env = getenv("HAPROXY_BIN");
    if (env && *env)
        return access(env, X_OK) == 0 ? strdup(env) : NULL;
    if (access("/usr/sbin/haproxy", X_OK) == 0)
        return strdup("/usr/sbin/haproxy");
    const char *path = getenv("PATH");
    char *p = strdup(path ? path : ""), *save = NULL;
    for (char *d = strtok_r(p, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *f = tu_path(d, "haproxy");
        if (access(f, X_OK) == 0) {
            free(p);
            return f;
        }
        free(f);
    }
    free(p);
    return NULL;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    ck_assert(s != NULL);
    ck_assert(fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Replaces the only occurrence of `from` in *text by `to`. */
static void replace_once(char **text, const char *from, const char *to)
{
    char *at = strstr(*text, from);
    ck_assert_msg(at != NULL && strstr(at + 1, from) == NULL,
                  "deploy/haproxy.cfg: expected exactly one '%s'", from);
    size_t pre = (size_t)(at - *text), fl = strlen(from), tl = strlen(to);
    char *out = malloc(strlen(*text) - fl + tl + 1);
    ck_assert(out != NULL);
    memcpy(out, *text, pre);
    memcpy(out + pre, to, tl);
    strcpy(out + pre + tl, at + fl);
    free(*text);
    *text = out;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the fleet ---- */

struct fleet {
    char *dir;
    struct itu_daemon *d[FL_N];
    int port[FL_N];
    int hport;
    pid_t hpid;
    char *hlog;
    const char *extra[FL_N]; /* config members per instance, or NULL */
};

/* Instance i's config: shutdown_delay_ms above HAProxy's check interval
 * (200 ms), plus `extra` (NULL or JSON members). */
static char *instance_overrides(int port, const char *extra)
{
    char *o = malloc(512);
    ck_assert(o != NULL);
    snprintf(o, 512,
             "{\"listen\": \"127.0.0.1:%d\", \"shutdown_delay_ms\": 800, "
             "\"drain_timeout_ms\": 5000, \"workers\": 1%s%s}",
             port, extra ? ", " : "", extra ? extra : "");
    return o;
}

static void instance_start(struct fleet *f, int i, const char *dir)
{
    char *o = instance_overrides(f->port[i], f->extra[i]);
    f->d[i] = itu_daemon_start(dir, o);
    free(o);
}

static void haproxy_start(struct fleet *f)
{
    char *path = tu_path(src_dir(), "deploy/haproxy.cfg");
    char *cfg = slurp(path);
    char buf[64];
    free(path);
    f->hport = itu_free_port();
    snprintf(buf, sizeof(buf), "127.0.0.1:%d", f->hport);
    char bind[80];
    snprintf(bind, sizeof(bind), "bind %s", buf);
    replace_once(&cfg, "bind 127.0.0.1:8080", bind);
    for (int i = 0; i < FL_N; i++) {
        char from[48];
        snprintf(from, sizeof(from), "server lorad%d 127.0.0.1:%d ", i + 1, 8081 + i);
        snprintf(buf, sizeof(buf), "server lorad%d 127.0.0.1:%d ", i + 1, f->port[i]);
        replace_once(&cfg, from, buf);
    }
    char *cpath = tu_path(f->dir, "haproxy.cfg");
    spit(cpath, cfg);
    free(cfg);
    f->hlog = tu_path(f->dir, "haproxy.log");
    int fd = open(f->hlog, O_WRONLY | O_CREAT | O_APPEND, 0644);
    ck_assert_msg(fd >= 0, "open %s: %s", f->hlog, strerror(errno));
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(HAPROXY, HAPROXY, "-f", cpath, "-db", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", HAPROXY, strerror(errno));
        _exit(127);
    }
    close(fd);
    free(cpath);
    f->hpid = pid;
    /* Ready once it answers /readyz through the front end. */
    struct itu_client *c = itu_client_new(f->hport);
    long st = 0;
    for (int k = 0; k < 250 && st != 200; k++) {
        struct itu_resp r;
        st = itu_client_do(c, "GET", "/readyz", NULL, 0, NULL, NULL, 500, &r);
        itu_resp_free(&r);
        int ws;
        if (st != 200 && waitpid(pid, &ws, WNOHANG) == pid) {
            f->hpid = 0;
            char *log = slurp(f->hlog);
            ck_abort_msg("haproxy exited before serving:\n%.3000s", log);
        }
        if (st != 200)
            sleep_ms(20);
    }
    itu_client_free(&c);
    ck_assert_msg(st == 200, "haproxy does not answer /readyz 200 after 5 s");
}

/* Starts the fleet; `extra` (NULL, or FL_N entries) adds config members. */
static void fleet_start(struct fleet *f, const char *const *extra)
{
    memset(f, 0, sizeof(*f));
    for (int i = 0; i < FL_N && extra; i++)
        f->extra[i] = extra[i];
    f->dir = itu_tmpdir();
    for (int i = 0; i < FL_N; i++) {
        f->port[i] = itu_free_port();
        instance_start(f, i, NULL);
        f->port[i] = f->d[i]->port;
    }
    haproxy_start(f);
}

static void fleet_stop(struct fleet *f)
{
    if (f->hpid > 0) {
        kill(f->hpid, SIGTERM);
        int ws;
        for (int k = 0; k < 200 && waitpid(f->hpid, &ws, WNOHANG) == 0; k++)
            sleep_ms(10);
        kill(f->hpid, SIGKILL);
        waitpid(f->hpid, &ws, 0);
        f->hpid = 0;
    }
    for (int i = 0; i < FL_N; i++)
        itu_daemon_free(&f->d[i]);
    free(f->hlog);
    free(f->dir);
}

/* ---- the load ---- */

struct client {
    pthread_t th;
    int id, port;
    atomic_int *stop;
    atomic_long per_server[FL_N]; /* answers by instance */
    long requests, failures, mismatches, ovf_rows;
    char first_failure[1024];
    signed char (*seen)[FL_MAXV]; /* [FL_N][FL_MAXV]: adapter index + 1 */
};

static struct client CL[FL_CLIENTS];
static atomic_int STOP;

static void note(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct client *c, const char *fmt, ...)
{
    if (c->first_failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->first_failure, sizeof(c->first_failure), fmt, ap);
    va_end(ap);
}

/* The overflow adapter: a reference row beyond the f32 range must come back
 * with a non-finite value; an in-range row must match. */
static bool ovf_row_ok(const float *got, const double *want, int width, long *ovf_rows)
{
    bool beyond = false, nonfinite = false;
    for (int j = 0; j < width; j++) {
        if (!isfinite(want[j]) || fabs(want[j]) > FLT_MAX)
            beyond = true;
        if (!isfinite(got[j]))
            nonfinite = true;
    }
    if (beyond) {
        (*ovf_rows)++;
        return nonfinite;
    }
    return itu_match(got, want, (size_t)width) <= 1.0;
}

static void client_one(struct client *c, struct itu_client *hc, long iter)
{
    int n = 1 + (int)((iter + c->id) % 3);
    int off = (int)((iter * 5 + c->id * 3) % (FL_ROWS - n + 1));
    bool binary = ((iter + c->id) & 1) != 0;
    struct itu_infer res;
    bool ok = itu_infer_do(hc, X + (size_t)off * M->in, n, M->in, M->out, binary, n > 1, NULL, NULL,
                           &res);
    c->requests++;
    if (!ok) {
        c->failures++;
        note(c, "request %ld through haproxy failed: %s", c->requests, res.why);
        itu_infer_free(&res);
        return;
    }
    char srv[32];
    int s = -1;
    if (itu_header(&res.r, "X-Lorad-Server", srv, sizeof(srv)) && !strncmp(srv, "lorad", 5))
        s = atoi(srv + 5) - 1;
    int a = -1;
    for (int k = 0; k < AD_N; k++)
        if (!strcmp(res.adapter, ad_names[k]))
            a = k;
    if (s < 0 || s >= FL_N || a < 0 || res.version <= 0 || res.version >= FL_MAXV) {
        c->failures++;
        note(c, "answer names server %d, adapter '%s' v%lld: %s", s + 1, res.adapter, res.version,
             itu_describe(&res.r));
        itu_infer_free(&res);
        return;
    }
    atomic_fetch_add(&c->per_server[s], 1);
    signed char *seen = &c->seen[s][res.version];
    if (*seen && *seen != a + 1) {
        c->mismatches++;
        note(c, "lorad%d v%lld named %s and %s", s + 1, res.version, ad_names[*seen - 1],
             ad_names[a]);
    }
    *seen = (signed char)(a + 1);
    for (int r = 0; r < n; r++) {
        const float *got = res.out + (size_t)r * M->out;
        const double *want = WANT[a] + (size_t)(off + r) * M->out;
        bool row_ok = a == AD_OVF ? ovf_row_ok(got, want, M->out, &c->ovf_rows)
                                  : itu_match(got, want, (size_t)M->out) <= 1.0;
        if (!row_ok) {
            c->mismatches++;
            note(c, "lorad%d %s v%lld row %d: output differs from the reference (worst %g)", s + 1,
                 res.adapter, res.version, off + r, itu_match(got, want, (size_t)M->out));
            break;
        }
    }
    itu_infer_free(&res);
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct itu_client *hc = itu_client_new(c->port);
    for (long i = 0; i < FL_MAX_REQ && !atomic_load(c->stop); i++)
        client_one(c, hc, i);
    itu_client_free(&hc);
    return NULL;
}

static void load_start(int hport)
{
    atomic_store(&STOP, 0);
    for (int i = 0; i < FL_CLIENTS; i++) {
        struct client *c = &CL[i];
        memset(c, 0, sizeof(*c));
        c->id = i;
        c->port = hport;
        c->stop = &STOP;
        c->seen = calloc(FL_N, sizeof(*c->seen));
        ck_assert(c->seen != NULL);
        ck_assert(pthread_create(&c->th, NULL, client_main, c) == 0);
    }
}

static long served_by(int s)
{
    long n = 0;
    for (int i = 0; i < FL_CLIENTS; i++)
        n += atomic_load(&CL[i].per_server[s]);
    return n;
}

/* Waits (up to 5 s) until the load has reached instance s `more` more times. */
static bool wait_served(int s, long more)
{
    long base = served_by(s);
    for (int k = 0; k < 500; k++) {
        if (served_by(s) >= base + more)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* Stops the load and asserts zero failures; `phase` names it. */
static void load_stop_check(const char *phase, long *ovf_rows)
{
    atomic_store(&STOP, 1);
    long req = 0, fail = 0, mism = 0, ovf = 0;
    const char *first = NULL;
    for (int i = 0; i < FL_CLIENTS; i++) {
        pthread_join(CL[i].th, NULL);
        req += CL[i].requests;
        fail += CL[i].failures;
        mism += CL[i].mismatches;
        ovf += CL[i].ovf_rows;
        if (!first && CL[i].first_failure[0])
            first = CL[i].first_failure;
    }
    for (int i = 0; i < FL_CLIENTS; i++)
        free(CL[i].seen);
    fprintf(stderr,
            "itest_fleet: %s: %ld requests through haproxy (lorad1 %ld, lorad2 %ld, lorad3 %ld), "
            "%ld failed, %ld mismatched\n",
            phase, req, served_by(0), served_by(1), served_by(2), fail, mism);
    ck_assert_msg(fail == 0 && mism == 0,
                  "%s: %ld of %ld requests through haproxy failed, %ld mismatched; first: %s",
                  phase, fail, req, mism, first ? first : "");
    ck_assert_msg(req >= 50, "%s: only %ld requests went through haproxy", phase, req);
    for (int s = 0; s < FL_N; s++)
        ck_assert_msg(served_by(s) > 0, "%s: haproxy sent nothing to lorad%d", phase, s + 1);
    if (ovf_rows)
        *ovf_rows = ovf;
}

/* ---- the script ---- */

static char *probe_file(const struct fleet *f)
{
    char *path = tu_path(f->dir, "probe.json");
    size_t cap = (size_t)4 * M->in * 20 + 64, len = 0;
    char *s = malloc(cap);
    ck_assert(s != NULL);
    len += (size_t)snprintf(s + len, cap - len, "[");
    for (int r = 0; r < 4; r++) {
        len += (size_t)snprintf(s + len, cap - len, "%s[", r ? "," : "");
        for (int j = 0; j < M->in; j++)
            len += (size_t)snprintf(s + len, cap - len, "%s%.9g", j ? "," : "",
                                    (double)(float)X[(size_t)r * M->in + j]);
        len += (size_t)snprintf(s + len, cap - len, "]");
    }
    snprintf(s + len, cap - len, "]\n");
    spit(path, s);
    free(s);
    return path;
}

/* Runs scripts/fleet-rollout.sh with `args` (NULL-terminated); returns its
 * exit status, *out its output. */
static int fleet_rollout(char *const *args, char **out)
{
    char *argv[32];
    int n = 0;
    char *script = tu_path(src_dir(), "scripts/fleet-rollout.sh");
    argv[n++] = script;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int rc = itu_run(argv, out);
    fprintf(stderr, "---- fleet-rollout.sh (exit %d) ----\n%s", rc, *out ? *out : "");
    free(script);
    return rc;
}

static char *instances_arg(const struct fleet *f)
{
    char *s = malloc(256);
    ck_assert(s != NULL);
    snprintf(s, 256, "http://127.0.0.1:%d,http://127.0.0.1:%d,http://127.0.0.1:%d", f->port[0],
             f->port[1], f->port[2]);
    return s;
}

/* The stable (adapter, version) and canary of instance i. */
static void instance_state(struct fleet *f, int i, char *adapter, size_t n, long long *version,
                           bool *canary, long long *generation)
{
    struct itu_resp r;
    itu_get(f->d[i], "/status", &r);
    ck_assert_msg(r.status == 200, "lorad%d GET /status: %s", i + 1, itu_describe(&r));
    const char *a = itu_jstr(r.json, "stable.adapter");
    snprintf(adapter, n, "%s", a ? a : "");
    *version = (long long)itu_jnum(r.json, "stable.version", -1);
    cJSON *c = itu_jget(r.json, "canary");
    *canary = c && !cJSON_IsNull(c);
    if (generation)
        *generation = (long long)itu_jnum(r.json, "generation", -1);
    itu_resp_free(&r);
}

static void assert_serves(struct fleet *f, int i, const char *adapter, long long version,
                          const char *when, const char *log)
{
    char a[160];
    long long v;
    bool canary;
    instance_state(f, i, a, sizeof(a), &v, &canary, NULL);
    ck_assert_msg(!strcmp(a, adapter) && (version < 0 || v == version) && !canary,
                  "%s: lorad%d serves %s v%lld%s, expected %s v%lld; script output:\n%s", when,
                  i + 1, a, v, canary ? " with a canary" : "", adapter, version, log ? log : "");
}

/* ---- tests ---- */

START_TEST(test_skip_no_haproxy)
{
    fprintf(stderr, "itest_fleet: SKIP: no haproxy binary (HAPROXY_BIN, /usr/sbin/haproxy, "
                    "PATH); install the Debian package haproxy to run the fleet tests\n");
}
END_TEST

START_TEST(test_fleet_rollout_good_then_undo)
{
    struct fleet f;
    fleet_start(&f, NULL);
    char *inst = instances_arg(&f);
    char *probe = probe_file(&f);
    char *rec = tu_path(f.dir, "fleet.json");
    load_start(f.hport);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    char *out = NULL;
    /* --slot default: requests exactly those of a lorad without slots */
    char *args[] = {"--instances", inst,      "--adapter",       "demo-b",
                    "--slot",      "default", "--steps",         "50,100",
                    "--interval",  "1",       "--wave-interval", "1",
                    "--wave-size", "1",       "--max-p99-ratio", "1000",
                    "--probe",     probe,     "--state-file",    rec,
                    NULL};
    int rc = fleet_rollout(args, &out);
    ck_assert_msg(rc == 0, "good rollout exited %d; output:\n%s", rc, out);
    for (int i = 0; i < FL_N; i++)
        assert_serves(&f, i, "demo-b", -1, "after the rollout", out);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    free(out);
    /* Undo it: every instance back on demo-a v1. */
    char *uargs[] = {"--rollback", "--state-file", rec, NULL};
    rc = fleet_rollout(uargs, &out);
    ck_assert_msg(rc == 0, "--rollback exited %d; output:\n%s", rc, out);
    for (int i = 0; i < FL_N; i++)
        assert_serves(&f, i, "demo-a", 1, "after --rollback", out);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    load_stop_check("good rollout + --rollback", NULL);
    free(out);
    free(rec);
    free(probe);
    free(inst);
    fleet_stop(&f);
}
END_TEST

START_TEST(test_fleet_rollout_bad_rolled_back)
{
    struct fleet f;
    fleet_start(&f, NULL);
    char *inst = instances_arg(&f);
    char *probe = probe_file(&f);
    char *rec = tu_path(f.dir, "fleet.json");
    long long gen[FL_N];
    for (int i = 0; i < FL_N; i++) {
        char a[160];
        long long v;
        bool c;
        instance_state(&f, i, a, sizeof(a), &v, &c, &gen[i]);
    }
    load_start(f.hport);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    char *out = NULL;
    char *args[] = {"--instances",
                    inst,
                    "--adapter",
                    "demo-overflow",
                    "--steps",
                    "50,100",
                    "--interval",
                    "1",
                    "--wave-interval",
                    "1",
                    "--max-p99-ratio",
                    "1000",
                    "--probe",
                    probe,
                    "--state-file",
                    rec,
                    NULL};
    int rc = fleet_rollout(args, &out);
    ck_assert_msg(rc == 1, "bad rollout exited %d (expected 1, gate failed); output:\n%s", rc, out);
    ck_assert_msg(strstr(out, "gate failed") != NULL, "no gate failure in the output:\n%s", out);
    for (int i = 0; i < FL_N; i++)
        assert_serves(&f, i, "demo-a", 1, "after the failed rollout", out);
    /* The canary gate failed first: the other instances were never touched. */
    for (int i = 1; i < FL_N; i++) {
        char a[160];
        long long v, g;
        bool c;
        instance_state(&f, i, a, sizeof(a), &v, &c, &g);
        ck_assert_msg(g == gen[i], "lorad%d changed generation %lld -> %lld", i + 1, gen[i], g);
    }
    char *recs = slurp(rec);
    ck_assert_msg(strstr(recs, "\"rolled_back\"") != NULL, "record file: %s", recs);
    free(recs);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    long ovf = 0;
    load_stop_check("bad rollout", &ovf);
    fprintf(stderr, "itest_fleet: bad rollout: %ld answered rows carried the overflow\n", ovf);
    free(out);
    free(rec);
    free(probe);
    free(inst);
    fleet_stop(&f);
}
END_TEST

/* A wave instance refuses the swap (its max_rank is below demo-b's rank):
 * the canary and the wave's other instance, both already on demo-b, go
 * back to demo-a v1. */
START_TEST(test_fleet_wave_refused_rolled_back)
{
    struct fleet f;
    const char *extra[FL_N] = {NULL, NULL, "\"max_rank\": 8"};
    fleet_start(&f, extra);
    char *inst = instances_arg(&f);
    char *rec = tu_path(f.dir, "fleet.json");
    load_start(f.hport);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    char *out = NULL;
    char *args[] = {"--instances",     inst,   "--adapter",       "demo-b", "--steps",     "100",
                    "--interval",      "1",    "--wave-interval", "1",      "--wave-size", "2",
                    "--max-p99-ratio", "1000", "--state-file",    rec,      NULL};
    int rc = fleet_rollout(args, &out);
    ck_assert_msg(rc == 2, "rollout with a refusing instance exited %d (expected 2); output:\n%s",
                  rc, out);
    ck_assert_msg(strstr(out, "rank_too_large") != NULL, "the refusal is not named:\n%s", out);
    for (int i = 0; i < FL_N; i++)
        assert_serves(&f, i, "demo-a", 1, "after the refused wave", out);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    load_stop_check("refused wave", NULL);
    free(out);
    free(rec);
    free(inst);
    fleet_stop(&f);
}
END_TEST

START_TEST(test_fleet_rolling_restart)
{
    struct fleet f;
    fleet_start(&f, NULL);
    long long ver[FL_N];
    for (int i = 0; i < FL_N; i++) {
        struct itu_resp r;
        itu_post(f.d[i], "/swap", "{\"adapter\": \"demo-b\"}", &r);
        ck_assert_msg(r.status == 200, "lorad%d swap demo-b: %s", i + 1, itu_describe(&r));
        ver[i] = (long long)itu_jnum(r.json, "version", -1);
        itu_resp_free(&r);
    }
    load_start(f.hport);
    ck_assert(wait_served(0, 20) && wait_served(1, 20) && wait_served(2, 20));
    for (int i = 0; i < FL_N; i++) {
        char *dir = strdup(f.d[i]->dir);
        int st = itu_daemon_stop(f.d[i], 15000);
        ck_assert_msg(st == 0, "lorad%d exit status %d after SIGTERM; log:\n%s", i + 1, st,
                      itu_log_tail(f.d[i], 2000));
        itu_daemon_free(&f.d[i]);
        /* The others carry the load meanwhile. */
        ck_assert(wait_served((i + 1) % FL_N, 20));
        instance_start(&f, i, dir);
        free(dir);
        struct itu_resp r;
        itu_get(f.d[i], "/status", &r);
        cJSON *restored = itu_jget(r.json, "restored");
        ck_assert_msg(restored && cJSON_IsTrue(restored), "lorad%d after restart: %s", i + 1,
                      itu_describe(&r));
        itu_resp_free(&r);
        assert_serves(&f, i, "demo-b", ver[i], "after the restart", NULL);
        ck_assert_msg(wait_served(i, 20), "haproxy does not send to lorad%d after its restart",
                      i + 1);
    }
    load_stop_check("rolling restart", NULL);
    fleet_stop(&f);
}
END_TEST

int main(void)
{
    HAPROXY = find_haproxy();
    Suite *s = suite_create("itest_fleet");
    TCase *tc = tcase_create("fleet");
    tcase_set_timeout(tc, 40);
    if (!HAPROXY) {
        tcase_add_test(tc, test_skip_no_haproxy);
        suite_add_tcase(s, tc);
        int failed = itu_run_suite(s);
        return failed ? 1 : 0;
    }
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(808, FL_ROWS, M->in);
    for (int k = 0; k < AD_N; k++) {
        struct itu_adapter *a = itu_demo_adapter(M, ad_names[k]);
        WANT[k] = malloc(sizeof(double) * FL_ROWS * M->out);
        itu_forward(M, a, X, FL_ROWS, WANT[k]);
        itu_adapter_free(&a);
    }
    tcase_add_test(tc, test_fleet_rollout_good_then_undo);
    tcase_add_test(tc, test_fleet_rollout_bad_rolled_back);
    tcase_add_test(tc, test_fleet_wave_refused_rolled_back);
    tcase_add_test(tc, test_fleet_rolling_restart);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    for (int k = 0; k < AD_N; k++)
        free(WANT[k]);
    free(X);
    itu_model_free(&M);
    itu_cleanup();
    free(HAPROXY);
    return failed ? 1 : 0;
}
