/* lorad — decimal.c: fast, exact decimal-to-double conversion for the
 * common case (see decimal.h). */
#include "decimal.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

/* Powers of ten that doubles hold exactly. */
static const double exact_p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#if LDBL_MANT_DIG == 64
/* Powers of ten that x87 long doubles (64-bit significand) hold exactly:
 * 10^27 = 2^27 * 5^27 and 5^27 < 2^64. */
static const long double exact_p10l[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,
                                         1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
                                         1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L,
                                         1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
#define FAST_MAX_DIGITS 19
#define FAST_MAX_EXP 27
#else
#define FAST_MAX_DIGITS 15
#define FAST_MAX_EXP 22
#endif

/* m * 10^e10 as the correctly rounded double (what strtod returns), or
 * false when that cannot be had cheaply. Doubles: Clinger's fast path (m
 * < 2^53 and 10^|e10| exact, one rounding). With x87 long doubles m (up to
 * 19 digits, < 2^64) and 10^|e10| (|e10| <= 27) are exact too, so one
 * multiplication or division rounds once to 64 bits; rounding that to 53
 * bits can differ from rounding the exact value only when the 64-bit
 * result lies exactly halfway between two doubles (its low 11 bits are
 * 0x400), and then strtod decides. Python's json.dumps writes 17 digits,
 * so this path carries most real requests. */
static bool scale_decimal(uint64_t m, int e10, double *out)
{
    if (m < (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        *out = e10 >= 0 ? (double)m * exact_p10[e10] : (double)m / exact_p10[-e10];
        return true;
    }
#if LDBL_MANT_DIG == 64
    if (e10 < -FAST_MAX_EXP || e10 > FAST_MAX_EXP)
        return false;
    long double v = e10 >= 0 ? (long double)m * exact_p10l[e10] : (long double)m / exact_p10l[-e10];
    int ex;
    uint64_t sig = (uint64_t)ldexpl(frexpl(v, &ex), 64); /* the 64-bit significand */
    if ((sig & 0x7ff) == 0x400)
        return false; /* a tie for the second rounding: let strtod decide */
    *out = (double)v;
    return true;
#else
    return false;
#endif
}

bool decimal_fast_parse(const char *p, const char *end, double *out)
{
    uint64_t m = 0;
    int sig = 0, e10 = 0, ex = 0, exsign = 1;
    bool neg = false;

    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (m == 0 && *p == '0')
            continue;
        m = m * 10 + (uint64_t)(*p - '0');
        if (++sig > FAST_MAX_DIGITS)
            return false;
    }
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            e10--;
            if (m == 0 && *p == '0')
                continue;
            m = m * 10 + (uint64_t)(*p - '0');
            if (++sig > FAST_MAX_DIGITS)
                return false;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '+' || *p == '-')
            exsign = *p++ == '-' ? -1 : 1;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            ex = ex * 10 + (*p - '0');
            if (ex > 1000)
                return false;
        }
    }
    e10 += exsign * ex;
    if (m == 0) {
        *out = neg ? -0.0 : 0.0;
        return true;
    }
    if (!scale_decimal(m, e10, out))
        return false;
    if (neg)
        *out = -*out;
    return true;
}
