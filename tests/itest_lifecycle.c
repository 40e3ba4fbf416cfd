/* lorad — tests/itest_lifecycle.c: the daemon's life cycle (SPEC.md 5, 8):
 * SIGTERM drains the requests in flight and exits 0; drain_timeout_ms
 * bounds that drain (what is still queued then gets 503 draining, the log
 * says what clients got); a restart restores
 * stable, canary, history and versions from the state file ("restored":
 * true), also after SIGKILL; a tampered adapter file makes the restore fail
 * loudly and the daemon serve initial_adapter ("restored": false);
 * `--check-config` accepts a good config and names the key of a bad one. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "itestutil.h"

#define KNOWN_ROWS 16

static struct itu_model *M;
static double *X; /* [KNOWN_ROWS][in] */
static struct itu_adapter *RA, *RB, *RC, *RBF16;

static void stop_ok(struct itu_daemon **d)
{
    int rc = itu_daemon_stop(*d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM (expected 0); log tail:\n%s", rc,
                  itu_log_tail(*d, 2000));
    itu_daemon_free(d);
}

/* Asserts /infer (pinned to `variant` when not NULL) names name/version and
 * matches the reference. */
static void infer_expect(struct itu_daemon *d, const char *variant, const struct itu_adapter *ref,
                         const char *name, long long version)
{
    char extra[64] = "";
    struct itu_infer res;
    if (variant)
        snprintf(extra, sizeof(extra), "\"variant\":\"%s\"", variant);
    ck_assert_msg(itu_infer_do(d->client, X, 3, M->in, M->out, false, true, variant ? extra : NULL,
                               NULL, &res),
                  "POST /infer: %s", res.why);
    ck_assert_msg(strcmp(res.adapter, name) == 0 && res.version == version,
                  "POST /infer%s%s names %s v%lld, expected %s v%lld", variant ? " pinned " : "",
                  variant ? variant : "", res.adapter, res.version, name, version);
    double *want = malloc(sizeof(double) * 3 * M->out);
    itu_forward(M, ref, X, 3, want);
    double worst = itu_match(res.out, want, (size_t)3 * M->out);
    ck_assert_msg(worst <= 1.0,
                  "POST /infer named %s v%lld: outputs differ from the reference "
                  "(worst ratio %g)",
                  name, version, worst);
    free(want);
    itu_infer_free(&res);
}

/* "adapter vN, adapter vN, ..." of the history array, for comparing. */
static void history_text(const cJSON *st, char *buf, size_t n)
{
    size_t len = 0;
    const cJSON *h = itu_jget(st, "history");
    buf[0] = 0;
    for (const cJSON *e = h ? h->child : NULL; e && len < n; e = e->next) {
        const char *a = itu_jstr(e, "adapter");
        len += (size_t)snprintf(buf + len, n - len, "%s%s v%.0f", len ? ", " : "", a ? a : "null",
                                itu_jnum(e, "version", -1));
    }
}

static void snap_text(const cJSON *st, const char *path, char *buf, size_t n)
{
    const cJSON *s = itu_jget(st, path);
    if (!s || cJSON_IsNull(s)) {
        snprintf(buf, n, "null");
        return;
    }
    const char *a = itu_jstr(s, "adapter");
    snprintf(buf, n, "%s v%.0f sha %s", a ? a : "null", itu_jnum(s, "version", -1),
             itu_jstr(s, "sha256") ? itu_jstr(s, "sha256") : "null");
}

/* ---- SIGTERM with requests in flight ---- */

#define DRAIN_CLIENTS 20

struct drain_client {
    pthread_t th;
    int port;
    atomic_int *started;
    atomic_int *term_sent;
    atomic_int *answered;
    const char *body; /* the request body, shared */
    int rows;         /* rows in it */
    long status;
    bool after_term; /* answered after SIGTERM was sent */
    double worst;
    char why[800];
};

static void *drain_main(void *arg)
{
    struct drain_client *c = arg;
    struct itu_client *hc = itu_client_new(c->port);
    const char *body = c->body;
    struct itu_resp r;
    atomic_fetch_add(c->started, 1);
    itu_client_do(hc, "POST", "/infer", body, strlen(body), "application/json", NULL, 60000, &r);
    c->after_term = atomic_load(c->term_sent) != 0;
    atomic_fetch_add(c->answered, 1);
    c->status = r.status;
    if (r.status == 200) {
        float *out = malloc(sizeof(float) * c->rows * M->out);
        double *want = malloc(sizeof(double) * KNOWN_ROWS * M->out);
        itu_forward(M, RA, X, KNOWN_ROWS, want);
        if (itu_json_outputs(r.json, c->rows, M->out, out) < 0) {
            c->worst = 1e300;
            snprintf(c->why, sizeof(c->why), "answer has no %d x %d outputs", c->rows, M->out);
        }
        for (int k = 0; k < c->rows && c->worst < 1e300; k++) {
            double w = itu_match(out + (size_t)k * M->out, want + (size_t)(k % KNOWN_ROWS) * M->out,
                                 (size_t)M->out);
            if (w > c->worst)
                c->worst = w;
        }
        free(out);
        free(want);
    } else {
        snprintf(c->why, sizeof(c->why), "%s", itu_describe(&r));
    }
    itu_resp_free(&r);
    itu_client_free(&hc);
    return NULL;
}

/* The value of an unlabelled sample in GET /metrics, -1 when absent. */
static double metric_value(struct itu_daemon *d, const char *name)
{
    struct itu_resp r;
    double v = -1;
    size_t n = strlen(name);
    itu_get(d, "/metrics", &r);
    for (const char *p = r.status == 200 ? r.body : ""; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    itu_resp_free(&r);
    return v;
}

/* Returns once the daemon has received all `clients` requests: answered
 * + its in-flight gauge (minus `self_count`, the /metrics request reading
 * it); without that gauge, or after 10 s, after one more second. */
static void wait_all_received(struct itu_daemon *d, atomic_int *answered, int clients,
                              double self_count)
{
    bool seen_all = false;
    int done = 0;
    double n = -1;
    for (int i = 0; i < 1000 && !seen_all; i++) { /* up to 10 s */
        done = atomic_load(answered);             /* before the gauge: never over-counts */
        n = metric_value(d, "lorad_inflight_requests");
        if (n < 0)
            break;
        seen_all = done + n - self_count >= clients;
        struct timespec ts = {0, 10 * 1000000L};
        if (!seen_all)
            nanosleep(&ts, NULL);
    }
    if (!seen_all) {
        printf("itest_lifecycle: answered (%d) + lorad_inflight_requests (%g, self %g) never "
               "reached %d; SIGTERM after 1 s\n",
               done, n, self_count, clients);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
}

/* One try: 20 requests of `rows` rows each, SIGTERM once all are received;
 * asserts every one is answered 200 with the reference outputs and exit 0.
 * Returns how many were answered after the signal. */
static int drain_attempt(int rows)
{
    /* one worker computing one row per batch: a request takes long enough
     * that a queue builds up behind it, whatever the machine's speed */
    struct itu_daemon *d = itu_daemon_start(
        NULL, "{\"workers\": 1, \"max_batch_rows\": 1, \"drain_timeout_ms\": 60000, "
              "\"max_rows_per_request\": 4096}");
    struct drain_client c[DRAIN_CLIENTS];
    atomic_int started = 0, term_sent = 0, answered = 0;
    memset(c, 0, sizeof(c));
    /* one body of rows rows (the known rows repeated), made before
     * the clients start so that they all send at once */
    double *x = malloc(sizeof(double) * rows * M->in);
    for (int r = 0; r < rows; r++)
        memcpy(x + (size_t)r * M->in, X + (size_t)(r % KNOWN_ROWS) * M->in, sizeof(double) * M->in);
    char *body = itu_json_rows(x, rows, M->in, true, NULL);
    free(x);
    /* does the gauge count the /metrics request that reads it? */
    double self_count = metric_value(d, "lorad_inflight_requests");
    self_count = self_count > 0 ? self_count : 0;
    for (int i = 0; i < DRAIN_CLIENTS; i++) {
        c[i].port = d->port;
        c[i].started = &started;
        c[i].term_sent = &term_sent;
        c[i].answered = &answered;
        c[i].body = body;
        c[i].rows = rows;
        ck_assert(pthread_create(&c[i].th, NULL, drain_main, &c[i]) == 0);
    }
    while (atomic_load(&started) < DRAIN_CLIENTS) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    wait_all_received(d, &answered, DRAIN_CLIENTS, self_count);
    atomic_store(&term_sent, 1);
    itu_daemon_signal(d, SIGTERM);
    int ok = 0, late = 0;
    for (int i = 0; i < DRAIN_CLIENTS; i++) {
        pthread_join(c[i].th, NULL);
        ok += c[i].status == 200 && c[i].worst <= 1.0;
        late += c[i].after_term;
    }
    free(body);
    int rc = itu_daemon_wait(d, 30000);
    printf("itest_lifecycle: SIGTERM with %d requests of %d rows sent; %d answered after the "
           "signal; %d answered 200 with matching outputs; exit status %d\n",
           DRAIN_CLIENTS, rows, late, ok, rc);
    fflush(stdout);
    for (int i = 0; i < DRAIN_CLIENTS; i++) {
        ck_assert_msg(c[i].status == 200,
                      "request %d of %d in flight at SIGTERM was not answered 200: %s", i,
                      DRAIN_CLIENTS, c[i].why);
        ck_assert_msg(c[i].worst <= 1.0,
                      "request %d answered during the drain: outputs differ from the reference "
                      "(worst ratio %g) %s",
                      i, c[i].worst, c[i].why);
    }
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM with requests in flight; log:\n%s",
                  rc, itu_log_tail(d, 2000));
    itu_daemon_free(&d);
    return late;
}

START_TEST(test_sigterm_drains)
{
    int late = 0;
    /* heavier requests until some are still being worked on at SIGTERM */
    for (int rows = 512; rows <= 2048 && late == 0; rows *= 2)
        late = drain_attempt(rows);
    ck_assert_msg(late > 0, "test setup: in three tries every request was answered before "
                            "SIGTERM, so the drain was not exercised");
}
END_TEST

/* ---- drain_timeout_ms bounds the drain ---- */

/* The audit scenario: one worker, a 1024-wide 4-layer model computed one
 * row per GEMM, a queue that takes many seconds, drain_timeout_ms 200. */
#define BOUND_ROWS 64    /* rows per request */
#define BOUND_DISTINCT 8 /* distinct rows in the body, repeated */
#define BOUND_QUEUE_MS 8000
#define BOUND_DRAIN_MS 200

struct bound_client {
    pthread_t th;
    int port;
    atomic_int *started, *answered;
    const float *body; /* BOUND_ROWS x in, little-endian f32 (shared) */
    size_t body_len;
    int out;            /* output width */
    const double *want; /* [BOUND_DISTINCT][out] */
    long status;        /* 200, 503, 0: closed; -1: anything else */
    char why[900];
};

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Checks a 200 answer: binary rows matching the reference. */
static bool bound_ok_answer(struct bound_client *c, const struct itu_resp *r)
{
    char ct[128], ver[32];
    size_t want_len = (size_t)BOUND_ROWS * (size_t)c->out * sizeof(float);
    if (!itu_header(r, "Content-Type", ct, sizeof(ct)) ||
        strcmp(ct, "application/octet-stream") != 0 || r->len != want_len ||
        !itu_header(r, "X-Lorad-Version", ver, sizeof(ver))) {
        snprintf(c->why, sizeof(c->why), "malformed 200: %zu bytes (want %zu), type %s", r->len,
                 want_len, itu_header(r, "Content-Type", ct, sizeof(ct)) ? ct : "none");
        return false;
    }
    for (int k = 0; k < BOUND_ROWS; k++) {
        float row[4096];
        size_t n = (size_t)c->out;
        memcpy(row, r->body + (size_t)k * n * sizeof(float), n * sizeof(float));
        double w = itu_match(row, c->want + (size_t)(k % BOUND_DISTINCT) * n, n);
        if (w > 1.0) {
            snprintf(c->why, sizeof(c->why), "200 row %d differs from the reference (ratio %g)", k,
                     w);
            return false;
        }
    }
    return true;
}

static void *bound_main(void *arg)
{
    struct bound_client *c = arg;
    struct itu_client *hc = itu_client_new(c->port);
    struct itu_resp r;
    atomic_fetch_add(c->started, 1);
    itu_client_do(hc, "POST", "/infer", c->body, c->body_len, "application/octet-stream", NULL,
                  120000, &r);
    atomic_fetch_add(c->answered, 1);
    const char *why = NULL;
    if (r.status == 200) {
        c->status = bound_ok_answer(c, &r) ? 200 : -1;
    } else if (r.status == 503 && itu_error_shape_ok(&r, &why) &&
               strcmp(itu_error_code(&r), "draining") == 0) {
        c->status = 503;
    } else if (r.status == 0 && !strstr(r.err, "timed out") && !strstr(r.err, "Timeout")) {
        c->status = 0; /* refused or closed: allowed */
    } else {
        c->status = -1;
        snprintf(c->why, sizeof(c->why), "%s%s%s", itu_describe(&r), why ? ": " : "",
                 why ? why : "");
    }
    itu_resp_free(&r);
    itu_client_free(&hc);
    return NULL;
}

/* A 1024-wide demo (lorad-mkdemo --width 1024 --layers 4) under dir. */
static void write_wide_demo(const char *dir)
{
    const char *env = getenv("MKDEMO_BIN");
    char *out = NULL;
    char *argv[] = {(char *)(env && *env ? env : "build/lorad-mkdemo"),
                    "--width",
                    "1024",
                    "--layers",
                    "4",
                    (char *)dir,
                    NULL};
    int rc = itu_run(argv, &out);
    ck_assert_msg(rc == 0, "lorad-mkdemo --width 1024 exited %d:\n%s", rc, out ? out : "");
    free(out);
}

/* Milliseconds of the fastest of three single requests (nothing queued). */
static double bound_one_request_ms(struct itu_daemon *d, const float *body, size_t len)
{
    double best = 1e30;
    for (int i = 0; i < 3; i++) {
        struct itu_resp r;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        itu_req(d, "POST", "/infer", body, len, "application/octet-stream", NULL, &r);
        double ms = ms_since(&t0);
        ck_assert_msg(r.status == 200, "a lone request before the drain: %s", itu_describe(&r));
        itu_resp_free(&r);
        best = ms < best ? ms : best;
    }
    return best;
}

START_TEST(test_drain_timeout_bounds)
{
    char *dir = itu_tmpdir(), *demo = tu_path(dir, "wide");
    write_wide_demo(demo);
    char *mdir = tu_path(demo, "model"), *adir = tu_path(demo, "adapters");
    char *adem = tu_path(adir, "demo-a");
    struct itu_model *wm = itu_model_load(mdir);
    struct itu_adapter *wa = itu_adapter_load(wm, adem);
    double *x = itu_rows(303, BOUND_DISTINCT, wm->in);
    double *want = malloc(sizeof(double) * BOUND_DISTINCT * wm->out);
    itu_forward(wm, wa, x, BOUND_DISTINCT, want);
    double *xr = malloc(sizeof(double) * BOUND_ROWS * wm->in);
    for (int k = 0; k < BOUND_ROWS; k++)
        memcpy(xr + (size_t)k * wm->in, x + (size_t)(k % BOUND_DISTINCT) * wm->in,
               sizeof(double) * wm->in);
    float *body = itu_f32_rows(xr, BOUND_ROWS, wm->in);
    size_t body_len = (size_t)BOUND_ROWS * wm->in * sizeof(float);
    ck_assert(wm->out <= 4096);

    char ovr[2048];
    snprintf(ovr, sizeof(ovr),
             "{\"model_dir\": \"%s\", \"adapter_dir\": \"%s\", \"workers\": 1, "
             "\"max_batch_rows\": 1, \"drain_timeout_ms\": %d}",
             mdir, adir, BOUND_DRAIN_MS);
    struct itu_daemon *d = itu_daemon_start(NULL, ovr);
    /* enough requests that the whole queue takes BOUND_QUEUE_MS or more */
    double one_ms = bound_one_request_ms(d, body, body_len);
    int n = (int)(BOUND_QUEUE_MS / (one_ms > 1 ? one_ms : 1)) + 1;
    n = n < 24 ? 24 : n > 240 ? 240 : n;
    double queue_ms = n * one_ms, bound_ms = queue_ms / 2;
    double self_count = metric_value(d, "lorad_inflight_requests");
    self_count = self_count > 0 ? self_count : 0;

    struct bound_client *c = calloc((size_t)n, sizeof(*c));
    atomic_int started = 0, answered = 0;
    for (int i = 0; i < n; i++) {
        c[i] = (struct bound_client){.port = d->port,
                                     .started = &started,
                                     .answered = &answered,
                                     .body = body,
                                     .body_len = body_len,
                                     .out = wm->out,
                                     .want = want};
        ck_assert(pthread_create(&c[i].th, NULL, bound_main, &c[i]) == 0);
    }
    while (atomic_load(&started) < n) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    wait_all_received(d, &answered, n, self_count);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    itu_daemon_signal(d, SIGTERM);
    int rc = itu_daemon_wait(d, (int)queue_ms + 60000);
    double exit_ms = ms_since(&t0);
    int ok = 0, refused = 0, closed = 0, bad = -1;
    for (int i = 0; i < n; i++) {
        pthread_join(c[i].th, NULL);
        ok += c[i].status == 200;
        refused += c[i].status == 503;
        closed += c[i].status == 0;
        if (c[i].status == -1 && bad < 0)
            bad = i;
    }
    char tail[4096];
    snprintf(tail, sizeof(tail), "%s", itu_log_tail(d, 3000));
    printf("itest_lifecycle: %d queued requests (%.0f ms each, %.0f ms in all), "
           "drain_timeout_ms %d: exit %d after %.0f ms (bound %.0f); %d answered 200, "
           "%d 503 draining, %d closed\n",
           n, one_ms, queue_ms, BOUND_DRAIN_MS, rc, exit_ms, bound_ms, ok, refused, closed);
    fflush(stdout);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log:\n%s", rc, tail);
    ck_assert_msg(bad < 0,
                  "request %d got neither a correct 200, nor 503 draining, nor a "
                  "closed connection: %s",
                  bad, bad >= 0 ? c[bad].why : "");
    ck_assert_msg(exit_ms <= bound_ms,
                  "lorad took %.0f ms to exit after SIGTERM with drain_timeout_ms %d: not "
                  "bounded (the whole queue takes about %.0f ms); log:\n%s",
                  exit_ms, BOUND_DRAIN_MS, queue_ms, tail);
    ck_assert_msg(refused + closed >= 1,
                  "all %d requests were answered 200: the test did not "
                  "queue enough work behind the drain deadline",
                  n);
    /* the log tells what clients got */
    const char *line = strstr(tail, "event=drain_end ");
    size_t la = 0, lr = 0, lc = 0;
    ck_assert_msg(line && sscanf(line, "event=drain_end answered=%zu refused=%zu closed=%zu", &la,
                                 &lr, &lc) == 3,
                  "no event=drain_end answered=N refused=N closed=N line; log:\n%s", tail);
    ck_assert_msg(lr == (size_t)refused && lc == (size_t)closed && la <= (size_t)ok,
                  "the log says answered=%zu refused=%zu closed=%zu; clients got %d answers "
                  "(some before the drain), %d refusals, %d closed connections",
                  la, lr, lc, ok, refused, closed);
    itu_daemon_free(&d);
    free(c);
    free(body);
    free(xr);
    free(want);
    free(x);
    itu_adapter_free(&wa);
    itu_model_free(&wm);
    free(adem);
    free(adir);
    free(mdir);
    free(demo);
    free(dir);
}
END_TEST

/* A client that sends a request and never reads: a raw socket with a tiny
 * receive buffer, the whole request written. Returns the fd. */
static int send_and_stall(int port, const char *body, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char head[256];
    ck_assert(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to lorad");
    int hl = snprintf(head, sizeof(head),
                      "POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\n\r\n",
                      len);
    ck_assert(hl > 0 && (size_t)hl < sizeof(head));
    ck_assert(write(fd, head, (size_t)hl) == hl);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, body + off, len - off);
        ck_assert_msg(w > 0, "writing the request body");
        off += (size_t)w;
    }
    return fd;
}

/* An answer that its client does not read cannot hold the shutdown past
 * the drain deadline and the flush grace: its connection is closed, and
 * the log counts it as closed. */
START_TEST(test_drain_closes_stalled_reader)
{
    enum { ROWS = 4096 }; /* a JSON answer of ~12 MB: more than socket buffers hold */
    struct itu_daemon *d = itu_daemon_start(
        NULL, "{\"workers\": 1, \"drain_timeout_ms\": 200, \"max_rows_per_request\": 4096}");
    double *x = malloc(sizeof(double) * ROWS * M->in);
    for (int r = 0; r < ROWS; r++)
        memcpy(x + (size_t)r * M->in, X + (size_t)(r % KNOWN_ROWS) * M->in, sizeof(double) * M->in);
    char *body = itu_json_rows(x, ROWS, M->in, true, NULL);
    free(x);
    double self_count = metric_value(d, "lorad_inflight_requests");
    self_count = self_count > 0 ? self_count : 0;
    int fd = send_and_stall(d->port, body, strlen(body));
    atomic_int none = 0;
    wait_all_received(d, &none, 1, self_count);
    struct timespec ts = {0, 300 * 1000000L}, t0;
    nanosleep(&ts, NULL); /* computed; its answer waits for the client */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    itu_daemon_signal(d, SIGTERM);
    int rc = itu_daemon_wait(d, 60000);
    double exit_ms = ms_since(&t0);
    close(fd);
    free(body);
    char tail[4096];
    snprintf(tail, sizeof(tail), "%s", itu_log_tail(d, 3000));
    printf("itest_lifecycle: a client that does not read its answer: exit %d after %.0f ms\n", rc,
           exit_ms);
    fflush(stdout);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log:\n%s", rc, tail);
    /* 200 ms deadline + 1 s flush grace; the connection timeout is 30 s */
    ck_assert_msg(exit_ms < 10000,
                  "a client that does not read held the shutdown %.0f ms; "
                  "log:\n%s",
                  exit_ms, tail);
    ck_assert_msg(strstr(tail, "event=drain_end answered=0 refused=0 closed=1"),
                  "the log does not count the unread answer as closed; log:\n%s", tail);
    itu_daemon_free(&d);
}
END_TEST

/* ---- restart from the state file ---- */

START_TEST(test_restart_restores)
{
    char *dir = itu_tmpdir();
    struct itu_daemon *d = itu_daemon_start(dir, NULL);
    cJSON *st = itu_status(d);
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "restored")),
                  "first start without a state file: restored is not null");
    cJSON_Delete(st);
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\"}"));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-f16\"}"));
    cJSON_Delete(itu_post_ok(d, "/rollback", "{}")); /* demo-c v3 stable, v4 dropped */
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-bf16\",\"canary_percent\":25}");
    ck_assert_msg(itu_jnum(a, "version", -1) == 5, "canary demo-bf16 got version %.0f, not 5",
                  itu_jnum(a, "version", -1));
    cJSON_Delete(a);
    st = itu_status(d);
    char h1[1024], s1[256], c1[256];
    history_text(st, h1, sizeof(h1));
    snap_text(st, "stable", s1, sizeof(s1));
    snap_text(st, "canary", c1, sizeof(c1));
    cJSON_Delete(st);
    stop_ok(&d);

    d = itu_daemon_start(dir, NULL);
    st = itu_status(d);
    char h2[1024], s2[256], c2[256];
    history_text(st, h2, sizeof(h2));
    snap_text(st, "stable", s2, sizeof(s2));
    snap_text(st, "canary", c2, sizeof(c2));
    ck_assert_msg(cJSON_IsTrue(itu_jget(st, "restored")),
                  "restart with a state file: restored is not true; log:\n%s",
                  itu_log_tail(d, 1500));
    ck_assert_msg(!strcmp(s1, s2), "restart: stable was '%s', restored '%s'", s1, s2);
    ck_assert_msg(!strcmp(c1, c2), "restart: canary was '%s', restored '%s'", c1, c2);
    ck_assert_msg(itu_jnum(st, "canary.percent", -1) == 25, "restart: canary.percent %g, not 25",
                  itu_jnum(st, "canary.percent", -1));
    ck_assert_msg(!strcmp(h1, h2), "restart: history was [%s], restored [%s]", h1, h2);
    cJSON_Delete(st);
    infer_expect(d, "stable", RC, "demo-c", 3);
    infer_expect(d, "canary", RBF16, "demo-bf16", 5);
    cJSON_Delete(itu_post_ok(d, "/promote", "{}"));
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    ck_assert_msg(itu_jnum(a, "version", -1) > 5,
                  "swap after restart got version %.0f: versions 1..5 were already issued",
                  itu_jnum(a, "version", -1));
    long long vb = (long long)itu_jnum(a, "version", -1);
    cJSON_Delete(a);
    infer_expect(d, NULL, RB, "demo-b", vb);

    /* SIGKILL right after an answered swap: the swap is durable */
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-a\"}");
    long long va = (long long)itu_jnum(a, "version", -1);
    cJSON_Delete(a);
    itu_daemon_kill(d);
    itu_daemon_free(&d);
    d = itu_daemon_start(dir, NULL);
    st = itu_status(d);
    ck_assert_msg(cJSON_IsTrue(itu_jget(st, "restored")),
                  "restart after SIGKILL: restored is not true");
    ck_assert_msg(itu_jstr(st, "stable.adapter") &&
                      !strcmp(itu_jstr(st, "stable.adapter"), "demo-a") &&
                      itu_jnum(st, "stable.version", -1) == (double)va,
                  "restart after SIGKILL: stable is not demo-a v%lld (the last answered swap)", va);
    ck_assert_msg(itu_jstr(st, "history.0.adapter") &&
                      !strcmp(itu_jstr(st, "history.0.adapter"), "demo-b") &&
                      itu_jnum(st, "history.0.version", -1) == (double)vb,
                  "restart after SIGKILL: history.0 is not demo-b v%lld", vb);
    cJSON_Delete(st);
    infer_expect(d, NULL, RA, "demo-a", va);
    stop_ok(&d);
    free(dir);
}
END_TEST

/* ---- a tampered adapter file ---- */

START_TEST(test_restore_tampered)
{
    char *dir = itu_tmpdir();
    char *adir = tu_path(dir, "adapters");
    char *cmd = malloc(strlen(adir) + strlen(itu_adapters_dir()) + 32);
    sprintf(cmd, "cp -r '%s' '%s'", itu_adapters_dir(), adir);
    ck_assert_msg(system(cmd) == 0, "test setup: %s failed", cmd);
    free(cmd);
    char over[1024];
    snprintf(over, sizeof(over), "{\"adapter_dir\": \"%s\"}", adir);
    struct itu_daemon *d = itu_daemon_start(dir, over);
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    long long vb = (long long)itu_jnum(a, "version", -1);
    cJSON_Delete(a);
    infer_expect(d, NULL, RB, "demo-b", vb);
    stop_ok(&d);

    /* change one data byte of demo-b (the low byte of its last f32: the
     * file stays a valid, finite adapter, only its sha256 changes) */
    char *file = tu_path(adir, "demo-b/adapter_model.safetensors");
    size_t len;
    uint8_t *img = tu_read_file(file, &len);
    img[len - 4] ^= 0x01;
    tu_write_file(file, img, len);
    free(img);
    free(file);

    d = itu_daemon_start(dir, over);
    cJSON *st = itu_status(d);
    ck_assert_msg(cJSON_IsFalse(itu_jget(st, "restored")),
                  "restart with a tampered stable adapter: restored is not false; log:\n%s",
                  itu_log_tail(d, 1500));
    const char *sa = itu_jstr(st, "stable.adapter");
    long long v = (long long)itu_jnum(st, "stable.version", -1);
    ck_assert_msg(sa && !strcmp(sa, "demo-a"),
                  "restart with a tampered stable adapter: stable is %s, not the "
                  "initial_adapter demo-a",
                  sa ? sa : "null");
    ck_assert_msg(v > vb,
                  "restart after a failed restore: demo-a got version %lld, but versions "
                  "up to %lld were already issued by this state file",
                  v, vb);
    cJSON_Delete(st);
    infer_expect(d, NULL, RA, "demo-a", v);
    stop_ok(&d);
    free(adir);
    free(dir);
}
END_TEST

/* ---- --check-config ---- */

static int check_config(const char *overrides, char **out)
{
    char *dir = itu_tmpdir();
    char *cfg = itu_config_write(dir, overrides, NULL);
    char *argv[] = {(char *)itu_lorad_bin(), "--config", cfg, "--check-config", NULL};
    int rc = itu_run(argv, out);
    free(cfg);
    free(dir);
    return rc;
}

START_TEST(test_check_config)
{
    char *out = NULL;
    int rc = check_config(NULL, &out);
    ck_assert_msg(rc == 0, "lorad --check-config on a good config: exit %d, output:\n%s", rc, out);
    free(out);
    static const struct {
        const char *over, *key;
    } bad[] = {
        {"{\"bogus_key\": 1}", "bogus_key"},
        {"{\"workers\": \"two\"}", "workers"},
        {"{\"listen\": 8080}", "listen"},
        {"{\"max_rank\": \"16\"}", "max_rank"},
        {"{\"target_modules\": \"layers.0.proj\"}", "target_modules"},
        {"{\"history\": true}", "history"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rc = check_config(bad[i].over, &out);
        ck_assert_msg(rc == 1, "lorad --check-config with %s: exit %d (expected 1), output:\n%s",
                      bad[i].over, rc, out);
        ck_assert_msg(out && strstr(out, bad[i].key),
                      "lorad --check-config with %s: the message does not name '%s':\n%s",
                      bad[i].over, bad[i].key, out);
        free(out);
    }
    /* an unknown kernel name lists the valid ones */
    rc = check_config("{\"blas_coretype\": \"NoSuchCore\"}", &out);
    ck_assert_msg(rc == 1 && out && strstr(out, "blas_coretype") && strstr(out, "Haswell") &&
                      strstr(out, "SkylakeX"),
                  "lorad --check-config with blas_coretype NoSuchCore: exit %d (expected 1), "
                  "the message must name the key and list the valid cores:\n%s",
                  rc, out);
    free(out);
    char *argv[] = {(char *)itu_lorad_bin(), "--help", NULL};
    rc = itu_run(argv, &out);
    ck_assert_msg(rc == 0 && out && strstr(out, "--config"),
                  "lorad --help: exit %d, output does not list --config:\n%s", rc, out);
    free(out);
}
END_TEST

/* ---- shutdown_delay_ms: not ready at once, still serving ---- */

START_TEST(test_shutdown_delay)
{
    struct itu_daemon *d = itu_daemon_start(NULL, "{\"shutdown_delay_ms\": 2000}");
    struct itu_resp r;
    itu_daemon_signal(d, SIGTERM);
    long st = 0;
    for (int i = 0; i < 100 && st != 503; i++) { /* "at once": allow 1 s for the signal */
        itu_get(d, "/readyz", &r);
        st = r.status;
        if (st != 503) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (st == 503) {
            const char *why;
            ck_assert_msg(itu_error_shape_ok(&r, &why), "GET /readyz 503 body: %s: %s", why,
                          itu_describe(&r));
        }
        itu_resp_free(&r);
    }
    ck_assert_msg(st == 503, "GET /readyz after SIGTERM (shutdown_delay_ms 2000): %ld, not 503",
                  st);
    /* during the delay the daemon keeps serving normally */
    infer_expect(d, NULL, RA, "demo-a", 1);
    itu_get(d, "/healthz", &r);
    ck_assert_msg(r.status == 200, "GET /healthz during the shutdown delay: %s", itu_describe(&r));
    itu_resp_free(&r);
    int rc = itu_daemon_wait(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM with shutdown_delay_ms; log:\n%s",
                  rc, itu_log_tail(d, 2000));
    itu_daemon_free(&d);
}
END_TEST

/* ---- SIGHUP re-reads the reloadable keys ---- */

static long rows_status(struct itu_daemon *d, int rows)
{
    struct itu_resp r;
    char *b = itu_json_rows(X, rows, M->in, true, NULL);
    long st = itu_req(d, "POST", "/infer", b, strlen(b), "application/json", NULL, &r);
    itu_resp_free(&r);
    free(b);
    return st;
}

START_TEST(test_sighup_reload)
{
    char *dir = itu_tmpdir();
    struct itu_daemon *d = itu_daemon_start(dir, "{\"max_rows_per_request\": 4}");
    ck_assert_msg(rows_status(d, 3) == 200, "3 rows with max_rows_per_request 4: not 200");
    char over[256];
    snprintf(over, sizeof(over), "{\"listen\":\"127.0.0.1:%d\",\"max_rows_per_request\": 2}",
             d->port);
    free(itu_config_write(dir, over, NULL));
    itu_daemon_signal(d, SIGHUP);
    long st = 200;
    for (int i = 0; i < 500 && st == 200; i++) { /* up to 5 s for the reload */
        st = rows_status(d, 3);
        ck_assert_msg(st == 200 || st == 400, "POST /infer while reloading: status %ld", st);
        if (st == 200) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    ck_assert_msg(st == 400, "after SIGHUP with max_rows_per_request 2, 3 rows still answer %ld",
                  st);
    ck_assert_msg(rows_status(d, 2) == 200, "2 rows after the reload: not 200");
    /* an invalid config on SIGHUP: the old one stays */
    char *cfg = tu_path(dir, "lorad.json");
    tu_write_text(cfg, "{\"max_rows_per_request\": \"many\", ");
    itu_daemon_signal(d, SIGHUP);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    struct itu_resp r;
    itu_get(d, "/readyz", &r);
    ck_assert_msg(r.status == 200, "GET /readyz after SIGHUP with a broken config: %s",
                  itu_describe(&r));
    itu_resp_free(&r);
    ck_assert_msg(rows_status(d, 3) == 400 && rows_status(d, 2) == 200,
                  "a broken config on SIGHUP changed the limits");
    free(cfg);
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log:\n%s", rc,
                  itu_log_tail(d, 2000));
    itu_daemon_free(&d);
    free(dir);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(202, KNOWN_ROWS, M->in);
    RA = itu_demo_adapter(M, "demo-a");
    RB = itu_demo_adapter(M, "demo-b");
    RC = itu_demo_adapter(M, "demo-c");
    RBF16 = itu_demo_adapter(M, "demo-bf16");
    Suite *s = suite_create("itest_lifecycle");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_sigterm_drains);
    tcase_add_test(tc, test_drain_timeout_bounds);
    tcase_add_test(tc, test_drain_closes_stalled_reader);
    tcase_add_test(tc, test_restart_restores);
    tcase_add_test(tc, test_restore_tampered);
    tcase_add_test(tc, test_check_config);
    tcase_add_test(tc, test_shutdown_delay);
    tcase_add_test(tc, test_sighup_reload);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    itu_adapter_free(&RA);
    itu_adapter_free(&RB);
    itu_adapter_free(&RC);
    itu_adapter_free(&RBF16);
    free(X);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
