/* lorad — tests/test_inferbody.c: unit tests of lib/inferbody.c (SPEC.md 6
 * data plane): every refusal of a JSON or binary /infer body with its
 * exact message; accepted numbers against strtod (an independent
 * conversion); the f32 printer against printf("%.9g") and the round trip
 * through strtof over random bit patterns, subnormals, powers of ten and
 * their neighbours, exact and near decimal ties; the answer writers; the
 * row estimate.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/inferbody.h"
#include "testutil.h"

#define W 3    /* the model's width in these tests */
#define MAXR 4 /* max_rows_per_request */

static int parse(const char *body, struct inferbody_req *q, struct lorad_error *err)
{
    memset(err, 0, sizeof(*err));
    return inferbody_parse_json(body, strlen(body), W, MAXR, q, err);
}

/* ---- refusals ---- */

struct bad {
    const char *body;
    const char *msg; /* the whole message */
};

static const struct bad bad_json[] = {
    {"", "empty body: send {\"input\": [...]} or {\"inputs\": [[...], ...]}"},
    {" \n\t ", "empty body: send {\"input\": [...]} or {\"inputs\": [[...], ...]}"},
    {"[1,2,3]", "the body must be a JSON object, not an array"},
    {"null", "the body must be a JSON object, not null"},
    {"\"x\"", "the body must be a JSON object, not a string"},
    {"7", "the body must be a JSON object, not a number"},
    {"{}", "missing \"input\" (one row) or \"inputs\" (rows)"},
    {"{\"route_key\":\"k\"}", "missing \"input\" (one row) or \"inputs\" (rows)"},
    {"{\"input\":[1,2,3]} x", "trailing garbage at byte 18 after the JSON object"},
    {"{\"input\":[1,2,3]}{}", "trailing garbage at byte 17 after the JSON object"},
    {"{\"input\":[1,2,3]", "malformed JSON at byte 16: expected ',' or '}' in object"},
    {"{\"input\":[1,2", "malformed JSON at byte 13: expected ',' or ']' in array"},
    {"{\"input\":[1,,2]}", "malformed JSON at byte 12: expected a number"},
    {"{\"input\":[1 2 3]}", "malformed JSON at byte 12: expected ',' or ']' in array"},
    {"{input:[1,2,3]}", "malformed JSON at byte 1: expected a key string"},
    {"{\"input\" [1,2,3]}", "malformed JSON at byte 9: expected ':' after key"},
    {"{\"input\":", "malformed JSON at byte 9: expected a value"},
    {"{\"input\":[1,2,3],}", "malformed JSON at byte 17: expected a key string"},
    {"{\"input", "malformed JSON at byte 2: unterminated string"},
    {"{\"in\\x\":1}", "malformed JSON at byte 5: bad escape in string"},
    {"{\"in\\u00\":1}", "malformed JSON at byte 6: bad \\u escape"},
    {"{\"a\\u12", "malformed JSON at byte 2: unterminated string"},
    {"{\"\\ud800\":1}", "malformed JSON at byte 8: lone surrogate in \\u escape"},
    {"{\"\\udc00\":1}", "malformed JSON at byte 8: lone surrogate in \\u escape"},
    {"{\"\\ud800\\u0041\":1}", "malformed JSON at byte 14: bad surrogate pair"},
    {"{\"a\tb\":1}", "malformed JSON at byte 3: control character in string"},
    {"{\"a\xff\":1}", "malformed JSON at byte 3: invalid UTF-8 in string"},
    {"{\"a\xc0\xaf\":1}", "malformed JSON at byte 3: invalid UTF-8 in string"},
    {"{\"a\xed\xa0\x80\":1}", "malformed JSON at byte 3: invalid UTF-8 in string"},
    {"{\"x\":1}", "unknown key \"x\" (allowed: input, inputs, route_key, variant, slot)"},
    {"{\"input\":[1,2,3],\"input\":[1,2,3]}", "duplicate key \"input\""},
    {"{\"variant\":\"stable\",\"variant\":\"stable\",\"input\":[1,2,3]}",
     "duplicate key \"variant\""},
    {"{\"input\":[1,2,3],\"inputs\":[[1,2,3]]}", "give either \"input\" or \"inputs\", not both"},
    {"{\"input\":\"abc\"}", "\"input\" must be an array of numbers, not a string"},
    {"{\"input\":true}", "\"input\" must be an array of numbers, not a boolean"},
    {"{\"input\":{}}", "\"input\" must be an array of numbers, not an object"},
    {"{\"input\":5}", "\"input\" must be an array of numbers, not a number"},
    {"{\"inputs\":null}", "\"inputs\" must be an array of rows, not null"},
    {"{\"inputs\":[]}", "\"inputs\" has zero rows"},
    {"{\"inputs\":[1,2,3]}", "inputs: row 0 is not an array of numbers"},
    {"{\"inputs\":[[1,2,3],4]}", "inputs: row 1 is not an array of numbers"},
    {"{\"inputs\":[[1,2,3] [1,2,3]]}",
     "malformed JSON at byte 19: expected ',' or ']' in \"inputs\""},
    {"{\"input\":[]}", "input: row 0 has 0 values, expected 3 (the model's in_features)"},
    {"{\"input\":[1,2]}", "input: row 0 has 2 values, expected 3 (the model's in_features)"},
    {"{\"input\":[1,2,3,4]}", "input: row 0 has more than the 3 values the model takes"},
    {"{\"inputs\":[[1,2,3],[1,2]]}",
     "inputs: row 1 has 2 values, expected 3 (the model's in_features)"},
    {"{\"inputs\":[[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3]]}",
     "inputs: more than max_rows_per_request (4) rows"},
    {"{\"input\":[1,\"x\",3]}", "input: value 1 of row 0 is not a number"},
    {"{\"inputs\":[[1,2,null]]}", "inputs: value 2 of row 0 is not a number"},
    {"{\"input\":[[1],2,3]}", "input: value 0 of row 0 is not a number"},
    {"{\"input\":[1,2,NaN]}", "malformed JSON at byte 14: expected a number"},
    {"{\"input\":[1,2,Infinity]}", "malformed JSON at byte 14: expected a number"},
    {"{\"input\":[1,2,-]}", "malformed JSON at byte 14: expected a number"},
    {"{\"input\":[1,2,+1]}", "malformed JSON at byte 14: expected a number"},
    {"{\"input\":[1,2,.5]}", "malformed JSON at byte 14: expected a number"},
    {"{\"input\":[1,2,5.]}", "malformed JSON at byte 16: bad number"},
    {"{\"input\":[1,2,5.x]}", "malformed JSON at byte 16: bad number"},
    {"{\"input\":[1,2,1e]}", "malformed JSON at byte 16: bad number"},
    {"{\"input\":[1,2,1.5e+]}", "malformed JSON at byte 19: bad number"},
    {"{\"input\":[1,2,-0.5E-x]}", "malformed JSON at byte 20: bad number"},
    {"{\"input\":[1,2,05]}", "malformed JSON at byte 15: expected ',' or ']' in array"},
    {"{\"input\":[1,2,1e39]}", "input: value 2 of row 0 (1e39) is outside the f32 range"},
    {"{\"input\":[-3.5e38,2,3]}", "input: value 0 of row 0 (-3.5e38) is outside the f32 range"},
    {"{\"inputs\":[[1,2,3],[1,1e999,3]]}",
     "inputs: value 1 of row 1 (1e999) is outside the f32 range"},
    {"{\"input\":[1,2,3],\"route_key\":5}", "\"route_key\" must be a string, not a number"},
    {"{\"input\":[1,2,3],\"variant\":[]}", "\"variant\" must be a string, not an array"},
    {"{\"input\":[1,2,3],\"variant\":\"Stable\"}",
     "\"variant\" must be \"stable\" or \"canary\", not \"Stable\""},
};

START_TEST(test_json_refusals)
{
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        struct inferbody_req q = {0};
        struct lorad_error err;
        int rc = parse(bad_json[i].body, &q, &err);
        ck_assert_msg(rc == LORAD_E_INVALID_REQUEST && err.code == rc,
                      "body %s: rc %d (%s), want invalid_request", bad_json[i].body, rc, err.msg);
        ck_assert_msg(strcmp(err.msg, bad_json[i].msg) == 0, "body %s:\n  got  %s\n  want %s",
                      bad_json[i].body, err.msg, bad_json[i].msg);
        ck_assert_ptr_null(q.x);
        ck_assert_ptr_null(q.route_key);
    }
}
END_TEST

/* Messages that depend on lengths: long strings and numbers. */
START_TEST(test_json_length_limits)
{
    size_t n = INFERBODY_ROUTE_KEY_MAX + 1, i;
    char *body = malloc(n + 64), want[128];
    struct inferbody_req q = {0};
    struct lorad_error err;

    strcpy(body, "{\"input\":[1,2,3],\"route_key\":\"");
    for (i = 0; i < n; i++)
        strcat(body, "k");
    strcat(body, "\"}");
    ck_assert_int_eq(parse(body, &q, &err), LORAD_E_INVALID_REQUEST);
    snprintf(want, sizeof(want), "string at byte 30 is longer than %d bytes",
             INFERBODY_ROUTE_KEY_MAX);
    ck_assert_str_eq(err.msg, want);
    /* exactly the limit is fine */
    body[30 + INFERBODY_ROUTE_KEY_MAX] = '"';
    body[31 + INFERBODY_ROUTE_KEY_MAX] = '}';
    body[32 + INFERBODY_ROUTE_KEY_MAX] = '\0';
    ck_assert_int_eq(parse(body, &q, &err), 0);
    ck_assert_uint_eq(q.route_key_len, INFERBODY_ROUTE_KEY_MAX);
    inferbody_req_free(&q);
    free(body);
    /* a key longer than 256 bytes */
    body = malloc(400);
    strcpy(body, "{\"");
    for (i = 0; i < 257; i++)
        strcat(body, "a");
    strcat(body, "\":1}");
    ck_assert_int_eq(parse(body, &q, &err), LORAD_E_INVALID_REQUEST);
    ck_assert_str_eq(err.msg, "string at byte 2 is longer than 256 bytes");
    free(body);
    /* a number of 600 digits that decimal_fast_parse declines */
    body = malloc(700);
    strcpy(body, "{\"input\":[1,2,0.");
    for (i = 0; i < 600; i++)
        strcat(body, "1");
    strcat(body, "]}");
    ck_assert_int_eq(parse(body, &q, &err), LORAD_E_INVALID_REQUEST);
    ck_assert_str_eq(err.msg, "input: value 2 of row 0 is a number longer than 511 characters");
    free(body);
}
END_TEST

static const char *describe(struct inferbody_req *q, struct lorad_error *err, const void *b,
                            size_t len)
{
    memset(err, 0, sizeof(*err));
    inferbody_parse_binary(b, len, W, MAXR, q, err);
    return err->msg;
}

START_TEST(test_binary)
{
    float rows[5 * W];
    unsigned char le[sizeof(rows)];
    struct inferbody_req q = {0};
    struct lorad_error err;
    uint64_t seed = 7;

    for (size_t i = 0; i < 5 * W; i++)
        rows[i] = (float)tu_uniform(&seed, -100, 100);
    /* little-endian bytes written independently of the host */
    for (size_t i = 0; i < 5 * W; i++) {
        uint32_t u;
        memcpy(&u, &rows[i], 4);
        for (int k = 0; k < 4; k++)
            le[4 * i + (size_t)k] = (unsigned char)(u >> (8 * k));
    }
    ck_assert_int_eq(inferbody_parse_binary(le, 2 * W * 4, W, MAXR, &q, &err), 0);
    ck_assert_int_eq(q.rows, 2);
    ck_assert_int_eq(q.pin, INFERBODY_PIN_NONE);
    ck_assert(!q.multi_rows && !q.route_key);
    ck_assert_mem_eq(q.x, rows, 2 * W * sizeof(float));
    inferbody_req_free(&q);
    ck_assert_ptr_null(q.x);

    ck_assert_str_eq(describe(&q, &err, le, 0),
                     "binary body of 0 bytes is not a positive multiple of one row "
                     "(3 f32 = 12 bytes)");
    ck_assert_str_eq(describe(&q, &err, le, 13),
                     "binary body of 13 bytes is not a positive multiple of one row "
                     "(3 f32 = 12 bytes)");
    ck_assert_str_eq(describe(&q, &err, le, 5 * W * 4), "5 rows exceed max_rows_per_request (4)");
    ck_assert_int_eq(err.code, LORAD_E_INVALID_REQUEST);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 3; k++) {
        unsigned char b[2 * W * 4];
        uint32_t u;
        memcpy(b, le, sizeof(b));
        memcpy(&u, &bad[k], 4);
        for (int i = 0; i < 4; i++)
            b[4 * 4 + i] = (unsigned char)(u >> (8 * i)); /* row 1, value 1 */
        ck_assert_str_eq(describe(&q, &err, b, sizeof(b)), "value 1 of row 1 is not finite");
        ck_assert_ptr_null(q.x);
    }
}
END_TEST

/* ---- accepted bodies ---- */

START_TEST(test_json_accepts)
{
    struct inferbody_req q = {0};
    struct lorad_error err;

    ck_assert_int_eq(parse(" {\"input\" : [ 1 , -2.5e-1 , 3E2 ] } \n", &q, &err), 0);
    ck_assert_int_eq(q.rows, 1);
    ck_assert(!q.multi_rows);
    ck_assert(q.x[0] == 1.0f && q.x[1] == -0.25f && q.x[2] == 300.0f);
    ck_assert_int_eq(q.pin, INFERBODY_PIN_NONE);
    ck_assert_ptr_null(q.route_key);
    inferbody_req_free(&q);

    ck_assert_int_eq(parse("{\"variant\":\"canary\",\"route_key\":\"us\\u00e9r\\ud83d\\ude00\\n\","
                           "\"inputs\":[[1,2,3],[4,5,6],[7,8,9],[0,-0,0]]}",
                           &q, &err),
                     0);
    ck_assert_int_eq(q.rows, 4);
    ck_assert(q.multi_rows);
    ck_assert_int_eq(q.pin, SERVING_CANARY);
    ck_assert_str_eq(q.route_key, "us\xc3\xa9r\xf0\x9f\x98\x80\n");
    ck_assert_uint_eq(q.route_key_len, strlen("us\xc3\xa9r\xf0\x9f\x98\x80\n"));
    ck_assert(q.x[8] == 9.0f && signbit(q.x[10]) && q.x[10] == 0);
    inferbody_req_free(&q);

    ck_assert_int_eq(
        parse("{\"input\":[1,2,3],\"variant\":\"stable\",\"route_key\":\"\"}", &q, &err), 0);
    ck_assert_int_eq(q.pin, SERVING_STABLE);
    ck_assert_uint_eq(q.route_key_len, 0);
    ck_assert_ptr_null(q.slot);
    inferbody_req_free(&q);

    /* "slot": any string here (batch.c checks the name rule) */
    ck_assert_int_eq(parse("{\"slot\":\"team-a\",\"input\":[1,2,3]}", &q, &err), 0);
    ck_assert_str_eq(q.slot, "team-a");
    ck_assert_uint_eq(q.slot_len, 6);
    inferbody_req_free(&q);
    ck_assert_int_ne(parse("{\"slot\":1,\"input\":[1,2,3]}", &q, &err), 0);
    ck_assert(strstr(err.msg, "\"slot\" must be a string"));
    ck_assert_int_ne(parse("{\"slot\":\"a\",\"slot\":\"b\",\"input\":[1,2,3]}", &q, &err), 0);
    ck_assert(strstr(err.msg, "duplicate key \"slot\""));
}
END_TEST

/* Every accepted number is (float)strtod(text): random decimals in many
 * notations, long mantissas, the f32 range's edges, subnormal decimals. */
START_TEST(test_numbers_against_strtod)
{
    static const char *const fixed[] = {
        "0",
        "-0",
        "1",
        "0.1",
        "3.4028234e38",
        "-3.4028234e38",
        "3.40282346638528859e38",
        "1.17549435e-38",
        "1.4e-45",
        "7e-46",
        "1e-50",
        "123456789012345678901234567890",
        "0.000000000000000000000000000000000000000000001401298464324817",
        "9007199254740993",
        "2.5e-310",
        "1E+2",
        "-1e-0"};
    uint64_t seed = 99;
    char num[3][96], body[400];
    int checked = 0;

    for (int it = 0; it < 20000; it++) {
        for (int k = 0; k < 3; k++) {
            if (it < (int)(sizeof(fixed) / sizeof(fixed[0])) && k == 0) {
                snprintf(num[k], sizeof(num[k]), "%s", fixed[it]);
                continue;
            }
            double mant = tu_uniform(&seed, -10, 10);
            int e = (int)tu_uniform(&seed, -46, 39);
            switch (tu_rand(&seed) % 4) {
            case 0:
                snprintf(num[k], sizeof(num[k]), "%.17g", mant * pow(10, e));
                break;
            case 1:
                snprintf(num[k], sizeof(num[k]), "%.9e", mant * pow(10, e));
                break;
            case 2:
                snprintf(num[k], sizeof(num[k]), "%.25fe%d", mant, e);
                break;
            default:
                snprintf(num[k], sizeof(num[k]), "%.6f", mant * 1000);
            }
        }
        snprintf(body, sizeof(body), "{\"input\":[%s,%s,%s]}", num[0], num[1], num[2]);
        struct inferbody_req q = {0};
        struct lorad_error err;
        bool in_range = true;
        for (int k = 0; k < 3; k++)
            in_range = in_range && fabs(strtod(num[k], NULL)) <= FLT_MAX;
        int rc = parse(body, &q, &err);
        if (!in_range) {
            ck_assert_msg(rc == LORAD_E_INVALID_REQUEST && strstr(err.msg, "outside the f32"),
                          "%s: %s", body, err.msg);
            continue;
        }
        ck_assert_msg(rc == 0, "%s: %s", body, err.msg);
        for (int k = 0; k < 3; k++) {
            float want = (float)strtod(num[k], NULL);
            ck_assert_msg(memcmp(&q.x[k], &want, 4) == 0, "%s: got %.9g, strtod says %.9g", num[k],
                          q.x[k], want);
        }
        inferbody_req_free(&q);
        checked++;
    }
    ck_assert_int_gt(checked, 15000);
}
END_TEST

/* ---- the printer ---- */

static void check_print(float f)
{
    char got[INFERBODY_F32_MAX + 1], want[64], *end;
    char *e = inferbody_put_f32(got, f);
    ck_assert_int_le(e - got, INFERBODY_F32_MAX);
    *e = '\0';
    snprintf(want, sizeof(want), "%.9g", (double)f);
    ck_assert_msg(strcmp(got, want) == 0, "f32 %a: printed %s, printf says %s", (double)f, got,
                  want);
    float back = strtof(got, &end);
    ck_assert_msg(*end == '\0' && memcmp(&back, &f, 4) == 0, "%s reads back as %a, not %a", got,
                  (double)back, (double)f);
}

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(test_printer_random_bits)
{
    uint64_t seed = 12345;
    for (int i = 0; i < 1000000; i++) {
        float f = f32_of((uint32_t)tu_rand(&seed));
        if (isfinite(f))
            check_print(f);
    }
}
END_TEST

START_TEST(test_printer_special_values)
{
    check_print(0.0f);
    check_print(-0.0f);
    check_print(FLT_MAX);
    check_print(-FLT_MAX);
    check_print(FLT_MIN);
    check_print(FLT_TRUE_MIN);
    check_print(-FLT_TRUE_MIN);
    /* subnormals: a stride through all of them, and the first thousand */
    for (uint32_t u = 1; u < 0x800000; u += (u < 1000 ? 1 : 97))
        check_print(f32_of(u));
    /* powers of ten and their neighbours, both signs */
    for (int e = -45; e <= 38; e++) {
        char s[16];
        snprintf(s, sizeof(s), "1e%d", e);
        float p = strtof(s, NULL);
        for (float f = p, k = 0; k < 3; k++, f = nextafterf(f, 0))
            check_print(f), check_print(-f);
        for (float f = p, k = 0; k < 3; k++, f = nextafterf(f, INFINITY))
            check_print(f);
    }
    /* near ties the printer of old lorad/infer.c got wrong (its product
     * rounded in double to the other side of the tie) */
    static const char *const near[] = {"-4.75626235e+32", "-7.23779053e+29", "9.17142085e-10",
                                       "9.90199471e-27", "2.19012271e+35"};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++)
        check_print(strtof(near[i], NULL));
    /* integers and halves around the 9-digit limit */
    for (int i = 0; i < 2000; i++) {
        check_print((float)(999999000 + i));
        check_print((float)(99999900 + i) + 0.5f);
        check_print((float)(100000000 - i));
    }
}
END_TEST

/* Decimal ties at the tenth digit (xxxxxxxxx5 exactly) must round as
 * printf does (to even), and values a hair off a tie the other way. */
START_TEST(test_printer_ties)
{
    int ties = 0;
    /* m / 1024 in [0.1, 1): ten significant digits ending in 5 for odd m */
    for (int m = 103; m < 1024; m++)
        check_print((float)m / 1024.0f), ties++;
    /* [2^20, 2^21) in steps of 1/8: 1048576.125 and the like */
    for (uint32_t i = 0; i < 200000; i++)
        check_print(1048576.0f + (float)i * 0.125f), ties++;
    /* [2^17, 2^18) in steps of 1/64 */
    for (uint32_t i = 0; i < 100000; i++)
        check_print(131072.0f + (float)i * 0.015625f);
    /* near ties: scan f32 neighbours of x.5 at the ninth digit */
    uint64_t seed = 3;
    for (int i = 0; i < 200000; i++) {
        double d = floor(tu_uniform(&seed, 1e8, 1e9)) + 0.5;
        int e = (int)tu_uniform(&seed, -40, 30);
        float f = (float)(d * pow(10, e));
        if (isfinite(f) && f != 0) {
            check_print(f);
            check_print(nextafterf(f, 0));
            check_print(nextafterf(f, INFINITY));
        }
    }
    ck_assert_int_gt(ties, 0);
}
END_TEST

/* ---- the answers ---- */

START_TEST(test_write_json)
{
    const float y[] = {1.5f, -0.0f, 3e-7f, NAN, 2.0f, INFINITY, 7, 8, 9};
    struct inferbody_answer a = {y, 1, 3, false, NULL, 0, SERVING_STABLE, NULL};
    char *b;
    size_t len;
    int nf;

    ck_assert_int_eq(inferbody_write_json(&a, &b, &len, &nf), 0);
    ck_assert_str_eq(b, "{\"output\":[1.5,-0,3.00000011e-07],\"adapter\":null,\"version\":0,"
                        "\"variant\":\"stable\",\"slot\":\"default\"}");
    ck_assert_uint_eq(len, strlen(b));
    ck_assert_int_eq(nf, 0);
    free(b);

    a.rows = 3;
    a.multi_rows = true;
    a.adapter = "demo-\"b\"\\\x01";
    a.version = 42;
    a.variant = SERVING_CANARY;
    a.slot = "team-\"a\"";
    ck_assert_int_eq(inferbody_write_json(&a, &b, &len, &nf), 0);
    ck_assert_str_eq(b, "{\"outputs\":[[1.5,-0,3.00000011e-07],[null,2,null],[7,8,9]],"
                        "\"adapter\":\"demo-\\\"b\\\"\\\\\",\"version\":42,\"variant\":\"canary\","
                        "\"slot\":\"team-\\\"a\\\"\"}");
    ck_assert_int_eq(nf, 1); /* one row holds both non-finite values */
    free(b);

    a.adapter = "";
    a.rows = 2;
    a.multi_rows = false;
    ck_assert_int_eq(inferbody_write_json(&a, &b, &len, &nf), 0);
    ck_assert(strstr(b, "\"adapter\":null"));
    ck_assert_int_eq(nf, 1);
    free(b);
}
END_TEST

START_TEST(test_write_binary)
{
    const float y[] = {1.5f, NAN, 3, 4, 5, 6, -INFINITY, 8, 9};
    struct inferbody_answer a = {y, 3, 3, true, "x", 1, SERVING_STABLE, NULL};
    char *b;
    size_t len;
    int nf;

    ck_assert_int_eq(inferbody_write_binary(&a, &b, &len, &nf), 0);
    ck_assert_uint_eq(len, sizeof(y));
    for (size_t i = 0; i < 9; i++) {
        uint32_t u, got = 0;
        memcpy(&u, &y[i], 4);
        for (int k = 0; k < 4; k++)
            got |= (uint32_t)(unsigned char)b[4 * i + (size_t)k] << (8 * k);
        ck_assert_uint_eq(got, u); /* little-endian, non-finite values as they are */
    }
    ck_assert_int_eq(nf, 2);
    free(b);
}
END_TEST

START_TEST(test_estimate_rows)
{
    static const char bin[36] = {0};
    ck_assert_int_eq(inferbody_estimate_rows("{\"input\":[1,2,3]}", 17, false, W), 1);
    ck_assert_int_eq(inferbody_estimate_rows("{\"inputs\":[[1],[2],[3]]}", 24, false, W), 3);
    ck_assert_int_eq(inferbody_estimate_rows("", 0, false, W), 1);
    ck_assert_int_eq(inferbody_estimate_rows(bin, 36, true, W), 3);
    ck_assert_int_eq(inferbody_estimate_rows(bin, 5, true, W), 1);
}
END_TEST

static Suite *inferbody_suite(void)
{
    Suite *s = suite_create("inferbody");
    TCase *tp = tcase_create("parse");
    TCase *tf = tcase_create("print");

    tcase_add_test(tp, test_json_refusals);
    tcase_add_test(tp, test_json_length_limits);
    tcase_add_test(tp, test_binary);
    tcase_add_test(tp, test_json_accepts);
    tcase_add_test(tp, test_numbers_against_strtod);
    tcase_add_test(tp, test_estimate_rows);
    tcase_set_timeout(tp, 120);
    suite_add_tcase(s, tp);

    tcase_add_test(tf, test_printer_random_bits);
    tcase_add_test(tf, test_printer_special_values);
    tcase_add_test(tf, test_printer_ties);
    tcase_add_test(tf, test_write_json);
    tcase_add_test(tf, test_write_binary);
    tcase_set_timeout(tf, 300);
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(inferbody_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
