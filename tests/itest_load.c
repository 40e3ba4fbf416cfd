/* lorad — tests/itest_load.c: hot swaps under load (SPEC.md 7: no dropped
 * or torn request). Eight client threads send known rows (JSON and binary
 * alternately, 1..4 rows) as fast as they can while the test's main thread
 * cycles swap demo-b / rollback / swap demo-c / rollback {"version"} for
 * about six seconds. Every answer must be 200, and every output row must
 * equal the independent reference of the adapter the answer names; the
 * (version, adapter) pairs the answers name must agree with what the
 * control plane said it committed. Bounded in time and request count. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "itestutil.h"

#define LOAD_CLIENTS 8
#define LOAD_ROWS 16 /* known rows */
#define LOAD_SECONDS 6
#define LOAD_MAX_PER_CLIENT 6000 /* request bound per client */
#define LOAD_MAX_VERSION 65536

enum { AD_A, AD_B, AD_C, AD_N };
static const char *const ad_names[AD_N] = {"demo-a", "demo-b", "demo-c"};

static struct itu_model *M;
static double *X;          /* [LOAD_ROWS][in] */
static double *WANT[AD_N]; /* [LOAD_ROWS][out] per adapter */

struct client {
    pthread_t th;
    int id;
    int port;
    atomic_int *stop;
    long requests, json, binary, rows, failures, mismatches;
    char first_failure[1024];
    signed char *seen; /* [LOAD_MAX_VERSION]: adapter index + 1 named with each version */
};

static void client_note(struct client *c, const char *fmt, const char *a, long long v,
                        const char *why)
{
    if (!c->first_failure[0])
        snprintf(c->first_failure, sizeof(c->first_failure), fmt, a, v, why);
}

static void client_one(struct client *c, struct itu_client *hc, long iter)
{
    int n = 1 + (int)((iter + c->id) % 4);
    int off = (int)((iter * 7 + c->id * 3) % (LOAD_ROWS - n + 1));
    bool binary = ((iter + c->id) & 1) != 0;
    struct itu_infer res;
    const double *x = X + (size_t)off * M->in;
    bool ok = itu_infer_do(hc, x, n, M->in, M->out, binary, n > 1 || (iter & 2), NULL, NULL, &res);
    c->requests++;
    c->rows += n;
    *(binary ? &c->binary : &c->json) += 1;
    if (!ok) {
        c->failures++;
        client_note(c, "request failed (%s v%lld): %s", binary ? "binary" : "JSON", res.version,
                    res.why);
        itu_infer_free(&res);
        return;
    }
    int a = -1;
    for (int k = 0; k < AD_N; k++)
        if (strcmp(res.adapter, ad_names[k]) == 0)
            a = k;
    if (a < 0 || res.version <= 0 || res.version >= LOAD_MAX_VERSION ||
        strcmp(res.variant, "stable") != 0) {
        c->failures++;
        client_note(c, "answer names adapter '%s' version %lld (%s)", res.adapter, res.version,
                    res.variant);
        itu_infer_free(&res);
        return;
    }
    signed char *s = &c->seen[res.version];
    if (*s && *s != a + 1) {
        c->failures++;
        client_note(c, "answers name adapter %s and another one with version %lld%s", res.adapter,
                    res.version, "");
    }
    *s = (signed char)(a + 1);
    double worst = itu_match(res.out, WANT[a] + (size_t)off * M->out, (size_t)n * M->out);
    if (worst > 1.0) {
        char why[128];
        c->mismatches++;
        snprintf(why, sizeof(why), "worst ratio %g over %d rows (%s)", worst, n,
                 binary ? "binary" : "JSON");
        client_note(c, "outputs differ from the reference of %s v%lld: %s", res.adapter,
                    res.version, why);
    }
    itu_infer_free(&res);
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct itu_client *hc = itu_client_new(c->port);
    for (long i = 0; i < LOAD_MAX_PER_CLIENT && !atomic_load(c->stop); i++)
        client_one(c, hc, i);
    itu_client_free(&hc);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct control_state {
    signed char map[LOAD_MAX_VERSION]; /* committed version -> adapter index + 1 */
    long swaps, rollbacks;
    char failure[1024];
};

/* One control request; false (with cs->failure) unless 200 naming
 * `adapter` (and `version` when >= 0). Records new versions. */
static bool control_one(struct itu_daemon *d, struct control_state *cs, const char *path,
                        const char *body, int adapter, long long version)
{
    struct itu_resp r;
    itu_post(d, path, body, &r);
    const char *name = itu_jstr(r.json, "adapter");
    long long v = (long long)itu_jnum(r.json, "version", -1);
    bool ok = r.status == 200 && name && strcmp(name, ad_names[adapter]) == 0 && v > 0 &&
              v < LOAD_MAX_VERSION && (version < 0 || v == version);
    if (!ok)
        snprintf(cs->failure, sizeof(cs->failure),
                 "POST %s %s: expected 200 naming %s v%lld, got %s", path, body, ad_names[adapter],
                 version, itu_describe(&r));
    else if (cs->map[v] && cs->map[v] != adapter + 1)
        snprintf(cs->failure, sizeof(cs->failure), "version %lld was issued twice", v), ok = false;
    else
        cs->map[v] = (signed char)(adapter + 1);
    itu_resp_free(&r);
    return ok;
}

START_TEST(test_swaps_under_load)
{
    struct itu_daemon *d = itu_daemon_start(NULL, "{\"history\": 4}");
    struct control_state *cs = calloc(1, sizeof(*cs));
    struct client cl[LOAD_CLIENTS];
    atomic_int stop = 0;
    cs->map[1] = AD_A + 1; /* the initial adapter */
    struct itu_resp r;
    itu_get(d, "/status", &r);
    long long va = (long long)itu_jnum(r.json, "stable.version", -1);
    ck_assert_msg(va == 1 && itu_jstr(r.json, "stable.adapter") &&
                      !strcmp(itu_jstr(r.json, "stable.adapter"), "demo-a"),
                  "GET /status at start does not name demo-a v1: %s", itu_describe(&r));
    itu_resp_free(&r);
    memset(cl, 0, sizeof(cl));
    for (int i = 0; i < LOAD_CLIENTS; i++) {
        cl[i].id = i;
        cl[i].port = d->port;
        cl[i].stop = &stop;
        cl[i].seen = calloc(LOAD_MAX_VERSION, 1);
        ck_assert(pthread_create(&cl[i].th, NULL, client_main, &cl[i]) == 0);
    }
    double end = now_s() + LOAD_SECONDS;
    char body[64];
    bool ok = true;
    while (ok && now_s() < end) {
        ok = control_one(d, cs, "/swap", "{\"adapter\":\"demo-b\"}", AD_B, -1) &&
             control_one(d, cs, "/rollback", "{}", AD_A, va);
        snprintf(body, sizeof(body), "{\"version\": %lld}", va);
        ok = ok && control_one(d, cs, "/swap", "{\"adapter\":\"demo-c\"}", AD_C, -1) &&
             control_one(d, cs, "/rollback", body, AD_A, va);
        if (ok) {
            cs->swaps += 2;
            cs->rollbacks += 2;
        }
    }
    atomic_store(&stop, 1);
    long req = 0, json = 0, bin = 0, rows = 0, fail = 0, mism = 0, unknown = 0;
    const char *first = NULL;
    char conflict[256] = "";
    for (int i = 0; i < LOAD_CLIENTS; i++) {
        pthread_join(cl[i].th, NULL);
        req += cl[i].requests;
        json += cl[i].json;
        bin += cl[i].binary;
        rows += cl[i].rows;
        fail += cl[i].failures;
        mism += cl[i].mismatches;
        if (!first && cl[i].first_failure[0])
            first = cl[i].first_failure;
        for (int v = 0; v < LOAD_MAX_VERSION; v++) {
            if (!cl[i].seen[v])
                continue;
            if (!cs->map[v])
                unknown++;
            else if (cs->map[v] != cl[i].seen[v] && !conflict[0])
                snprintf(conflict, sizeof(conflict),
                         "answers name version %d with %s, the control plane committed %s", v,
                         ad_names[cl[i].seen[v] - 1], ad_names[cs->map[v] - 1]);
        }
    }
    printf("itest_load: %ld requests (%ld JSON, %ld binary, %ld rows), %ld swaps, %ld rollbacks, "
           "%ld failed, %ld mismatches\n",
           req, json, bin, rows, cs->swaps, cs->rollbacks, fail, mism);
    fflush(stdout);
    ck_assert_msg(ok, "control plane under load: %s", cs->failure);
    ck_assert_msg(fail == 0 && mism == 0,
                  "%ld of %ld requests failed, %ld had outputs differing from the reference; "
                  "first: %s",
                  fail, req, mism, first ? first : "");
    ck_assert_msg(unknown == 0, "%ld versions named by answers were never committed", unknown);
    ck_assert_msg(!conflict[0], "%s", conflict);
    ck_assert_msg(req > 0 && cs->swaps > 0, "nothing happened: %ld requests, %ld swaps", req,
                  cs->swaps);
    itu_get(d, "/status", &r);
    ck_assert_msg(itu_jnum(r.json, "swaps.failed", -1) == 0 &&
                      itu_jnum(r.json, "swaps.ok", -1) == (double)cs->swaps,
                  "GET /status swaps after %ld swaps: %s", cs->swaps, itu_describe(&r));
    ck_assert_msg(itu_jnum(r.json, "requests.stable.errors", -1) == 0,
                  "GET /status requests.stable.errors is not 0: %s", itu_describe(&r));
    itu_resp_free(&r);
    for (int i = 0; i < LOAD_CLIENTS; i++)
        free(cl[i].seen);
    free(cs);
    int rc = itu_daemon_stop(d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log tail:\n%s", rc,
                  itu_log_tail(d, 2000));
    itu_daemon_free(&d);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(101, LOAD_ROWS, M->in);
    for (int k = 0; k < AD_N; k++) {
        struct itu_adapter *a = itu_demo_adapter(M, ad_names[k]);
        WANT[k] = malloc(sizeof(double) * LOAD_ROWS * M->out);
        itu_forward(M, a, X, LOAD_ROWS, WANT[k]);
        itu_adapter_free(&a);
    }
    Suite *s = suite_create("itest_load");
    TCase *tc = tcase_create("load");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_swaps_under_load);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    for (int k = 0; k < AD_N; k++)
        free(WANT[k]);
    free(X);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
