/* lorad — digest.c: this file contains the sha256 hex helpers of digest.h,
 * built on nettle. */
#include "digest.h"

#include <nettle/sha2.h>

#include "errors.h"

static const char hex_digits[] = "0123456789abcdef";

int digest_sha256_hex(const void *data, size_t len, char out[65])
{
    struct sha256_ctx ctx;
    uint8_t md[SHA256_DIGEST_SIZE];

    if (!out || (!data && len > 0))
        return LORAD_E_INTERNAL;
    sha256_init(&ctx);
    if (len > 0)
        sha256_update(&ctx, len, data);
    sha256_digest(&ctx, sizeof(md), md);
    for (size_t i = 0; i < sizeof(md); i++) {
        out[2 * i] = hex_digits[md[i] >> 4];
        out[2 * i + 1] = hex_digits[md[i] & 0xf];
    }
    out[DIGEST_SHA256_HEX_LEN] = '\0';
    return 0;
}

/* Value of one hex digit, or -1. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool digest_hex_valid(const char *s)
{
    if (!s)
        return false;
    for (size_t i = 0; i < DIGEST_SHA256_HEX_LEN; i++)
        if (hex_value(s[i]) < 0) /* also stops at an early NUL */
            return false;
    return s[DIGEST_SHA256_HEX_LEN] == '\0';
}

bool digest_hex_equal(const char *a, const char *b)
{
    unsigned diff = 0;

    if (!digest_hex_valid(a) || !digest_hex_valid(b))
        return false;
    for (size_t i = 0; i < DIGEST_SHA256_HEX_LEN; i++)
        diff |= (unsigned)(hex_value(a[i]) ^ hex_value(b[i]));
    return diff == 0;
}
