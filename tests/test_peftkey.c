/* lorad — tests/test_peftkey.c: unit tests of lib/peftkey.c, the tensor key
 * forms of a PEFT adapter_model.safetensors (SPEC.md 2.2): each form with
 * and without the "base_model.model." prefix, the stem it names, and the
 * keys of no known form. */
#include <check.h>
#include <stdbool.h>
#include <string.h>

#include "../lib/peftkey.h"

START_TEST(test_forms)
{
    static const struct {
        const char *key, *stem;
        enum peftkey_kind kind;
    } ok[] = {
        {"base_model.model.layers.0.q_proj.lora_A.weight", "layers.0.q_proj", PEFTKEY_A},
        {"layers.0.q_proj.lora_A.weight", "layers.0.q_proj", PEFTKEY_A},
        {"base_model.model.head.lora_B.weight", "head", PEFTKEY_B},
        {"head.lora_B.bias", "head", PEFTKEY_B_BIAS},
        {"m.x.lora_magnitude_vector", "m.x", PEFTKEY_MAG},
        {"base_model.model.m.x.lora_magnitude_vector.weight", "m.x", PEFTKEY_MAG},
        {"base_model.model.classifier.weight", "classifier", PEFTKEY_W},
        {"classifier.bias", "classifier", PEFTKEY_BIAS},
        {"a.b.c.weight", "a.b.c", PEFTKEY_W},
        /* the prefix is taken once; a second one is part of the stem */
        {"base_model.model.base_model.model.x.weight", "base_model.model.x", PEFTKEY_W},
    };
    static const char *const bad[] = {
        "base_model.model.layers.0.lora_embedding_A",
        "x.lora_embedding_A.weight", /* a lora_ tensor of another form */
        "lora_A.weight",             /* no stem */
        "x.lora_A",
        "something_else",
        "x.weights",
        ".weight",
        "base_model.model..bias",
        "base_model.model.",
        "",
        "x.lora_dropout.weight",
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *stem = NULL;
        size_t len = 0;
        enum peftkey_kind kind = PEFTKEY_KINDS;

        ck_assert_msg(peftkey_parse(ok[i].key, &stem, &len, &kind), "%s refused", ok[i].key);
        ck_assert_msg(len == strlen(ok[i].stem) && strncmp(stem, ok[i].stem, len) == 0,
                      "%s: stem %.*s, want %s", ok[i].key, (int)len, stem, ok[i].stem);
        ck_assert_int_eq(kind, ok[i].kind);
        /* the stem points into the key */
        ck_assert(stem >= ok[i].key && stem < ok[i].key + strlen(ok[i].key));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *stem;
        size_t len;
        enum peftkey_kind kind;
        ck_assert_msg(!peftkey_parse(bad[i], &stem, &len, &kind), "%s accepted", bad[i]);
    }
    {
        const char *stem;
        size_t len;
        enum peftkey_kind kind;
        ck_assert(!peftkey_parse(NULL, &stem, &len, &kind));
    }
    /* the LoRA kinds come first */
    ck_assert(PEFTKEY_A < PEFTKEY_W && PEFTKEY_B_BIAS < PEFTKEY_W && PEFTKEY_MAG < PEFTKEY_W);
    ck_assert(PEFTKEY_MAG < PEFTKEY_BIAS);
}
END_TEST

static Suite *peftkey_suite(void)
{
    Suite *s = suite_create("peftkey");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_forms);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(peftkey_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
