/* lorad — tests/test_jsontext.c: the raw-JSON checks of lib/jsontext.c. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/jsontext.h"

static bool has(const char *s)
{
    return json_has_nul_escape(s, strlen(s));
}

START_TEST(test_nul_escape_found)
{
    ck_assert(has("{\"adapter\": \"demo-b\\u0000../x\"}"));
    ck_assert(has("{\"a\\u0000\": 1}"));           /* in a key */
    ck_assert(has("[\"x\", \"\\u0000\"]"));         /* anywhere */
    ck_assert(has("{\"a\": \"\\\\\\u0000\"}"));     /* \\ then \u0000 */
    ck_assert(has("{\"a\": \"\\u0001\\u00000\"}")); /* \u0000 followed by a digit */
    const char raw[] = "{\"a\": \"b\0c\"}";
    ck_assert(json_has_nul_escape(raw, sizeof(raw) - 1)); /* raw NUL byte */
}
END_TEST

START_TEST(test_no_false_positive)
{
    ck_assert(!has("{\"adapter\": \"demo-b\"}"));
    ck_assert(!has("{\"a\": \"\\\\u0000\"}"));      /* escaped backslash, then text */
    ck_assert(!has("{\"a\": \"\\u1000\"}"));
    ck_assert(!has("{\"a\": \"u0000\"}"));
    ck_assert(!has("{\"a\": 0}"));
    ck_assert(!has("{\"a\": \"\\\"\\u00a0\"}"));    /* escaped quote stays in the string */
    ck_assert(!has("\"\\u000"));                    /* truncated escape */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsontext");
    TCase *tc = tcase_create("nul");
    tcase_add_test(tc, test_nul_escape_found);
    tcase_add_test(tc, test_no_false_positive);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
