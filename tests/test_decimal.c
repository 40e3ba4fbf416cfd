/* lorad — tests/test_decimal.c: lib/decimal.c must return exactly what
 * strtod returns (the independent reference here is glibc's correctly
 * rounded strtod), whenever it does not decline. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/decimal.h"
#include "testutil.h"

/* Checks one number; returns 1 when the fast path answered. */
static int check_one(const char *s)
{
    double got, want = strtod(s, NULL);
    if (!decimal_fast_parse(s, s + strlen(s), &got))
        return 0;
    ck_assert_msg(memcmp(&got, &want, sizeof(got)) == 0, "%s: fast path %.17g, strtod %.17g", s,
                  got, want);
    return 1;
}

START_TEST(test_random_digits)
{
    uint64_t rng = 42;
    char buf[64];
    int answered = 0;
    for (int i = 0; i < 400000; i++) {
        int digits = 1 + (int)(tu_rand(&rng) % 19), point = (int)(tu_rand(&rng) % (digits + 1));
        int e = (int)(tu_rand(&rng) % 61) - 30;
        char *p = buf;
        if (tu_rand(&rng) & 1)
            *p++ = '-';
        for (int d = 0; d < digits; d++) {
            if (d == point && d > 0)
                *p++ = '.';
            *p++ =
                (char)('0' + (d == 0 && digits > 1 ? 1 + tu_rand(&rng) % 9 : tu_rand(&rng) % 10));
        }
        if (tu_rand(&rng) & 1)
            p += sprintf(p, "e%d", e);
        *p = '\0';
        answered += check_one(buf);
    }
    ck_assert_msg(answered > 300000, "the fast path answered only %d of 400000", answered);
}
END_TEST

/* Decimals printed within a few units of the 19th digit of the midpoint
 * between two neighbouring doubles: the hard cases for a second rounding. */
START_TEST(test_near_midpoints)
{
    uint64_t rng = 7;
    char buf[64];
    for (int i = 0; i < 200000; i++) {
        double d =
            tu_uniform(&rng, -1.0, 1.0) * pow(10.0, (double)((int)(tu_rand(&rng) % 40) - 20));
        long double mid = ((long double)d + (long double)nextafter(d, INFINITY)) / 2;
        snprintf(buf, sizeof(buf), "%.18Le", mid);
        check_one(buf);
        snprintf(buf, sizeof(buf), "%.16Le", mid);
        check_one(buf);
    }
}
END_TEST

START_TEST(test_simple_values)
{
    const char *exact[] = {"0",
                           "-0",
                           "1",
                           "0.5",
                           "3.14159",
                           "1e22",
                           "1e-22",
                           "123456789012345678",
                           "0.100000001490116119384765625",
                           "-2.5e-3",
                           "9999999999999999999"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        check_one(exact[i]);
    double z;
    ck_assert(decimal_fast_parse("-0", "-0" + 2, &z) && z == 0 && signbit(z));
    /* declined, not guessed: too many digits, huge exponents */
    ck_assert(!decimal_fast_parse("12345678901234567890", "12345678901234567890" + 20, &z));
    ck_assert(!decimal_fast_parse("1e300", "1e300" + 5, &z));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("decimal");
    TCase *tc = tcase_create("strtod");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_simple_values);
    tcase_add_test(tc, test_random_digits);
    tcase_add_test(tc, test_near_midpoints);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
