/* lorad — tests/test_jsontext.c: the raw-JSON checks of lib/jsontext.c. */
#include <check.h>
#include <stdio.h>
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
    ck_assert(has("{\"a\\u0000\": 1}"));            /* in a key */
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
    ck_assert(!has("{\"a\": \"\\\\u0000\"}")); /* escaped backslash, then text */
    ck_assert(!has("{\"a\": \"\\u1000\"}"));
    ck_assert(!has("{\"a\": \"u0000\"}"));
    ck_assert(!has("{\"a\": 0}"));
    ck_assert(!has("{\"a\": \"\\\"\\u00a0\"}")); /* escaped quote stays in the string */
    ck_assert(!has("\"\\u000"));                 /* truncated escape */
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
    good_numbers("{\"a\":1,\"b\":[2,3]}");         /* no whitespace */
    good_numbers(" [ true , false , null , 7 ] "); /* words are not numbers */
    good_numbers("{\"percent\": 100}");
    good_numbers("");
    good_numbers("{}");
}
END_TEST

START_TEST(test_numbers_in_strings_ignored)
{
    good_numbers("{\"a\": \"05\"}");
    good_numbers("{\"05\": \"5. 00.5 .5 +1 1.e5 - 1e\"}");
    good_numbers("[\"\\\"05\"]");  /* escaped quote, then 05, in a string */
    good_numbers("[\"\\\\\", 5]"); /* escaped backslash ends the escape */
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
    bad_number("[1, 2, 05, 5.]", 7, "leading zero"); /* the first bad token */
    bad_number("[\"05\", 5.]", 7, "'.'");            /* the one outside the string */
    bad_number("[05", 1, "leading zero");            /* at the end of the text */
    bad_number("[1e", 1, "exponent");
    /* the length bounds the scan: "5" alone is fine, "5." is not */
    size_t at = 0;
    const char *why = NULL;
    ck_assert(!json_has_bad_number("[5.]", 2, &at, &why));
    ck_assert(json_has_bad_number("[5.]", 3, &at, &why));
    ck_assert_uint_eq(at, 1);
}
END_TEST

/* ---- json_number_len ---- */

static size_t numlen(const char *s, bool *plain)
{
    return json_number_len(s, s + strlen(s), plain);
}

START_TEST(test_number_len)
{
    bool plain = false;
    ck_assert_uint_eq(numlen("0", &plain), 1);
    ck_assert(plain);
    ck_assert_uint_eq(numlen("123456789", &plain), 9);
    ck_assert(plain);
    ck_assert_uint_eq(numlen("-0", &plain), 2);
    ck_assert(!plain);
    ck_assert_uint_eq(numlen("2.0", &plain), 3);
    ck_assert(!plain);
    ck_assert_uint_eq(numlen("2e0", &plain), 3);
    ck_assert(!plain);
    ck_assert_uint_eq(numlen("-1.25E+07,", NULL), 9); /* stops at the delimiter */
    ck_assert_uint_eq(numlen("0.5e-3]", NULL), 6);
    ck_assert_uint_eq(numlen("01", NULL), 1); /* "0", then a separate "1" */
    ck_assert_uint_eq(numlen("1.5.2", NULL), 3);
    /* not a number at all */
    ck_assert_uint_eq(numlen("", NULL), 0);
    ck_assert_uint_eq(numlen("-", NULL), 0);
    ck_assert_uint_eq(numlen("+1", NULL), 0);
    ck_assert_uint_eq(numlen(".5", NULL), 0);
    ck_assert_uint_eq(numlen("5.", NULL), 0);
    ck_assert_uint_eq(numlen("1.e5", NULL), 0);
    ck_assert_uint_eq(numlen("1e", NULL), 0);
    ck_assert_uint_eq(numlen("1e+", NULL), 0);
    ck_assert_uint_eq(numlen("-x", NULL), 0);
    ck_assert_uint_eq(numlen("true", NULL), 0);
    /* the end bounds the scan */
    const char *t = "12.5e3";
    ck_assert_uint_eq(json_number_len(t, t + 2, NULL), 2);
    ck_assert_uint_eq(json_number_len(t, t + 3, NULL), 0); /* "12." */
    ck_assert_uint_eq(json_number_len(t, t + 5, NULL), 0); /* "12.5e" */
}
END_TEST

/* ---- json_utf8_len ---- */

static size_t u8len(const char *s, size_t n)
{
    return json_utf8_len((const unsigned char *)s, (const unsigned char *)s + n);
}

START_TEST(test_utf8_len)
{
    ck_assert_uint_eq(u8len("a", 1), 1);
    ck_assert_uint_eq(u8len("\xc3\xa9", 2), 2);         /* U+00E9 */
    ck_assert_uint_eq(u8len("\xe2\x82\xac", 3), 3);     /* U+20AC */
    ck_assert_uint_eq(u8len("\xf0\x9f\x98\x80", 4), 4); /* U+1F600 */
    ck_assert_uint_eq(u8len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF, the last */
    ck_assert_uint_eq(u8len("\x80", 1), 0);             /* stray continuation */
    ck_assert_uint_eq(u8len("\xc3", 1), 0);             /* truncated */
    ck_assert_uint_eq(u8len("\xe2\x82", 2), 0);
    ck_assert_uint_eq(u8len("\xc3\x28", 2), 0);             /* bad continuation */
    ck_assert_uint_eq(u8len("\xc0\xaf", 2), 0);             /* overlong '/' */
    ck_assert_uint_eq(u8len("\xe0\x80\xaf", 3), 0);         /* overlong */
    ck_assert_uint_eq(u8len("\xf0\x80\x80\xaf", 4), 0);     /* overlong */
    ck_assert_uint_eq(u8len("\xed\xa0\x80", 3), 0);         /* U+D800, a surrogate */
    ck_assert_uint_eq(u8len("\xed\xbf\xbf", 3), 0);         /* U+DFFF */
    ck_assert_uint_eq(u8len("\xf4\x90\x80\x80", 4), 0);     /* U+110000 */
    ck_assert_uint_eq(u8len("\xf8\x88\x80\x80\x80", 5), 0); /* 5-byte form */
    ck_assert_uint_eq(u8len("\xff", 1), 0);
    ck_assert_uint_eq(u8len("x", 0), 0); /* nothing to read */
}
END_TEST

/* ---- json_duplicate_key ---- */

static const char *dup_of(const char *text)
{
    static char name[64];
    cJSON *j = cJSON_Parse(text);
    const char *d;
    ck_assert_msg(j != NULL, "%s does not parse", text);
    d = json_duplicate_key(j);
    if (d)
        snprintf(name, sizeof(name), "%s", d);
    cJSON_Delete(j);
    return d ? name : NULL;
}

START_TEST(test_duplicate_key)
{
    ck_assert_ptr_null(dup_of("{}"));
    ck_assert_ptr_null(dup_of("{\"a\": 1, \"b\": 2, \"A\": 3}")); /* names are case-sensitive */
    ck_assert_str_eq(dup_of("{\"a\": 1, \"b\": 2, \"a\": 3}"), "a");
    ck_assert_str_eq(dup_of("{\"x\": 1, \"b\": 2, \"b\": 3, \"x\": 4}"),
                     "b");                                                /* the first repeat */
    ck_assert_ptr_null(dup_of("{\"a\": {\"k\": 1}, \"b\": {\"k\": 2}}")); /* nested: not compared */
    ck_assert_ptr_null(dup_of("[1, 1]"));                                 /* not an object */
    ck_assert_ptr_null(json_duplicate_key(NULL));
}
END_TEST

/* Past the small-object path: many members, sorted internally. */
START_TEST(test_duplicate_key_large)
{
    cJSON *o = cJSON_CreateObject();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", (i * 7919) % 5000); /* a permutation */
        cJSON_AddNumberToObject(o, key, i);
    }
    ck_assert_ptr_null(json_duplicate_key(o));
    cJSON_AddNumberToObject(o, "k4000", 1); /* repeats come last, in this order */
    cJSON_AddNumberToObject(o, "k17", 2);
    ck_assert_str_eq(json_duplicate_key(o), "k4000");
    cJSON_Delete(o);
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
    tcase_add_test(tc, test_number_len);
    suite_add_tcase(s, tc);
    tc = tcase_create("lexing");
    tcase_add_test(tc, test_utf8_len);
    tcase_add_test(tc, test_duplicate_key);
    tcase_add_test(tc, test_duplicate_key_large);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
