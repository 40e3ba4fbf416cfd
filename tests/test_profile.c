/* lorad — tests/test_profile.c: unit tests of lib/profile.c, the
 * compatibility profile (SPEC.md 4).
 *
 * "direct": on an in-memory model (model_config_parse, no tensors): which
 * halves are known after each constructor, the compared-field check
 * against parsed adapter configs (each field's message, numbers by value,
 * alpha_pattern as a map), the completion from a staged adapter's limits
 * and fields, copies, and every error of profile_from_config and
 * profile_from_json. "staging": incompatible adapters as adapter_stage()
 * reports them, and the JSON round trip (tests/adfixture). */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/adapter.h"
#include "../lib/model.h"
#include "../lib/peftcfg.h"
#include "../lib/profile.h"
#include "adfixture.h"
#include "testutil.h"

/* ---- direct ---- */

static struct model *M;

static void model_setup(void)
{
    static const char json[] =
        "{\"layers\": [{\"name\": \"enc.0.proj\", \"in_features\": 4, \"out_features\": 4},"
        " {\"name\": \"enc.1.proj\", \"in_features\": 4, \"out_features\": 3},"
        " {\"name\": \"head\", \"in_features\": 3, \"out_features\": 2}]}";
    struct lorad_error err = {0, ""};

    ck_assert_msg(model_config_parse(json, sizeof(json) - 1, NULL, &M, &err) == 0, "%s", err.msg);
}

static void model_teardown(void)
{
    model_free(&M);
}

static struct profile *from_config(int max_rank, const char *const *t, size_t n)
{
    struct lorad_error err = {0, ""};
    struct profile *p = NULL;

    ck_assert_msg(profile_from_config(M, max_rank, t, n, &p, &err) == 0, "%s", err.msg);
    return p;
}

static struct peftcfg *cfg(const char *fields)
{
    char text[512];
    struct lorad_error err = {0, ""};
    struct peftcfg *c = NULL;

    snprintf(text, sizeof(text), "{\"peft_type\": \"LORA\"%s%s}", *fields ? ", " : "", fields);
    ck_assert_msg(peftcfg_parse(text, strlen(text), &c, &err) == 0, "%s: %s", text, err.msg);
    return c;
}

START_TEST(test_halves)
{
    const char *t[] = {"head"};
    struct profile *p = from_config(0, NULL, 0);

    ck_assert(profile_partial(p) && !profile_has_max_rank(p) && !profile_has_targets(p));
    ck_assert(!p->has_limits && !p->has_fields && p->nlayers == 3 && p->targets);
    profile_free(&p);
    ck_assert_ptr_null(p);
    p = from_config(4, NULL, 0);
    ck_assert(profile_has_max_rank(p) && !profile_has_targets(p) && p->max_rank == 4);
    ck_assert(p->max_rank_from_config && !p->has_limits && profile_partial(p));
    profile_free(&p);
    p = from_config(0, t, 1);
    ck_assert(!profile_has_max_rank(p) && profile_has_targets(p));
    ck_assert(!p->targets[0] && !p->targets[1] && p->targets[2]);
    profile_free(&p);
    p = from_config(8, t, 1);
    ck_assert(p->has_limits && profile_has_max_rank(p) && profile_has_targets(p));
    ck_assert(profile_partial(p)); /* the compared fields are still unknown */
    profile_free(&p);
    profile_free(&p);
    profile_free(NULL);
    ck_assert_ptr_null(profile_dup(NULL));
}
END_TEST

START_TEST(test_config_errors)
{
    const char *nolayer[] = {"enc.2.proj"}, *nul[] = {NULL}, *suffix[] = {"proj"};
    const char *partial[] = {"c.0.proj"}; /* a suffix must follow a '.' */
    struct lorad_error err = {0, ""};
    struct profile *p = (struct profile *)1;

    ck_assert_int_eq(profile_from_config(NULL, 0, NULL, 0, &p, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(profile_from_config(M, -1, NULL, 0, &p, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(profile_from_config(M, 0, NULL, 1, &p, &err), LORAD_E_INTERNAL);
    ck_assert_int_eq(profile_from_config(M, 0, nolayer, 1, &p, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(p);
    ck_assert_str_eq(err.msg, "target_modules: \"enc.2.proj\" is not a layer of the model");
    ck_assert_int_eq(profile_from_config(M, 0, nul, 1, &p, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "(null)"));
    ck_assert_int_eq(profile_from_config(M, 0, partial, 1, &p, &err), LORAD_E_INVALID_CONFIG);
    p = from_config(0, suffix, 1);
    ck_assert(p->targets[0] && p->targets[1] && !p->targets[2]);
    profile_free(&p);
}
END_TEST

START_TEST(test_check_fields)
{
    static const struct {
        const char *fields, *sub[3];
    } bad[] = {
        {"\"use_rslora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}",
         {"use_rslora is true in this adapter but false in the profile"}},
        {"\"use_dora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}",
         {"use_dora is true in this adapter but false in the profile"}},
        {"\"lora_dropout\": 0.2, \"alpha_pattern\": {\"head\": 3}",
         {"lora_dropout is 0.2 in this adapter but 0.1 in the profile"}},
        {"\"lora_dropout\": 0.1",
         {"alpha_pattern is {} in this adapter but {\"head\": 3} in the profile"}},
        {"\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3, \"x\": 1}", {"\"x\": 1"}},
        {"\"lora_dropout\": 0.1, \"alpha_pattern\": {\"Head\": 3}", {"\"Head\": 3"}},
    };
    struct peftcfg *first = cfg("\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}");
    struct peftcfg *same =
        cfg("\"lora_dropout\": 1e-1, \"alpha_pattern\": {\"head\": 3.0}, \"use_dora\": null");
    struct profile *p = from_config(0, NULL, 0);
    struct lorad_error err = {0, ""};

    /* a profile that does not know the fields accepts anything */
    ck_assert_int_eq(profile_check_fields(p, first, &err), 0);
    ck_assert_int_eq(profile_complete_fields(p, first, &err), 0);
    ck_assert(p->has_fields && !p->use_rslora && !p->use_dora && p->lora_dropout == 0.1);
    ck_assert_uint_eq(p->n_alpha_pattern, 1);
    ck_assert_str_eq(p->alpha_pattern[0].key, "head");
    ck_assert_int_eq(profile_check_fields(p, first, &err), 0);
    ck_assert_int_eq(profile_check_fields(p, same, &err), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct peftcfg *c = cfg(bad[i].fields);
        memset(&err, 0, sizeof(err));
        ck_assert_int_eq(profile_check_fields(p, c, &err), LORAD_E_INCOMPATIBLE_CONFIG);
        ck_assert_int_eq(err.code, LORAD_E_INCOMPATIBLE_CONFIG);
        for (int k = 0; k < 3 && bad[i].sub[k]; k++)
            ck_assert_msg(strstr(err.msg, bad[i].sub[k]), "case %zu: \"%s\" lacks \"%s\"", i,
                          err.msg, bad[i].sub[k]);
        peftcfg_free(&c);
    }
    /* completing again changes nothing: the first adapter's fields stay */
    ck_assert_int_eq(profile_complete_fields(p, same, &err), 0);
    ck_assert(p->lora_dropout == 0.1);
    profile_free(&p);
    peftcfg_free(&first);
    peftcfg_free(&same);
}
END_TEST

START_TEST(test_complete_limits)
{
    const bool lora[3] = {true, false, true};
    const char *t[] = {"enc.1.proj"};
    struct profile *p = from_config(0, NULL, 0), *d;

    profile_complete_limits(p, 5, lora);
    ck_assert(p->has_limits && p->max_rank == 5 && !p->max_rank_from_config);
    ck_assert(p->targets[0] && !p->targets[1] && p->targets[2]);
    /* the copy is deep */
    d = profile_dup(p);
    ck_assert_ptr_nonnull(d);
    d->targets[1] = true;
    ck_assert(!p->targets[1]);
    profile_free(&d);
    profile_free(&p);
    /* a limit the config gave is kept */
    p = from_config(16, NULL, 0);
    profile_complete_limits(p, 5, lora);
    ck_assert(p->has_limits && p->max_rank == 16 && p->targets[0] && p->targets[2]);
    profile_free(&p);
    p = from_config(0, t, 1);
    profile_complete_limits(p, 5, lora);
    ck_assert(p->has_limits && p->max_rank == 5);
    ck_assert(!p->targets[0] && p->targets[1] && !p->targets[2]);
    profile_free(&p);
}
END_TEST

/* profile_from_json refuses `text` with `sub` in the message. */
static void json_err(const char *text, const char *sub)
{
    struct lorad_error err = {0, ""};
    struct profile *p = (struct profile *)1;
    cJSON *j = cJSON_Parse(text);

    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(profile_from_json(j, M, &p, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err.msg, sub), "%s: \"%s\" lacks \"%s\"", text, err.msg, sub);
    cJSON_Delete(j);
}

START_TEST(test_json_errors)
{
    struct lorad_error err = {0, ""};
    struct profile *p = NULL;
    cJSON *j;

    json_err("[]", "profile: wrong type or value");
    json_err("{\"max_rank\": 0}", "max_rank: wrong type or value");
    json_err("{\"max_rank\": 65537}", "max_rank");
    json_err("{\"max_rank\": 2.5}", "max_rank");
    json_err("{\"target_modules\": \"head\"}", "target_modules: wrong type or value");
    json_err("{\"target_modules\": [1]}", "\"(not a string)\" is not a layer");
    json_err("{\"target_modules\": [\"proj\"]}", "\"proj\" is not a layer"); /* names only */
    json_err("{\"use_rslora\": true}", "use_rslora, use_dora, lora_dropout, alpha_pattern");
    json_err("{\"use_rslora\": true, \"use_dora\": false, \"lora_dropout\": 0, "
             "\"alpha_pattern\": {\"h\": \"1\"}}",
             "alpha_pattern: wrong type");
    /* NULL and a JSON null are the fully partial profile */
    ck_assert_int_eq(profile_from_json(NULL, M, &p, &err), 0);
    ck_assert(profile_partial(p) && !profile_has_max_rank(p) && !p->has_fields);
    profile_free(&p);
    j = cJSON_CreateNull();
    ck_assert_int_eq(profile_from_json(j, M, &p, &err), 0);
    profile_free(&p);
    cJSON_Delete(j);
    ck_assert_int_eq(profile_from_json(NULL, NULL, &p, &err), LORAD_E_INTERNAL);
    j = profile_to_json(NULL, M);
    ck_assert(cJSON_IsNull(j));
    cJSON_Delete(j);
}
END_TEST

/* ---- as staging reports it ---- */

START_TEST(test_incompatible_config)
{
    struct profile *p;

    af_simple("first", "\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}", 2, 4, 3);
    p = af_profile_of("first");
    ck_assert(p->has_fields);
    af_simple("rs", "\"use_rslora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}",
              2, 4, 1);
    af_expect_err("rs", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "use_rslora", "true", "false", NULL);
    af_simple("dora", "\"use_dora\": true, \"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3}",
              2, 4, 0);
    af_expect_err("dora", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "use_dora", "true", "false", NULL);
    af_simple("drop", "\"alpha_pattern\": {\"head\": 3}", 2, 4, 1);
    af_expect_err("drop", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "lora_dropout", "0.1", "0", NULL);
    af_simple("ap", "\"lora_dropout\": 0.1, \"alpha_pattern\": {\"head\": 3.5}", 2, 4, 1);
    af_expect_err("ap", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "alpha_pattern", "3.5", "3", NULL);
    af_simple("ap2", "\"lora_dropout\": 0.1", 2, 4, 1);
    af_expect_err("ap2", p, NULL, LORAD_E_INCOMPATIBLE_CONFIG, "alpha_pattern", "{}", NULL);
    /* numbers by value, maps by content, null/missing = default */
    af_simple("same",
              "\"lora_dropout\": 1e-1, \"alpha_pattern\": {\"head\": 3.0},"
              " \"use_rslora\": false, \"use_dora\": null",
              2, 4, 1);
    struct snapshot *s = af_expect_ok("same", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);

    af_simple("zero", NULL, 2, 4, 1);
    p = af_profile_of("zero");
    af_simple("zero2", "\"lora_dropout\": 0.0, \"alpha_pattern\": {}, \"rank_pattern\": null", 2, 4,
              1);
    s = af_expect_ok("zero2", p, NULL, NULL);
    snapshot_free(&s);
    profile_free(&p);
}
END_TEST

/* ---- profile ---- */

START_TEST(test_profile_json_roundtrip)
{
    const char *t[] = {"layers.0.proj", "head"};
    struct profile *p = af_config_profile(8, t, 2), *q = NULL, *d;
    struct lorad_error err = {0, ""};
    cJSON *j, *j2;
    char *s1, *s2;

    ck_assert(p->has_limits && !p->has_fields);
    p->has_fields = true;
    p->use_rslora = true;
    p->lora_dropout = 0.25;
    p->n_alpha_pattern = 1;
    p->alpha_pattern = calloc(1, sizeof(*p->alpha_pattern));
    p->alpha_pattern[0].key = strdup("h.ad");
    p->alpha_pattern[0].value = 3.5;
    j = profile_to_json(p, AF.m);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "max_rank")->valueint, 8);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "target_modules"), 1)->valuestring,
                     "head");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "use_rslora")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "use_dora")));
    ck_assert(cJSON_GetObjectItem(j, "lora_dropout")->valuedouble == 0.25);
    ck_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "alpha_pattern"), "h.ad")->valuedouble ==
              3.5);
    ck_assert_int_eq(profile_from_json(j, AF.m, &q, &err), 0);
    ck_assert(q->has_limits && q->has_fields && q->max_rank == 8 && q->use_rslora);
    ck_assert(q->targets[0] && !q->targets[1] && q->targets[2]);
    j2 = profile_to_json(q, AF.m);
    s1 = cJSON_PrintUnformatted(j);
    s2 = cJSON_PrintUnformatted(j2);
    ck_assert_str_eq(s1, s2);
    d = profile_dup(q);
    cJSON_Delete(j2);
    j2 = profile_to_json(d, AF.m);
    free(s2);
    s2 = cJSON_PrintUnformatted(j2);
    ck_assert_str_eq(s1, s2);
    free(s1);
    free(s2);
    cJSON_Delete(j);
    cJSON_Delete(j2);
    profile_free(&q);
    profile_free(&d);
    ck_assert_ptr_null(d);

    /* a fully partial profile is null and comes back partial */
    j = profile_to_json(AF.empty, AF.m);
    ck_assert(cJSON_IsNull(j));
    ck_assert_int_eq(profile_from_json(j, AF.m, &q, &err), 0);
    ck_assert(!q->has_limits && !q->has_fields && !q->has_max_rank && !q->has_targets);
    cJSON_Delete(j);
    profile_free(&q);
    /* limits only from config (max_rank without target_modules) */
    profile_free(&p);
    p = af_config_profile(4, NULL, 0);
    j = profile_to_json(p, AF.m);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "target_modules")));
    ck_assert_int_eq(profile_from_json(j, AF.m, &q, &err), 0);
    ck_assert(q->has_max_rank && !q->has_targets && q->max_rank == 4);
    cJSON_Delete(j);
    profile_free(&q);
    profile_free(&p);
    /* errors */
    j = cJSON_Parse("{\"max_rank\": 4, \"target_modules\": [\"nope\"]}");
    ck_assert_int_eq(profile_from_json(j, AF.m, &q, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_null(q);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"max_rank\": \"4\"}");
    ck_assert_int_eq(profile_from_json(j, AF.m, &q, &err), LORAD_E_INVALID_CONFIG);
    cJSON_Delete(j);
    const char *bad[] = {"layers.9.proj"};
    ck_assert_int_eq(profile_from_config(AF.m, 0, bad, 1, &q, &err), LORAD_E_INVALID_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "layers.9.proj"));
    /* PEFT-style suffix names in target_modules */
    const char *suf[] = {"proj"};
    p = af_config_profile(0, suf, 1);
    ck_assert(p->targets[0] && p->targets[1] && !p->targets[2] && p->has_targets);
    ck_assert(!p->has_limits);
    profile_free(&p);
}
END_TEST

static Suite *profile_suite(void)
{
    Suite *s = suite_create("profile");
    TCase *direct = tcase_create("direct"), *staging = tcase_create("staging");

    tcase_add_checked_fixture(direct, model_setup, model_teardown);
    tcase_add_test(direct, test_halves);
    tcase_add_test(direct, test_config_errors);
    tcase_add_test(direct, test_check_fields);
    tcase_add_test(direct, test_complete_limits);
    tcase_add_test(direct, test_json_errors);
    suite_add_tcase(s, direct);
    tcase_set_timeout(staging, 60);
    tcase_add_checked_fixture(staging, af_setup, af_teardown);
    tcase_add_test(staging, test_incompatible_config);
    tcase_add_test(staging, test_profile_json_roundtrip);
    suite_add_tcase(s, staging);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(profile_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
