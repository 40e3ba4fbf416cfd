/* lorad — tests/test_errors.c: unit tests of lib/errors.c: every error
 * code has the snake_case name of SPEC.md 6 (the table below is copied
 * from the SPEC, not from errors.c), unknown codes are "internal", and
 * the message helpers record, truncate and prefix as errors.h says. */
#include <check.h>
#include <limits.h>
#include <string.h>

#include "../lib/errors.h"

START_TEST(test_names)
{
    static const struct {
        int code;
        const char *name;
    } spec[] = {
        {LORAD_E_INVALID_REQUEST, "invalid_request"},
        {LORAD_E_UNAUTHORIZED, "unauthorized"},
        {LORAD_E_FORBIDDEN_NAME, "forbidden_name"},
        {LORAD_E_NOT_FOUND, "not_found"},
        {LORAD_E_ADAPTER_NOT_FOUND, "adapter_not_found"},
        {LORAD_E_VERSION_NOT_FOUND, "version_not_found"},
        {LORAD_E_METHOD_NOT_ALLOWED, "method_not_allowed"},
        {LORAD_E_INCOMPATIBLE_CONFIG, "incompatible_config"},
        {LORAD_E_UNKNOWN_MODULE, "unknown_module"},
        {LORAD_E_RANK_TOO_LARGE, "rank_too_large"},
        {LORAD_E_SHAPE_MISMATCH, "shape_mismatch"},
        {LORAD_E_CHECKSUM_MISMATCH, "checksum_mismatch"},
        {LORAD_E_SWAP_IN_PROGRESS, "swap_in_progress"},
        {LORAD_E_NO_HISTORY, "no_history"},
        {LORAD_E_NO_CANARY, "no_canary"},
        {LORAD_E_CANARY_ACTIVE, "canary_active"},
        {LORAD_E_BODY_TOO_LARGE, "body_too_large"},
        {LORAD_E_INVALID_ADAPTER, "invalid_adapter"},
        {LORAD_E_UNSUPPORTED_PEFT_TYPE, "unsupported_peft_type"},
        {LORAD_E_UNSUPPORTED_DTYPE, "unsupported_dtype"},
        {LORAD_E_NON_FINITE_WEIGHTS, "non_finite_weights"},
        {LORAD_E_RANK_MISMATCH, "rank_mismatch"},
        {LORAD_E_UNKNOWN_TENSOR, "unknown_tensor"},
        {LORAD_E_NOT_READY, "not_ready"},
        {LORAD_E_DRAINING, "draining"},
        {LORAD_E_OVERLOADED, "overloaded"},
        /* not in SPEC's table: lorad's own */
        {LORAD_E_INTERNAL, "internal"},
        {LORAD_E_INVALID_MODEL, "invalid_model"},
        {LORAD_E_INVALID_CONFIG, "invalid_config"},
        {LORAD_E_NOT_DURABLE, "not_durable"},
        {LORAD_E_URI_TOO_LONG, "uri_too_long"},
        {LORAD_E_HEADERS_TOO_LARGE, "headers_too_large"},
        /* slots (SPEC 6) */
        {LORAD_E_SLOT_NOT_FOUND, "slot_not_found"},
        {LORAD_E_TOO_MANY_SLOTS, "too_many_slots"},
        {LORAD_E_MEMORY_LIMIT, "memory_limit"},
        {LORAD_E_DEFAULT_SLOT, "default_slot"},
    };
    size_t n = sizeof(spec) / sizeof(spec[0]);

    /* the enum is dense from -1 to the last code: each has a name */
    ck_assert_int_eq((int)n, -LORAD_E_DEFAULT_SLOT);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(lorad_err_name(spec[i].code), spec[i].name);
        for (size_t k = 0; k < i; k++)
            ck_assert_int_ne(spec[i].code, spec[k].code);
    }
    ck_assert_str_eq(lorad_err_name(LORAD_OK), "ok");
}
END_TEST

START_TEST(test_unknown_codes)
{
    /* (not INT_MIN: lorad_err_name negates the code, which overflows) */
    static const int unknown[] = {1, 7, INT_MAX, LORAD_E_DEFAULT_SLOT - 1, -1000, INT_MIN + 1};

    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        ck_assert_str_eq(lorad_err_name(unknown[i]), "internal");
}
END_TEST

START_TEST(test_set)
{
    struct lorad_error err = {0, ""};
    char longer[2 * LORAD_ERROR_MSG_MAX];

    ck_assert_int_eq(lorad_error_set(&err, LORAD_E_RANK_TOO_LARGE, "layer %s: rank %d", "q", 32),
                     LORAD_E_RANK_TOO_LARGE);
    ck_assert_int_eq(err.code, LORAD_E_RANK_TOO_LARGE);
    ck_assert_str_eq(err.msg, "layer q: rank 32");
    /* NULL err: only the code comes back */
    ck_assert_int_eq(lorad_error_set(NULL, LORAD_E_DRAINING, "x"), LORAD_E_DRAINING);
    /* a message too long for the buffer is cut and terminated */
    memset(longer, 'm', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    lorad_error_set(&err, LORAD_E_INTERNAL, "%s", longer);
    ck_assert_uint_eq(strlen(err.msg), LORAD_ERROR_MSG_MAX - 1);
    ck_assert_int_eq(err.msg[0], 'm');
}
END_TEST

START_TEST(test_prefix)
{
    struct lorad_error err = {0, ""};
    char big[LORAD_ERROR_MSG_MAX + 100];

    lorad_error_set(&err, LORAD_E_INVALID_ADAPTER, "rank 3");
    lorad_error_prefix(&err, "layer q");
    ck_assert_str_eq(err.msg, "layer q: rank 3");
    ck_assert_int_eq(err.code, LORAD_E_INVALID_ADAPTER); /* the code stays */
    lorad_error_prefix(&err, "adapter a");
    ck_assert_str_eq(err.msg, "adapter a: layer q: rank 3");
    lorad_error_prefix(&err, NULL);
    ck_assert_str_eq(err.msg, "adapter a: layer q: rank 3");
    lorad_error_prefix(NULL, "x");
    /* a long message loses its end, never the prefix */
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    lorad_error_set(&err, LORAD_E_INTERNAL, "%s", big);
    lorad_error_prefix(&err, "p");
    ck_assert_uint_eq(strlen(err.msg), LORAD_ERROR_MSG_MAX - 1);
    ck_assert(strncmp(err.msg, "p: bbb", 6) == 0);
    /* a prefix longer than the buffer is cut: prefix and ": " only */
    lorad_error_set(&err, LORAD_E_INTERNAL, "tail");
    memset(big, 'p', sizeof(big) - 1);
    lorad_error_prefix(&err, big);
    ck_assert_uint_eq(strlen(err.msg), LORAD_ERROR_MSG_MAX - 1);
    ck_assert(strcmp(err.msg + LORAD_ERROR_MSG_MAX - 3, ": ") == 0);
    ck_assert_ptr_null(strstr(err.msg, "tail"));
}
END_TEST

static Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_unknown_codes);
    tcase_add_test(tc, test_set);
    tcase_add_test(tc, test_prefix);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(errors_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
