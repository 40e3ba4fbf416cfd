/* lorad — inferbody.c: the /infer request and answer bodies (see
 * inferbody.h).
 *
 * The JSON reader is a recursive-descent parser over [s, end) for the one
 * shape SPEC 6 allows; `struct jp` is its cursor. Numbers are delimited by
 * lib/jsontext.h's json_number_len() (the one number grammar of lorad),
 * converted by decimal_fast_parse() or, when that declines, strtod; string
 * bytes are checked with json_utf8_len(). Rows grow in one buffer, doubled
 * up to max_rows rows.
 *
 * The f32 printer works in double: nine significant digits are
 * nearbyint(v * 10^(8 - x)) with x the decimal exponent. That product is
 * within 2.2e-7 of the exact one, so its rounding is printf's unless the
 * exact value lies within that of a tie (xxx.5); such rare values, and
 * only they, are printed by snprintf itself.
 */
#include "inferbody.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "jsontext.h"

/* ---- JSON parsing ---- */

struct jp {
    const char *s, *p, *end;
    struct lorad_error *err;
};

static int jp_fail(struct jp *j, const char *what)
{
    return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "malformed JSON at byte %zu: %s",
                           (size_t)(j->p - j->s), what);
}

static void jp_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Value of one hex digit, or -1. */
static int hexval(char c)
{
    static const char digits[] = "0123456789abcdefABCDEF";
    const char *d = c ? strchr(digits, c) : NULL;
    return !d ? -1 : d - digits < 16 ? (int)(d - digits) : (int)(d - digits) - 6;
}

static int jp_hex4(struct jp *j, unsigned *out)
{
    unsigned v = 0;
    int i;
    if (j->end - j->p < 4)
        return jp_fail(j, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0)
            return jp_fail(j, "bad \\u escape");
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point of a \u escape (j->p just past the 'u'), a surrogate
 * pair joined. */
static int jp_unicode(struct jp *j, unsigned *cp)
{
    unsigned lo;
    int rc;
    if ((rc = jp_hex4(j, cp)) != 0)
        return rc;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return jp_fail(j, "lone surrogate in \\u escape");
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return 0;
    if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
        return jp_fail(j, "lone surrogate in \\u escape");
    j->p += 2;
    if ((rc = jp_hex4(j, &lo)) != 0)
        return rc;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return jp_fail(j, "bad surrogate pair");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return 0;
}

/* One escape (j->p at the backslash) decoded into o; returns its length
 * or 0 (error set). */
static size_t jp_escape(struct jp *j, char *o)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *k;
    unsigned cp;
    j->p++;
    if (*j->p == 'u') {
        j->p++;
        return jp_unicode(j, &cp) == 0 ? utf8_put(o, cp) : 0;
    }
    k = *j->p ? strchr(from, *j->p) : NULL;
    if (!k) {
        jp_fail(j, "bad escape in string");
        return 0;
    }
    j->p++;
    *o = to[k - from];
    return 1;
}

/* Reads a JSON string (j->p at the opening quote) into a malloc'd,
 * NUL-terminated buffer (at most `maxlen` bytes of source text). */
static int jp_string(struct jp *j, char **out, size_t *outlen, size_t maxlen)
{
    const char *q;
    char *o, *buf;
    *out = NULL;
    j->p++; /* '"' */
    for (q = j->p; q < j->end && *q != '"'; q++)
        if (*q == '\\' && q + 1 < j->end)
            q++;
    if (q >= j->end)
        return jp_fail(j, "unterminated string");
    if ((size_t)(q - j->p) > maxlen)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "string at byte %zu is longer than %zu bytes", (size_t)(j->p - j->s),
                               maxlen);
    buf = o = malloc((size_t)(q - j->p) + 1);
    if (!buf)
        return lorad_error_set(j->err, LORAD_E_INTERNAL, "out of memory");
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        size_t n;
        if (c < 0x20) {
            jp_fail(j, "control character in string");
            goto fail;
        }
        if (c == '\\') {
            if (!(n = jp_escape(j, o)))
                goto fail;
            o += n;
            continue;
        }
        n = json_utf8_len((const unsigned char *)j->p, (const unsigned char *)j->end);
        if (n == 0) {
            jp_fail(j, "invalid UTF-8 in string");
            goto fail;
        }
        memcpy(o, j->p, n);
        o += n;
        j->p += n;
    }
    j->p++; /* closing quote */
    *o = '\0';
    *out = buf;
    if (outlen)
        *outlen = (size_t)(o - buf);
    return 0;
fail:
    free(buf);
    return j->err ? j->err->code : LORAD_E_INVALID_REQUEST;
}

/* Where json_number_len() refused a number whose first digit is at q: just
 * past the '.' or the exponent mark (and its sign) that no digit follows. */
static const char *bad_number_at(const char *q, const char *end)
{
    while (q < end && is_digit(*q))
        q++;
    if (q < end && *q == '.') {
        if (++q >= end || !is_digit(*q))
            return q;
        while (q < end && is_digit(*q))
            q++;
    }
    q++; /* 'e' or 'E' */
    if (q < end && (*q == '+' || *q == '-'))
        q++;
    return q;
}

/* A value that is not a number where a number belongs. */
static int jp_not_number(struct jp *j, const char *where, size_t row, size_t col)
{
    if (j->p < j->end && *j->p && strchr("\"[{tfn", *j->p))
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu is not a number", where, col, row);
    return jp_fail(j, "expected a number");
}

/* A JSON number converted to f32, with the f32 range enforced. */
static int jp_number(struct jp *j, float *out, const char *where, size_t row, size_t col)
{
    const char *st = j->p, *q;
    char tmp[512], *endp;
    size_t n = json_number_len(j->p, j->end, NULL);
    double d;

    if (n == 0) {
        q = st + (st < j->end && *st == '-');
        if (q >= j->end || !is_digit(*q))
            return jp_not_number(j, where, row, col);
        j->p = bad_number_at(q, j->end);
        return jp_fail(j, "bad number");
    }
    q = st + n;
    if (decimal_fast_parse(st, q, &d) && fabs(d) <= FLT_MAX) {
        *out = (float)d;
        j->p = q;
        return 0;
    } /* else strtod decides, and names an out-of-range value */
    if (n >= sizeof(tmp))
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu is a number longer than %zu characters",
                               where, col, row, sizeof(tmp) - 1);
    memcpy(tmp, st, n);
    tmp[n] = '\0';
    d = strtod(tmp, &endp);
    if (!isfinite(d) || fabs(d) > FLT_MAX)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu (%s) is outside the f32 range", where, col,
                               row, tmp);
    *out = (float)d;
    j->p = q;
    return 0;
}

/* The rows read so far. */
struct rows {
    float *x;
    size_t rows, cap_rows;
    int width;
    int max_rows;
};

static float *rows_next(struct rows *r, struct lorad_error *err)
{
    if (r->rows == r->cap_rows) {
        size_t nc = r->cap_rows ? r->cap_rows * 2 : 4;
        float *nx;
        if (nc > (size_t)r->max_rows)
            nc = (size_t)r->max_rows;
        nx = realloc(r->x, nc * (size_t)r->width * sizeof(float));
        if (!nx) {
            lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
            return NULL;
        }
        r->x = nx;
        r->cap_rows = nc;
    }
    return r->x + r->rows * (size_t)r->width;
}

/* After an array element: true past ',' (another follows), false past
 * `close`; the error `what` otherwise. */
static int jp_next(struct jp *j, char close, const char *what, bool *more)
{
    jp_ws(j);
    if (j->p < j->end && (*j->p == ',' || *j->p == close)) {
        *more = *j->p++ == ',';
        return 0;
    }
    return jp_fail(j, what);
}

/* One row: '[' numbers ']' of exactly r->width values. */
static int jp_row(struct jp *j, struct rows *r, const char *where)
{
    float *dst;
    size_t n = 0;
    bool more = true;
    int rc;
    if (j->p >= j->end || *j->p != '[')
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: row %zu is not an array of numbers", where, r->rows);
    if (r->rows >= (size_t)r->max_rows)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: more than max_rows_per_request (%d) rows", where, r->max_rows);
    if (!(dst = rows_next(r, j->err)))
        return LORAD_E_INTERNAL;
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        more = false;
    }
    while (more) {
        jp_ws(j);
        if (n >= (size_t)r->width)
            return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                   "%s: row %zu has more than the %d values the model takes", where,
                                   r->rows, r->width);
        if ((rc = jp_number(j, &dst[n], where, r->rows, n)) != 0)
            return rc;
        n++;
        if ((rc = jp_next(j, ']', "expected ',' or ']' in array", &more)) != 0)
            return rc;
    }
    if (n != (size_t)r->width)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: row %zu has %zu values, expected %d (the model's in_features)",
                               where, r->rows, n, r->width);
    r->rows++;
    return 0;
}

static int jp_rows(struct jp *j, struct rows *r)
{
    bool more = true;
    int rc;
    if (j->p >= j->end || *j->p != '[')
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "\"inputs\" must be an array of rows (arrays of numbers)");
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "\"inputs\" has zero rows");
    }
    while (more) {
        jp_ws(j);
        if ((rc = jp_row(j, r, "inputs")) != 0)
            return rc;
        if ((rc = jp_next(j, ']', "expected ',' or ']' in \"inputs\"", &more)) != 0)
            return rc;
    }
    return 0;
}

static const char *type_name(char c)
{
    switch (c) {
    case '"':
        return "a string";
    case '[':
        return "an array";
    case '{':
        return "an object";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    default:
        return "a number";
    }
}

enum { K_INPUT = 1, K_INPUTS = 2, K_ROUTE = 4, K_VARIANT = 8, K_SLOT = 16 };

/* Which key `key` is (0: unknown); refuses a repeated one and input with
 * inputs. */
static int jp_key(struct jp *j, const char *key, unsigned *seen, unsigned *k)
{
    static const char *const names[] = {"input", "inputs", "route_key", "variant", "slot"};
    *k = 0;
    for (unsigned i = 0; i < 5 && !*k; i++)
        if (strcmp(key, names[i]) == 0)
            *k = 1u << i;
    if (!*k)
        return lorad_error_set(
            j->err, LORAD_E_INVALID_REQUEST,
            "unknown key \"%.100s\" (allowed: input, inputs, route_key, variant, slot)", key);
    if (*seen & *k)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "duplicate key \"%s\"", key);
    if ((*k & (K_INPUT | K_INPUTS)) && (*seen & (K_INPUT | K_INPUTS)))
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "give either \"input\" or \"inputs\", not both");
    *seen |= *k;
    return 0;
}

/* The value of "route_key", "slot" or "variant" (j->p at it). */
static int jp_text_value(struct jp *j, const char *key, unsigned k, struct inferbody_req *req)
{
    char *sv = NULL;
    size_t svlen = 0;
    int rc;
    if (*j->p != '"')
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "\"%s\" must be a string, not %s",
                               key, type_name(*j->p));
    if ((rc = jp_string(j, &sv, &svlen, INFERBODY_ROUTE_KEY_MAX)) != 0)
        return rc;
    if (k == K_ROUTE) {
        req->route_key = sv;
        req->route_key_len = svlen;
        return 0;
    }
    if (k == K_SLOT) {
        req->slot = sv;
        req->slot_len = svlen;
        return 0;
    }
    if (strcmp(sv, "stable") == 0)
        req->pin = SERVING_STABLE;
    else if (strcmp(sv, "canary") == 0)
        req->pin = SERVING_CANARY;
    else
        rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                             "\"variant\" must be \"stable\" or \"canary\", not \"%.64s\"", sv);
    free(sv);
    return rc;
}

/* The value of member `k` (j->p at it). */
static int jp_value(struct jp *j, const char *key, unsigned k, struct rows *r,
                    struct inferbody_req *req)
{
    if (k == K_INPUT) {
        if (*j->p != '[')
            return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                   "\"input\" must be an array of numbers, not %s",
                                   type_name(*j->p));
        return jp_row(j, r, "input");
    }
    if (k == K_INPUTS) {
        req->multi_rows = true;
        if (*j->p != '[')
            return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                   "\"inputs\" must be an array of rows, not %s", type_name(*j->p));
        return jp_rows(j, r);
    }
    return jp_text_value(j, key, k, req);
}

static int jp_member(struct jp *j, struct rows *r, struct inferbody_req *req, unsigned *seen)
{
    char *key = NULL;
    unsigned k;
    int rc;

    if (j->p >= j->end || *j->p != '"')
        return jp_fail(j, "expected a key string");
    if ((rc = jp_string(j, &key, NULL, 256)) != 0)
        return rc;
    if ((rc = jp_key(j, key, seen, &k)) != 0)
        goto fail;
    jp_ws(j);
    if (j->p >= j->end || *j->p != ':') {
        rc = jp_fail(j, "expected ':' after key");
        goto fail;
    }
    j->p++;
    jp_ws(j);
    if (j->p >= j->end) {
        rc = jp_fail(j, "expected a value");
        goto fail;
    }
    rc = jp_value(j, key, k, r, req);
fail:
    free(key);
    return rc;
}

/* The object's members, j->p just past its '{'. */
static int jp_members(struct jp *j, struct rows *r, struct inferbody_req *req, unsigned *seen)
{
    bool more = true;
    int rc;
    jp_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    while (more) {
        jp_ws(j);
        if ((rc = jp_member(j, r, req, seen)) != 0)
            return rc;
        if ((rc = jp_next(j, '}', "expected ',' or '}' in object", &more)) != 0)
            return rc;
    }
    return 0;
}

int inferbody_parse_json(const char *body, size_t len, int width, int max_rows,
                         struct inferbody_req *out, struct lorad_error *err)
{
    struct jp j = {body, body, body + len, err};
    struct rows rows = {NULL, 0, 0, width, max_rows};
    struct inferbody_req req = {.pin = INFERBODY_PIN_NONE};
    unsigned seen = 0;
    int rc;

    jp_ws(&j);
    if (j.p >= j.end) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                             "empty body: send {\"input\": [...]} or {\"inputs\": [[...], ...]}");
        goto fail;
    }
    if (*j.p != '{') {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "the body must be a JSON object, not %s",
                             type_name(*j.p));
        goto fail;
    }
    j.p++;
    if ((rc = jp_members(&j, &rows, &req, &seen)) != 0)
        goto fail;
    jp_ws(&j);
    if (j.p != j.end) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                             "trailing garbage at byte %zu after the JSON object",
                             (size_t)(j.p - j.s));
        goto fail;
    }
    if (!(seen & (K_INPUT | K_INPUTS))) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                             "missing \"input\" (one row) or \"inputs\" (rows)");
        goto fail;
    }
    req.x = rows.x;
    req.rows = (int)rows.rows;
    *out = req;
    return 0;
fail:
    free(rows.x);
    inferbody_req_free(&req);
    return rc;
}

static float f32_le(const unsigned char *b)
{
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int inferbody_parse_binary(const void *body, size_t len, int width, int max_rows,
                           struct inferbody_req *out, struct lorad_error *err)
{
    size_t w = (size_t)width, rowb = w * 4, maxr = (size_t)max_rows, rows, i, n;
    const unsigned char *b = body;
    struct inferbody_req req = {.pin = INFERBODY_PIN_NONE};
    int rc;

    if (len == 0 || len % rowb != 0)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "binary body of %zu bytes is not a positive multiple of one row "
                               "(%zu f32 = %zu bytes)",
                               len, w, rowb);
    rows = len / rowb;
    if (rows > maxr)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "%zu rows exceed max_rows_per_request (%zu)", rows, maxr);
    n = rows * w;
    if (!(req.x = malloc(n * sizeof(float))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (i = 0; i < n; i++) {
        req.x[i] = f32_le(b + 4 * i);
        if (!isfinite(req.x[i])) {
            rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "value %zu of row %zu is not finite",
                                 i % w, i / w);
            goto fail;
        }
    }
    req.rows = (int)rows;
    *out = req;
    return 0;
fail:
    inferbody_req_free(&req);
    return rc;
}

void inferbody_req_free(struct inferbody_req *r)
{
    free(r->x);
    free(r->route_key);
    free(r->slot);
    memset(r, 0, sizeof(*r));
    r->pin = INFERBODY_PIN_NONE;
}

int inferbody_estimate_rows(const char *body, size_t len, bool binary, int width)
{
    size_t n = 0;
    const char *p, *end = body + len;
    if (binary) {
        size_t rowb = (size_t)width * 4;
        n = rowb ? len / rowb : 1;
    } else {
        for (p = body; p < end && (p = memchr(p, '[', (size_t)(end - p))); p++)
            n++;
        n = n > 1 ? n - 1 : 1;
    }
    if (n < 1)
        n = 1;
    return n > 1000000 ? 1000000 : (int)n;
}

/* ---- the f32 printer ---- */

/* 1e-30 .. 1e60, each the double nearest the power. */
static const double p10[] = {
    1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18,
    1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,
    1e-4,  1e-3,  1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,
    1e9,   1e10,  1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,
    1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,
    1e35,  1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47,
    1e48,  1e49,  1e50,  1e51,  1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,  1e60};
#define P10(k) p10[(k) + 30]

/* The nine significant digits of v (> 0, an f32 value) as n in
 * [1e8, 1e9) and its decimal exponent *x; false when v lies too near a
 * tie for double arithmetic to round it as printf does. */
static bool digits9(double v, int *x, long long *n)
{
    double t;
    *x = (int)floor(log10(v));
    t = v * P10(8 - *x);
    *n = (long long)nearbyint(t);
    if (*n >= 1000000000LL || *n < 100000000LL) {
        *x += *n >= 1000000000LL ? 1 : -1;
        t = v * P10(8 - *x);
        *n = (long long)nearbyint(t);
    }
    if (fabs(fabs(t - (double)*n) - 0.5) < 1e-6)
        return false;
    if (*n >= 1000000000LL) { /* rounding carried to 10 digits */
        (*x)++;
        *n /= 10;
    }
    return true;
}

/* dig[0..nd) in printf's %g layout for decimal exponent x. */
static char *put_g(char *o, const char *dig, int nd, int x)
{
    int i;
    if (x >= -4 && x < 9) {
        if (x >= 0) {
            for (i = 0; i <= x; i++)
                *o++ = i < nd ? dig[i] : '0';
            if (nd > x + 1) {
                *o++ = '.';
                for (i = x + 1; i < nd; i++)
                    *o++ = dig[i];
            }
            return o;
        }
        *o++ = '0';
        *o++ = '.';
        for (i = 0; i < -x - 1; i++)
            *o++ = '0';
        memcpy(o, dig, (size_t)nd);
        return o + nd;
    }
    *o++ = dig[0];
    if (nd > 1) {
        *o++ = '.';
        memcpy(o, dig + 1, (size_t)nd - 1);
        o += nd - 1;
    }
    *o++ = 'e';
    *o++ = x < 0 ? '-' : '+';
    x = x < 0 ? -x : x;
    *o++ = (char)('0' + x / 10);
    *o++ = (char)('0' + x % 10);
    return o;
}

char *inferbody_put_f32(char *o, float f)
{
    double v = f;
    int x, nd, i;
    long long n;
    char dig[9];

    if (signbit(v)) {
        *o++ = '-';
        v = -v;
    }
    if (v == 0.0) {
        *o++ = '0';
        return o;
    }
    if (isinf(v) || !digits9(v, &x, &n)) {
        char tmp[INFERBODY_F32_MAX + 8];
        int k = snprintf(tmp, sizeof(tmp), "%.9g", v);
        memcpy(o, tmp, (size_t)k);
        return o + k;
    }
    for (i = 8; i >= 0; i--) {
        dig[i] = (char)('0' + n % 10);
        n /= 10;
    }
    nd = 9;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    return put_g(o, dig, nd, x);
}

/* ---- answers ---- */

static char *put_row(char *o, const float *y, int n, bool *nonfinite)
{
    int i;
    *o++ = '[';
    for (i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        if (!isfinite(y[i])) {
            memcpy(o, "null", 4);
            o += 4;
            *nonfinite = true;
        } else {
            o = inferbody_put_f32(o, y[i]);
        }
    }
    *o++ = ']';
    return o;
}

/* "NAME" (quotes and backslashes escaped, control characters dropped). */
static char *put_name(char *o, const char *name)
{
    *o++ = '"';
    for (; *name; name++) {
        unsigned char c = (unsigned char)*name;
        if (c < 0x20)
            continue;
        if (c == '"' || c == '\\')
            *o++ = '\\';
        *o++ = (char)c;
    }
    *o++ = '"';
    return o;
}

/* ,"adapter":"NAME" or ,"adapter":null. */
static char *put_adapter(char *o, const char *name)
{
    if (!name || !name[0]) {
        memcpy(o, ",\"adapter\":null", 15);
        return o + 15;
    }
    memcpy(o, ",\"adapter\":", 11);
    return put_name(o + 11, name);
}

int inferbody_write_json(const struct inferbody_answer *a, char **body, size_t *len,
                         int *nonfinite_rows)
{
    size_t name = (a->adapter ? strlen(a->adapter) : 0) + (a->slot ? strlen(a->slot) : 7);
    size_t cap = (size_t)a->rows * ((size_t)a->width * 17 + 4) + name * 2 + 128;
    char *b = malloc(cap), *o;
    int r, nf = 0;
    if (!b)
        return LORAD_E_INTERNAL;
    o = b;
    memcpy(o, a->multi_rows ? "{\"outputs\":[" : "{\"output\":", a->multi_rows ? 12 : 10);
    o += a->multi_rows ? 12 : 10;
    for (r = 0; r < a->rows; r++) {
        bool bad = false;
        if (r)
            *o++ = ',';
        o = put_row(o, a->y + (size_t)r * (size_t)a->width, a->width, &bad);
        nf += bad;
    }
    if (a->multi_rows)
        *o++ = ']';
    o = put_adapter(o, a->adapter);
    o +=
        sprintf(o, ",\"version\":%llu,\"variant\":\"%s\",\"slot\":", (unsigned long long)a->version,
                serving_variant_name(a->variant));
    o = put_name(o, a->slot ? a->slot : "default");
    *o++ = '}';
    *o = '\0';
    *body = b;
    *len = (size_t)(o - b);
    *nonfinite_rows = nf;
    return 0;
}

int inferbody_write_binary(const struct inferbody_answer *a, char **body, size_t *len,
                           int *nonfinite_rows)
{
    size_t w = (size_t)a->width, n = (size_t)a->rows * w, i;
    unsigned char *b = malloc(n * 4 + 1);
    int nf = 0;
    if (!b)
        return LORAD_E_INTERNAL;
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &a->y[i], 4);
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    for (i = 0; i < (size_t)a->rows; i++) {
        size_t k;
        for (k = 0; k < w; k++)
            if (!isfinite(a->y[i * w + k])) {
                nf++;
                break;
            }
    }
    *body = (char *)b;
    *len = n * 4;
    *nonfinite_rows = nf;
    return 0;
}
