/* lorad — tests/itest_api.c: black-box tests of the HTTP API (SPEC.md 6)
 * against the real daemon: /infer in JSON and binary against the
 * independent reference, every 400/404/405/413 case, /swap and its refusals,
 * /rollback, /status, /adapters, health endpoints, and canary basics.
 * Each test starts its own daemon (itestutil.h) and stops it with SIGTERM,
 * asserting exit status 0. */
#include <check.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "itestutil.h"

static struct itu_model *M;
static struct itu_adapter *RA, *RB, *RC, *RF16, *RBF16;

/* ---- helpers ---- */

static void stop_ok(struct itu_daemon **d)
{
    int rc = itu_daemon_stop(*d, 15000);
    ck_assert_msg(rc == 0, "lorad exit status %d after SIGTERM (expected 0); log tail:\n%s", rc,
                  itu_log_tail(*d, 2000));
    itu_daemon_free(d);
}

/* POST /infer and assert it is 200, names (name, version, variant) and its
 * outputs equal the reference of `ref` (NULL: base model). version < 0:
 * any. Returns the version named. */
static long long infer_expect(struct itu_daemon *d, const double *x, int rows, bool binary,
                              bool batch, const char *extra, const char *const *hdrs,
                              const struct itu_adapter *ref, const char *name, long long version,
                              const char *variant)
{
    struct itu_infer res;
    bool ok = itu_infer_do(d->client, x, rows, M->in, M->out, binary, batch, extra, hdrs, &res);
    ck_assert_msg(ok, "POST /infer (%s, %d rows%s%s): %s", binary ? "binary" : "JSON", rows,
                  extra ? ", " : "", extra ? extra : "", res.why);
    ck_assert_msg(strcmp(res.adapter, name) == 0,
                  "POST /infer (%s): answer names adapter '%s', expected '%s'",
                  binary ? "binary" : "JSON", res.adapter, name);
    if (version >= 0)
        ck_assert_msg(res.version == version,
                      "POST /infer (%s): answer names version %lld, expected %lld",
                      binary ? "binary" : "JSON", res.version, version);
    ck_assert_msg(strcmp(res.variant, variant) == 0,
                  "POST /infer (%s): answer names variant '%s', expected '%s'",
                  binary ? "binary" : "JSON", res.variant, variant);
    size_t n = (size_t)rows * M->out;
    double *want = malloc(n * sizeof(double));
    itu_forward(M, ref, x, rows, want);
    double worst = itu_match(res.out, want, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(res.out[i] - want[i]) <= 1e-5 + 1e-4 * fabs(want[i]))) {
            bad = i;
            break;
        }
    ck_assert_msg(worst <= 1.0,
                  "POST /infer (%s, %d rows) named %s v%lld: outputs differ from the "
                  "reference of %s: worst ratio %g (value %zu: got %.9g want %.9g)",
                  binary ? "binary" : "JSON", rows, res.adapter, res.version,
                  ref ? ref->name : "the base model", worst, bad, (double)res.out[bad], want[bad]);
    long long v = res.version;
    free(want);
    itu_infer_free(&res);
    return v;
}

/* Asserts one error answer: status, code, and the exact error body shape. */
static void expect_error(const struct itu_resp *r, const char *what, long status, const char *code)
{
    const char *why;
    ck_assert_msg(r->status == status, "%s: expected %ld %s, got %s", what, status, code,
                  itu_describe(r));
    ck_assert_msg(itu_error_shape_ok(r, &why), "%s: error body shape: %s: %s", what, why,
                  itu_describe(r));
    ck_assert_msg(strcmp(itu_error_code(r), code) == 0, "%s: expected code %s, got %s", what, code,
                  itu_describe(r));
    char ct[128];
    ck_assert_msg(itu_header(r, "Content-Type", ct, sizeof(ct)) &&
                      strncmp(ct, "application/json", 16) == 0,
                  "%s: error answer Content-Type '%s', expected application/json", what, ct);
}

static void post_err(struct itu_daemon *d, const char *path, const char *body, long status,
                     const char *code)
{
    struct itu_resp r;
    char what[512];
    itu_post(d, path, body, &r);
    snprintf(what, sizeof(what), "POST %s %.300s", path, body);
    expect_error(&r, what, status, code);
    itu_resp_free(&r);
}

static void expect_snapshot_name(const cJSON *j, const char *path, const char *adapter,
                                 long long version, const char *ctx)
{
    char p[128];
    snprintf(p, sizeof(p), "%s%sadapter", path, path[0] ? "." : "");
    const char *a = itu_jstr(j, p);
    if (adapter)
        ck_assert_msg(a && strcmp(a, adapter) == 0, "%s: %s is '%s', expected '%s'", ctx, p,
                      a ? a : "(not a string)", adapter);
    else
        ck_assert_msg(cJSON_IsNull(itu_jget(j, p)), "%s: %s is not null", ctx, p);
    snprintf(p, sizeof(p), "%s%sversion", path, path[0] ? "." : "");
    double v = itu_jnum(j, p, -1);
    ck_assert_msg(v == (double)version, "%s: %s is %.0f, expected %lld", ctx, p, v, version);
}

/* ---- /infer ---- */

START_TEST(test_infer_json)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(11, 5, M->in);
    infer_expect(d, x, 1, false, false, NULL, NULL, RA, "demo-a", 1, "stable");
    infer_expect(d, x, 1, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    infer_expect(d, x, 5, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    /* a pin on the stable variant with a route key */
    infer_expect(d, x + M->in, 2, false, true, "\"route_key\":\"user-1\",\"variant\":\"stable\"",
                 NULL, RA, "demo-a", 1, "stable");
    /* whitespace after the object is not garbage */
    char *body = itu_json_rows(x, 1, M->in, false, NULL);
    size_t n = strlen(body);
    body = realloc(body, n + 3);
    memcpy(body + n, " \n", 3);
    struct itu_resp r;
    itu_req(d, "POST", "/infer", body, strlen(body), "application/json", NULL, &r);
    ck_assert_msg(r.status == 200, "JSON body with trailing whitespace: %s", itu_describe(&r));
    itu_resp_free(&r);
    free(body);
    free(x);
    stop_ok(&d);
}
END_TEST

START_TEST(test_infer_binary_roundtrip)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(12, 3, M->in);
    infer_expect(d, x, 1, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
    infer_expect(d, x, 3, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
    /* %.9g: the JSON numbers of one row are exactly the f32 values of the
     * binary answer for the same row (both computed alone, M = 1). */
    struct itu_infer j, b;
    ck_assert_msg(itu_infer_do(d->client, x, 1, M->in, M->out, false, false, NULL, NULL, &j),
                  "JSON: %s", j.why);
    ck_assert_msg(itu_infer_do(d->client, x, 1, M->in, M->out, true, false, NULL, NULL, &b),
                  "binary: %s", b.why);
    for (int i = 0; i < M->out; i++)
        ck_assert_msg(memcmp(&j.out[i], &b.out[i], sizeof(float)) == 0,
                      "output %d: JSON gives %.9g, binary %.9g: JSON floats do not round-trip "
                      "to the same f32",
                      i, (double)j.out[i], (double)b.out[i]);
    itu_infer_free(&j);
    itu_infer_free(&b);
    /* a binary request with the stable pin header */
    const char *hdrs[] = {"X-Lorad-Variant: stable", "X-Lorad-Route-Key: k1", NULL};
    infer_expect(d, x, 2, true, false, NULL, hdrs, RA, "demo-a", 1, "stable");
    free(x);
    stop_ok(&d);
}
END_TEST

/* One JSON row with value `v` (printed as given) at position `pos`. */
static char *row_with(const char *key, int width, int pos, const char *v, bool nest)
{
    size_t cap = (size_t)width * 16 + 128;
    char *s = malloc(cap);
    size_t n = (size_t)snprintf(s, cap, "{\"%s\":%s[", key, nest ? "[" : "");
    for (int i = 0; i < width; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s%s", i ? "," : "", i == pos ? v : "0.25");
    snprintf(s + n, cap - n, "]%s}", nest ? "]" : "");
    return s;
}

static void infer_400(struct itu_daemon *d, const char *what, const void *body, size_t len,
                      const char *ctype)
{
    struct itu_resp r;
    char w[512];
    itu_req(d, "POST", "/infer", body, len, ctype, NULL, &r);
    snprintf(w, sizeof(w), "POST /infer %s", what);
    expect_error(&r, w, 400, "invalid_request");
    itu_resp_free(&r);
}

static void infer_400_json(struct itu_daemon *d, const char *what, const char *body)
{
    infer_400(d, what, body, strlen(body), "application/json");
}

START_TEST(test_infer_bad_requests)
{
    struct itu_daemon *d = itu_daemon_start(NULL, "{\"max_rows_per_request\": 4}");
    int w = M->in;
    double *x = itu_rows(13, 5, w);
    char *good = itu_json_rows(x, 1, w, false, NULL);
    char *s, *t;
    size_t gl = strlen(good);

    /* row length */
    infer_400_json(d, "row of 3 values", "{\"input\":[1,2,3]}");
    s = itu_json_rows(x, 1, w - 1, false, NULL);
    infer_400_json(d, "row one value short", s);
    free(s);
    s = itu_json_rows(x, 1, w + 1, false, NULL);
    infer_400_json(d, "row one value long", s);
    free(s);
    s = row_with("inputs", w, -1, "", true);
    t = row_with("inputs", w - 1, -1, "", true);
    char *two = malloc(strlen(s) + strlen(t) + 4);
    sprintf(two, "%.*s,%s", (int)strlen(s) - 2, s, t + 11); /* "{"inputs":[" is 11 */
    infer_400_json(d, "second row one value short", two);
    free(two);
    free(s);
    free(t);
    /* zero rows */
    infer_400_json(d, "zero rows {\"inputs\":[]}", "{\"inputs\":[]}");
    infer_400_json(d, "empty row {\"input\":[]}", "{\"input\":[]}");
    infer_400(d, "empty binary body", "", 0, "application/octet-stream");
    /* binary shape and values */
    float *f = itu_f32_rows(x, 2, w);
    infer_400(d, "binary body of 100 bytes", f, 100, "application/octet-stream");
    infer_400(d, "binary body of 1 row + 4 bytes", f, (size_t)w * 4 + 4,
              "application/octet-stream");
    f[7] = NAN;
    infer_400(d, "binary row with NaN", f, (size_t)w * 4, "application/octet-stream");
    f[7] = INFINITY;
    infer_400(d, "binary row with +Inf", f, (size_t)w * 4, "application/octet-stream");
    f[7] = 0;
    f[w + 3] = -INFINITY;
    infer_400(d, "binary second row with -Inf", f, (size_t)w * 8, "application/octet-stream");
    free(f);
    /* numbers outside the f32 range, non-finite JSON */
    s = row_with("input", w, 5, "1e39", false);
    infer_400_json(d, "value 1e39", s);
    free(s);
    s = row_with("input", w, 0, "-3.5e38", false);
    infer_400_json(d, "value -3.5e38", s);
    free(s);
    s = row_with("inputs", w, 9, "1e999", true);
    infer_400_json(d, "value 1e999", s);
    free(s);
    s = row_with("input", w, 9, "NaN", false);
    infer_400_json(d, "NaN literal", s);
    free(s);
    s = row_with("input", w, 9, "Infinity", false);
    infer_400_json(d, "Infinity literal", s);
    free(s);
    /* too many rows (max_rows_per_request 4) */
    s = itu_json_rows(x, 5, w, true, NULL);
    infer_400_json(d, "5 JSON rows with max_rows_per_request 4", s);
    free(s);
    f = itu_f32_rows(x, 5, w);
    infer_400(d, "5 binary rows with max_rows_per_request 4", f, (size_t)w * 20,
              "application/octet-stream");
    free(f);
    /* duplicate keys */
    s = malloc(2 * gl + 8);
    snprintf(s, 2 * gl + 8, "%.*s,%s", (int)gl - 1, good, good + 1);
    infer_400_json(d, "duplicate key input", s);
    free(s);
    s = itu_json_rows(x, 1, w, false, "\"variant\":\"stable\",\"variant\":\"stable\"");
    infer_400_json(d, "duplicate key variant", s);
    free(s);
    /* trailing garbage */
    s = malloc(gl + 8);
    snprintf(s, gl + 8, "%s x", good);
    infer_400_json(d, "trailing garbage ' x'", s);
    snprintf(s, gl + 8, "%s{}", good);
    infer_400_json(d, "trailing garbage '{}'", s);
    free(s);
    /* malformed, truncated */
    infer_400_json(d, "not JSON", "not json");
    infer_400_json(d, "truncated {\"input\":[1,2", "{\"input\":[1,2");
    infer_400(d, "JSON truncated in the middle", good, gl / 2, "application/json");
    infer_400(d, "JSON missing its last brace", good, gl - 1, "application/json");
    infer_400_json(d, "empty JSON body", "");
    infer_400_json(d, "double comma", "{\"input\":[1,,2]}");
    /* wrong types, missing fields */
    infer_400_json(d, "{}", "{}");
    infer_400_json(d, "null", "null");
    infer_400_json(d, "top-level array", "[1,2,3]");
    infer_400_json(d, "input is a string", "{\"input\":\"abc\"}");
    infer_400_json(d, "input is true", "{\"input\":true}");
    infer_400_json(d, "inputs rows are numbers", "{\"inputs\":[1,2,3]}");
    s = row_with("input", w, 3, "\"x\"", false);
    infer_400_json(d, "a string value in the row", s);
    free(s);
    s = row_with("inputs", w, 3, "null", true);
    infer_400_json(d, "a null value in the row", s);
    free(s);
    s = itu_json_rows(x, 1, w, false, "\"route_key\":7");
    infer_400_json(d, "route_key is a number", s);
    free(s);
    s = itu_json_rows(x, 1, w, false, "\"variant\":\"purple\"");
    infer_400_json(d, "variant is not stable/canary", s);
    free(s);
    s = itu_json_rows(x, 1, w, false, "\"variant\":1");
    infer_400_json(d, "variant is a number", s);
    free(s);

    /* the daemon keeps serving, at the row limit too */
    infer_expect(d, x, 1, false, false, NULL, NULL, RA, "demo-a", 1, "stable");
    infer_expect(d, x, 4, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
    infer_expect(d, x, 4, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    free(good);
    free(x);
    stop_ok(&d);
}
END_TEST

START_TEST(test_http_errors)
{
    struct itu_daemon *d = itu_daemon_start(NULL, "{\"max_body_bytes\": 4096}");
    struct itu_resp r;
    static const char *const notfound[][2] = {{"GET", "/"},
                                              {"GET", "/nope"},
                                              {"POST", "/nope"},
                                              {"POST", "/v1/infer"},
                                              {"GET", "/status/extra"}};
    for (size_t i = 0; i < sizeof(notfound) / sizeof(notfound[0]); i++) {
        char what[128];
        itu_req(d, notfound[i][0], notfound[i][1], strcmp(notfound[i][0], "GET") ? "{}" : NULL,
                strcmp(notfound[i][0], "GET") ? 2 : 0,
                strcmp(notfound[i][0], "GET") ? "application/json" : NULL, NULL, &r);
        snprintf(what, sizeof(what), "%s %s", notfound[i][0], notfound[i][1]);
        expect_error(&r, what, 404, "not_found");
        itu_resp_free(&r);
    }
    static const char *const badmethod[][2] = {
        {"GET", "/infer"},    {"GET", "/swap"},      {"GET", "/rollback"}, {"GET", "/promote"},
        {"GET", "/canary"},   {"POST", "/status"},   {"POST", "/healthz"}, {"POST", "/readyz"},
        {"POST", "/metrics"}, {"POST", "/adapters"}, {"PUT", "/infer"},    {"DELETE", "/status"}};
    for (size_t i = 0; i < sizeof(badmethod) / sizeof(badmethod[0]); i++) {
        char what[128];
        bool get = strcmp(badmethod[i][0], "GET") == 0;
        itu_req(d, badmethod[i][0], badmethod[i][1], get ? NULL : "{}", get ? 0 : 2,
                get ? NULL : "application/json", NULL, &r);
        snprintf(what, sizeof(what), "%s %s", badmethod[i][0], badmethod[i][1]);
        expect_error(&r, what, 405, "method_not_allowed");
        itu_resp_free(&r);
    }
    /* 413 with max_body_bytes 4096 */
    double *x = itu_rows(14, 5, M->in);
    float *f = itu_f32_rows(x, 5, M->in);
    itu_req(d, "POST", "/infer", f, (size_t)M->in * 5 * 4, "application/octet-stream", NULL, &r);
    expect_error(&r, "POST /infer binary 5 rows (5120 bytes > max_body_bytes 4096)", 413,
                 "body_too_large");
    itu_resp_free(&r);
    char *s = itu_json_rows(x, 3, M->in, true, NULL);
    ck_assert_msg(strlen(s) > 4096, "test setup: JSON body only %zu bytes", strlen(s));
    itu_req(d, "POST", "/infer", s, strlen(s), "application/json", NULL, &r);
    expect_error(&r, "POST /infer JSON of 3 rows (> max_body_bytes 4096)", 413, "body_too_large");
    itu_resp_free(&r);
    free(s);
    size_t big = 64 * 1024;
    s = malloc(big + 1);
    memset(s, ' ', big);
    memcpy(s, "{\"adapter\":\"demo-b\"}", 20);
    s[big] = 0;
    itu_req(d, "POST", "/swap", s, big, "application/json", NULL, &r);
    expect_error(&r, "POST /swap with a 64 KiB body", 413, "body_too_large");
    itu_resp_free(&r);
    free(s);
    /* still serving */
    infer_expect(d, x, 1, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
    free(f);
    free(x);
    stop_ok(&d);
}
END_TEST

/* ---- /swap ---- */

START_TEST(test_swap_and_infer)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(15, 3, M->in);
    cJSON *st = itu_status(d);
    double gen0 = itu_jnum(st, "generation", -1);
    expect_snapshot_name(st, "stable", "demo-a", 1, "GET /status at start");
    cJSON_Delete(st);

    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    const char *ctx = "POST /swap demo-b answer";
    expect_snapshot_name(a, "", "demo-b", 2, ctx);
    ck_assert_msg(itu_jstr(a, "variant") && !strcmp(itu_jstr(a, "variant"), "stable"),
                  "%s: variant is not \"stable\"", ctx);
    ck_assert_msg(itu_jnum(a, "generation", -1) > gen0, "%s: generation did not increase", ctx);
    expect_snapshot_name(a, "previous", "demo-a", 1, ctx);
    ck_assert_msg(cJSON_IsNumber(itu_jget(a, "stage_ms")), "%s: no numeric stage_ms", ctx);
    ck_assert_msg(cJSON_IsNumber(itu_jget(a, "commit_us")), "%s: no numeric commit_us", ctx);
    cJSON_Delete(a);
    infer_expect(d, x, 1, false, false, NULL, NULL, RB, "demo-b", 2, "stable");
    infer_expect(d, x, 3, true, false, NULL, NULL, RB, "demo-b", 2, "stable");
    st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-b", 2, "GET /status after swap demo-b");
    expect_snapshot_name(st, "history.0", "demo-a", 1, "GET /status after swap demo-b");
    cJSON_Delete(st);

    /* rank_pattern (demo-c), F16 and BF16 adapters */
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\"}");
    expect_snapshot_name(a, "", "demo-c", 3, "POST /swap demo-c answer");
    cJSON_Delete(a);
    infer_expect(d, x, 3, false, true, NULL, NULL, RC, "demo-c", 3, "stable");
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-f16\"}");
    cJSON_Delete(a);
    infer_expect(d, x, 2, true, false, NULL, NULL, RF16, "demo-f16", 4, "stable");
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-bf16\"}");
    cJSON_Delete(a);
    infer_expect(d, x, 2, false, true, NULL, NULL, RBF16, "demo-bf16", 5, "stable");
    st = itu_status(d);
    ck_assert_msg(itu_jnum(st, "swaps.ok", -1) >= 4, "GET /status swaps.ok < 4 after 4 swaps");
    ck_assert_msg(itu_jnum(st, "stable.rank", -1) == 8, "GET /status stable.rank of demo-bf16 "
                                                        "is not 8");
    cJSON_Delete(st);
    free(x);
    stop_ok(&d);
}
END_TEST

/* One refused /swap: its status and code, and afterwards nothing serving
 * changed and swaps.failed went up by one. */
static void swap_refused(struct itu_daemon *d, const char *body, long status, const char *code)
{
    cJSON *before = itu_status(d);
    double failed = itu_jnum(before, "swaps.failed", -1);
    post_err(d, "/swap", body, status, code);
    cJSON *after = itu_status(d);
    char ctx[512];
    snprintf(ctx, sizeof(ctx), "GET /status after refused POST /swap %.300s", body);
    expect_snapshot_name(after, "stable", itu_jstr(before, "stable.adapter"),
                         (long long)itu_jnum(before, "stable.version", -1), ctx);
    ck_assert_msg(itu_jnum(after, "generation", -1) == itu_jnum(before, "generation", -2),
                  "%s: generation changed from %.0f to %.0f", ctx,
                  itu_jnum(before, "generation", -2), itu_jnum(after, "generation", -1));
    ck_assert_msg(cJSON_IsNull(itu_jget(after, "canary")), "%s: canary is not null", ctx);
    ck_assert_msg(itu_jnum(after, "swaps.failed", -1) == failed + 1,
                  "%s: swaps.failed went from %.0f to %.0f, expected +1", ctx, failed,
                  itu_jnum(after, "swaps.failed", -1));
    cJSON_Delete(before);
    cJSON_Delete(after);
}

START_TEST(test_swap_errors)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    static const struct {
        const char *name;
        long status;
        const char *code;
    } bad[] = {
        {"bad-rank", 409, "rank_too_large"},        {"bad-dora", 409, "incompatible_config"},
        {"bad-module", 409, "unknown_module"},      {"bad-shape", 409, "shape_mismatch"},
        {"bad-nan", 422, "non_finite_weights"},     {"bad-pickle", 422, "invalid_adapter"},
        {"bad-type", 422, "unsupported_peft_type"},
    };
    char body[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"adapter\":\"%s\"}", bad[i].name);
        swap_refused(d, body, bad[i].status, bad[i].code);
    }
    /* the rank_too_large message names the max_rank key */
    struct itu_resp r;
    itu_post(d, "/swap", "{\"adapter\":\"bad-rank\"}", &r);
    const char *msg = itu_jstr(r.json, "error.message");
    ck_assert_msg(msg && strstr(msg, "max_rank"),
                  "rank_too_large message does not name max_rank: %s", itu_describe(&r));
    itu_resp_free(&r);
    /* messages name what is wrong */
    static const struct {
        const char *name, *needle;
    } msgs[] = {{"bad-dora", "use_dora"}, {"bad-module", "layers.9.proj"}};
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        snprintf(body, sizeof(body), "{\"adapter\":\"%s\"}", msgs[i].name);
        itu_post(d, "/swap", body, &r);
        msg = itu_jstr(r.json, "error.message");
        ck_assert_msg(msg && strstr(msg, msgs[i].needle),
                      "POST /swap %s: message does not name %s: %s", msgs[i].name, msgs[i].needle,
                      itu_describe(&r));
        itu_resp_free(&r);
    }
    /* forbidden names */
    char long_name[140];
    memset(long_name, 'a', 129);
    long_name[129] = 0;
    const char *forbidden[] = {"..", "a/b", ".x", long_name, "../demo-a", "-x", "demo-a/"};
    for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
        snprintf(body, sizeof(body), "{\"adapter\":\"%s\"}", forbidden[i]);
        swap_refused(d, body, 403, "forbidden_name");
    }
    /* 128 characters is a valid name, just not there */
    long_name[128] = 0;
    snprintf(body, sizeof(body), "{\"adapter\":\"%s\"}", long_name);
    swap_refused(d, body, 404, "adapter_not_found");
    swap_refused(d, "{\"adapter\":\"no-such-adapter\"}", 404, "adapter_not_found");
    /* malformed requests */
    swap_refused(d, "{\"adapter\":5}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":null}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":[\"demo-b\"]}", 400, "invalid_request");
    swap_refused(d, "{}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":\"demo-b\"", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":\"demo-b\",\"adapter\":\"demo-c\"}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":\"demo-b\",\"canary_percent\":150}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":\"demo-b\",\"canary_percent\":-1}", 400, "invalid_request");
    swap_refused(d, "{\"adapter\":\"demo-b\",\"canary_percent\":\"50\"}", 400, "invalid_request");
    /* still serving demo-a, and a good swap still works */
    double *x = itu_rows(16, 2, M->in);
    infer_expect(d, x, 2, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    infer_expect(d, x, 2, true, false, NULL, NULL, RB, "demo-b", -1, "stable");
    free(x);
    stop_ok(&d);
}
END_TEST

START_TEST(test_swap_checksum)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    char *file = tu_path(itu_adapters_dir(), "demo-b/adapter_model.safetensors");
    char *hex = itu_sha256_file(file);
    char body[256];
    swap_refused(d,
                 "{\"adapter\":\"demo-b\",\"sha256\":"
                 "\"0000000000000000000000000000000000000000000000000000000000000000\"}",
                 409, "checksum_mismatch");
    /* SPEC 4 order: name, then checksum, then everything else */
    static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
    snprintf(body, sizeof(body), "{\"adapter\":\"bad-nan\",\"sha256\":\"%s\"}", zeros);
    swap_refused(d, body, 409, "checksum_mismatch");
    snprintf(body, sizeof(body), "{\"adapter\":\"bad-rank\",\"sha256\":\"%s\"}", zeros);
    swap_refused(d, body, 409, "checksum_mismatch");
    snprintf(body, sizeof(body), "{\"adapter\":\"../demo-b\",\"sha256\":\"%s\"}", zeros);
    swap_refused(d, body, 403, "forbidden_name");
    char wrong[65];
    memcpy(wrong, hex, 65);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    snprintf(body, sizeof(body), "{\"adapter\":\"demo-b\",\"sha256\":\"%s\"}", wrong);
    swap_refused(d, body, 409, "checksum_mismatch");
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    snprintf(body, sizeof(body), "{\"adapter\":\"demo-b\",\"sha256\":\"%s\"}", upper);
    cJSON *a = itu_post_ok(d, "/swap", body);
    expect_snapshot_name(a, "", "demo-b", 2, "POST /swap demo-b with the uppercase sha256");
    cJSON_Delete(a);
    cJSON *st = itu_status(d);
    const char *s = itu_jstr(st, "stable.sha256");
    ck_assert_msg(s && strcasecmp(s, hex) == 0, "GET /status stable.sha256 '%s', expected %s",
                  s ? s : "(none)", hex);
    cJSON_Delete(st);
    double *x = itu_rows(17, 1, M->in);
    infer_expect(d, x, 1, false, false, NULL, NULL, RB, "demo-b", 2, "stable");
    free(x);
    free(hex);
    free(file);
    stop_ok(&d);
}
END_TEST

/* ---- /rollback ---- */

static cJSON *rollback_ok(struct itu_daemon *d, const char *body, const char *adapter,
                          long long version, const char *prev_adapter, long long prev_version)
{
    cJSON *a = itu_post_ok(d, "/rollback", body);
    char ctx[256];
    snprintf(ctx, sizeof(ctx), "POST /rollback %s answer", body);
    expect_snapshot_name(a, "", adapter, version, ctx);
    if (prev_version >= 0)
        expect_snapshot_name(a, "previous", prev_adapter, prev_version, ctx);
    ck_assert_msg(itu_jstr(a, "variant") && !strcmp(itu_jstr(a, "variant"), "stable"),
                  "%s: variant is not stable", ctx);
    ck_assert_msg(cJSON_IsNumber(itu_jget(a, "generation")), "%s: no generation", ctx);
    ck_assert_msg(cJSON_IsNumber(itu_jget(a, "commit_us")), "%s: no commit_us", ctx);
    return a;
}

START_TEST(test_rollback)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(18, 2, M->in);
    post_err(d, "/rollback", "{\"version\": 1}", 404, "version_not_found");
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\"}"));
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-f16\"}"));
    cJSON *st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-f16", 4, "GET /status after 3 swaps");
    expect_snapshot_name(st, "history.0", "demo-c", 3, "GET /status after 3 swaps");
    expect_snapshot_name(st, "history.1", "demo-b", 2, "GET /status after 3 swaps");
    expect_snapshot_name(st, "history.2", "demo-a", 1, "GET /status after 3 swaps");
    double gen = itu_jnum(st, "generation", -1);
    cJSON_Delete(st);

    cJSON *a = rollback_ok(d, "{}", "demo-c", 3, "demo-f16", 4);
    ck_assert_msg(itu_jnum(a, "generation", -1) == gen + 1,
                  "POST /rollback: generation %.0f, expected %.0f", itu_jnum(a, "generation", -1),
                  gen + 1);
    ck_assert_msg(itu_jget(a, "stage_ms") == NULL, "POST /rollback answer has stage_ms");
    cJSON_Delete(a);
    infer_expect(d, x, 2, false, true, NULL, NULL, RC, "demo-c", 3, "stable");
    cJSON_Delete(rollback_ok(d, "{}", "demo-b", 2, "demo-c", 3));
    infer_expect(d, x, 2, true, false, NULL, NULL, RB, "demo-b", 2, "stable");
    /* v3 was dropped, v2 is the current stable, 99 never existed */
    post_err(d, "/rollback", "{\"version\": 3}", 404, "version_not_found");
    post_err(d, "/rollback", "{\"version\": 4}", 404, "version_not_found");
    post_err(d, "/rollback", "{\"version\": 2}", 404, "version_not_found");
    post_err(d, "/rollback", "{\"version\": 99}", 404, "version_not_found");
    post_err(d, "/rollback", "{\"version\": -1}", 400, "invalid_request");
    post_err(d, "/rollback", "{\"version\": \"1\"}", 400, "invalid_request");
    post_err(d, "/rollback", "{\"version\": 1.5}", 400, "invalid_request");
    post_err(d, "/rollback", "{\"version\": 1", 400, "invalid_request");
    cJSON_Delete(rollback_ok(d, "{\"version\": 1}", "demo-a", 1, "demo-b", 2));
    infer_expect(d, x, 1, false, false, NULL, NULL, RA, "demo-a", 1, "stable");
    /* walk back to the end of the history: versions only go down, and
     * the base model (adapter null, version 0) may be the last entry */
    long long last = 1;
    struct itu_resp r;
    for (int i = 0; i < 6; i++) {
        itu_post(d, "/rollback", "{}", &r);
        if (r.status != 200)
            break;
        long long v = (long long)itu_jnum(r.json, "version", -1);
        ck_assert_msg(v >= 0 && v < last, "POST /rollback walked from v%lld to v%lld", last, v);
        last = v;
        if (v == 0) {
            ck_assert_msg(cJSON_IsNull(itu_jget(r.json, "adapter")),
                          "rollback to version 0 names an adapter: %s", itu_describe(&r));
            infer_expect(d, x, 2, false, true, NULL, NULL, NULL, "", 0, "stable");
            infer_expect(d, x, 1, true, false, NULL, NULL, NULL, "", 0, "stable");
        }
        itu_resp_free(&r);
    }
    expect_error(&r, "POST /rollback {} at the end of the history", 409, "no_history");
    itu_resp_free(&r);
    /* with the history empty, a named version is still not in history:
     * 404, for the current stable (v0) too; only {} is no_history */
    post_err(d, "/rollback", "{\"version\": 0}", 404, "version_not_found");
    post_err(d, "/rollback", "{\"version\": 7}", 404, "version_not_found");
    post_err(d, "/rollback", "{}", 409, "no_history");
    /* a version is never issued twice */
    a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}");
    ck_assert_msg(itu_jnum(a, "version", -1) == 5,
                  "POST /swap after rollbacks: version %.0f, expected 5 (1..4 were issued)",
                  itu_jnum(a, "version", -1));
    cJSON_Delete(a);
    infer_expect(d, x, 2, false, true, NULL, NULL, RB, "demo-b", 5, "stable");
    free(x);
    stop_ok(&d);
}
END_TEST

/* ---- malformed JSON numbers on the control plane ---- */

/* Numbers cJSON reads but RFC 8259 does not allow (SPEC 6: malformed JSON
 * is 400 invalid_request on every endpoint). */
static const char *const bad_numbers[] = {"05", "5.", "00.5", "0001", "-",
                                          "1e", ".5", "+1",   "1.e5"};
#define N_BAD_NUMBERS (sizeof(bad_numbers) / sizeof(bad_numbers[0]))

/* POST path {prefix NUM} for each malformed NUM: 400 invalid_request whose
 * message names the byte where NUM starts (strlen(prefix)). */
static void post_bad_numbers(struct itu_daemon *d, const char *path, const char *prefix,
                             bool is_swap)
{
    char body[256], want[64];
    snprintf(want, sizeof(want), "malformed JSON at byte %zu: ", strlen(prefix));
    for (size_t i = 0; i < N_BAD_NUMBERS; i++) {
        snprintf(body, sizeof(body), "%s%s}", prefix, bad_numbers[i]);
        if (is_swap)
            swap_refused(d, body, 400, "invalid_request");
        else
            post_err(d, path, body, 400, "invalid_request");
        struct itu_resp r;
        itu_post(d, path, body, &r);
        const char *msg = itu_jstr(r.json, "error.message");
        ck_assert_msg(msg && strncmp(msg, want, strlen(want)) == 0,
                      "POST %s %s: message does not start with '%s': %s", path, body, want,
                      itu_describe(&r));
        itu_resp_free(&r);
    }
}

START_TEST(test_control_bad_numbers)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(23, 2, M->in);
    /* /swap: 05 would be a 5 % canary; nothing serving changes */
    post_bad_numbers(d, "/swap", "{\"adapter\":\"demo-c\",\"canary_percent\":", true);
    post_bad_numbers(d, "/swap", "{\"canary_percent\": 5, \"adapter\":\"demo-c\", \"x\":", true);
    /* numbers inside strings are not numbers */
    swap_refused(d, "{\"adapter\":\"05\"}", 404, "adapter_not_found");
    swap_refused(d, "{\"adapter\":\"demo-\\\"05\"}", 403, "forbidden_name");
    infer_expect(d, x, 2, false, true, NULL, NULL, RA, "demo-a", 1, "stable");

    /* /canary: with a canary live at 50 %, its share does not change */
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\",\"canary_percent\":50}"));
    cJSON *st = itu_status(d);
    double gen = itu_jnum(st, "generation", -1);
    cJSON_Delete(st);
    post_bad_numbers(d, "/canary", "{\"percent\":", false);
    st = itu_status(d);
    ck_assert_msg(itu_jnum(st, "canary.percent", -1) == 50 && itu_jnum(st, "generation", -1) == gen,
                  "malformed /canary changed the canary: %s", cJSON_PrintUnformatted(st));
    cJSON_Delete(st);
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":5e1}")); /* a valid exponent */

    /* /rollback: 0001 would be version 1, which is in history */
    cJSON_Delete(itu_post_ok(d, "/promote", "{}")); /* stable demo-b v2, history 1 0 */
    st = itu_status(d);
    gen = itu_jnum(st, "generation", -1);
    cJSON_Delete(st);
    post_bad_numbers(d, "/rollback", "{\"version\":", false);
    post_bad_numbers(d, "/rollback", "{ \"version\" : ", false);
    st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-b", 2, "GET /status after malformed /rollback");
    expect_snapshot_name(st, "history.0", "demo-a", 1, "GET /status after malformed /rollback");
    ck_assert_msg(itu_jnum(st, "generation", -1) == gen,
                  "malformed /rollback changed the generation from %.0f to %.0f", gen,
                  itu_jnum(st, "generation", -1));
    cJSON_Delete(st);

    /* still serving, and well-formed control requests still work */
    infer_expect(d, x, 2, false, true, NULL, NULL, RB, "demo-b", 2, "stable");
    infer_expect(d, x, 1, true, false, NULL, NULL, RB, "demo-b", 2, "stable");
    cJSON_Delete(rollback_ok(d, "{\"version\": 1}", "demo-a", 1, "demo-b", 2));
    infer_expect(d, x, 2, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    free(x);
    stop_ok(&d);
}
END_TEST

/* ---- /status, /adapters, health ---- */

static void expect_type(const cJSON *j, const char *path, int type, const char *ctx)
{
    const cJSON *v = itu_jget(j, path);
    ck_assert_msg(v != NULL, "%s: member %s missing", ctx, path);
    ck_assert_msg((v->type & 0xff) == type, "%s: member %s has the wrong JSON type", ctx, path);
}

static void expect_snapshot_fields(const cJSON *st, const char *p, const char *ctx)
{
    static const struct {
        const char *k;
        int t;
    } f[] = {{"version", cJSON_Number}, {"rank", cJSON_Number},      {"lora_alpha", cJSON_Number},
             {"sha256", cJSON_String},  {"loaded_at", cJSON_String}, {"stage_ms", cJSON_Number},
             {"adapter", cJSON_String}};
    char path[128];
    regex_t re;
    ck_assert(regcomp(&re,
                      "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?"
                      "(Z|[+-][0-9]{2}:[0-9]{2})$",
                      REG_EXTENDED | REG_NOSUB) == 0);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        snprintf(path, sizeof(path), "%s.%s", p, f[i].k);
        expect_type(st, path, f[i].t, ctx);
    }
    snprintf(path, sizeof(path), "%s.loaded_at", p);
    const char *t = itu_jstr(st, path);
    ck_assert_msg(regexec(&re, t, 0, NULL, 0) == 0, "%s: %s '%s' is not RFC 3339", ctx, path, t);
    regfree(&re);
}

START_TEST(test_status_fields)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(19, 1, M->in);
    for (int i = 0; i < 3; i++)
        infer_expect(d, x, 1, i & 1, false, NULL, NULL, RA, "demo-a", 1, "stable");
    cJSON *st = itu_status(d);
    const char *ctx = "GET /status";
    ck_assert_msg(itu_jstr(st, "state") && !strcmp(itu_jstr(st, "state"), "serving"),
                  "%s: state is not \"serving\"", ctx);
    expect_type(st, "uptime_s", cJSON_Number, ctx);
    expect_type(st, "generation", cJSON_Number, ctx);
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "restored")),
                  "%s: restored is not null on a first start without a state file", ctx);
    ck_assert_msg(itu_jnum(st, "model.layers", -1) == (double)M->n, "%s: model.layers", ctx);
    ck_assert_msg(itu_jnum(st, "model.in_features", -1) == M->in, "%s: model.in_features", ctx);
    ck_assert_msg(itu_jnum(st, "model.out_features", -1) == M->out, "%s: model.out_features", ctx);
    double params = 0;
    for (size_t i = 0; i < M->n; i++)
        params += (double)M->L[i].in * M->L[i].out + (M->L[i].b ? M->L[i].out : 0);
    ck_assert_msg(itu_jnum(st, "model.parameters", -1) == params,
                  "%s: model.parameters %.0f, expected %.0f", ctx,
                  itu_jnum(st, "model.parameters", -1), params);
    ck_assert_msg(itu_jnum(st, "profile.max_rank", -1) == 16, "%s: profile.max_rank", ctx);
    ck_assert_msg(itu_jsize(st, "profile.target_modules") == (int)M->n,
                  "%s: profile.target_modules is not the %zu layers", ctx, M->n);
    expect_type(st, "profile.use_rslora", cJSON_False, ctx);
    expect_type(st, "profile.use_dora", cJSON_False, ctx);
    ck_assert_msg(itu_jnum(st, "profile.lora_dropout", -1) == 0, "%s: profile.lora_dropout", ctx);
    expect_type(st, "profile.alpha_pattern", cJSON_Object, ctx);
    expect_snapshot_fields(st, "stable", ctx);
    expect_snapshot_name(st, "stable", "demo-a", 1, ctx);
    ck_assert_msg(itu_jnum(st, "stable.rank", -1) == 8, "%s: stable.rank", ctx);
    ck_assert_msg(itu_jnum(st, "stable.lora_alpha", -1) == 16, "%s: stable.lora_alpha", ctx);
    char *file = tu_path(itu_adapters_dir(), "demo-a/adapter_model.safetensors");
    char *hex = itu_sha256_file(file);
    ck_assert_msg(strcasecmp(itu_jstr(st, "stable.sha256"), hex) == 0,
                  "%s: stable.sha256 %s, expected %s", ctx, itu_jstr(st, "stable.sha256"), hex);
    free(hex);
    free(file);
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "canary")), "%s: canary is not null", ctx);
    expect_type(st, "history", cJSON_Array, ctx);
    ck_assert_msg(itu_jnum(st, "workers", -1) == 2, "%s: workers is not 2 (config)", ctx);
    static const char *const ev[] = {"requests", "errors", "nonfinite_rows", "p50_ms", "p99_ms"};
    for (int v = 0; v < 2; v++)
        for (size_t i = 0; i < 5; i++) {
            char p[64];
            snprintf(p, sizeof(p), "requests.%s.%s", v ? "canary" : "stable", ev[i]);
            /* a latency quantile of no requests may be null */
            if (i >= 3 && cJSON_IsNull(itu_jget(st, p)))
                continue;
            expect_type(st, p, cJSON_Number, ctx);
        }
    ck_assert_msg(itu_jnum(st, "requests.stable.requests", -1) >= 3,
                  "%s: requests.stable.requests < 3 after 3 requests", ctx);
    ck_assert_msg(itu_jnum(st, "requests.stable.errors", -1) == 0, "%s: errors", ctx);
    expect_type(st, "swaps.ok", cJSON_Number, ctx);
    expect_type(st, "swaps.failed", cJSON_Number, ctx);
    ck_assert_msg(itu_jget(st, "swaps.last") != NULL, "%s: swaps.last missing", ctx);
    cJSON_Delete(st);

    /* after a swap, the history holds demo-a with all snapshot fields */
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    st = itu_status(d);
    expect_snapshot_fields(st, "history.0", "GET /status after a swap");
    ck_assert_msg(itu_jget(st, "swaps.last") && cJSON_IsObject(itu_jget(st, "swaps.last")),
                  "GET /status after a swap: swaps.last is not an object");
    cJSON_Delete(st);

    /* /adapters */
    struct itu_resp r;
    itu_get(d, "/adapters", &r);
    ck_assert_msg(r.status == 200, "GET /adapters: %s", itu_describe(&r));
    cJSON *list = cJSON_IsArray(r.json) ? r.json : itu_jget(r.json, "adapters");
    ck_assert_msg(cJSON_IsArray(list), "GET /adapters: no array of adapters: %s", itu_describe(&r));
    bool seen_a = false, seen_rank = false, seen_pickle = false;
    for (cJSON *e = list->child; e; e = e->next) {
        const char *n = itu_jstr(e, "name");
        if (!n)
            continue;
        if (!strcmp(n, "demo-a")) {
            seen_a = true;
            ck_assert_msg(cJSON_IsTrue(itu_jget(e, "compatible")),
                          "GET /adapters: demo-a not compatible");
            ck_assert_msg(itu_jnum(e, "r", -1) == 8, "GET /adapters: demo-a r is not 8");
            ck_assert_msg(itu_jnum(e, "lora_alpha", -1) == 16,
                          "GET /adapters: demo-a lora_alpha is not 16");
            ck_assert_msg(itu_jsize(e, "layers") == (int)M->n,
                          "GET /adapters: demo-a layers is not %zu names", M->n);
        } else if (!strcmp(n, "bad-rank")) {
            seen_rank = true;
            ck_assert_msg(cJSON_IsFalse(itu_jget(e, "compatible")),
                          "GET /adapters: bad-rank is not compatible false");
            const char *code = itu_jstr(e, "error.code");
            ck_assert_msg(code && !strcmp(code, "rank_too_large"),
                          "GET /adapters: bad-rank error.code '%s', expected rank_too_large",
                          code ? code : "(none)");
        } else if (!strcmp(n, "bad-pickle")) {
            seen_pickle = true;
            ck_assert_msg(cJSON_IsFalse(itu_jget(e, "compatible")),
                          "GET /adapters: bad-pickle is not compatible false");
        }
    }
    ck_assert_msg(seen_a && seen_rank && seen_pickle,
                  "GET /adapters does not list demo-a, bad-rank and bad-pickle: %s",
                  itu_describe(&r));
    itu_resp_free(&r);

    /* health */
    itu_get(d, "/healthz", &r);
    ck_assert_msg(r.status == 200, "GET /healthz: %s", itu_describe(&r));
    itu_resp_free(&r);
    itu_get(d, "/readyz", &r);
    ck_assert_msg(r.status == 200, "GET /readyz: %s", itu_describe(&r));
    itu_resp_free(&r);
    itu_get(d, "/metrics", &r);
    ck_assert_msg(r.status == 200, "GET /metrics: %s", itu_describe(&r));
    char ct[128];
    ck_assert_msg(itu_header(&r, "Content-Type", ct, sizeof(ct)) && !strncmp(ct, "text/plain", 10),
                  "GET /metrics Content-Type '%s', expected text/plain", ct);
    regex_t re;
    ck_assert(regcomp(&re,
                      "^lorad_[a-zA-Z0-9_]+(\\{[^}]*\\})? [-+]?([0-9.]+([eE][-+]?[0-9]+)?|NaN|\\+?"
                      "Inf)( [0-9]+)?$",
                      REG_EXTENDED | REG_NOSUB) == 0);
    int samples = 0, badlines = 0;
    char *save = NULL, first_bad[256] = "";
    for (char *line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0])
            continue;
        if (regexec(&re, line, 0, NULL, 0) == 0) {
            samples++;
        } else if (!badlines++) {
            snprintf(first_bad, sizeof(first_bad), "%s", line);
        }
    }
    regfree(&re);
    ck_assert_msg(samples >= 5 && badlines == 0,
                  "GET /metrics: %d lorad_ sample lines, %d other lines (first: '%s')", samples,
                  badlines, first_bad);
    itu_resp_free(&r);
    free(x);
    stop_ok(&d);
}
END_TEST

/* ---- canary ---- */

/* Variant that a JSON request with route key `key` is answered by. */
static void route_variant(struct itu_daemon *d, const double *x, const char *key, bool binary,
                          char *out, size_t n)
{
    char extra[128], hdr[128];
    struct itu_infer res;
    snprintf(extra, sizeof(extra), "\"route_key\":\"%s\"", key);
    snprintf(hdr, sizeof(hdr), "X-Lorad-Route-Key: %s", key);
    const char *hdrs[] = {hdr, NULL};
    ck_assert_msg(itu_infer_do(d->client, x, 1, M->in, M->out, binary, false, binary ? NULL : extra,
                               binary ? hdrs : NULL, &res),
                  "route key %s: %s", key, res.why);
    snprintf(out, n, "%s", res.variant);
    itu_infer_free(&res);
}

START_TEST(test_canary)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    double *x = itu_rows(20, 2, M->in);
    cJSON *a = itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\",\"canary_percent\":50}");
    expect_snapshot_name(a, "", "demo-b", 2, "POST /swap demo-b canary 50");
    ck_assert_msg(itu_jstr(a, "variant") && !strcmp(itu_jstr(a, "variant"), "canary"),
                  "POST /swap canary answer variant is not \"canary\"");
    cJSON_Delete(a);
    cJSON *st = itu_status(d);
    expect_snapshot_name(st, "canary", "demo-b", 2, "GET /status with a canary");
    expect_snapshot_name(st, "stable", "demo-a", 1, "GET /status with a canary");
    ck_assert_msg(itu_jnum(st, "canary.percent", -1) == 50, "GET /status canary.percent %g",
                  itu_jnum(st, "canary.percent", -1));
    cJSON_Delete(st);
    {
        cJSON *before = itu_status(d);
        post_err(d, "/swap", "{\"adapter\":\"demo-c\"}", 409, "canary_active");
        post_err(d, "/swap", "{\"adapter\":\"demo-c\",\"canary_percent\":10}", 409,
                 "canary_active");
        cJSON *after = itu_status(d);
        expect_snapshot_name(after, "canary", "demo-b", 2, "GET /status after canary_active");
        ck_assert_msg(itu_jnum(after, "swaps.failed", -1) ==
                          itu_jnum(before, "swaps.failed", -1) + 2,
                      "swaps.failed did not count the two canary_active refusals");
        cJSON_Delete(before);
        cJSON_Delete(after);
    }
    /* pins */
    infer_expect(d, x, 2, false, true, "\"variant\":\"canary\"", NULL, RB, "demo-b", 2, "canary");
    infer_expect(d, x, 1, false, false, "\"variant\":\"stable\"", NULL, RA, "demo-a", 1, "stable");
    const char *pin_c[] = {"X-Lorad-Variant: canary", NULL};
    const char *pin_s[] = {"X-Lorad-Variant: stable", NULL};
    infer_expect(d, x, 2, true, false, NULL, pin_c, RB, "demo-b", 2, "canary");
    infer_expect(d, x, 1, true, false, NULL, pin_s, RA, "demo-a", 1, "stable");
    /* route keys: sticky, both variants at 50 %, same for JSON and binary */
    int n_canary = 0;
    for (int k = 0; k < 32; k++) {
        char key[32], v1[16], v2[16], vb[16];
        snprintf(key, sizeof(key), "user-%d", k);
        route_variant(d, x, key, false, v1, sizeof(v1));
        route_variant(d, x, key, false, v2, sizeof(v2));
        route_variant(d, x, key, true, vb, sizeof(vb));
        ck_assert_msg(!strcmp(v1, v2) && !strcmp(v1, vb),
                      "route key %s answered by %s, then %s, then (binary) %s", key, v1, v2, vb);
        n_canary += !strcmp(v1, "canary");
        /* a pin wins over the route key */
        char extra[96];
        snprintf(extra, sizeof(extra), "\"route_key\":\"%s\",\"variant\":\"%s\"", key,
                 strcmp(v1, "canary") ? "canary" : "stable");
        struct itu_infer res;
        ck_assert_msg(itu_infer_do(d->client, x, 1, M->in, M->out, false, false, extra, NULL, &res),
                      "%s", res.why);
        ck_assert_msg(strcmp(res.variant, v1) != 0, "pin with route key %s lost to the key", key);
        itu_infer_free(&res);
    }
    ck_assert_msg(n_canary > 0 && n_canary < 32, "32 route keys at 50 %%: %d went to the canary",
                  n_canary);
    /* the share */
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":100}"));
    for (int i = 0; i < 4; i++)
        infer_expect(d, x, 1, i & 1, false, NULL, NULL, RB, "demo-b", 2, "canary");
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":0}"));
    for (int i = 0; i < 4; i++)
        infer_expect(d, x, 1, i & 1, false, NULL, NULL, RA, "demo-a", 1, "stable");
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":12.5}"));
    st = itu_status(d);
    ck_assert_msg(itu_jnum(st, "canary.percent", -1) == 12.5,
                  "GET /status canary.percent %g after /canary 12.5",
                  itu_jnum(st, "canary.percent", -1));
    cJSON_Delete(st);
    cJSON_Delete(itu_post_ok(d, "/canary", "{\"percent\":33.333}"));
    st = itu_status(d);
    ck_assert_msg(fabs(itu_jnum(st, "canary.percent", -1) - 33.33) < 1e-9,
                  "GET /status canary.percent %.9g after /canary 33.333 (rounded to 0.01: 33.33)",
                  itu_jnum(st, "canary.percent", -1));
    cJSON_Delete(st);
    post_err(d, "/canary", "{\"percent\":150}", 400, "invalid_request");
    post_err(d, "/canary", "{\"percent\":-0.5}", 400, "invalid_request");
    post_err(d, "/canary", "{}", 400, "invalid_request");
    post_err(d, "/canary", "{\"percent\":\"5\"}", 400, "invalid_request");
    /* promote */
    a = itu_post_ok(d, "/promote", "{}");
    expect_snapshot_name(a, "", "demo-b", 2, "POST /promote answer");
    cJSON_Delete(a);
    st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-b", 2, "GET /status after promote");
    expect_snapshot_name(st, "history.0", "demo-a", 1, "GET /status after promote");
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "canary")), "GET /status after promote: canary");
    cJSON_Delete(st);
    infer_expect(d, x, 2, false, true, NULL, NULL, RB, "demo-b", 2, "stable");
    /* rollback aborts a canary */
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\",\"canary_percent\":50}"));
    infer_expect(d, x, 1, false, false, "\"variant\":\"canary\"", NULL, RC, "demo-c", 3, "canary");
    cJSON_Delete(rollback_ok(d, "{}", "demo-b", 2, "demo-c", 3));
    st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-b", 2, "GET /status after the canary abort");
    ck_assert_msg(cJSON_IsNull(itu_jget(st, "canary")), "GET /status after abort: canary");
    cJSON_Delete(st);
    /* no canary */
    post_err(d, "/canary", "{\"percent\":20}", 409, "no_canary");
    post_err(d, "/promote", "{}", 409, "no_canary");
    char *s = itu_json_rows(x, 1, M->in, false, "\"variant\":\"canary\"");
    struct itu_resp r;
    itu_req(d, "POST", "/infer", s, strlen(s), "application/json", NULL, &r);
    expect_error(&r, "POST /infer pinned to the canary without a canary", 409, "no_canary");
    itu_resp_free(&r);
    free(s);
    /* and the next rollback walks the history */
    cJSON_Delete(rollback_ok(d, "{}", "demo-a", 1, "demo-b", 2));
    free(x);
    stop_ok(&d);
}
END_TEST

START_TEST(test_nonfinite_canary)
{
    struct itu_daemon *d = itu_daemon_start(NULL, NULL);
    int rows = 3;
    double *x = itu_rows(21, rows, M->in);
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-overflow\",\"canary_percent\":10}"));
    struct itu_infer j, b;
    ck_assert_msg(itu_infer_do(d->client, x, rows, M->in, M->out, false, true,
                               "\"variant\":\"canary\"", NULL, &j),
                  "JSON canary: %s", j.why);
    int bad_rows = 0;
    for (int r = 0; r < rows; r++) {
        int bad = 0;
        for (int i = 0; i < M->out; i++)
            bad |= !isfinite(j.out[(size_t)r * M->out + i]);
        bad_rows += bad;
    }
    ck_assert_msg(bad_rows > 0, "demo-overflow canary answered only finite values");
    ck_assert_msg(strstr(j.r.body, "null") != NULL, "non-finite outputs not written as null");
    ck_assert_msg(j.nonfinite_hdr == bad_rows, "X-Lorad-Nonfinite %d, expected %d rows",
                  j.nonfinite_hdr, bad_rows);
    const char *pin_c[] = {"X-Lorad-Variant: canary", NULL};
    ck_assert_msg(itu_infer_do(d->client, x, rows, M->in, M->out, true, false, NULL, pin_c, &b),
                  "binary canary: %s", b.why);
    ck_assert_msg(b.nonfinite_hdr == bad_rows, "binary X-Lorad-Nonfinite %d, expected %d",
                  b.nonfinite_hdr, bad_rows);
    for (size_t i = 0; i < (size_t)rows * M->out; i++)
        ck_assert_msg(isfinite(b.out[i]) == isfinite(j.out[i]),
                      "value %zu: binary %g vs JSON %g disagree on finiteness", i, (double)b.out[i],
                      (double)j.out[i]);
    itu_infer_free(&j);
    itu_infer_free(&b);
    /* the stable answers have no header */
    struct itu_infer s;
    ck_assert_msg(itu_infer_do(d->client, x, rows, M->in, M->out, false, true,
                               "\"variant\":\"stable\"", NULL, &s),
                  "JSON stable: %s", s.why);
    char h[32];
    ck_assert_msg(!itu_header(&s.r, "X-Lorad-Nonfinite", h, sizeof(h)),
                  "stable answer has X-Lorad-Nonfinite: %s", h);
    itu_infer_free(&s);
    cJSON *st = itu_status(d);
    ck_assert_msg(itu_jnum(st, "requests.canary.nonfinite_rows", -1) >= 2 * bad_rows,
                  "GET /status requests.canary.nonfinite_rows %.0f, expected >= %d",
                  itu_jnum(st, "requests.canary.nonfinite_rows", -1), 2 * bad_rows);
    ck_assert_msg(itu_jnum(st, "requests.stable.nonfinite_rows", -1) == 0,
                  "GET /status requests.stable.nonfinite_rows is not 0");
    cJSON_Delete(st);
    cJSON_Delete(rollback_ok(d, "{}", "demo-a", 1, "demo-overflow", 2));
    free(x);
    stop_ok(&d);
}
END_TEST

/* ---- control_listen and auth ---- */

static void expect_status_on(struct itu_client *c, const char *method, const char *path,
                             const char *body, long status, const char *code, const char *plane)
{
    struct itu_resp r;
    char what[160];
    itu_client_do(c, method, path, body, body ? strlen(body) : 0, body ? "application/json" : NULL,
                  NULL, 0, &r);
    snprintf(what, sizeof(what), "%s %s on the %s listener", method, path, plane);
    if (code)
        expect_error(&r, what, status, code);
    else
        ck_assert_msg(r.status == status, "%s: expected %ld, got %s", what, status,
                      itu_describe(&r));
    itu_resp_free(&r);
}

START_TEST(test_control_listen)
{
    int lport = itu_free_port(), cport;
    do
        cport = itu_free_port();
    while (cport == lport);
    char over[256];
    snprintf(over, sizeof(over),
             "{\"listen\":\"127.0.0.1:%d\",\"control_listen\":\"127.0.0.1:%d\"}", lport, cport);
    struct itu_daemon *d = itu_daemon_start(NULL, over);
    struct itu_client *data = d->client, *ctl = itu_client_new(cport);
    double *x = itu_rows(22, 1, M->in);
    char *row = itu_json_rows(x, 1, M->in, false, NULL);
    /* the data plane: /infer only, plus health */
    expect_status_on(data, "POST", "/swap", "{\"adapter\":\"demo-b\"}", 404, "not_found", "data");
    expect_status_on(data, "POST", "/rollback", "{}", 404, "not_found", "data");
    expect_status_on(data, "POST", "/canary", "{\"percent\":5}", 404, "not_found", "data");
    expect_status_on(data, "POST", "/promote", "{}", 404, "not_found", "data");
    expect_status_on(data, "GET", "/status", NULL, 404, "not_found", "data");
    expect_status_on(data, "GET", "/adapters", NULL, 404, "not_found", "data");
    expect_status_on(data, "POST", "/infer", row, 200, NULL, "data");
    /* the control plane: everything but /infer */
    expect_status_on(ctl, "POST", "/infer", row, 404, "not_found", "control");
    expect_status_on(ctl, "GET", "/status", NULL, 200, NULL, "control");
    expect_status_on(ctl, "GET", "/adapters", NULL, 200, NULL, "control");
    expect_status_on(ctl, "POST", "/swap", "{\"adapter\":\"demo-b\"}", 200, NULL, "control");
    static const char *const both[] = {"/healthz", "/readyz", "/metrics"};
    for (int i = 0; i < 3; i++) {
        expect_status_on(data, "GET", both[i], NULL, 200, NULL, "data");
        expect_status_on(ctl, "GET", both[i], NULL, 200, NULL, "control");
    }
    infer_expect(d, x, 1, true, false, NULL, NULL, RB, "demo-b", 2, "stable");
    free(row);
    free(x);
    itu_client_free(&ctl);
    stop_ok(&d);
}
END_TEST

static void post_auth(struct itu_daemon *d, const char *path, const char *body, const char *auth,
                      long status, const char *code)
{
    struct itu_resp r;
    const char *hdrs[] = {auth, NULL};
    char what[256];
    itu_req(d, "POST", path, body, strlen(body), "application/json", auth ? hdrs : NULL, &r);
    snprintf(what, sizeof(what), "POST %s %s with '%s'", path, body, auth ? auth : "no token");
    if (code)
        expect_error(&r, what, status, code);
    else
        ck_assert_msg(r.status == status, "%s: expected %ld, got %s", what, status,
                      itu_describe(&r));
    itu_resp_free(&r);
}

START_TEST(test_auth_token)
{
    char *dir = itu_tmpdir();
    char *tok = tu_path(dir, "token");
    tu_write_text(tok, "s3cret-Token_42\n");
    ck_assert(chmod(tok, 0600) == 0);
    char over[512];
    snprintf(over, sizeof(over), "{\"auth_token_file\":\"%s\"}", tok);
    struct itu_daemon *d = itu_daemon_start(dir, over);
    cJSON *st = itu_status(d); /* GET needs no token */
    double failed = itu_jnum(st, "swaps.failed", -1);
    cJSON_Delete(st);
    const char *body = "{\"adapter\":\"demo-b\"}";
    post_auth(d, "/swap", body, NULL, 401, "unauthorized");
    post_auth(d, "/swap", body, "Authorization: Bearer wrong", 401, "unauthorized");
    post_auth(d, "/swap", body, "Authorization: Bearer s3cret-Token_4", 401, "unauthorized");
    post_auth(d, "/swap", body, "Authorization: Bearer s3cret-Token_42x", 401, "unauthorized");
    post_auth(d, "/swap", body, "Authorization: Basic czNjcmV0LVRva2VuXzQy", 401, "unauthorized");
    post_auth(d, "/rollback", "{}", NULL, 401, "unauthorized");
    post_auth(d, "/canary", "{\"percent\":5}", NULL, 401, "unauthorized");
    post_auth(d, "/promote", "{}", NULL, 401, "unauthorized");
    st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-a", 1, "GET /status after refused 401 swaps");
    ck_assert_msg(itu_jnum(st, "swaps.failed", -1) == failed,
                  "swaps.failed counted 401 answers (%.0f -> %.0f)", failed,
                  itu_jnum(st, "swaps.failed", -1));
    cJSON_Delete(st);
    /* /infer needs no token */
    double *x = itu_rows(23, 1, M->in);
    infer_expect(d, x, 1, false, false, NULL, NULL, RA, "demo-a", 1, "stable");
    post_auth(d, "/swap", body, "Authorization: Bearer s3cret-Token_42", 200, NULL);
    infer_expect(d, x, 1, false, false, NULL, NULL, RB, "demo-b", 2, "stable");
    post_auth(d, "/rollback", "{}", "Authorization: Bearer s3cret-Token_42", 200, NULL);
    infer_expect(d, x, 1, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
    free(x);
    free(tok);
    free(dir);
    stop_ok(&d);
}
END_TEST

START_TEST(test_unix_socket)
{
    char *dir = itu_tmpdir();
    char over[512];
    snprintf(over, sizeof(over), "{\"listen\":\"unix:%s/lorad.sock\"}", dir);
    struct itu_daemon *d = itu_daemon_start(dir, over);
    double *x = itu_rows(24, 2, M->in);
    infer_expect(d, x, 2, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
    cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-b\"}"));
    infer_expect(d, x, 2, true, false, NULL, NULL, RB, "demo-b", 2, "stable");
    cJSON *st = itu_status(d);
    expect_snapshot_name(st, "stable", "demo-b", 2, "GET /status over the unix socket");
    cJSON_Delete(st);
    free(x);
    free(dir);
    stop_ok(&d);
}
END_TEST

/* SPEC 7: whichever OpenBLAS kernel runs, the outputs match the
 * independent computation. */
START_TEST(test_blas_kernels)
{
    static const char *const cores[] = {"keep", "Prescott", "Haswell", "SkylakeX"};
    double *x = itu_rows(25, 7, M->in);
    for (size_t i = 0; i < sizeof(cores) / sizeof(cores[0]); i++) {
        if (!strcmp(cores[i], "SkylakeX") && !__builtin_cpu_supports("avx512f"))
            continue;
        if (!strcmp(cores[i], "Haswell") && !__builtin_cpu_supports("avx2"))
            continue;
        char over[128];
        snprintf(over, sizeof(over), "{\"blas_coretype\":\"%s\", \"workers\": 1}", cores[i]);
        struct itu_daemon *d = itu_daemon_start(NULL, over);
        infer_expect(d, x, 7, false, true, NULL, NULL, RA, "demo-a", 1, "stable");
        infer_expect(d, x, 7, true, false, NULL, NULL, RA, "demo-a", 1, "stable");
        cJSON_Delete(itu_post_ok(d, "/swap", "{\"adapter\":\"demo-c\"}"));
        infer_expect(d, x, 7, true, false, NULL, NULL, RC, "demo-c", 2, "stable");
        stop_ok(&d);
    }
    free(x);
}
END_TEST

int main(void)
{
    itu_init();
    M = itu_model_load(itu_model_dir());
    RA = itu_demo_adapter(M, "demo-a");
    RB = itu_demo_adapter(M, "demo-b");
    RC = itu_demo_adapter(M, "demo-c");
    RF16 = itu_demo_adapter(M, "demo-f16");
    RBF16 = itu_demo_adapter(M, "demo-bf16");

    Suite *s = suite_create("itest_api");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_infer_json);
    tcase_add_test(tc, test_infer_binary_roundtrip);
    tcase_add_test(tc, test_infer_bad_requests);
    tcase_add_test(tc, test_http_errors);
    tcase_add_test(tc, test_swap_and_infer);
    tcase_add_test(tc, test_swap_errors);
    tcase_add_test(tc, test_swap_checksum);
    tcase_add_test(tc, test_rollback);
    tcase_add_test(tc, test_control_bad_numbers);
    tcase_add_test(tc, test_status_fields);
    tcase_add_test(tc, test_canary);
    tcase_add_test(tc, test_nonfinite_canary);
    tcase_add_test(tc, test_control_listen);
    tcase_add_test(tc, test_auth_token);
    tcase_add_test(tc, test_unix_socket);
    tcase_add_test(tc, test_blas_kernels);
    suite_add_tcase(s, tc);
    int failed = itu_run_suite(s);
    itu_adapter_free(&RA);
    itu_adapter_free(&RB);
    itu_adapter_free(&RC);
    itu_adapter_free(&RF16);
    itu_adapter_free(&RBF16);
    itu_model_free(&M);
    itu_cleanup();
    return failed ? 1 : 0;
}
