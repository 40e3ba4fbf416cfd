/* lorad — tests/test_peftcfg.c: unit tests of lib/peftcfg.c, the
 * adapter_config.json parser (SPEC.md 2.2 and 3).
 *
 * "direct": peftcfg_parse() on config texts: PEFT's defaults for absent and
 * null fields, unknown fields ignored, every field's type and range error
 * with its message, the per-layer r / alpha lookup (first matching key in
 * file order, anchored as ^(.*\.)?(KEY)$), and the regular-expression
 * budget of peftcfg_pattern_refusal(). "staging": the same errors as
 * adapter_stage() reports them (tests/adfixture). */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/adapter.h"
#include "../lib/peftcfg.h"
#include "adfixture.h"
#include "testutil.h"

/* ---- peftcfg_parse ---- */

static struct peftcfg *parse_ok(const char *text)
{
    struct lorad_error err = {0, ""};
    struct peftcfg *c = NULL;
    int rc = peftcfg_parse(text, strlen(text), &c, &err);

    ck_assert_msg(rc == 0, "%s: %s", text, err.msg);
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Parses text and expects `code` with `sub` in the message. */
static void parse_err(const char *text, size_t len, int code, const char *sub)
{
    struct lorad_error err = {0, ""};
    struct peftcfg *c = (struct peftcfg *)1;
    int rc = peftcfg_parse(text, len, &c, &err);

    ck_assert_msg(rc == code, "%s: got %s (%s), want %s", text, lorad_err_name(rc), err.msg,
                  lorad_err_name(code));
    ck_assert_int_eq(err.code, code);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err.msg, sub), "%s: message \"%s\" lacks \"%s\"", text, err.msg, sub);
}

START_TEST(test_defaults)
{
    static const char *const texts[] = {
        "{\"peft_type\": \"LORA\"}",
        "{\"peft_type\": \"LORA\", \"r\": null, \"lora_alpha\": null, \"use_rslora\": null,"
        " \"use_dora\": null, \"lora_bias\": null, \"lora_dropout\": null,"
        " \"rank_pattern\": null, \"alpha_pattern\": null}",
        "{\"peft_type\": \"LORA\", \"rank_pattern\": {}, \"alpha_pattern\": {},"
        " \"task_type\": \"CAUSAL_LM\", \"target_modules\": [\"q\"], \"x\": {\"y\": [1]}}",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct peftcfg *c = parse_ok(texts[i]);
        ck_assert_int_eq(c->r, 8);
        ck_assert(c->lora_alpha == 8.0);
        ck_assert(!c->use_rslora && !c->use_dora && !c->lora_bias);
        ck_assert(c->lora_dropout == 0.0);
        ck_assert_uint_eq(c->n_rank, 0);
        ck_assert_uint_eq(c->n_alpha, 0);
        peftcfg_free(&c);
        ck_assert_ptr_null(c);
    }
    peftcfg_free(NULL);
}
END_TEST

START_TEST(test_fields)
{
    const char *text = "{\"peft_type\": \"LORA\", \"r\": 16, \"lora_alpha\": 32.5,"
                       " \"use_rslora\": true, \"use_dora\": true, \"lora_dropout\": 0.05,"
                       " \"rank_pattern\": {\"b\": 2, \"a\": 65536},"
                       " \"alpha_pattern\": {\"x\": -1.5}}";
    struct peftcfg *c = parse_ok(text);

    ck_assert_int_eq(c->r, 16);
    ck_assert(c->lora_alpha == 32.5);
    ck_assert(c->use_rslora && c->use_dora && !c->lora_bias);
    ck_assert(c->lora_dropout == 0.05);
    ck_assert_uint_eq(c->n_rank, 2); /* file order */
    ck_assert_str_eq(c->rank_pattern[0].key, "b");
    ck_assert(c->rank_pattern[0].value == 2);
    ck_assert_str_eq(c->rank_pattern[1].key, "a");
    ck_assert(c->rank_pattern[1].value == 65536);
    ck_assert_uint_eq(c->n_alpha, 1);
    ck_assert_str_eq(c->alpha_pattern[0].key, "x");
    ck_assert(c->alpha_pattern[0].value == -1.5);
    peftcfg_free(&c);
    /* lora_bias without DoRA; the text need not be NUL-terminated */
    c = parse_ok("{\"peft_type\": \"LORA\", \"lora_bias\": true}");
    ck_assert(c->lora_bias && !c->use_dora);
    peftcfg_free(&c);
    {
        const char t[] = "{\"peft_type\": \"LORA\", \"r\": 4}GARBAGE";
        struct lorad_error err = {0, ""};
        ck_assert_int_eq(peftcfg_parse(t, strlen(t) - 7, &c, &err), 0);
        ck_assert_int_eq(c->r, 4);
        peftcfg_free(&c);
    }
}
END_TEST

START_TEST(test_errors)
{
    static const struct {
        const char *text;
        int code;
        const char *sub;
    } cases[] = {
        {"", LORAD_E_INVALID_ADAPTER, "adapter_config.json is not a valid JSON object"},
        {"{\"peft_type\": ", LORAD_E_INVALID_ADAPTER, "not a valid JSON object"},
        {"[\"LORA\"]", LORAD_E_INVALID_ADAPTER, "not a valid JSON object"},
        {"{}", LORAD_E_INVALID_ADAPTER, "adapter_config.json: peft_type is missing"},
        {"{\"peft_type\": 1}", LORAD_E_INVALID_ADAPTER, "peft_type must be a string"},
        {"{\"peft_type\": \"IA3\"}", LORAD_E_UNSUPPORTED_PEFT_TYPE,
         "peft_type \"IA3\" is not supported (only LORA)"},
        {"{\"peft_type\": \"lora\"}", LORAD_E_UNSUPPORTED_PEFT_TYPE, "only LORA"},
        {"{\"peft_type\": \"LO\\u0000RA\"}", LORAD_E_INVALID_ADAPTER, "NUL character"},
        {"{\"peft_type\": \"LORA\", \"r\": 0}", LORAD_E_INVALID_ADAPTER,
         "adapter_config.json: r must be a positive integer"},
        {"{\"peft_type\": \"LORA\", \"r\": 2.5}", LORAD_E_INVALID_ADAPTER, "r must be"},
        {"{\"peft_type\": \"LORA\", \"r\": 65537}", LORAD_E_INVALID_ADAPTER, "r must be"},
        {"{\"peft_type\": \"LORA\", \"r\": \"8\"}", LORAD_E_INVALID_ADAPTER,
         "r must be a finite number"},
        {"{\"peft_type\": \"LORA\", \"lora_alpha\": true}", LORAD_E_INVALID_ADAPTER,
         "lora_alpha must be a finite number"},
        {"{\"peft_type\": \"LORA\", \"lora_dropout\": \"0.1\"}", LORAD_E_INVALID_ADAPTER,
         "lora_dropout must be a finite number"},
        {"{\"peft_type\": \"LORA\", \"use_rslora\": 1}", LORAD_E_INVALID_ADAPTER,
         "use_rslora must be true or false"},
        {"{\"peft_type\": \"LORA\", \"use_dora\": \"yes\"}", LORAD_E_INVALID_ADAPTER,
         "use_dora must be true or false"},
        {"{\"peft_type\": \"LORA\", \"lora_bias\": 0}", LORAD_E_INVALID_ADAPTER,
         "lora_bias must be true or false"},
        {"{\"peft_type\": \"LORA\", \"lora_bias\": true, \"use_dora\": true}",
         LORAD_E_INVALID_ADAPTER, "PEFT does not support lora_bias with DoRA"},
        {"{\"peft_type\": \"LORA\", \"rank_pattern\": [2]}", LORAD_E_INVALID_ADAPTER,
         "rank_pattern must be an object"},
        {"{\"peft_type\": \"LORA\", \"rank_pattern\": {\"q\": 0}}", LORAD_E_INVALID_ADAPTER,
         "rank_pattern[\"q\"] must be a positive integer"},
        {"{\"peft_type\": \"LORA\", \"rank_pattern\": {\"q\": 65537}}", LORAD_E_INVALID_ADAPTER,
         "must be a positive integer"},
        {"{\"peft_type\": \"LORA\", \"alpha_pattern\": {\"q\": \"2\"}}", LORAD_E_INVALID_ADAPTER,
         "alpha_pattern[\"q\"] must be a finite number"},
        {"{\"peft_type\": \"LORA\", \"alpha_pattern\": {\"q(\": 2}}", LORAD_E_INVALID_ADAPTER,
         "alpha_pattern key \"q(\" is not a valid regular expression"},
        {"{\"peft_type\": \"LORA\", \"rank_pattern\": {\"(a)\\\\1\": 2}}", LORAD_E_INVALID_ADAPTER,
         "rank_pattern key \"(a)\\1\" holds a back-reference"},
        /* a good key before a bad one: the entries so far are freed too */
        {"{\"peft_type\": \"LORA\", \"rank_pattern\": {\"ok\": 2, \"[\": 2}}",
         LORAD_E_INVALID_ADAPTER, "not a valid regular expression"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        parse_err(cases[i].text, strlen(cases[i].text), cases[i].code, cases[i].sub);
    /* a raw NUL byte, and bad arguments */
    parse_err("{\"peft_type\": \"LORA\"\0}", 22, LORAD_E_INVALID_ADAPTER, "NUL character");
    ck_assert_int_eq(peftcfg_parse("{}", 2, NULL, NULL), LORAD_E_INTERNAL);
}
END_TEST

START_TEST(test_layer_lookup)
{
    struct peftcfg *c = parse_ok("{\"peft_type\": \"LORA\", \"r\": 6, \"lora_alpha\": 12,"
                                 " \"rank_pattern\": {\"0.proj\": 2, \"proj\": 3, \"xhead\": 7},"
                                 " \"alpha_pattern\": {\"h.ad\": 5, \"head\": 9}}");
    static const struct {
        const char *layer;
        int rank;
        const char *from;
        double alpha;
    } want[] = {
        {"layers.0.proj", 2, "0.proj", 12}, /* first matching key in file order */
        {"layers.1.proj", 3, "proj", 12},
        {"proj", 3, "proj", 12}, /* the (.*\.)? prefix is optional */
        {"head", 6, NULL, 5},    /* "h.ad" is a regex, matched first */
        {"a.head", 6, NULL, 5},
        {"xproj", 6, NULL, 12},          /* a key matches whole components */
        {"layers.0.projx", 6, NULL, 12}, /* anchored at the end */
    };

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int rank = -1;
        double alpha = -1;
        const char *from = "unset";

        peftcfg_layer(c, want[i].layer, &rank, &alpha, &from);
        ck_assert_msg(rank == want[i].rank && alpha == want[i].alpha,
                      "%s: r %d alpha %g, want %d %g", want[i].layer, rank, alpha, want[i].rank,
                      want[i].alpha);
        if (want[i].from)
            ck_assert_str_eq(from, want[i].from);
        else
            ck_assert_ptr_null(from);
    }
    peftcfg_free(&c);
}
END_TEST

START_TEST(test_pattern_refusal)
{
    static const char *const ok[] = {
        "layers\\.3\\.q_proj",
        "model.*attn",
        "(\\w+\\.)*proj",
        "[]{x]?(pro){1,3}j|q{2,}",
        "(x){0}[[:alpha:]]{1,40}",
        "a{1000}",
        "{",
        "a{,}",
        "q_proj|v_proj",
    };
    static const struct {
        const char *key, *why;
    } bad[] = {
        {"(a)\\1", "back-reference"},
        {"proj\\", "lone backslash"},
        {"proj)|(head", "unmatched ')'"},
        {"a{1100}", "regular-expression nodes"},
        {"(a{999}){999}", "regular-expression nodes"},
        {"(((x{20}){20}){20})", "regular-expression nodes"},
        {"((a*)*){25}", "repeated operand"},
        {"j**{20}", "repeated operand"},
    };
    char deep[80];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(peftcfg_pattern_refusal(ok[i]) == NULL, "%s refused: %s", ok[i],
                      peftcfg_pattern_refusal(ok[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = peftcfg_pattern_refusal(bad[i].key);
        ck_assert_msg(why && strstr(why, bad[i].why), "%s: %s, want \"%s\"", bad[i].key,
                      why ? why : "(accepted)", bad[i].why);
    }
    /* 64 nested groups compile, 65 do not */
    memset(deep, '(', 64);
    memcpy(deep + 64, "a", 2);
    ck_assert_ptr_null(peftcfg_pattern_refusal(deep));
    memset(deep, '(', 65);
    memcpy(deep + 65, "a", 2);
    ck_assert_ptr_nonnull(strstr(peftcfg_pattern_refusal(deep), "nests groups"));
}
END_TEST

/* ---- as staging reports it ---- */

START_TEST(test_invalid_config_fields)
{
    static const struct {
        const char *extra, *field;
    } cases[] = {
        {"\"use_dora\": \"yes\"", "use_dora"},
        {"\"use_rslora\": 1", "use_rslora"},
        {"\"lora_dropout\": \"0.1\"", "lora_dropout"},
        {"\"rank_pattern\": []", "rank_pattern"},
        {"\"rank_pattern\": {\"proj\": 0}", "rank_pattern"},
        {"\"rank_pattern\": {\"proj\": 2.5}", "rank_pattern"},
        {"\"alpha_pattern\": {\"proj\": \"x\"}", "alpha_pattern"},
        {"\"rank_pattern\": {\"pro(j\": 2}", "pro(j"},
        {"\"alpha_pattern\": {\"[a-\": 2}", "[a-"},
        {"\"lora_bias\": true, \"use_dora\": true", "lora_bias"},
        {"\"lora_bias\": 3", "lora_bias"},
        /* refused before regcomp: glibc would build a million nodes, or
         * recurse on a back-reference */
        {"\"rank_pattern\": {\"(a{999}){999}\": 2}", "regular-expression nodes"},
        {"\"alpha_pattern\": {\"(((x{20}){20}){20})\": 2}", "regular-expression nodes"},
        {"\"rank_pattern\": {\"(pro|j+){4000}\": 2}", "(pro|j+){4000}"},
        {"\"alpha_pattern\": {\"(a)\\\\1\": 2}", "back-reference"},
        {"\"rank_pattern\": {\"((a*)*){25}\": 2}", "repeated operand"},
        {"\"alpha_pattern\": {\"j**{20}\": 2}", "repeated operand"},
        {"\"rank_pattern\": {\"(0{99})*j**{20}\": 2}", "repeated operand"},
        /* a key must not close or escape the group it is wrapped in */
        {"\"rank_pattern\": {\"proj)|(head\": 2}", "unmatched ')'"},
        {"\"rank_pattern\": {\"9}0.0)****{20}\": 2}", "unmatched ')'"},
        {"\"alpha_pattern\": {\"proj\\\\\": 2}", "lone backslash"},
    };
    char name[32], deep[160];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "f%zu", i);
        af_simple(name, cases[i].extra, 2, 4, 1);
        af_expect_err(name, NULL, NULL, LORAD_E_INVALID_ADAPTER, cases[i].field, NULL);
    }
    /* groups nested deeper than lorad compiles */
    memset(deep, 0, sizeof(deep));
    strcpy(deep, "\"rank_pattern\": {\"");
    for (size_t i = strlen(deep), k = 0; k < 65; k++)
        deep[i + k] = '(';
    strcat(deep, "proj\": 2}");
    af_simple("deep", deep, 2, 4, 1);
    af_expect_err("deep", NULL, NULL, LORAD_E_INVALID_ADAPTER, "nests groups", NULL);
    /* keys within the budget still compile and match: intervals, bracket
     * expressions (with ']' and '{' inside) and alternation */
    af_ranked("okre",
              "\"rank_pattern\": {\"[]{x]?(pro){1,3}j|q{2,}\": 2, \"(x){0}[[:alpha:]]{1,40}\": 3, "
              "\"(\\\\w+\\\\.)*proj{1}\": 2}",
              8, 4, (const int[AF_NL]){2, 2, 3});
    struct profile *okp = af_profile_of("okre");
    ck_assert_int_eq(okp->max_rank, 3);
    profile_free(&okp);
    /* r of the wrong type */
    struct af_adapter a;
    af_init(&a, "rstr", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"LORA\", \"r\": \"8\", \"lora_alpha\": 4}");
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("rstr", NULL, NULL, LORAD_E_INVALID_ADAPTER, "r must", NULL);
    /* the DoRA message */
    af_simple("dorabias", "\"lora_bias\": true, \"use_dora\": true", 2, 4, 1);
    af_expect_err("dorabias", NULL, NULL, LORAD_E_INVALID_ADAPTER, "PEFT does not support", NULL);
}
END_TEST

START_TEST(test_peft_type)
{
    struct af_adapter a;
    af_init(&a, "ia3", NULL, 2, 4);
    snprintf(a.cfg, sizeof(a.cfg), "{\"peft_type\": \"IA3\", \"target_modules\": [\"x\"]}");
    af_ab(&a, 0, 2, "F32", NULL, NULL);
    free(af_write(&a));
    af_free(&a);
    af_expect_err("ia3", NULL, NULL, LORAD_E_UNSUPPORTED_PEFT_TYPE, "IA3", NULL);
}
END_TEST

static Suite *peftcfg_suite(void)
{
    Suite *s = suite_create("peftcfg");
    TCase *direct = tcase_create("direct"), *staging = tcase_create("staging");

    tcase_add_test(direct, test_defaults);
    tcase_add_test(direct, test_fields);
    tcase_add_test(direct, test_errors);
    tcase_add_test(direct, test_layer_lookup);
    tcase_add_test(direct, test_pattern_refusal);
    suite_add_tcase(s, direct);
    tcase_set_timeout(staging, 60);
    tcase_add_checked_fixture(staging, af_setup, af_teardown);
    tcase_add_test(staging, test_invalid_config_fields);
    tcase_add_test(staging, test_peft_type);
    suite_add_tcase(s, staging);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(peftcfg_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
