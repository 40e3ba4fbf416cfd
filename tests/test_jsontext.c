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

START_TEST(test_nul_after_backslash)
{
    const char raw[] = "{\"a\": \"b\\\0\"}"; /* a raw NUL escaped by a backslash */
    ck_assert(json_has_nul_escape(raw, sizeof(raw) - 1));
}
END_TEST

/* ---- json_has_bad_number ---- */

/* Asserts s is refused with the first bad token at byte `at` and a reason
 * naming `needle`. */
static void bad_number(const char *s, size_t at, const char *needle)
{
    size_t got = 999;
    const char *why = NULL;
    ck_assert_msg(json_has_bad_number(s, strlen(s), &got, &why), "%s: not refused", s);
    ck_assert_msg(got == at, "%s: bad token at byte %zu, expected %zu", s, got, at);
    ck_assert_msg(why && strstr(why, needle), "%s: reason '%s' does not name '%s'", s,
                  why ? why : "(null)", needle);
}

static void good_numbers(const char *s)
{
    size_t at = 12345;
    const char *why = "untouched";
    ck_assert_msg(!json_has_bad_number(s, strlen(s), &at, &why), "%s: refused at byte %zu: %s", s,
                  at, why);
    ck_assert_uint_eq(at, 12345); /* unchanged when nothing is wrong */
    ck_assert_str_eq(why, "untouched");
}

START_TEST(test_numbers_valid)
{
    good_numbers("0");
    good_numbers("-0");
    good_numbers("[0, -0, 1, -1, 10, 0.5, -0.5, 0.5e-3, 1E+2, 1e2, 2.50E-07, 123456789]");
    good_numbers("{\"a\": -0, \"b\": 0.5e-3, \"c\": [1E+2, {\"d\": 0e0}]}");
    good_numbers("{\"a\":1,\"b\":[2,3]}");          /* no whitespace */
    good_numbers(" [ true , false , null , 7 ] ");      /* words are not numbers */
    good_numbers("{\"percent\": 100}");
    good_numbers("");
    good_numbers("{}");
}
END_TEST

START_TEST(test_numbers_in_strings_ignored)
{
    good_numbers("{\"a\": \"05\"}");
    good_numbers("{\"05\": \"5. 00.5 .5 +1 1.e5 - 1e\"}");
    good_numbers("[\"\\\"05\"]");                   /* escaped quote, then 05, in a string */
    good_numbers("[\"\\\\\", 5]");                  /* escaped backslash ends the escape */
    good_numbers("[\"a\\u0030\\/.5\"]");
    /* an escaped quote does not end the string: 05 is still inside it */
    good_numbers("{\"a\": \"x\\\" 05 \\\"\", \"b\": 1}");
    /* ... but the string does end at the next unescaped quote */
    bad_number("{\"a\": \"x\\\"\", \"b\": 05}", 18, "leading zero");
    bad_number("[\"\\\\\", 05]", 7, "leading zero");
}
END_TEST

START_TEST(test_numbers_malformed)
{
    bad_number("05", 0, "leading zero");
    bad_number("{\"canary_percent\":05}", 18, "leading zero");
    bad_number("{\"a\": 5.}", 6, "'.'");
    bad_number("{\"a\": 00.5}", 6, "leading zero");
    bad_number("{\"version\":0001}", 11, "leading zero");
    bad_number("{\"a\": -}", 6, "'-'");
    bad_number("{\"a\": -05}", 6, "leading zero");
    bad_number("{\"a\": 1e}", 6, "exponent");
    bad_number("{\"a\": 1e+}", 6, "exponent");
    bad_number("{\"a\": .5}", 6, "start");
    bad_number("{\"a\": +1}", 6, "start");
    bad_number("{\"a\": 1.e5}", 6, "'.'");
    bad_number("{\"a\": 1.5.2}", 6, "unexpected");
    bad_number("{\"a\": 1-2}", 6, "unexpected");
    bad_number("{\"a\": -Infinity}", 6, "'-'");
    bad_number("[1, 2, 05, 5.]", 7, "leading zero");      /* the first bad token */
    bad_number("[\"05\", 5.]", 7, "'.'");                /* the one outside the string */
    bad_number("[05", 1, "leading zero");                  /* at the end of the text */
    bad_number("[1e", 1, "exponent");
    /* the length bounds the scan: "5" alone is fine, "5." is not */
    size_t at = 0;
    const char *why = NULL;
    ck_assert(!json_has_bad_number("[5.]", 2, &at, &why));
    ck_assert(json_has_bad_number("[5.]", 3, &at, &why));
    ck_assert_uint_eq(at, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsontext");
    TCase *tc = tcase_create("nul");
    tcase_add_test(tc, test_nul_escape_found);
    tcase_add_test(tc, test_no_false_positive);
    tcase_add_test(tc, test_nul_after_backslash);
    suite_add_tcase(s, tc);
    tc = tcase_create("number");
    tcase_add_test(tc, test_numbers_valid);
    tcase_add_test(tc, test_numbers_in_strings_ignored);
    tcase_add_test(tc, test_numbers_malformed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
