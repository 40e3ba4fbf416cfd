/* lorad — half.c: this file contains the exact conversions between f32
 * and the 16-bit formats (see half.h).
 *
 * Decoding is exact: every f16 and bf16 value, subnormals, infinities and
 * NaN payloads included, is an f32. Encoding rounds to nearest, ties to
 * even, on the bit patterns (no floating-point arithmetic, so no
 * dependence on the rounding mode), and quiets NaNs.
 */
#include "half.h"

#include <string.h>

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float half_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;

    if (exp == 0x1f) /* inf, or NaN with its payload */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24, exact in f32 */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
}

float half_bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

uint16_t half_f32_to_f16(float f)
{
    uint32_t x, ax, h;
    uint16_t sign;

    memcpy(&x, &f, sizeof(x));
    sign = (uint16_t)((x >> 16) & 0x8000);
    ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity (and inf itself) */
        return (uint16_t)(sign | 0x7c00);
    if (ax >= 0x38800000u) { /* >= 2^-14: normal half */
        uint32_t rem = ax & 0x1fff;
        h = (((ax >> 23) - 112) << 10) | ((ax >> 13) & 0x3ff);
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
            h++; /* a carry into the exponent is still correct */
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) /* <= 2^-25: rounds (ties to even) to zero */
        return sign;
    /* subnormal half: round(|f| / 2^-24) */
    uint32_t e = ax >> 23, man = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e, half = 1u << (shift - 1), rem = man & ((1u << shift) - 1);
    h = man >> shift;
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

uint16_t half_f32_to_bf16(float f)
{
    uint32_t x;

    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet it */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
