/* lorad — tests/test_sync.c: unit tests of lorad-sync's pure parts
 * (client/reconcile.c, client/desired.c and etcd.c's base64 and key-range
 * helpers). Every rule of reconcile.h is one case; the expected plans are
 * written out by hand from SPEC.md 12, and base64 is checked against RFC
 * 4648's test vectors, not against the encoder.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../client/desired.h"
#include "../client/etcd.h"
#include "../client/reconcile.h"

#define SHA_A "2d31579e6ab2261652b99e076e1e09584b436fe482a61656d427d2c308cc7dfc"
#define SHA_B "de30c5ab8071e911beb81a4139bb89127923fdce93ccf7ebde110b3eebe7de1e"

/* ---- building states ---- */

static struct desired D(const char *slot, const char *adapter, double percent, const char *sha) {
    struct desired d;
    memset(&d, 0, sizeof(d));
    snprintf(d.slot, sizeof(d.slot), "%s", slot);
    snprintf(d.adapter, sizeof(d.adapter), "%s", adapter);
    if (percent >= 0) {
        d.has_percent = true;
        d.percent = percent;
    }
    if (sha)
        snprintf(d.sha256, sizeof(d.sha256), "%s", sha);
    return d;
}

/* An observed lorad with one slot: stable (adapter, sha) and a canary
 * (adapter or NULL, percent). */
static void
O(struct observed *o, bool has_slots, const char *slot, const char *stable, const char *sha,
  const char *canary, double percent)
{
    memset(o, 0, sizeof(*o));
    o->has_slots = has_slots;
    o->serving = true;
    o->n = 1;
    struct observed_slot *s = &o->slot[0];
    snprintf(s->name, sizeof(s->name), "%s", slot);
    s->stable.present = true;
    snprintf(s->stable.adapter, sizeof(s->stable.adapter), "%s", stable);
    snprintf(s->stable.sha256, sizeof(s->stable.sha256), "%s", sha ? sha : "");
    s->stable.version = 1;
    if (canary) {
        s->canary.present = true;
        snprintf(s->canary.adapter, sizeof(s->canary.adapter), "%s", canary);
        s->canary.version = 2;
        s->canary.percent = percent;
    }
}

static void plan_of(const char *slot, const struct desired *d, const struct observed *o,
                    struct reconcile_plan *p)
{
    reconcile_slot(slot, d, o, observed_find(o, slot), p);
}

#define ASSERT_OPS(p, ...)                                                                         \
    do {                                                                                           \
        enum reconcile_op want_[] = {__VA_ARGS__};                                                 \
        size_t n_ = sizeof(want_) / sizeof(want_[0]);                                              \
        ck_assert_int_eq((p)->status, RECONCILE_ACT);                                              \
        ck_assert_uint_eq((p)->n_actions, n_);                                                     \
        for (size_t i_ = 0; i_ < n_; i_++)                                                         \
            ck_assert_msg((p)->action[i_].op == want_[i_], "action %zu is %s", i_,                 \
                          reconcile_op_name((p)->action[i_].op));                                  \
    } while (0)

/* ---- reconcile ---- */

START_TEST(test_converged)
{
    struct observed o;
    struct reconcile_plan p;
    struct desired d = D("default", "demo-a", -1, NULL);
    O(&o, false, "default", "demo-a", SHA_A, NULL, 0);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    ck_assert_uint_eq(p.n_actions, 0);
    /* a percent does not make a canary of the stable itself */
    d = D("default", "demo-a", 25, NULL);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    /* the sha256, when given, must match too (any case) */
    d = D("default", "demo-a", -1, SHA_A);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    O(&o, false, "default", "demo-a",
      "2D31579E6AB2261652B99E076E1E09584B436FE482A61656D427D2C308CC7DFC", NULL, 0);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
}
END_TEST

START_TEST(test_swap_stable)
{
    struct observed o;
    struct reconcile_plan p;
    struct desired d = D("default", "demo-b", -1, SHA_B);
    O(&o, false, "default", "demo-a", SHA_A, NULL, 0);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP);
    ck_assert_str_eq(p.action[0].adapter, "demo-b");
    ck_assert_str_eq(p.action[0].sha256, SHA_B);
    /* same name, other bytes than desired: swap again (lorad checks) */
    d = D("default", "demo-a", -1, SHA_B);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP);
    /* the base model only (adapter "") is not A */
    O(&o, false, "default", "", NULL, NULL, 0);
    d = D("default", "demo-a", -1, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP);
    ck_assert_str_eq(p.action[0].sha256, "");
}
END_TEST

START_TEST(test_canary_rules)
{
    struct observed o;
    struct reconcile_plan p;
    /* no canary, desired with a percent: swap as the canary at P */
    struct desired d = D("default", "demo-b", 10, NULL);
    O(&o, false, "default", "demo-a", SHA_A, NULL, 0);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP_CANARY);
    ck_assert(p.action[0].percent == 10);
    /* canary A live at another percent: change the percent */
    d = D("default", "demo-b", 50, NULL);
    O(&o, false, "default", "demo-a", SHA_A, "demo-b", 10);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_PERCENT);
    ck_assert(p.action[0].percent == 50);
    /* at the same percent (to lorad's 0.01): nothing */
    d = D("default", "demo-b", 10.004, NULL);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    d = D("default", "demo-b", 10.01, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_PERCENT);
    /* desired without a percent while A is the canary: promote */
    d = D("default", "demo-b", -1, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_PROMOTE);
    /* a different canary live: abort it, then swap (stable or canary) */
    d = D("default", "demo-c", -1, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_ABORT, RECONCILE_SWAP);
    ck_assert_str_eq(p.action[1].adapter, "demo-c");
    d = D("default", "demo-c", 5, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_ABORT, RECONCILE_SWAP_CANARY);
    /* back to the stable (a rollback written as the previous value):
     * abort the canary only */
    d = D("default", "demo-a", -1, NULL);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_ABORT);
    d = D("default", "demo-a", 30, SHA_A);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_ABORT);
}
END_TEST

START_TEST(test_rollback_to_stable_aborts_only)
{
    /* Stable demo-a with canary demo-b, desired demo-a again: the canary is
     * aborted and nothing else (no new version of demo-a); observed again,
     * the slot has converged. */
    struct observed o;
    struct reconcile_plan p;
    struct desired d = D("default", "demo-a", -1, NULL);
    O(&o, false, "default", "demo-a", SHA_A, "demo-b", 50);
    plan_of("default", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_ABORT);
    O(&o, false, "default", "demo-a", SHA_A, NULL, 0);
    plan_of("default", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
}
END_TEST

START_TEST(test_deleted_and_slots)
{
    struct observed o;
    struct reconcile_plan p;
    /* default deleted: nothing */
    O(&o, true, "default", "demo-a", SHA_A, NULL, 0);
    plan_of("default", NULL, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    /* another slot deleted: unload */
    O(&o, true, "chat", "demo-a", SHA_A, "demo-b", 5);
    plan_of("chat", NULL, &o, &p);
    ASSERT_OPS(&p, RECONCILE_UNLOAD);
    /* neither desired nor served: nothing */
    plan_of("other", NULL, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
    /* a new slot on a lorad with slots: swap creates it */
    struct desired d = D("summ", "demo-c", -1, NULL);
    plan_of("summ", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP);
    d = D("summ", "demo-c", 20, NULL);
    plan_of("summ", &d, &o, &p);
    ASSERT_OPS(&p, RECONCILE_SWAP_CANARY);
    /* a lorad without slots: only default can be converged */
    O(&o, false, "default", "demo-a", SHA_A, NULL, 0);
    d = D("summ", "demo-c", -1, NULL);
    plan_of("summ", &d, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_UNSUPPORTED);
    ck_assert_uint_eq(p.n_actions, 0);
    plan_of("summ", NULL, &o, &p);
    ck_assert_int_eq(p.status, RECONCILE_CONVERGED);
}
END_TEST

/* ---- desired values ---- */

static int parse(const char *slot, const char *text, struct desired *d, struct lorad_error *e)
{
    memset(e, 0, sizeof(*e));
    return desired_parse(slot, text, strlen(text), d, e);
}

START_TEST(test_desired_parse)
{
    struct desired d;
    struct lorad_error e;
    ck_assert_int_eq(parse("default", "{\"adapter\": \"demo-b\"}", &d, &e), 0);
    ck_assert_str_eq(d.adapter, "demo-b");
    ck_assert(!d.has_percent && d.sha256[0] == '\0');
    ck_assert_int_eq(parse("chat",
                           "{\"adapter\":\"a.b_c-1\",\"canary_percent\":12.5,\"sha256\":"
                           "\"DE30C5AB8071E911BEB81A4139BB89127923FDCE93CCF7EBDE110B3EEBE7DE1E\"}",
                           &d, &e),
                     0);
    ck_assert_str_eq(d.slot, "chat");
    ck_assert(d.has_percent && d.percent == 12.5);
    ck_assert_str_eq(d.sha256, SHA_B);
    ck_assert_int_eq(parse("default",
                           "{\"adapter\":\"demo-b\",\"canary_percent\":null,\"sha256\":null}", &d,
                           &e),
                     0);
    ck_assert(!d.has_percent && !d.sha256[0]);
    ck_assert_int_eq(parse("default", "{\"adapter\":\"x\",\"canary_percent\":0}", &d, &e), 0);
    ck_assert(d.has_percent && d.percent == 0);
    ck_assert_int_eq(parse("default", "{\"adapter\":\"x\",\"canary_percent\":100}", &d, &e), 0);
}
END_TEST

START_TEST(test_desired_refused)
{
    static const char *const bad[] = {
        "",
        "[]",
        "\"demo-a\"",
        "{}",
        "{\"adapter\": null}",
        "{\"adapter\": 3}",
        "{\"adapter\": \"../etc\"}",
        "{\"adapter\": \".hidden\"}",
        "{\"adapter\": \"a b\"}",
        "{\"adapter\": \"x\", \"canary_percent\": 100.5}",
        "{\"adapter\": \"x\", \"canary_percent\": -1}",
        "{\"adapter\": \"x\", \"canary_percent\": \"5\"}",
        "{\"adapter\": \"x\", \"sha256\": \"abc\"}",
        "{\"adapter\": \"x\", \"sha256\": "
        "\"zz30c5ab8071e911beb81a4139bb89127923fdce93ccf7ebde110b3eebe7de1e\"}",
        "{\"adapter\": \"x\", \"canary_pecent\": 5}",
        "{\"adapter\": \"x\", \"adapter\": \"y\"}",
        "{\"adapter\": \"x\"} trailing",
    };
    struct desired d;
    struct lorad_error e;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse("default", bad[i], &d, &e) == LORAD_E_INVALID_REQUEST, "accepted: %s",
                      bad[i]);
        ck_assert_msg(strstr(e.msg, "desired value") != NULL, "message: %s", e.msg);
    }
    char longname[200];
    memset(longname, 'a', 129);
    longname[129] = '\0';
    ck_assert_int_eq(parse(longname, "{\"adapter\":\"x\"}", &d, &e), LORAD_E_INVALID_REQUEST);
    ck_assert_int_eq(parse("bad/slot", "{\"adapter\":\"x\"}", &d, &e), LORAD_E_INVALID_REQUEST);
}
END_TEST

/* ---- /status ---- */

START_TEST(test_observed_parse)
{
    struct observed o;
    struct lorad_error e = {0};
    cJSON *j = cJSON_Parse(
        "{\"state\":\"serving\",\"generation\":7,"
        "\"stable\":{\"adapter\":\"demo-a\",\"version\":1,\"sha256\":\"" SHA_A "\"},"
        "\"canary\":{\"adapter\":\"demo-b\",\"version\":3,\"sha256\":\"" SHA_B "\",\"percent\":20},"
        "\"requests\":{\"stable\":{\"requests\":10,\"errors\":1,\"nonfinite_rows\":2,"
        "\"p99_ms\":null},\"canary\":{\"requests\":4,\"errors\":0,\"nonfinite_rows\":3,"
        "\"p99_ms\":1.5}}}");
    ck_assert_int_eq(observed_parse(j, &o, &e), 0);
    ck_assert(!o.has_slots && o.serving && o.generation == 7 && o.n == 1);
    const struct observed_slot *s = observed_find(&o, "default");
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->stable.adapter, "demo-a");
    ck_assert(s->canary.present && s->canary.percent == 20 && s->canary.version == 3);
    ck_assert(s->req_stable.requests == 10 && s->req_stable.errors == 1 &&
              s->req_stable.nonfinite_rows == 2 && s->req_stable.p99_ms < 0);
    ck_assert(s->req_canary.nonfinite_rows == 3 && s->req_canary.p99_ms == 1.5);
    cJSON_Delete(j);

    /* with slots, the top level is ignored; a base-only stable is "" */
    j = cJSON_Parse("{\"state\":\"draining\",\"stable\":{\"adapter\":\"top\",\"version\":9},"
                    "\"slots\":{\"default\":{\"stable\":{\"adapter\":null,\"version\":0},"
                    "\"canary\":null},\"chat\":{\"stable\":{\"adapter\":\"demo-c\",\"version\":2},"
                    "\"canary\":null}}}");
    ck_assert_int_eq(observed_parse(j, &o, &e), 0);
    ck_assert(o.has_slots && !o.serving && o.n == 2);
    ck_assert_str_eq(observed_find(&o, "default")->stable.adapter, "");
    ck_assert(!observed_find(&o, "default")->canary.present);
    ck_assert_str_eq(observed_find(&o, "chat")->stable.adapter, "demo-c");
    ck_assert_ptr_null(observed_find(&o, "nope"));
    cJSON_Delete(j);

    j = cJSON_Parse("{\"slots\":{\"chat\":{\"canary\":null}}}");
    ck_assert_int_eq(observed_parse(j, &o, &e), LORAD_E_INVALID_REQUEST);
    cJSON_Delete(j);
    j = cJSON_Parse("[1]");
    ck_assert_int_eq(observed_parse(j, &o, &e), LORAD_E_INVALID_REQUEST);
    cJSON_Delete(j);
}
END_TEST

/* ---- etcd helpers ---- */

START_TEST(test_b64)
{
    /* RFC 4648 section 10 */
    static const char *const v[][2] = {{"", ""},
                                       {"f", "Zg=="},
                                       {"fo", "Zm8="},
                                       {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="},
                                       {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *e = etcd_b64_encode(v[i][0], strlen(v[i][0]));
        ck_assert_str_eq(e, v[i][1]);
        free(e);
        size_t n = 99;
        char *d = etcd_b64_decode(v[i][1], &n);
        ck_assert_ptr_nonnull(d);
        ck_assert_uint_eq(n, strlen(v[i][0]));
        ck_assert_str_eq(d, v[i][0]);
        free(d);
    }
    size_t n;
    char *d = etcd_b64_decode("Zm9vYmFy", &n); /* also without padding */
    ck_assert_str_eq(d, "foobar");
    free(d);
    d = etcd_b64_decode("Zm8", &n);
    ck_assert_str_eq(d, "fo");
    free(d);
    ck_assert_ptr_null(etcd_b64_decode("Zm9v!", &n));
    ck_assert_ptr_null(etcd_b64_decode("Z", &n));
    ck_assert_ptr_null(etcd_b64_decode("Zg===", &n));
}
END_TEST

START_TEST(test_prefix_end)
{
    size_t n;
    char *e = etcd_prefix_end("/lorad/desired/", &n);
    ck_assert_str_eq(e, "/lorad/desired0");
    ck_assert_uint_eq(n, 15);
    free(e);
    e = etcd_prefix_end("a\xff", &n);
    ck_assert_str_eq(e, "b");
    ck_assert_uint_eq(n, 1);
    free(e);
    e = etcd_prefix_end("\xff\xff", &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(e[0], 0);
    free(e);
}
END_TEST

START_TEST(test_etcd_conf_refused)
{
    struct lorad_error e = {0};
    static const char *const bad[] = {"",
                                      ",",
                                      "127.0.0.1:2379",
                                      "ftp://h:1",
                                      "http://",
                                      "http://h:1/path",
                                      "http://h:1,https://h 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct etcd_conf c = {.endpoints = bad[i]};
        struct etcd *x = etcd_new(&c, &e);
        ck_assert_msg(x == NULL, "accepted endpoints '%s'", bad[i]);
        ck_assert_int_eq(e.code, LORAD_E_INVALID_REQUEST);
    }
    struct etcd_conf c = {.endpoints = "http://127.0.0.1:1", .user = "root"};
    ck_assert_ptr_null(etcd_new(&c, &e));
    struct etcd_conf ok = {.endpoints = "http://127.0.0.1:1/,https://[::1]:2379"};
    struct etcd *x = etcd_new(&ok, &e);
    ck_assert_ptr_nonnull(x);
    ck_assert_str_eq(etcd_where(x), "http://127.0.0.1:1");
    etcd_free(&x);
    ck_assert_ptr_null(x);
}
END_TEST

START_TEST(test_etcd_unreachable)
{
    /* nothing listens on port 1: every call is LORAD_E_NOT_READY, and the
     * client fails over through both endpoints */
    struct lorad_error e = {0};
    struct etcd_conf c = {.endpoints = "http://127.0.0.1:1,http://127.0.0.1:2", .timeout_ms = 500};
    struct etcd *x = etcd_new(&c, &e);
    struct etcd_kvs kvs;
    ck_assert_int_eq(etcd_range_prefix(x, "/p/", &kvs, &e), LORAD_E_NOT_READY);
    ck_assert_msg(strstr(e.msg, "127.0.0.1:2") != NULL, "message: %s", e.msg);
    int64_t id;
    ck_assert_int_eq(etcd_lease_grant(x, 5, &id, NULL, &e), LORAD_E_NOT_READY);
    bool changed = true;
    ck_assert_int_eq(etcd_watch(x, "/p/", 1, 200, &changed, &e), LORAD_E_NOT_READY);
    ck_assert(!changed);
    etcd_free(&x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("sync");
    tcase_add_test(tc, test_converged);
    tcase_add_test(tc, test_swap_stable);
    tcase_add_test(tc, test_canary_rules);
    tcase_add_test(tc, test_rollback_to_stable_aborts_only);
    tcase_add_test(tc, test_deleted_and_slots);
    tcase_add_test(tc, test_desired_parse);
    tcase_add_test(tc, test_desired_refused);
    tcase_add_test(tc, test_observed_parse);
    tcase_add_test(tc, test_b64);
    tcase_add_test(tc, test_prefix_end);
    tcase_add_test(tc, test_etcd_conf_refused);
    tcase_add_test(tc, test_etcd_unreachable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
