/* lorad — tests/itest_canary.c: canary rollouts against the real daemon
 * (SPEC.md 6: /swap with canary_percent, /canary, /promote, /rollback as a
 * canary abort, the route_key / variant fields of /infer and their
 * X-Lorad-Route-Key / X-Lorad-Variant headers, /status requests evidence),
 * and scripts/canary-rollout.sh driving a live daemon under load.
 *
 * Design: every test starts its own daemon (demo-a stable at start) through
 * tests/itestutil.h and sends single-row requests picked from a small pool
 * of input rows whose expected outputs per adapter were computed once, in
 * main, by the harness's independent double-precision reference. Every 200
 * answer is checked against the reference of the snapshot it names, so a
 * routing count can never hide a wrong answer.
 * - Shares: without a route key the daemon splits by a counter, so 4000
 *   requests at 25% give exactly 1000 canary answers (±1); with route keys
 *   the share is statistical and is held to ±3 sigma (binomial).
 * - Stickiness: 2000 keys at 10%, 30%, 60%: a key on the canary stays there
 *   when the share grows, and a key's variant does not change between
 *   repeated requests (JSON route_key and binary X-Lorad-Route-Key agree).
 * - /status requests.stable|canary add up to exactly what the test sent
 *   since the canary began; nonfinite_rows counts the rows the test sent to
 *   the demo-overflow canary.
 * - The script runs while client threads send /infer continuously (for a
 *   bounded time: until the script returns); no client request may fail.
 * No test measures time.
 */
#include <math.h>
#include <float.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "itestutil.h"

#define CN_POOL 16      /* distinct input rows */
#define CN_UNKEYED 4000 /* unkeyed requests at 25% */
#define CN_KEYS 2000    /* distinct route keys */
#define CN_OVF_REQS 200 /* requests while demo-overflow is the canary */
#define CN_OVF_ROWS 3   /* rows per such request */
#define CN_LOAD_CLIENTS 4

static struct itu_model *M;
static double *X;                  /* CN_POOL x M->in */
static double *WANT_A, *WANT_B;    /* CN_POOL x M->out */
static bool OVF_ALL_ROWS_OVERFLOW; /* reference: every pool row overflows f32 */

/* ---- helpers ---- */

struct cn_snap {
    char adapter[160];
    long long version;
};

/* POST expecting an error with `status` and `code`, in the SPEC shape. */
static void cn_post_err(struct itu_daemon *d, const char *path, const char *body, long status,
                        const char *code)
{
    struct itu_resp r;
    const char *why = "";
    long st = itu_post(d, path, body, &r);
    ck_assert_msg(st == status && !strcmp(itu_error_code(&r), code),
                  "POST %s %s: expected %ld %s, got %s", path, body, status, code,
                  itu_describe(&r));
    ck_assert_msg(itu_error_shape_ok(&r, &why), "POST %s %s: error shape: %s", path, body, why);
    itu_resp_free(&r);
}

static void cn_snap_of(const cJSON *j, const char *prefix, struct cn_snap *s)
{
    char p[64];
    snprintf(p, sizeof(p), "%s%sadapter", prefix, *prefix ? "." : "");
    const char *a = itu_jstr(j, p);
    snprintf(s->adapter, sizeof(s->adapter), "%s", a ? a : "");
    snprintf(p, sizeof(p), "%s%sversion", prefix, *prefix ? "." : "");
    s->version = (long long)itu_jnum(j, p, -1);
}

/* The reference for the adapter an answer names (demo-a / demo-b). */
static const double *cn_want(const char *adapter)
{
    if (!strcmp(adapter, "demo-a"))
        return WANT_A;
    if (!strcmp(adapter, "demo-b"))
        return WANT_B;
    return NULL;
}

/* Checks one 200 answer for pool row `row` against the reference of the
 * snapshot it names; `exp` (adapter+version) per variant. Returns 1 when
 * it was a canary answer, 0 stable. */
static int cn_check_answer(const struct itu_infer *res, int row, const struct cn_snap *stable,
                           const struct cn_snap *canary, const char *ctx)
{
    bool is_canary = !strcmp(res->variant, "canary");
    ck_assert_msg(is_canary || !strcmp(res->variant, "stable"), "%s: variant \"%s\"", ctx,
                  res->variant);
    const struct cn_snap *e = is_canary ? canary : stable;
    ck_assert_msg(e != NULL, "%s: canary answer while no canary expected", ctx);
    ck_assert_msg(!strcmp(res->adapter, e->adapter) && res->version == e->version,
                  "%s: %s answer names %s v%lld, expected %s v%lld", ctx, res->variant,
                  res->adapter, res->version, e->adapter, e->version);
    const double *w = cn_want(res->adapter);
    ck_assert_msg(w != NULL, "%s: no reference for %s", ctx, res->adapter);
    double m = itu_match(res->out, w + (size_t)row * M->out, (size_t)M->out);
    ck_assert_msg(m <= 1.0, "%s: %s output differs from the %s reference (score %g)", ctx,
                  res->variant, res->adapter, m);
    ck_assert_msg(res->nonfinite_hdr == 0, "%s: X-Lorad-Nonfinite %d on a finite answer", ctx,
                  res->nonfinite_hdr);
    return is_canary ? 1 : 0;
}

/* One single-row /infer of pool row `row`: binary or JSON, with an
 * optional route key and pin. Asserts 200 and correctness; returns 1 for
 * a canary answer. */
static int cn_infer1(struct itu_client *c, int row, bool binary, const char *key, const char *pin,
                     const struct cn_snap *stable, const struct cn_snap *canary, const char *ctx)
{
    struct itu_infer res;
    char extra[256] = "", hk[200], hv[64];
    const char *hdrs[3] = {NULL, NULL, NULL};
    int nh = 0;
    if (binary) {
        if (key) {
            snprintf(hk, sizeof(hk), "X-Lorad-Route-Key: %s", key);
            hdrs[nh++] = hk;
        }
        if (pin) {
            snprintf(hv, sizeof(hv), "X-Lorad-Variant: %s", pin);
            hdrs[nh++] = hv;
        }
    } else {
        int n = 0;
        if (key)
            n += snprintf(extra + n, sizeof(extra) - (size_t)n, "\"route_key\":\"%s\"", key);
        if (pin)
            snprintf(extra + n, sizeof(extra) - (size_t)n, "%s\"variant\":\"%s\"", n ? "," : "",
                     pin);
    }
    bool ok = itu_infer_do(c, X + (size_t)row * M->in, 1, M->in, M->out, binary, false,
                           *extra ? extra : NULL, nh ? hdrs : NULL, &res);
    ck_assert_msg(ok, "%s (%s, key %s, pin %s): %s; %s", ctx, binary ? "binary" : "json",
                  key ? key : "-", pin ? pin : "-", res.why, itu_describe(&res.r));
    int v = cn_check_answer(&res, row, stable, canary, ctx);
    itu_infer_free(&res);
    return v;
}

/* An /infer that must be refused with status/code (JSON or binary). */
static void cn_infer_err(struct itu_client *c, bool binary, const char *extra,
                         const char *const *hdrs, long status, const char *code, const char *ctx)
{
    struct itu_infer res;
    bool ok = itu_infer_do(c, X, 1, M->in, M->out, binary, false, extra, hdrs, &res);
    ck_assert_msg(!ok && res.status == status && !strcmp(itu_error_code(&res.r), code),
                  "%s: expected %ld %s, got %s", ctx, status, code, itu_describe(&res.r));
    itu_infer_free(&res);
}

/* /status requests.<variant>: requests, errors, nonfinite_rows. */
static void cn_expect_counts(const cJSON *st, const char *variant, double requests,
                             double nonfinite, const char *ctx)
{
    char p[64];
    snprintf(p, sizeof(p), "requests.%s.requests", variant);
    double r = itu_jnum(st, p, -1);
    snprintf(p, sizeof(p), "requests.%s.errors", variant);
    double e = itu_jnum(st, p, -1);
    snprintf(p, sizeof(p), "requests.%s.nonfinite_rows", variant);
    double n = itu_jnum(st, p, -1);
    ck_assert_msg(r == requests && e == 0 && n == nonfinite,
                  "%s: /status requests.%s = {requests %g, errors %g, nonfinite_rows %g}, "
                  "expected {%g, 0, %g}",
                  ctx, variant, r, e, n, requests, nonfinite);
}

/* Starts a daemon and puts `adapter` on the canary at `pct`; fills the
 * stable/canary snapshots from the answer and /status. */
static struct itu_daemon *cn_start_canary(const char *adapter, const char *pct,
                                          struct cn_snap *stable, struct cn_snap *canary)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    char body[256];
    cJSON *st = itu_status(d);
    cn_snap_of(st, "stable", stable);
    ck_assert_str_eq(stable->adapter, "demo-a");
    cJSON_Delete(st);
    snprintf(body, sizeof(body), "{\"adapter\":\"%s\",\"canary_percent\":%s}", adapter, pct);
    cJSON *a = itu_post_ok(d, "/swap", body);
    cn_snap_of(a, "", canary);
    ck_assert_str_eq(canary->adapter, adapter);
    ck_assert_msg(canary->version > stable->version, "canary version %lld <= stable %lld",
                  canary->version, stable->version);
    ck_assert_msg(itu_jstr(a, "variant") && !strcmp(itu_jstr(a, "variant"), "canary"),
                  "/swap canary answer: variant is not \"canary\"");
    cJSON_Delete(a);
    st = itu_status(d);
    struct cn_snap s2;
    cn_snap_of(st, "canary", &s2);
    ck_assert_msg(!strcmp(s2.adapter, adapter) && s2.version == canary->version,
                  "/status canary is %s v%lld", s2.adapter, s2.version);
    ck_assert_msg(itu_jnum(st, "canary.percent", -1) == atof(pct), "/status canary.percent %g",
                  itu_jnum(st, "canary.percent", -1));
    /* The evidence starts from zero when a canary begins. */
    cn_expect_counts(st, "stable", 0, 0, "right after the canary began");
    cn_expect_counts(st, "canary", 0, 0, "right after the canary began");
    cJSON_Delete(st);
    return d;
}

static void cn_stop(struct itu_daemon **d)
{
    int rc = itu_daemon_stop(*d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM; log tail:\n%s", rc,
                  itu_log_tail(*d, 2000));
    itu_daemon_free(d);
}

/* ---- unkeyed share, pins, counters ---- */

START_TEST(test_unkeyed_share_exact)
{
    struct cn_snap stable, canary;
    struct itu_daemon *d = cn_start_canary("demo-b", "25", &stable, &canary);
    long nc = 0, ns = 0;
    for (int i = 0; i < CN_UNKEYED; i++) {
        int v = cn_infer1(d->client, i % CN_POOL, i % 4 == 3, NULL, NULL, &stable, &canary,
                          "unkeyed at 25%");
        nc += v;
        ns += !v;
    }
    ck_assert_msg(labs(nc - CN_UNKEYED / 4) <= 1,
                  "unkeyed split at 25%%: %ld canary answers of %d (expected %d +-1; the "
                  "counter split is exact)",
                  nc, CN_UNKEYED, CN_UNKEYED / 4);
    cJSON *st = itu_status(d);
    cn_expect_counts(st, "stable", (double)ns, 0, "after the unkeyed requests");
    cn_expect_counts(st, "canary", (double)nc, 0, "after the unkeyed requests");
    cJSON_Delete(st);

    /* Pins: the pin wins over the route key and over the share. */
    char key[32];
    int pinned_c = 0, pinned_s = 0;
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "pin-%d", i);
        bool bin = i % 2;
        int v = cn_infer1(d->client, i % CN_POOL, bin, key, "canary", &stable, &canary,
                          "pinned canary");
        ck_assert_msg(v == 1, "pin canary with route key %s answered stable", key);
        v = cn_infer1(d->client, i % CN_POOL, bin, key, "stable", &stable, &canary,
                      "pinned stable");
        ck_assert_msg(v == 0, "pin stable with route key %s answered canary", key);
        pinned_c++;
        pinned_s++;
    }
    /* A variant that is neither: 400. */
    cn_infer_err(d->client, false, "\"variant\":\"blue\"", NULL, 400, "invalid_request",
                 "JSON variant \"blue\"");
    st = itu_status(d);
    cn_expect_counts(st, "stable", (double)(ns + pinned_s), 0, "after the pinned requests");
    cn_expect_counts(st, "canary", (double)(nc + pinned_c), 0, "after the pinned requests");
    cJSON_Delete(st);
    cn_stop(&d);
}
END_TEST

/* ---- keyed share and stickiness ---- */

/* Sends every key once (JSON route_key) and once more (binary header);
 * both must agree. on[k] gets 1 for canary. Returns the canary count. */
static long cn_key_pass(struct itu_daemon *d, const char *pct, unsigned char *on,
                        const struct cn_snap *stable, const struct cn_snap *canary)
{
    char key[32], ctx[64];
    long n = 0;
    snprintf(ctx, sizeof(ctx), "keyed at %s%%", pct);
    for (int k = 0; k < CN_KEYS; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        int v1 = cn_infer1(d->client, k % CN_POOL, false, key, NULL, stable, canary, ctx);
        int v2 = cn_infer1(d->client, (k + 5) % CN_POOL, true, key, NULL, stable, canary, ctx);
        ck_assert_msg(v1 == v2,
                      "route key %s at %s%%: JSON route_key gave %s, the repeat with "
                      "X-Lorad-Route-Key gave %s",
                      key, pct, v1 ? "canary" : "stable", v2 ? "canary" : "stable");
        on[k] = (unsigned char)v1;
        n += v1;
    }
    return n;
}

static void cn_share_ok(long n, double p, const char *pct)
{
    double mean = CN_KEYS * p, sigma = sqrt(CN_KEYS * p * (1 - p));
    ck_assert_msg(fabs((double)n - mean) <= 3 * sigma,
                  "keyed share at %s%%: %ld of %d keys on the canary, expected %.0f +- %.1f "
                  "(3 sigma)",
                  pct, n, CN_KEYS, mean, 3 * sigma);
}

START_TEST(test_keyed_sticky)
{
    struct cn_snap stable, canary;
    struct itu_daemon *d = cn_start_canary("demo-b", "10", &stable, &canary);
    static const char *pcts[] = {"10", "30", "60"};
    unsigned char prev[CN_KEYS], cur[CN_KEYS];
    long total = 0, total_c = 0;
    for (size_t s = 0; s < 3; s++) {
        char body[64];
        if (s > 0) {
            snprintf(body, sizeof(body), "{\"percent\":%s}", pcts[s]);
            cJSON *a = itu_post_ok(d, "/canary", body);
            cJSON_Delete(a);
            cJSON *st = itu_status(d);
            ck_assert_msg(itu_jnum(st, "canary.percent", -1) == atof(pcts[s]),
                          "/status canary.percent %g after /canary %s",
                          itu_jnum(st, "canary.percent", -1), body);
            struct cn_snap c2;
            cn_snap_of(st, "canary", &c2);
            ck_assert_msg(c2.version == canary.version,
                          "/canary changed the canary's version: %lld -> %lld", canary.version,
                          c2.version);
            cJSON_Delete(st);
        }
        long n = cn_key_pass(d, pcts[s], cur, &stable, &canary);
        total += 2 * CN_KEYS;
        total_c += 2 * n;
        cn_share_ok(n, atof(pcts[s]) / 100.0, pcts[s]);
        if (s > 0) {
            for (int k = 0; k < CN_KEYS; k++)
                ck_assert_msg(!prev[k] || cur[k],
                              "route key user-%d was on the canary at %s%% but on stable at "
                              "%s%%",
                              k, pcts[s - 1], pcts[s]);
        }
        memcpy(prev, cur, sizeof(cur));
    }
    cJSON *st = itu_status(d);
    cn_expect_counts(st, "stable", (double)(total - total_c), 0, "after the keyed passes");
    cn_expect_counts(st, "canary", (double)total_c, 0, "after the keyed passes");
    cJSON_Delete(st);

    /* At 0% and 100% the route key is irrelevant. */
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":0}"));
    for (int k = 0; k < 50; k++) {
        char key[32];
        snprintf(key, sizeof(key), "user-%d", k);
        ck_assert_msg(cn_infer1(d->client, k % CN_POOL, k % 2, key, NULL, &stable, &canary,
                                "keyed at 0%") == 0,
                      "route key %s reached the canary at 0%%", key);
        ck_assert_msg(cn_infer1(d->client, k % CN_POOL, k % 2, NULL, NULL, &stable, &canary,
                                "unkeyed at 0%") == 0,
                      "an unkeyed request reached the canary at 0%%");
    }
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":100}"));
    for (int k = 0; k < 50; k++) {
        char key[32];
        snprintf(key, sizeof(key), "user-%d", k);
        ck_assert_msg(cn_infer1(d->client, k % CN_POOL, k % 2, key, NULL, &stable, &canary,
                                "keyed at 100%") == 1,
                      "route key %s reached stable at 100%%", key);
        ck_assert_msg(cn_infer1(d->client, k % CN_POOL, k % 2, NULL, NULL, &stable, &canary,
                                "unkeyed at 100%") == 1,
                      "an unkeyed request reached stable at 100%%");
    }
    cn_stop(&d);
}
END_TEST

/* ---- 409 cases and bad percentages ---- */

START_TEST(test_conflicts)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    struct cn_snap stable, canary;
    const char *pin_c[] = {"X-Lorad-Variant: canary", NULL};
    cJSON *st = itu_status(d);
    cn_snap_of(st, "stable", &stable);
    cJSON_Delete(st);

    /* No canary. */
    cn_post_err(d, "/canary", "{\"percent\":50}", 409, "no_canary");
    cn_post_err(d, "/promote", "{}", 409, "no_canary");
    cn_infer_err(d->client, false, "\"variant\":\"canary\"", NULL, 409, "no_canary",
                 "JSON pin canary without a canary");
    cn_infer_err(d->client, true, NULL, pin_c, 409, "no_canary",
                 "binary pin canary without a canary");
    ck_assert(cn_infer1(d->client, 0, false, NULL, "stable", &stable, NULL, "pin stable") == 0);
    ck_assert(cn_infer1(d->client, 1, false, "k1", NULL, &stable, NULL, "key, no canary") == 0);

    /* A canary is live: other swaps are refused, nothing changes. */
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\",\"canary_percent\":40}");
    cn_snap_of(a, "", &canary);
    double gen = itu_jnum(a, "generation", -1);
    cJSON_Delete(a);
    cn_post_err(d, "/swap", "{\"adapter\":\"demo-c\"}", 409, "canary_active");
    cn_post_err(d, "/swap", "{\"adapter\":\"demo-c\",\"canary_percent\":10}", 409, "canary_active");
    cn_post_err(d, "/swap", "{\"adapter\":\"demo-b\",\"canary_percent\":10}", 409, "canary_active");
    cn_post_err(d, "/canary", "{\"percent\":101}", 400, "invalid_request");
    cn_post_err(d, "/canary", "{\"percent\":-1}", 400, "invalid_request");
    cn_post_err(d, "/canary", "{\"percent\":\"50\"}", 400, "invalid_request");
    cn_post_err(d, "/canary", "{}", 400, "invalid_request");
    st = itu_status(d);
    struct cn_snap s2, c2;
    cn_snap_of(st, "stable", &s2);
    cn_snap_of(st, "canary", &c2);
    ck_assert_msg(!strcmp(s2.adapter, stable.adapter) && s2.version == stable.version &&
                      !strcmp(c2.adapter, "demo-b") && c2.version == canary.version &&
                      itu_jnum(st, "canary.percent", -1) == 40 &&
                      itu_jnum(st, "generation", -1) == gen,
                  "refused requests changed the serving state: %s", cJSON_PrintUnformatted(st));
    cJSON_Delete(st);
    ck_assert(cn_infer1(d->client, 2, true, NULL, "canary", &stable, &canary, "pin") == 1);
    cn_stop(&d);
}
END_TEST

/* ---- promote ---- */

START_TEST(test_promote)
{
    struct cn_snap stable, canary;
    struct itu_daemon *d = cn_start_canary("demo-b", "50", &stable, &canary);
    long nc = 0;
    for (int i = 0; i < 100; i++)
        nc += cn_infer1(d->client, i % CN_POOL, i % 2, NULL, NULL, &stable, &canary,
                        "before promote");
    ck_assert_int_eq(nc, 50);
    cJSON *st = itu_status(d);
    double gen = itu_jnum(st, "generation", -1);
    int hist = itu_jsize(st, "history");
    cJSON_Delete(st);

    cJSON *a = itu_post_ok(d, "/promote", "{}");
    struct cn_snap now, prev;
    cn_snap_of(a, "", &now);
    cn_snap_of(a, "previous", &prev);
    ck_assert_msg(!strcmp(now.adapter, "demo-b") && now.version == canary.version,
                  "/promote answered %s v%lld, expected demo-b v%lld", now.adapter, now.version,
                  canary.version);
    ck_assert_msg(!strcmp(prev.adapter, stable.adapter) && prev.version == stable.version,
                  "/promote previous is %s v%lld, expected %s v%lld", prev.adapter, prev.version,
                  stable.adapter, stable.version);
    ck_assert_msg(itu_jnum(a, "generation", -1) == gen + 1, "/promote generation %g after %g",
                  itu_jnum(a, "generation", -1), gen);
    cJSON_Delete(a);

    st = itu_status(d);
    struct cn_snap s2, h0;
    cn_snap_of(st, "stable", &s2);
    cn_snap_of(st, "history.0", &h0);
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "canary")), "canary not null after /promote");
    ck_assert_msg(!strcmp(s2.adapter, "demo-b") && s2.version == canary.version,
                  "stable after /promote: %s v%lld", s2.adapter, s2.version);
    ck_assert_msg(!strcmp(h0.adapter, stable.adapter) && h0.version == stable.version &&
                      itu_jsize(st, "history") == hist + 1,
                  "history after /promote: %s", cJSON_PrintUnformatted(itu_jget(st, "history")));
    cJSON_Delete(st);
    for (int i = 0; i < 20; i++)
        ck_assert(cn_infer1(d->client, i % CN_POOL, i % 2, NULL, NULL, &canary, NULL,
                            "after promote") == 0);
    cn_post_err(d, "/promote", "{}", 409, "no_canary");
    cn_post_err(d, "/canary", "{\"percent\":10}", 409, "no_canary");
    cn_stop(&d);
}
END_TEST

/* ---- abort via /rollback ---- */

START_TEST(test_abort)
{
    struct cn_snap stable, canary;
    struct itu_daemon *d = cn_start_canary("demo-b", "30", &stable, &canary);
    cJSON *st = itu_status(d);
    double gen = itu_jnum(st, "generation", -1);
    int hist = itu_jsize(st, "history");
    cJSON_Delete(st);
    for (int i = 0; i < 30; i++)
        cn_infer1(d->client, i % CN_POOL, false, NULL, NULL, &stable, &canary, "before abort");

    cJSON *a = itu_post_ok(d, "/rollback", "{}");
    struct cn_snap now, prev;
    cn_snap_of(a, "", &now);
    cn_snap_of(a, "previous", &prev);
    ck_assert_msg(!strcmp(now.adapter, stable.adapter) && now.version == stable.version,
                  "/rollback (abort) answered %s v%lld, expected stable %s v%lld", now.adapter,
                  now.version, stable.adapter, stable.version);
    ck_assert_msg(!strcmp(prev.adapter, "demo-b") && prev.version == canary.version,
                  "/rollback (abort) previous is %s v%lld, expected the canary demo-b v%lld",
                  prev.adapter, prev.version, canary.version);
    ck_assert_msg(itu_jnum(a, "generation", -1) == gen + 1, "/rollback generation %g after %g",
                  itu_jnum(a, "generation", -1), gen);
    cJSON_Delete(a);
    st = itu_status(d);
    struct cn_snap s2;
    cn_snap_of(st, "stable", &s2);
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "canary")), "canary not null after the abort");
    ck_assert_msg(!strcmp(s2.adapter, stable.adapter) && s2.version == stable.version &&
                      itu_jsize(st, "history") == hist,
                  "the abort changed stable or history: %s", cJSON_PrintUnformatted(st));
    cJSON_Delete(st);
    for (int i = 0; i < 20; i++)
        ck_assert(cn_infer1(d->client, i % CN_POOL, i % 2, "user-1", NULL, &stable, NULL,
                            "after abort") == 0);
    if (hist == 0)
        cn_post_err(d, "/rollback", "{}", 409, "no_history");

    /* A new canary starts with fresh evidence and a new version. */
    struct cn_snap c3;
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\",\"canary_percent\":50}");
    cn_snap_of(a, "", &c3);
    cJSON_Delete(a);
    ck_assert_msg(c3.version > canary.version, "re-swapped canary version %lld <= %lld", c3.version,
                  canary.version);
    st = itu_status(d);
    cn_expect_counts(st, "stable", 0, 0, "after a new canary began");
    cn_expect_counts(st, "canary", 0, 0, "after a new canary began");
    cJSON_Delete(st);
    cn_stop(&d);
}
END_TEST

/* ---- non-finite evidence ---- */

START_TEST(test_overflow_counters)
{
    ck_assert_msg(OVF_ALL_ROWS_OVERFLOW,
                  "reference: not every pool row overflows f32 with demo-overflow");
    struct cn_snap stable, canary;
    struct itu_daemon *d = cn_start_canary("demo-overflow", "50", &stable, &canary);
    long nc = 0, ns = 0;
    for (int i = 0; i < CN_OVF_REQS; i++) {
        struct itu_infer res;
        int row0 = i % (CN_POOL - CN_OVF_ROWS + 1);
        bool ok = itu_infer_do(d->client, X + (size_t)row0 * M->in, CN_OVF_ROWS, M->in, M->out,
                               i % 2, true, NULL, NULL, &res);
        ck_assert_msg(ok, "overflow canary request %d: %s; %s", i, res.why, itu_describe(&res.r));
        if (!strcmp(res.variant, "canary")) {
            ck_assert_msg(!strcmp(res.adapter, "demo-overflow") && res.version == canary.version,
                          "canary answer names %s v%lld", res.adapter, res.version);
            int bad = 0;
            for (int r = 0; r < CN_OVF_ROWS; r++) {
                bool nf = false;
                for (int j = 0; j < M->out; j++)
                    nf |= !isfinite(res.out[(size_t)r * M->out + j]);
                bad += nf;
            }
            ck_assert_msg(bad == CN_OVF_ROWS && res.nonfinite_hdr == CN_OVF_ROWS,
                          "demo-overflow answer: %d non-finite rows, X-Lorad-Nonfinite %d, "
                          "expected %d",
                          bad, res.nonfinite_hdr, CN_OVF_ROWS);
            nc++;
        } else {
            ck_assert_msg(!strcmp(res.variant, "stable") && !strcmp(res.adapter, "demo-a") &&
                              res.version == stable.version && res.nonfinite_hdr == 0,
                          "stable answer: %s %s v%lld nonfinite %d", res.variant, res.adapter,
                          res.version, res.nonfinite_hdr);
            double m =
                itu_match(res.out, WANT_A + (size_t)row0 * M->out, (size_t)CN_OVF_ROWS * M->out);
            ck_assert_msg(m <= 1.0, "stable output differs from the reference (score %g)", m);
            ns++;
        }
        itu_infer_free(&res);
    }
    ck_assert_int_eq(nc, CN_OVF_REQS / 2);
    cJSON *st = itu_status(d);
    cn_expect_counts(st, "stable", (double)ns, 0, "demo-overflow canary");
    cn_expect_counts(st, "canary", (double)nc, (double)(nc * CN_OVF_ROWS), "demo-overflow canary");
    cJSON_Delete(st);
    cn_stop(&d);
}
END_TEST

/* ---- the script under load ---- */

struct cn_loader {
    pthread_t th;
    int port, id;
    atomic_bool *stop;
    long sent, failed, wrong;
    char first_fail[2048];
};

/* Sends /infer until *stop: keyed and unkeyed, JSON and binary. A failure
 * is anything but a well-formed 200; a wrong answer is a finite demo-a/b
 * answer that differs from its reference. */
static void *cn_loader_main(void *arg)
{
    struct cn_loader *l = arg;
    struct itu_client *c = itu_client_new(l->port);
    char extra[64], hdr[80];
    for (long i = 0; !atomic_load(l->stop); i++) {
        struct itu_infer res;
        int row = (int)((i + l->id) % CN_POOL);
        bool bin = (i + l->id) % 3 == 0;
        const char *hdrs[] = {hdr, NULL};
        snprintf(extra, sizeof(extra), "\"route_key\":\"load-%d-%ld\"", l->id, i % 500);
        snprintf(hdr, sizeof(hdr), "X-Lorad-Route-Key: load-%d-%ld", l->id, i % 500);
        bool keyed = i % 2;
        bool ok = itu_infer_do(c, X + (size_t)row * M->in, 1, M->in, M->out, bin, false,
                               keyed && !bin ? extra : NULL, keyed && bin ? hdrs : NULL, &res);
        l->sent++;
        if (!ok) {
            if (l->failed++ == 0)
                snprintf(l->first_fail, sizeof(l->first_fail), "%s; %s", res.why,
                         itu_describe(&res.r));
        } else {
            const double *w = cn_want(res.adapter);
            if (w && itu_match(res.out, w + (size_t)row * M->out, (size_t)M->out) > 1.0) {
                if (l->wrong++ == 0 && l->failed == 0)
                    snprintf(l->first_fail, sizeof(l->first_fail),
                             "%s v%lld answer differs from its reference", res.adapter,
                             res.version);
            }
        }
        itu_infer_free(&res);
    }
    itu_client_free(&c);
    return NULL;
}

static bool cn_have(const char *tool)
{
    char cmd[128], *out = NULL;
    snprintf(cmd, sizeof(cmd), "command -v %s", tool);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = itu_run(argv, &out);
    free(out);
    return rc == 0;
}

/* scripts/canary-rollout.sh: from the working directory, or next to the
 * daemon binary (build/lorad, build/san/lorad). malloc'd or NULL. */
static char *cn_script(void)
{
    char *p = realpath("scripts/canary-rollout.sh", NULL);
    if (p)
        return p;
    char *bin = realpath(itu_lorad_bin(), NULL);
    if (!bin)
        return NULL;
    for (int up = 0; up < 4 && !p; up++) {
        char *slash = strrchr(bin, '/');
        if (!slash)
            break;
        *slash = '\0';
        char *cand = tu_path(bin, "scripts/canary-rollout.sh");
        p = realpath(cand, NULL);
        free(cand);
    }
    free(bin);
    return p;
}

static int cn_run_script(const char *script, int port, const char *adapter, char **out)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    /* The latency gate is disabled (ratio 1e6): tests never depend on
     * timing; the gates under test are errors and non-finite rows. */
    char *argv[] = {(char *)script, "--url",     url,          "--adapter", (char *)adapter,
                    "--steps",      "10,50,100", "--interval", "1",         "--max-p99-ratio",
                    "1000000",      NULL};
    return itu_run(argv, out);
}

START_TEST(test_script_under_load)
{
    if (!cn_have("curl") || !cn_have("jq")) {
        printf("SKIP: test_script_under_load: curl or jq is not installed\n");
        return;
    }
    char *script = cn_script(), *out = NULL;
    ck_assert_msg(script != NULL, "scripts/canary-rollout.sh not found (run from the repo)");
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    atomic_bool stop;
    atomic_init(&stop, false);
    struct cn_loader L[CN_LOAD_CLIENTS];
    memset(L, 0, sizeof(L));
    for (int i = 0; i < CN_LOAD_CLIENTS; i++) {
        L[i].port = d->port;
        L[i].id = i;
        L[i].stop = &stop;
        ck_assert(pthread_create(&L[i].th, NULL, cn_loader_main, &L[i]) == 0);
    }

    /* A good adapter: promoted. */
    int rc = cn_run_script(script, d->port, "demo-b", &out);
    printf("%s", out);
    bool good_ok = rc == 0 && strstr(out, "promoted: demo-b") != NULL;
    char good_msg[1024];
    snprintf(good_msg, sizeof(good_msg), "demo-b rollout exited %d:\n%s", rc, out);
    free(out);
    out = NULL;
    struct cn_snap after_good = {"", -1};
    cJSON *st = NULL;
    if (good_ok) {
        st = itu_status(d);
        cn_snap_of(st, "stable", &after_good);
        good_ok = !strcmp(after_good.adapter, "demo-b") && cJSON_IsNull(itu_jget(st, "canary"));
        cJSON_Delete(st);
    }

    /* A bad adapter: detected, rolled back, non-zero exit. */
    int rc2 = -1;
    char bad_msg[2048] = "";
    if (good_ok) {
        rc2 = cn_run_script(script, d->port, "demo-overflow", &out);
        printf("%s", out);
        snprintf(bad_msg, sizeof(bad_msg), "demo-overflow rollout exited %d:\n%s", rc2, out);
        free(out);
    }
    atomic_store(&stop, true);
    long sent = 0, failed = 0, wrong = 0;
    const char *why = "";
    for (int i = 0; i < CN_LOAD_CLIENTS; i++) {
        pthread_join(L[i].th, NULL);
        sent += L[i].sent;
        failed += L[i].failed;
        wrong += L[i].wrong;
        if (!*why && (L[i].failed || L[i].wrong))
            why = L[i].first_fail;
    }
    printf("script under load: %ld requests sent, %ld failed, %ld wrong\n", sent, failed, wrong);
    ck_assert_msg(good_ok, "%s\n(stable after it: %s v%lld)", good_msg, after_good.adapter,
                  after_good.version);
    ck_assert_msg(rc2 == 1 && strstr(bad_msg, "nonfinite") && strstr(bad_msg, "rolled back"), "%s",
                  bad_msg);
    ck_assert_msg(failed == 0 && wrong == 0, "%ld of %ld requests failed, %ld wrong; first: %s",
                  failed, sent, wrong, why);
    ck_assert_msg(sent > 0, "the load clients sent nothing");

    st = itu_status(d);
    struct cn_snap s2;
    cn_snap_of(st, "stable", &s2);
    ck_assert_msg(!strcmp(s2.adapter, "demo-b") && s2.version == after_good.version &&
                      cJSON_IsNull(itu_jget(st, "canary")),
                  "after the demo-overflow rollout: stable %s v%lld (expected demo-b v%lld), "
                  "canary %s",
                  s2.adapter, s2.version, after_good.version,
                  cJSON_PrintUnformatted(itu_jget(st, "canary")));
    cJSON_Delete(st);
    free(script);
    cn_stop(&d);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    X = itu_rows(4242, CN_POOL, M->in);
    WANT_A = malloc(sizeof(double) * CN_POOL * (size_t)M->out);
    WANT_B = malloc(sizeof(double) * CN_POOL * (size_t)M->out);
    double *wo = malloc(sizeof(double) * CN_POOL * (size_t)M->out);
    struct itu_adapter *a = itu_demo_adapter(M, "demo-a");
    itu_forward(M, a, X, CN_POOL, WANT_A);
    itu_adapter_free(&a);
    a = itu_demo_adapter(M, "demo-b");
    itu_forward(M, a, X, CN_POOL, WANT_B);
    itu_adapter_free(&a);
    /* demo-overflow in double: a row overflows f32 when some value of it
     * is beyond FLT_MAX (or not finite even in double). */
    a = itu_demo_adapter(M, "demo-overflow");
    itu_forward(M, a, X, CN_POOL, wo);
    itu_adapter_free(&a);
    OVF_ALL_ROWS_OVERFLOW = true;
    for (int r = 0; r < CN_POOL; r++) {
        bool over = false;
        for (int j = 0; j < M->out; j++) {
            double v = wo[(size_t)r * M->out + j];
            over |= !isfinite(v) || fabs(v) > FLT_MAX;
        }
        OVF_ALL_ROWS_OVERFLOW &= over;
    }
    free(wo);

    Suite *s = suite_create("itest_canary");
    TCase *tc = tcase_create("canary");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_unkeyed_share_exact);
    tcase_add_test(tc, test_keyed_sticky);
    tcase_add_test(tc, test_conflicts);
    tcase_add_test(tc, test_promote);
    tcase_add_test(tc, test_abort);
    tcase_add_test(tc, test_overflow_counters);
    tcase_add_test(tc, test_script_under_load);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    free(WANT_A);
    free(WANT_B);
    free(X);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
