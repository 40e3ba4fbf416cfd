/* lorad — tests/test_safetensors.c: unit tests of lib/safetensors.c.
 *
 * Files come from testutil's independent writer (tu_safetensors_image) or
 * are crafted byte by byte here; expected values come from testutil's
 * decoders (tu_f16_value, tu_bf16_value) and encoders (tu_f16_bits,
 * tu_bf16_bits), never from the code under test. Buffers handed to
 * st_parse are malloc'd to their exact length so that AddressSanitizer
 * (make check SAN=1) catches any read past the end.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/safetensors.h"
#include "testutil.h"

#define PEFT_FILE "../shared/testdata/peft-distilbert-imdb/adapter_model.safetensors"

/* ---- helpers ---- */

/* An exact-size heap copy of buf[0..len) (so ASan sees any overread). */
static uint8_t *exact_copy(const uint8_t *buf, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    if (len)
        memcpy(p, buf, len);
    return p;
}

/* File image: 8-byte LE length of hdr[0..hlen), hdr, dlen zero bytes. */
static uint8_t *raw_image(const char *hdr, size_t hlen, size_t dlen, size_t *len)
{
    uint8_t *img = calloc(1, 8 + hlen + dlen);
    ck_assert_ptr_nonnull(img);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(img + 8, hdr, hlen);
    *len = 8 + hlen + dlen;
    return img;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* got must be the f32 nearest to want (exact for representable values),
 * bit for bit (so -0 differs from +0); NaN matches any NaN. */
static void assert_same_float(float got, double want, const char *what, size_t i)
{
    if (isnan(want)) {
        ck_assert_msg(isnan(got), "%s[%zu]: want NaN, got %a", what, i, (double)got);
        return;
    }
    ck_assert_msg(f32_bits(got) == f32_bits((float)want), "%s[%zu]: got %a (0x%08x), want %a", what,
                  i, (double)got, f32_bits(got), want);
}

/* A valid file of three tensors (F32 [2,3], F16 [5], BF16 [2,2]). */
static uint8_t *three_tensor_image(size_t *len)
{
    static const double a[6] = {1, -2, 0.5, 3.25, -0.125, 100};
    static const double b[5] = {1, -1, 0.5, 65504, 0.0009765625};
    static const double c[4] = {1, 2, -3, 1e10};
    struct tu_tensor t[3] = {
        {"x.lora_A.weight", "F32", 2, {2, 3}, a},
        {"x.lora_B.weight", "F16", 1, {5}, b},
        {"y.weight", "BF16", 2, {2, 2}, c},
    };
    return tu_safetensors_image(t, 3, NULL, len);
}

/* ---- round trips with the independent writer ---- */

static const double specials[] = {
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1.0 / 3.0,
    65504.0,
    65519.0,
    65520.0,
    1e5,
    -1e5,
    6.103515625e-05,        /* f16 min normal */
    5.9604644775390625e-08, /* f16 min subnormal */
    2.98e-08,
    1e-7,
    3.0e-6,
    3.0e38,
    FLT_MAX,
    -FLT_MAX,
    FLT_MIN,
    1e-40,
    1.4e-45,
    3.3895313892515355e38, /* bf16 max finite */
    INFINITY,
    -INFINITY,
    NAN,
    -NAN,
};
#define NSPECIALS (sizeof(specials) / sizeof(specials[0]))

START_TEST(test_roundtrip_specials)
{
    struct tu_tensor t[3] = {
        {"s.bf16", "BF16", 1, {NSPECIALS}, specials},
        {"s.f32", "F32", 1, {NSPECIALS}, specials},
        {"s.f16", "F16", 1, {NSPECIALS}, specials},
    };
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = tu_safetensors_image(t, 3, NULL, &len);
    uint8_t *buf = exact_copy(img, len);
    float out[NSPECIALS];

    ck_assert_int_eq(st_parse(buf, len, "specials", &f, &err), 0);
    ck_assert_uint_eq(st_count(f), 3);
    ck_assert_str_eq(st_metadata(f, "format"), "pt");
    /* file order is data-offset order: bf16 first */
    ck_assert_str_eq(st_get(f, 0)->name, "s.bf16");
    ck_assert_str_eq(st_get(f, 1)->name, "s.f32");
    ck_assert_str_eq(st_get(f, 2)->name, "s.f16");
    for (size_t k = 0; k < 3; k++) {
        const struct st_tensor *x = st_find(f, t[k].name);
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(x->ndim, 1);
        ck_assert_uint_eq(x->shape[0], NSPECIALS);
        ck_assert_uint_eq(x->nelems, NSPECIALS);
        ck_assert_uint_eq(x->nbytes, NSPECIALS * st_dtype_size(x->dtype));
        ck_assert_ptr_eq(x->data, buf + len - (NSPECIALS * (2 + 4 + 2)) +
                                      (k == 0   ? 0
                                       : k == 1 ? 2 * NSPECIALS
                                                : 6 * NSPECIALS));
        ck_assert_int_eq(st_to_f32(x, out, &err), 0);
        for (size_t i = 0; i < NSPECIALS; i++) {
            /* what the independent writer stored, decoded independently */
            const uint8_t *p = x->data + i * st_dtype_size(x->dtype);
            uint16_t h = (uint16_t)(p[0] | p[1] << 8);
            double want = x->dtype == ST_F32   ? (double)(float)specials[i]
                          : x->dtype == ST_F16 ? tu_f16_value(h)
                                               : tu_bf16_value(h);
            if (x->dtype == ST_F16)
                ck_assert_uint_eq(h, tu_f16_bits(specials[i]));
            if (x->dtype == ST_BF16)
                ck_assert_uint_eq(h, tu_bf16_bits(specials[i]));
            assert_same_float(out[i], want, x->name, i);
        }
    }
    ck_assert_ptr_null(st_find(f, "s.f64"));
    ck_assert_ptr_null(st_find(f, ""));
    ck_assert_ptr_null(st_get(f, 3));
    st_close(&f);
    ck_assert_ptr_null(f);
    st_close(&f);
    st_close(NULL);
    free(buf);
    free(img);
}
END_TEST

/* Every one of the 65536 bit patterns of dtype ("F16"/"BF16") through a
 * file and st_to_f32 (the scalar converters: test_half). */
static void exhaustive(const char *dtype)
{
    struct tu_tensor t = {"all", dtype, 2, {256, 256}, NULL};
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = tu_safetensors_image(&t, 1, NULL, &len);
    bool f16 = !strcmp(dtype, "F16");
    float *out = malloc(65536 * sizeof(float));

    ck_assert_ptr_nonnull(out);
    for (uint32_t i = 0; i < 65536; i++) { /* data is the last 131072 bytes */
        img[len - 131072 + 2 * i] = (uint8_t)(i & 0xff);
        img[len - 131072 + 2 * i + 1] = (uint8_t)(i >> 8);
    }
    uint8_t *buf = exact_copy(img, len);
    ck_assert_int_eq(st_parse(buf, len, dtype, &f, &err), 0);
    ck_assert_uint_eq(st_get(f, 0)->nelems, 65536);
    ck_assert_int_eq(st_to_f32(st_get(f, 0), out, &err), 0);
    for (uint32_t i = 0; i < 65536; i++) {
        double want = f16 ? tu_f16_value((uint16_t)i) : tu_bf16_value((uint16_t)i);
        assert_same_float(out[i], want, dtype, i);
    }
    st_close(&f);
    free(out);
    free(buf);
    free(img);
}

START_TEST(test_exhaustive_f16)
{
    exhaustive("F16");
}
END_TEST

START_TEST(test_exhaustive_bf16)
{
    exhaustive("BF16");
}
END_TEST

/* ---- one crafted file per rule ---- */

struct bad_case {
    const char *label;
    const char *hdr;
    size_t hlen; /* 0: strlen(hdr) */
    size_t dlen;
    const char *needle; /* must appear in the message */
};

#define T(dtype, shape, offs)                                                                      \
    "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static const struct bad_case bad_cases[] = {
    {"not an object (array)", "[1,2]", 0, 0, "not a JSON object"},
    {"not an object (string)", "\"abc\"", 0, 0, "not a JSON object"},
    {"not an object (BOM)", "\xef\xbb\xbf{}", 0, 0, "not a JSON object"},
    {"not JSON (cut)", "{\"a\":", 0, 0, "not valid JSON"},
    {"not JSON (missing colon)", "{\"a\" 1}", 0, 0, "not valid JSON"},
    {"not JSON (trailing comma)", "{\"__metadata__\":{},}", 0, 0, "not valid JSON"},
    {"not JSON (lone surrogate escape)", "{\"__metadata__\":{\"a\":\"\\ud800\"}}", 0, 0,
     "not valid JSON"},
    {"not JSON (bad escape)", "{\"__metadata__\":{\"a\":\"\\x41\"}}", 0, 0, "bad escape"},
    {"leading zero", "{\"t\":" T("F32", "[01]", "[0,4]") "}", 0, 4, "malformed number"},
    {"plus sign", "{\"t\":" T("F32", "[+1]", "[0,4]") "}", 0, 4, "not valid JSON"},
    {"trailing garbage", "{\"__metadata__\":{\"format\":\"pt\"}}x", 0, 0, "trailing bytes"},
    {"trailing second object", "{} {}", 0, 0, "trailing bytes"},
    {"trailing NULs", "{}\0\0\0\0\0\0", 8, 0, "trailing bytes"},
    {"control char in string", "{\"__metadata__\":{\"a\":\"x\x01y\"}}", 0, 0, "control character"},
    {"NUL escape", "{\"__metadata__\":{\"a\":\"x\\u0000\"}}", 0, 0, "NUL"},
    {"non-JSON whitespace", "{\x0b}", 0, 0, "unexpected byte"},
    {"bad UTF-8: overlong", "{\"__metadata__\":{\"a\":\"\xc0\xaf\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: overlong 3-byte", "{\"__metadata__\":{\"a\":\"\xe0\x80\xaf\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: surrogate", "{\"__metadata__\":{\"a\":\"\xed\xa0\x80\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: above U+10FFFF", "{\"__metadata__\":{\"a\":\"\xf4\x90\x80\x80\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: truncated", "{\"__metadata__\":{\"a\":\"\xe2\x82\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: lone continuation", "{\"__metadata__\":{\"a\":\"\x80\"}}", 0, 0, "UTF-8"},
    {"bad UTF-8: 0xff", "{\"__metadata__\":{\"a\":\"\xff\"}}", 0, 0, "UTF-8"},
    {"metadata non-string value", "{\"__metadata__\":{\"format\":1}}", 0, 0, "non-string value"},
    {"metadata nested object", "{\"__metadata__\":{\"format\":{}}}", 0, 0, "non-string value"},
    {"metadata not an object", "{\"__metadata__\":[\"pt\"]}", 0, 0,
     "__metadata__ is not an object"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, "appears twice"},
    {"metadata duplicate key", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, 0,
     "duplicate key"},
    {"bad dtype", "{\"t\":" T("F33", "[1]", "[0,4]") "}", 0, 4, "unknown dtype"},
    {"lowercase dtype", "{\"t\":" T("f32", "[1]", "[0,4]") "}", 0, 4, "unknown dtype"},
    {"dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
     "dtype is not a string"},
    {"negative shape", "{\"t\":" T("F32", "[-1,2]", "[0,4]") "}", 0, 4, "negative"},
    {"fractional shape", "{\"t\":" T("F32", "[1.5]", "[0,4]") "}", 0, 4, "fractional"},
    {"integral fraction 1.0", "{\"t\":" T("F32", "[1.0]", "[0,4]") "}", 0, 4,
     "plain non-negative integer"},
    {"exponent 1e0", "{\"t\":" T("F32", "[1e0]", "[0,4]") "}", 0, 4, "plain non-negative integer"},
    {"negative zero", "{\"t\":" T("F32", "[-0]", "[0,0]") "}", 0, 0, "plain non-negative integer"},
    {"shape beyond 2^53", "{\"t\":" T("F32", "[9007199254740993]", "[0,4]") "}", 0, 4, "too large"},
    {"shape 1e400", "{\"t\":" T("F32", "[1e400]", "[0,4]") "}", 0, 4, "too large"},
    {"shape element a string", "{\"t\":" T("F32", "[\"1\"]", "[0,4]") "}", 0, 4, "not a number"},
    {"shape not an array", "{\"t\":" T("F32", "4", "[0,4]") "}", 0, 4, "shape is not an array"},
    {"too many dims", "{\"t\":" T("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 0, 4,
     "more than 8 dimensions"},
    {"offsets of 3", "{\"t\":" T("F32", "[1]", "[0,4,8]") "}", 0, 4, "[begin, end]"},
    {"offsets not an array", "{\"t\":" T("F32", "[1]", "4") "}", 0, 4, "[begin, end]"},
    {"negative offset", "{\"t\":" T("F32", "[1]", "[-4,0]") "}", 0, 4, "negative"},
    {"fractional offset", "{\"t\":" T("F32", "[1]", "[0,4.5]") "}", 0, 4, "fractional"},
    {"not contiguous from 0", "{\"t\":" T("F32", "[1]", "[4,8]") "}", 0, 8, "contiguous from 0"},
    {"gap", "{\"a\":" T("F32", "[1]", "[0,4]") ",\"b\":" T("F32", "[1]", "[8,12]") "}", 0, 12,
     "gap"},
    {"overlap", "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[4,12]") "}", 0, 12,
     "overlap"},
    {"overlap, same range",
     "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[0,8]") "}", 0, 8, "overlap"},
    {"end < begin", "{\"t\":" T("F32", "[0]", "[8,4]") "}", 0, 8, "end < begin"},
    {"size mismatch", "{\"x.lora_A.weight\":" T("F32", "[2,2]", "[0,12]") "}", 0, 12,
     "data_offsets [0, 12] span 12 bytes but dtype F32 shape [2, 2] needs 16"},
    {"size mismatch (dtype)", "{\"t\":" T("F16", "[4]", "[0,16]") "}", 0, 16, "needs 8"},
    {"element count overflow",
     "{\"t\":" T("F32", "[4294967296,4294967296,4294967296]", "[0,0]") "}", 0, 0, "overflows"},
    {"byte size overflow", "{\"t\":" T("F64", "[1125899906842624,8192]", "[0,0]") "}", 0, 0,
     "overflows"},
    {"offsets past the buffer", "{\"t\":" T("F32", "[1]", "[0,4]") "}", 0, 0,
     "past the end of the data buffer"},
    {"last end before buffer end", "{\"t\":" T("F32", "[1]", "[0,4]") "}", 0, 8, "buffer length"},
    {"no tensors, non-empty buffer", "{}", 0, 4, "buffer length"},
    {"duplicate names", "{\"a\":" T("F32", "[1]", "[0,4]") ",\"a\":" T("F32", "[1]", "[4,8]") "}",
     0, 8, "duplicate tensor name"},
    {"unknown key in entry",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"foo\":1}}", 0, 4,
     "unknown key \"foo\""},
    {"duplicate key in entry",
     "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
     "duplicate key"},
    {"entry lacks dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
     "lacks \"dtype\""},
    {"entry not an object", "{\"t\":5}", 0, 0, "entry is not a JSON object"},
};
#define NBAD (sizeof(bad_cases) / sizeof(bad_cases[0]))

START_TEST(test_rule_violation)
{
    const struct bad_case *bc = &bad_cases[_i];
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = raw_image(bc->hdr, bc->hlen ? bc->hlen : strlen(bc->hdr), bc->dlen, &len);
    uint8_t *buf = exact_copy(img, len);
    int rc = st_parse(buf, len, "adapter_model.safetensors", &f, &err);

    ck_assert_msg(rc == LORAD_E_INVALID_ADAPTER, "%s: rc %d (%s)", bc->label, rc, err.msg);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(err.code, LORAD_E_INVALID_ADAPTER);
    ck_assert_msg(!strncmp(err.msg, "adapter_model.safetensors: ", 27),
                  "%s: message does not name the file: %s", bc->label, err.msg);
    ck_assert_msg(strstr(err.msg, bc->needle), "%s: message \"%s\" lacks \"%s\"", bc->label,
                  err.msg, bc->needle);
    free(buf);
    free(img);
}
END_TEST

/* Headers that are odd but valid, as the reference accepts them. */
static const struct bad_case good_cases[] = {
    {"empty object", "{}", 0, 0, NULL},
    {"padding with JSON whitespace", "{}  \n\t\r ", 0, 0, NULL},
    {"leading whitespace", "  \n{}", 0, 0, NULL},
    {"null metadata", "{\"__metadata__\":null}", 0, 0, NULL},
    {"scalar", "{\"s\":" T("F32", "[]", "[0,4]") "}", 0, 4, NULL},
    {"zero-size tensors",
     "{\"z\":" T("F32", "[0,3]",
                 "[0,0]") ",\"a\":" T("I8", "[3]", "[0,3]") ",\"y\":" T("F16", "[0]", "[3,3]") "}",
     0, 3, NULL},
    {"unsorted header, escaped name",
     "{\"b\\u00e9\\n\":" T("F32", "[1]", "[4,8]") ",\"a\":" T("F32", "[1]", "[0,4]") "}", 0, 8,
     NULL},
    {"every dtype",
     "{\"a\":" T("BOOL", "[1]", "[0,1]") ",\"b\":" T("U8", "[1]", "[1,2]") ",\"c\":" T(
         "I8", "[1]",
         "[2,3]") ",\"d\":" T("F8_E5M2", "[1]",
                              "[3,4]") ",\"e\":" T("F8_E4M3", "[1]",
                                                   "[4,5]") ",\"f\":" T("I16", "[1]",
                                                                        "[5,7]") ",\"g\":" T("U16",
                                                                                             "[1]", "[7,9]") ",\"h\":" T("F16", "[1]", "[9,11]") ",\"i\":" T("BF16", "[1]", "[11,13]") ",\"j\":" T("I32", "[1]", "[13,17]") ",\"k\":" T("U32", "[1]", "[17,21]") ",\"l\":" T("F32", "[1]", "[21,25]") ",\"m\":" T("I64", "[1]", "[25,33]") ",\"n\":" T("U64",
                                                                                                                                                                                                                                                                                                                                                       "[1]", "[33,41]") ",\"o\":" T("F64",
                                                                                                                                                                                                                                                                                                                                                                                     "[1]",
                                                                                                                                                                                                                                                                                                                                                                                     "[41,49]") "}",
     0, 49, NULL},
};
#define NGOOD (sizeof(good_cases) / sizeof(good_cases[0]))

START_TEST(test_valid_odd_headers)
{
    const struct bad_case *gc = &good_cases[_i];
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = raw_image(gc->hdr, strlen(gc->hdr), gc->dlen, &len);
    uint8_t *buf = exact_copy(img, len);
    int rc = st_parse(buf, len, "odd", &f, &err);

    ck_assert_msg(rc == 0, "%s: rc %d (%s)", gc->label, rc, err.msg);
    if (!strcmp(gc->label, "unsorted header, escaped name")) {
        ck_assert_str_eq(st_get(f, 0)->name, "a");
        ck_assert_str_eq(st_get(f, 1)->name, "b\xc3\xa9\n");
        ck_assert_ptr_eq(st_find(f, "b\xc3\xa9\n"), st_get(f, 1));
    }
    if (!strcmp(gc->label, "scalar")) {
        ck_assert_int_eq(st_get(f, 0)->ndim, 0);
        ck_assert_uint_eq(st_get(f, 0)->nelems, 1);
    }
    if (!strcmp(gc->label, "every dtype")) {
        ck_assert_uint_eq(st_count(f), ST_DTYPE_COUNT);
        for (size_t i = 0; i < ST_DTYPE_COUNT; i++) {
            const struct st_tensor *t = st_get(f, i);
            ck_assert_int_eq(t->dtype, (int)i);
            ck_assert_uint_eq(t->nbytes, st_dtype_size(t->dtype));
        }
    }
    if (!strcmp(gc->label, "null metadata"))
        ck_assert_ptr_null(st_metadata(f, "format"));
    st_close(&f);
    free(buf);
    free(img);
}
END_TEST

START_TEST(test_frame_rules)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    uint8_t b[16] = {0};

    /* empty and too short for the length field */
    ck_assert_int_eq(st_parse(b, 0, "f", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "empty"));
    uint8_t *seven = exact_copy(b, 7);
    ck_assert_int_eq(st_parse(seven, 7, "f", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "shorter than the 8-byte header length"));
    free(seven);
    /* header length above the limit, even when the file were long enough */
    const uint64_t ns[] = {100000001ull, 1ull << 40, UINT64_MAX};
    for (size_t k = 0; k < 3; k++) {
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(ns[k] >> (8 * i));
        uint8_t *buf = exact_copy(b, 16);
        ck_assert_int_eq(st_parse(buf, 16, "f", &f, &err), LORAD_E_INVALID_ADAPTER);
        ck_assert_msg(strstr(err.msg, "exceeds the limit"), "%s", err.msg);
        free(buf);
    }
    /* within the limit but past the end of the file */
    const uint64_t ms[] = {9, 100, 100000000ull};
    for (size_t k = 0; k < 3; k++) {
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(ms[k] >> (8 * i));
        uint8_t *buf = exact_copy(b, 16);
        ck_assert_int_eq(st_parse(buf, 16, "f", &f, &err), LORAD_E_INVALID_ADAPTER);
        ck_assert_msg(strstr(err.msg, "runs past the end of the file"), "%s", err.msg);
        free(buf);
    }
    /* header length 0: an empty header is not a JSON object */
    memset(b, 0, 8);
    uint8_t *buf = exact_copy(b, 8);
    ck_assert_int_eq(st_parse(buf, 8, "f", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a JSON object"));
    free(buf);
    ck_assert_ptr_null(f);
}
END_TEST

/* Nesting deeper than cJSON's limit is an error, not a stack overflow. */
START_TEST(test_deep_nesting)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t depth = 100000, hl = 2 * depth + 20, len;
    char *h = malloc(hl + 1);
    size_t p = 0;

    ck_assert_ptr_nonnull(h);
    p += (size_t)sprintf(h, "{\"t\":");
    for (size_t i = 0; i < depth; i++)
        h[p++] = '[';
    for (size_t i = 0; i < depth; i++)
        h[p++] = ']';
    h[p++] = '}';
    uint8_t *img = raw_image(h, p, 0, &len);
    ck_assert_int_eq(st_parse(img, len, "deep", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "not valid JSON"));
    free(img);
    free(h);
}
END_TEST

/* ---- robustness ---- */

START_TEST(test_every_truncation)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = three_tensor_image(&len);

    ck_assert_int_eq(st_parse(img, len, "full", &f, &err), 0);
    st_close(&f);
    for (size_t l = 0; l < len; l++) {
        uint8_t *buf = exact_copy(img, l);
        int rc = st_parse(buf, l, "cut", &f, &err);
        ck_assert_msg(rc == LORAD_E_INVALID_ADAPTER, "prefix of %zu bytes: rc %d", l, rc);
        ck_assert_ptr_null(f);
        free(buf);
    }
    free(img);
}
END_TEST

/* A parse that succeeded must describe tensors inside the buffer, each as
 * long as its dtype and shape say; touch every byte (ASan checks). */
static void check_accepted(const struct st_file *f, const uint8_t *buf, size_t len)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < st_count(f); i++) {
        const struct st_tensor *t = st_get(f, i);
        uint64_t ne = 1;
        ck_assert(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        for (int d = 0; d < t->ndim; d++)
            ne *= t->shape[d];
        ck_assert_uint_eq(ne, t->nelems);
        ck_assert_uint_eq(t->nbytes, ne * st_dtype_size(t->dtype));
        ck_assert(t->data >= buf && t->nbytes <= len &&
                  t->data - buf <= (ptrdiff_t)(len - t->nbytes));
        for (size_t k = 0; k < t->nbytes; k++)
            sum += t->data[k];
        ck_assert_ptr_eq(st_find(f, t->name), t);
        if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) {
            float *out = malloc(t->nelems * sizeof(float) + 1);
            ck_assert_ptr_nonnull(out);
            ck_assert_int_eq(st_to_f32(t, out, NULL), 0);
            free(out);
        }
    }
    (void)sum;
}

START_TEST(test_random_corruption)
{
    static const char interesting[] = "\"{}[],:0123456789 -.eE\\uX\x00\x80\xff";
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    uint64_t seed = 0x5eed + (uint64_t)_i;
    size_t len, accepted = 0;
    uint8_t *img = three_tensor_image(&len);
    size_t hend = 8 + (size_t)img[0] + ((size_t)img[1] << 8);

    for (int iter = 0; iter < 1500; iter++) {
        uint8_t *buf = exact_copy(img, len);
        int nmut = 1 + (int)(tu_rand(&seed) % 4);
        for (int m = 0; m < nmut; m++) {
            size_t at = (size_t)(tu_rand(&seed) % hend);
            switch (tu_rand(&seed) % 3) {
            case 0:
                buf[at] ^= (uint8_t)(1u << (tu_rand(&seed) % 8));
                break;
            case 1:
                buf[at] = (uint8_t)tu_rand(&seed);
                break;
            default:
                buf[at] = (uint8_t)interesting[tu_rand(&seed) % (sizeof(interesting) - 1)];
            }
        }
        int rc = st_parse(buf, len, "fuzz", &f, &err);
        if (rc == 0) {
            accepted++;
            check_accepted(f, buf, len);
            st_close(&f);
        } else {
            ck_assert_msg(rc == LORAD_E_INVALID_ADAPTER, "rc %d: %s", rc, err.msg);
            ck_assert_ptr_null(f);
        }
        free(buf);
    }
    ck_assert_uint_lt(accepted, 1500); /* the mutations do hit */
    free(img);
}
END_TEST

/* ---- files ---- */

START_TEST(test_real_peft_file)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    int rc;

    if (access(PEFT_FILE, R_OK) != 0)
        ck_abort_msg("test data missing: %s (tests run from the repository root)", PEFT_FILE);
    rc = st_open(PEFT_FILE, &f, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    /* 29 header entries: __metadata__ and 28 tensors, i.e. lora_A and lora_B
     * of q_lin and v_lin in 6 layers (24) plus weight and bias of
     * pre_classifier and classifier (testdata/README.md) */
    ck_assert_uint_eq(st_count(f), 6 * 2 * 2 + 2 * 2);
    static const char *const layers[] = {"q_lin", "v_lin"}, *const ab[] = {"A", "B"};
    char name[160];
    for (int l = 0; l < 6; l++)
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 2; k++) {
                snprintf(name, sizeof(name),
                         "base_model.model.distilbert.transformer.layer.%d.attention.%s.lora_%s."
                         "weight",
                         l, layers[m], ab[k]);
                const struct st_tensor *t = st_find(f, name);
                ck_assert_msg(t, "missing %s", name);
                ck_assert_uint_eq(t->shape[0], k ? 768 : 8);
                ck_assert_uint_eq(t->shape[1], k ? 8 : 768);
            }
    ck_assert_ptr_nonnull(st_find(f, "base_model.model.pre_classifier.weight"));
    ck_assert_ptr_nonnull(st_find(f, "base_model.model.pre_classifier.bias"));
    ck_assert_uint_eq(st_find(f, "base_model.model.classifier.weight")->shape[0], 2);
    ck_assert_uint_eq(st_find(f, "base_model.model.classifier.bias")->nelems, 2);
    ck_assert_str_eq(st_metadata(f, "format"), "pt");
    const uint8_t *prev_end = NULL;
    size_t img_len;
    const uint8_t *img = st_image(f, &img_len);
    for (size_t i = 0; i < st_count(f); i++) {
        const struct st_tensor *t = st_get(f, i);
        ck_assert_int_eq(t->dtype, ST_F32);
        ck_assert_ptr_eq(st_find(f, t->name), t);
        if (prev_end)
            ck_assert_ptr_eq(t->data, prev_end); /* offset order, contiguous */
        prev_end = t->data + t->nbytes;
    }
    ck_assert_ptr_eq(prev_end, img + img_len);
    const struct st_tensor *a =
        st_find(f, "base_model.model.distilbert.transformer.layer.0.attention.q_lin.lora_A.weight");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->ndim, 2);
    ck_assert_uint_eq(a->shape[0], 8);
    ck_assert_uint_eq(a->shape[1], 768);
    float *v = malloc(a->nelems * sizeof(float));
    ck_assert_int_eq(st_to_f32(a, v, &err), 0);
    for (size_t i = 0; i < a->nelems; i++)
        ck_assert(isfinite(v[i]));
    free(v);
    st_close(&f);
}
END_TEST

START_TEST(test_open_errors)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    char *dir = tu_mkdtemp();
    char *good = tu_path(dir, "good.safetensors"), *empty = tu_path(dir, "empty.safetensors");
    char *fifo = tu_path(dir, "fifo"), *link = tu_path(dir, "link");
    size_t len;
    uint8_t *img = three_tensor_image(&len);
    int dfd;

    tu_write_file(good, img, len);
    tu_write_file(empty, "", 0);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(symlink("good.safetensors", link), 0);
    ck_assert_int_ge(dfd = open(dir, O_RDONLY | O_DIRECTORY), 0);

    ck_assert_int_eq(st_open_at(dfd, "nope", "adapter_model.safetensors", 1, &f, &err),
                     LORAD_E_ADAPTER_NOT_FOUND);
    ck_assert_str_eq(err.msg, "adapter_model.safetensors: no such file");
    ck_assert_int_eq(st_open_at(dfd, "good.safetensors/x", NULL, 1, &f, &err),
                     LORAD_E_ADAPTER_NOT_FOUND);
    ck_assert_int_eq(st_open_at(dfd, ".", "dir", 1, &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
    ck_assert_int_eq(st_open_at(dfd, "fifo", "fifo", 1, &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
    ck_assert_int_eq(st_open_at(dfd, "empty.safetensors", NULL, 1, &f, &err),
                     LORAD_E_INVALID_ADAPTER);
    ck_assert_str_eq(err.msg, "empty.safetensors: file is empty (a safetensors file starts with "
                              "an 8-byte header length)");
    ck_assert_int_eq(st_open_at(dfd, "link", "link", 1, &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "symbolic link"));
    ck_assert_ptr_null(f);
    /* following the link when allowed, and the plain path */
    ck_assert_int_eq(st_open_at(dfd, "link", "link", 0, &f, &err), 0);
    ck_assert_uint_eq(st_count(f), 3);
    st_close(&f);
    ck_assert_int_eq(st_open(good, &f, &err), 0);
    size_t n;
    ck_assert_int_eq(memcmp(st_image(f, &n), img, len), 0);
    ck_assert_uint_eq(n, len);
    st_close(&f);
    close(dfd);
    free(img);
    free(good);
    free(empty);
    free(fifo);
    free(link);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_unsupported_dtype_and_names)
{
    static const double v[2] = {1, 2};
    struct tu_tensor t[2] = {{"ints", "I32", 1, {2}, v}, {"dbl", "F64", 1, {2}, v}};
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    size_t len;
    uint8_t *img = tu_safetensors_image(t, 2, "{\"format\":\"pt\",\"k\":\"v\"}", &len);
    float out[2];

    ck_assert_int_eq(st_parse(img, len, "x", &f, &err), 0);
    ck_assert_str_eq(st_metadata(f, "k"), "v");
    ck_assert_ptr_null(st_metadata(f, "missing"));
    ck_assert_int_eq(st_to_f32(st_find(f, "ints"), out, &err), LORAD_E_UNSUPPORTED_DTYPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"ints\""));
    ck_assert_ptr_nonnull(strstr(err.msg, "I32"));
    ck_assert_int_eq(st_to_f32(st_find(f, "dbl"), out, &err), LORAD_E_UNSUPPORTED_DTYPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "F64"));
    st_close(&f);
    free(img);

    static const char *names[ST_DTYPE_COUNT] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
                                                "I16",  "U16", "F16", "BF16",    "I32",
                                                "U32",  "F32", "I64", "U64",     "F64"};
    static const size_t sizes[ST_DTYPE_COUNT] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        ck_assert_str_eq(st_dtype_name((enum st_dtype)d), names[d]);
        ck_assert_uint_eq(st_dtype_size((enum st_dtype)d), sizes[d]);
    }
    ck_assert_uint_eq(st_dtype_size(ST_DTYPE_COUNT), 0);
}
END_TEST

/* Long or hostile names are quoted shortened and without control
 * characters or quotes, so a message stays one readable line. */
START_TEST(test_message_quotes_names_safely)
{
    struct lorad_error err = {0};
    struct st_file *f = NULL;
    char hdr[1024];
    size_t len;
    char longname[301];

    memset(longname, 'n', 300);
    longname[300] = '\0';
    snprintf(hdr, sizeof(hdr), "{\"%s\\n\\\"x\":" T("F32", "[3]", "[0,4]") "}", longname);
    uint8_t *img = raw_image(hdr, strlen(hdr), 4, &len);
    ck_assert_int_eq(st_parse(img, len, "q", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_ptr_nonnull(strstr(err.msg, "nnn...\""));
    ck_assert_ptr_null(strchr(err.msg, '\n'));
    ck_assert_ptr_nonnull(strstr(err.msg, "needs 12"));
    free(img);
    snprintf(hdr, sizeof(hdr), "{\"a\\n\\\"b\":" T("F32", "[3]", "[0,4]") "}");
    img = raw_image(hdr, strlen(hdr), 4, &len);
    ck_assert_int_eq(st_parse(img, len, "q", &f, &err), LORAD_E_INVALID_ADAPTER);
    ck_assert_msg(strstr(err.msg, "tensor \"a??b\""), "%s", err.msg);
    free(img);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_specials);
    tcase_add_test(tc, test_exhaustive_f16);
    tcase_add_test(tc, test_exhaustive_bf16);
    tcase_add_loop_test(tc, test_rule_violation, 0, (int)NBAD);
    tcase_add_loop_test(tc, test_valid_odd_headers, 0, (int)NGOOD);
    tcase_add_test(tc, test_frame_rules);
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_every_truncation);
    tcase_add_loop_test(tc, test_random_corruption, 0, 4);
    tcase_add_test(tc, test_real_peft_file);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_unsupported_dtype_and_names);
    tcase_add_test(tc, test_message_quotes_names_safely);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(safetensors_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
