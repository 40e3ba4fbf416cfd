/* lorad — tests/test_half.c: unit tests of lib/half.c, the f16 / bf16
 * conversions, against testutil's decoders and encoders written from the
 * IEEE definitions: every one of the 65536 bit patterns of each format
 * decoded exactly (NaNs as NaNs), and encoding round to nearest, ties to
 * even, on every representable value, every midpoint and random f32s. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../lib/half.h"
#include "testutil.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(test_decode_exhaustive)
{
    for (uint32_t i = 0; i < 65536; i++) {
        double w16 = tu_f16_value((uint16_t)i), wb = tu_bf16_value((uint16_t)i);
        float g16 = half_f16_to_f32((uint16_t)i), gb = half_bf16_to_f32((uint16_t)i);

        if (isnan(w16))
            ck_assert_msg(isnan(g16), "f16 0x%04x: want NaN, got %a", i, (double)g16);
        else /* bit for bit: -0 differs from +0 */
            ck_assert_msg(f32_bits(g16) == f32_bits((float)w16), "f16 0x%04x: %a, want %a", i,
                          (double)g16, w16);
        if (isnan(wb))
            ck_assert_msg(isnan(gb), "bf16 0x%04x: want NaN, got %a", i, (double)gb);
        else
            ck_assert_msg(f32_bits(gb) == f32_bits((float)wb), "bf16 0x%04x: %a, want %a", i,
                          (double)gb, wb);
    }
}
END_TEST

/* The f32 -> f16/bf16 conversions against testutil's encoders:
 * every representable value, every midpoint (ties to even), and random
 * f32 bit patterns. */
START_TEST(test_f32_to_half_rne)
{
    uint64_t seed = 42;

    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        bool nan16 = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        bool nanb = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        uint16_t r16 = half_f32_to_f16(half_f16_to_f32(h));
        uint16_t rb = half_f32_to_bf16(half_bf16_to_f32(h));
        if (nan16)
            ck_assert_msg((r16 & 0x7c00) == 0x7c00 && (r16 & 0x3ff), "f16 NaN 0x%04x", h);
        else
            ck_assert_uint_eq(r16, h);
        if (nanb)
            ck_assert_msg((rb & 0x7f80) == 0x7f80 && (rb & 0x7f), "bf16 NaN 0x%04x", h);
        else
            ck_assert_uint_eq(rb, h);
        /* midpoint between h and the next larger magnitude (exact in f32) */
        if (!nan16 && (h & 0x7fff) < 0x7c00) {
            double lo = tu_f16_value(h), hi = tu_f16_value((uint16_t)(h + 1));
            float mid = (float)((lo + hi) / 2);
            ck_assert(((double)mid) == (lo + hi) / 2);
            ck_assert_uint_eq(half_f32_to_f16(mid), tu_f16_bits((double)mid));
        }
        if (!nanb && (h & 0x7fff) < 0x7f80) {
            double lo = tu_bf16_value(h), hi = tu_bf16_value((uint16_t)(h + 1));
            float mid = (float)((lo + hi) / 2);
            if ((h & 0x7fff) < 0x7f7f) /* below the last finite pair: exact */
                ck_assert(((double)mid) == (lo + hi) / 2);
            ck_assert_uint_eq(half_f32_to_bf16(mid), tu_bf16_bits((double)mid));
        }
    }
    for (int k = 0; k < 300000; k++) {
        uint32_t u = (uint32_t)tu_rand(&seed);
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x))
            continue;
        ck_assert_msg(half_f32_to_f16(x) == tu_f16_bits((double)x), "f16 of %a", (double)x);
        ck_assert_msg(half_f32_to_bf16(x) == tu_bf16_bits((double)x), "bf16 of %a", (double)x);
    }
    ck_assert_uint_eq(half_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(half_f32_to_f16(65519.996f), 0x7bff);
    ck_assert_uint_eq(half_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(half_f32_to_f16(0x1p-25f), 0x0000);
    ck_assert_uint_eq(half_f32_to_f16(0x1.000002p-25f), 0x0001);
}
END_TEST

static Suite *half_suite(void)
{
    Suite *s = suite_create("half");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_decode_exhaustive);
    tcase_add_test(tc, test_f32_to_half_rne);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(half_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
