/* lorad — daemon/infer.c: the /infer request: its handler on the loop
 * thread, and the parsing and formatting of its bodies in the workers.
 *
 * Design: the JSON body has a fixed shape ({"input": [...]} or
 * {"inputs": [[...], ...]}, optional "route_key" and "variant"), so it is
 * read by a small strict parser written for that shape instead of a
 * generic DOM: numbers go straight into the row buffer, and every rule of
 * SPEC 6 gets its own precise message (malformed JSON with its byte offset,
 * trailing garbage, duplicate and unknown keys, wrong types, row lengths,
 * row counts, values outside the f32 range). The answer is written by hand
 * into one malloc'd buffer. Binary bodies are rows of little-endian f32.
 *
 * Threads: infer_handle, infer_complete and infer_refuse_draining run on
 * the loop thread; infer_parse and infer_format_* run in a worker, touching
 * only the job and the immutable model and config.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../lib/decimal.h"
#include "dataplane.h"
#include "lorad.h"

#define ROUTE_KEY_MAX 4096

void infer_job_free(struct infer_job **jp)
{
    struct infer_job *j = *jp;
    if (!j)
        return;
    free(j->hdr_route_key);
    free(j->x);
    free(j->route_key);
    free(j->resp_body);
    free(j);
    *jp = NULL;
}

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

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
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

/* Length of a valid UTF-8 sequence at p (< end), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n, i;
    unsigned cp;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0)
        n = 2, cp = p[0] & 0x1F;
    else if ((p[0] & 0xF0) == 0xE0)
        n = 3, cp = p[0] & 0x0F;
    else if ((p[0] & 0xF8) == 0xF0)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Reads a JSON string (j->p at the opening quote) into a malloc'd,
 * NUL-terminated buffer (max `maxlen` bytes). */
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
        if (c < 0x20) {
            free(buf);
            return jp_fail(j, "control character in string");
        }
        if (c == '\\') {
            unsigned cp;
            j->p++;
            switch (*j->p++) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '/':
                *o++ = '/';
                break;
            case 'b':
                *o++ = '\b';
                break;
            case 'f':
                *o++ = '\f';
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 'r':
                *o++ = '\r';
                break;
            case 't':
                *o++ = '\t';
                break;
            case 'u':
                if (jp_hex4(j, &cp) != 0)
                    goto fail;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
                        jp_fail(j, "lone surrogate in \\u escape");
                        goto fail;
                    }
                    j->p += 2;
                    if (jp_hex4(j, &lo) != 0)
                        goto fail;
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        jp_fail(j, "bad surrogate pair");
                        goto fail;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    jp_fail(j, "lone surrogate in \\u escape");
                    goto fail;
                }
                o += utf8_put(o, cp);
                break;
            default:
                j->p--;
                jp_fail(j, "bad escape in string");
                goto fail;
            }
        } else {
            size_t n = utf8_len((const unsigned char *)j->p, (const unsigned char *)j->end);
            if (n == 0) {
                jp_fail(j, "invalid UTF-8 in string");
                goto fail;
            }
            memcpy(o, j->p, n);
            o += n;
            j->p += n;
        }
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

/* A JSON number converted to f32, with the f32 range enforced. */
static int jp_number(struct jp *j, float *out, const char *where, size_t row, size_t col)
{
    const char *st = j->p, *q = j->p;
    char tmp[512], *endp;
    double d;
    if (q < j->end && *q == '-')
        q++;
    if (q >= j->end || *q < '0' || *q > '9')
        goto type;
    if (*q == '0')
        q++;
    else
        while (q < j->end && *q >= '0' && *q <= '9')
            q++;
    if (q < j->end && *q == '.') {
        q++;
        if (q >= j->end || *q < '0' || *q > '9') {
            j->p = q;
            return jp_fail(j, "bad number");
        }
        while (q < j->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < j->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < j->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= j->end || *q < '0' || *q > '9') {
            j->p = q;
            return jp_fail(j, "bad number");
        }
        while (q < j->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (decimal_fast_parse(st, q, &d) && fabs(d) <= FLT_MAX) {
        *out = (float)d;
        j->p = q;
        return 0;
    } /* else strtod decides, and names an out-of-range value */
    if ((size_t)(q - st) >= sizeof(tmp))
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu is a number longer than %zu characters",
                               where, col, row, sizeof(tmp) - 1);
    memcpy(tmp, st, (size_t)(q - st));
    tmp[q - st] = '\0';
    d = strtod(tmp, &endp);
    if (!isfinite(d) || fabs(d) > FLT_MAX)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu (%s) is outside the f32 range", where, col,
                               row, tmp);
    *out = (float)d;
    j->p = q;
    return 0;
type:
    if (j->p < j->end && (*j->p == '"' || *j->p == '[' || *j->p == '{' || *j->p == 't' ||
                          *j->p == 'f' || *j->p == 'n'))
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: value %zu of row %zu is not a number", where, col, row);
    return jp_fail(j, "expected a number");
}

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

/* One row: '[' numbers ']' of exactly r->width values. */
static int jp_row(struct jp *j, struct rows *r, const char *where)
{
    float *dst;
    size_t n = 0;
    int rc;
    if (j->p >= j->end || *j->p != '[')
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: row %zu is not an array of numbers", where, r->rows);
    if (r->rows >= (size_t)r->max_rows)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: more than max_rows_per_request (%d) rows", where, r->max_rows);
    dst = rows_next(r, j->err);
    if (!dst)
        return LORAD_E_INTERNAL;
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        goto done;
    }
    for (;;) {
        jp_ws(j);
        if (n >= (size_t)r->width)
            return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                   "%s: row %zu has more than the %d values the model takes", where,
                                   r->rows, r->width);
        rc = jp_number(j, &dst[n], where, r->rows, n);
        if (rc)
            return rc;
        n++;
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            break;
        }
        return jp_fail(j, "expected ',' or ']' in array");
    }
done:
    if (n != (size_t)r->width)
        return lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                               "%s: row %zu has %zu values, expected %d (the model's in_features)",
                               where, r->rows, n, r->width);
    r->rows++;
    return 0;
}

static int jp_rows(struct jp *j, struct rows *r)
{
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
    for (;;) {
        jp_ws(j);
        rc = jp_row(j, r, "inputs");
        if (rc)
            return rc;
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return 0;
        }
        return jp_fail(j, "expected ',' or ']' in \"inputs\"");
    }
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

enum { K_INPUT = 1, K_INPUTS = 2, K_ROUTE = 4, K_VARIANT = 8 };

static int jp_member(struct jp *j, struct infer_job *job, struct rows *r, unsigned *seen)
{
    char *key = NULL, *sv = NULL;
    size_t svlen = 0;
    unsigned k;
    int rc;

    if (j->p >= j->end || *j->p != '"')
        return jp_fail(j, "expected a key string");
    rc = jp_string(j, &key, NULL, 256);
    if (rc)
        return rc;
    if (strcmp(key, "input") == 0)
        k = K_INPUT;
    else if (strcmp(key, "inputs") == 0)
        k = K_INPUTS;
    else if (strcmp(key, "route_key") == 0)
        k = K_ROUTE;
    else if (strcmp(key, "variant") == 0)
        k = K_VARIANT;
    else {
        rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                             "unknown key \"%.100s\" (allowed: input, inputs, route_key, variant)",
                             key);
        goto out;
    }
    if (*seen & k) {
        rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "duplicate key \"%s\"", key);
        goto out;
    }
    if ((k & (K_INPUT | K_INPUTS)) && (*seen & (K_INPUT | K_INPUTS))) {
        rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                             "give either \"input\" or \"inputs\", not both");
        goto out;
    }
    *seen |= k;
    jp_ws(j);
    if (j->p >= j->end || *j->p != ':') {
        rc = jp_fail(j, "expected ':' after key");
        goto out;
    }
    j->p++;
    jp_ws(j);
    if (j->p >= j->end) {
        rc = jp_fail(j, "expected a value");
        goto out;
    }
    if (k == K_INPUT) {
        if (*j->p != '[')
            rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                 "\"input\" must be an array of numbers, not %s", type_name(*j->p));
        else
            rc = jp_row(j, r, "input");
    } else if (k == K_INPUTS) {
        if (*j->p != '[')
            rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                 "\"inputs\" must be an array of rows, not %s", type_name(*j->p));
        else
            rc = jp_rows(j, r);
        job->multi_rows = true;
    } else {
        if (*j->p != '"') {
            rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST, "\"%s\" must be a string, not %s",
                                 key, type_name(*j->p));
            goto out;
        }
        rc = jp_string(j, &sv, &svlen, ROUTE_KEY_MAX);
        if (rc)
            goto out;
        if (k == K_ROUTE) {
            job->route_key = sv;
            job->route_key_len = svlen;
            sv = NULL;
        } else if (strcmp(sv, "stable") == 0) {
            job->pin = SERVING_STABLE;
        } else if (strcmp(sv, "canary") == 0) {
            job->pin = SERVING_CANARY;
        } else {
            rc = lorad_error_set(j->err, LORAD_E_INVALID_REQUEST,
                                 "\"variant\" must be \"stable\" or \"canary\", not \"%.64s\"", sv);
        }
    }
out:
    free(sv);
    free(key);
    return rc;
}

static int parse_json(const struct lorad_server *srv, struct infer_job *job,
                      struct lorad_error *err)
{
    struct http_request *r = job->r;
    struct jp j = {r->body, r->body, r->body + r->body_len, err};
    struct rows rows = {NULL, 0, 0, srv->model->in_features,
                        __atomic_load_n(&srv->cfg.max_rows_per_request, __ATOMIC_RELAXED)};
    unsigned seen = 0;
    int rc;

    if (rows.max_rows <= 0)
        rows.max_rows = 1024;
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
    jp_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            jp_ws(&j);
            rc = jp_member(&j, job, &rows, &seen);
            if (rc)
                goto fail;
            jp_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            rc = jp_fail(&j, "expected ',' or '}' in object");
            goto fail;
        }
    }
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
    job->x = rows.x;
    job->rows = (int)rows.rows;
    return 0;
fail:
    free(rows.x);
    return rc;
}

static int parse_binary(const struct lorad_server *srv, struct infer_job *job,
                        struct lorad_error *err)
{
    struct http_request *r = job->r;
    size_t width = (size_t)srv->model->in_features, rowb = width * 4, rows, i, n;
    int max_rows = __atomic_load_n(&srv->cfg.max_rows_per_request, __ATOMIC_RELAXED);
    size_t maxr = max_rows > 0 ? (size_t)max_rows : 1024;
    const unsigned char *b = (const unsigned char *)r->body;

    if (r->body_len == 0 || r->body_len % rowb != 0)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "binary body of %zu bytes is not a positive multiple of one row "
                               "(%zu f32 = %zu bytes)",
                               r->body_len, width, rowb);
    rows = r->body_len / rowb;
    if (rows > maxr)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "%zu rows exceed max_rows_per_request (%zu)", rows, maxr);
    n = rows * width;
    job->x = malloc(n * sizeof(float));
    if (!job->x)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    for (i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f))
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                                   "value %zu of row %zu is not finite", i % width, i / width);
        job->x[i] = f;
    }
    job->rows = (int)rows;
    return 0;
}

int infer_parse(const struct lorad_server *srv, struct infer_job *j, struct lorad_error *err)
{
    j->pin = INFER_PIN_NONE;
    return j->binary ? parse_binary(srv, j, err) : parse_json(srv, j, err);
}

/* ---- formatting ---- */

static const char *variant_name(enum serving_variant v)
{
    return v == SERVING_CANARY ? "canary" : "stable";
}

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

/* Writes finite f as printf("%.9g") would (9 significant digits, trailing
 * zeros removed). The 9-digit rounding is done in double; in the rare case
 * of a near-tie the last digit may differ from printf's, which still
 * round-trips to the same f32 (the decimal step, <= 1e-8 relative, is far
 * below half an f32 ulp). Returns the end of the written text. */
static char *fmt_f32(char *o, float f)
{
    double v = f;
    int x, nd, i;
    long long n;
    char dig[10];

    if (signbit(v)) {
        *o++ = '-';
        v = -v;
    }
    if (v == 0.0) {
        *o++ = '0';
        return o;
    }
    x = (int)floor(log10(v));
    n = (long long)nearbyint(v * P10(8 - x));
    if (n >= 1000000000LL) {
        x++;
        n = (long long)nearbyint(v * P10(8 - x));
    } else if (n < 100000000LL) {
        x--;
        n = (long long)nearbyint(v * P10(8 - x));
    }
    if (n >= 1000000000LL) { /* rounding carried to 10 digits */
        x++;
        n /= 10;
    }
    for (i = 8; i >= 0; i--) {
        dig[i] = (char)('0' + n % 10);
        n /= 10;
    }
    nd = 9;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    if (x >= -4 && x < 9) {
        if (x >= 0) {
            for (i = 0; i <= x; i++)
                *o++ = i < nd ? dig[i] : '0';
            if (nd > x + 1) {
                *o++ = '.';
                for (i = x + 1; i < nd; i++)
                    *o++ = dig[i];
            }
        } else {
            *o++ = '0';
            *o++ = '.';
            for (i = 0; i < -x - 1; i++)
                *o++ = '0';
            for (i = 0; i < nd; i++)
                *o++ = dig[i];
        }
        return o;
    }
    *o++ = dig[0];
    if (nd > 1) {
        *o++ = '.';
        for (i = 1; i < nd; i++)
            *o++ = dig[i];
    }
    *o++ = 'e';
    *o++ = x < 0 ? '-' : '+';
    if (x < 0)
        x = -x;
    if (x >= 10) {
        *o++ = (char)('0' + x / 10);
        *o++ = (char)('0' + x % 10);
    } else {
        *o++ = '0';
        *o++ = (char)('0' + x);
    }
    return o;
}

static char *put_floats(char *o, const float *y, int n, int *nonfinite)
{
    int i;
    *o++ = '[';
    for (i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        if (!isfinite(y[i])) {
            memcpy(o, "null", 4);
            o += 4;
            *nonfinite = 1;
        } else {
            o = fmt_f32(o, y[i]);
        }
    }
    *o++ = ']';
    return o;
}

static int format_json(const struct lorad_server *srv, struct infer_job *j, const float *y)
{
    int out = srv->model->out_features, r, nf = 0;
    size_t cap = (size_t)j->rows * ((size_t)out * 17 + 4) + SNAPSHOT_NAME_MAX * 2 + 128;
    char *b = malloc(cap), *o;
    if (!b)
        return LORAD_E_INTERNAL;
    o = b;
    memcpy(o, j->multi_rows ? "{\"outputs\":[" : "{\"output\":", j->multi_rows ? 12 : 10);
    o += j->multi_rows ? 12 : 10;
    for (r = 0; r < j->rows; r++) {
        int rowbad = 0;
        if (r)
            *o++ = ',';
        o = put_floats(o, y + (size_t)r * (size_t)out, out, &rowbad);
        nf += rowbad;
    }
    if (j->multi_rows)
        *o++ = ']';
    if (j->adapter[0]) {
        size_t i;
        memcpy(o, ",\"adapter\":\"", 12);
        o += 12;
        for (i = 0; j->adapter[i]; i++) {
            unsigned char c = (unsigned char)j->adapter[i];
            if (c == '"' || c == '\\')
                *o++ = '\\';
            if (c < 0x20)
                continue;
            *o++ = (char)c;
        }
        *o++ = '"';
    } else {
        memcpy(o, ",\"adapter\":null", 15);
        o += 15;
    }
    o += sprintf(o, ",\"version\":%llu,\"variant\":\"%s\"}", (unsigned long long)j->version,
                 variant_name(j->variant));
    j->resp_body = b;
    j->resp_len = (size_t)(o - b);
    j->nonfinite_rows = nf;
    j->resp_ctype = "application/json";
    return 0;
}

static int format_binary(const struct lorad_server *srv, struct infer_job *j, const float *y)
{
    size_t out = (size_t)srv->model->out_features, n = (size_t)j->rows * out, i;
    unsigned char *b = malloc(n * 4 + 1);
    int nf = 0;
    if (!b)
        return LORAD_E_INTERNAL;
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &y[i], 4);
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    for (i = 0; i < (size_t)j->rows; i++) {
        size_t k;
        for (k = 0; k < out; k++)
            if (!isfinite(y[i * out + k])) {
                nf++;
                break;
            }
    }
    j->resp_body = (char *)b;
    j->resp_len = n * 4;
    j->nonfinite_rows = nf;
    j->resp_ctype = "application/octet-stream";
    return 0;
}

int infer_format_ok(const struct lorad_server *srv, struct infer_job *j,
                    const struct snapshot *snap, const float *y)
{
    if (snap) {
        snprintf(j->adapter, sizeof(j->adapter), "%s", snap->name);
        j->version = snap->version;
    } else {
        j->adapter[0] = '\0';
        j->version = 0;
    }
    j->status = 200;
    free(j->resp_body);
    j->resp_body = NULL;
    return j->binary ? format_binary(srv, j, y) : format_json(srv, j, y);
}

void infer_format_error(struct infer_job *j, int code, const char *msg)
{
    static const char oom[] =
        "{\"error\": {\"code\": \"internal\", \"message\": \"out of memory\"}}";
    free(j->resp_body);
    j->status = http_status_of(code);
    j->resp_ctype = "application/json";
    j->resp_body = http_error_body(code, msg, &j->resp_len);
    if (!j->resp_body) {
        j->resp_body = strdup(oom);
        j->resp_len = j->resp_body ? strlen(oom) : 0;
        j->status = 500;
    }
    j->adapter[0] = '\0';
}

/* ---- loop thread ---- */

void infer_complete(struct lorad_server *srv, struct infer_job *j)
{
    char ver[24], nf[24];
    const char *h[10];
    int n = 0;
    struct http_request *r = j->r;

    metrics_record_infer(srv, j->variant, j->status, lorad_now_ns() - r->t_start_ns, j->rows,
                         j->nonfinite_rows);
    if (j->status == 200) {
        snprintf(ver, sizeof(ver), "%llu", (unsigned long long)j->version);
        if (j->adapter[0]) {
            h[n++] = "X-Lorad-Adapter";
            h[n++] = j->adapter;
        }
        h[n++] = "X-Lorad-Version";
        h[n++] = ver;
        h[n++] = "X-Lorad-Variant";
        h[n++] = variant_name(j->variant);
        if (j->nonfinite_rows > 0) {
            snprintf(nf, sizeof(nf), "%d", j->nonfinite_rows);
            h[n++] = "X-Lorad-Nonfinite";
            h[n++] = nf;
        }
    }
    h[n] = NULL;
    http_respond(r, j->status, j->resp_ctype, j->resp_body, j->resp_len, h);
    j->resp_body = NULL;
    infer_job_free(&j);
}

static void respond_now(struct http_request *r, int code, const char *fmt, const char *arg)
{
    metrics_record_infer(r->srv, METRICS_VARIANT_NONE, http_status_of(code),
                         lorad_now_ns() - r->t_start_ns, 0, 0);
    http_respond_error(r, code, fmt, arg);
}

void infer_refuse_draining(struct infer_job *j)
{
    struct http_request *r = j->r;
    infer_job_free(&j);
    respond_now(r, LORAD_E_DRAINING, "%s",
                "lorad is shutting down: drain_timeout_ms passed before a worker took this "
                "request");
}

/* Rows in the body, estimated cheaply for batching (exact for binary). */
static int estimate_rows(const struct lorad_server *srv, const struct infer_job *j)
{
    const struct http_request *r = j->r;
    size_t n = 0;
    const char *p, *end;
    if (j->binary) {
        size_t rowb = (size_t)srv->model->in_features * 4;
        n = rowb ? r->body_len / rowb : 1;
    } else {
        for (p = r->body, end = r->body + r->body_len; (p = memchr(p, '[', (size_t)(end - p))); p++)
            n++;
        n = n > 1 ? n - 1 : 1;
    }
    if (n < 1)
        n = 1;
    return n > 1000000 ? 1000000 : (int)n;
}

static bool is_octet_stream(const char *ct)
{
    static const char want[] = "application/octet-stream";
    size_t n = sizeof(want) - 1;
    while (ct && *ct == ' ')
        ct++;
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

void infer_handle(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct infer_job *j;
    const char *ct, *rk, *pin;
    int rc;

    if (atomic_load(&srv->run_state) == LORAD_STARTING || !srv->model) {
        respond_now(r, LORAD_E_NOT_READY, "%s", "lorad is starting; not serving yet");
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        respond_now(r, LORAD_E_INTERNAL, "%s", "out of memory");
        return;
    }
    j->r = r;
    j->variant = METRICS_VARIANT_NONE;
    j->hdr_pin = INFER_PIN_NONE;
    j->pin = INFER_PIN_NONE;
    ct = http_header(r, "Content-Type");
    j->binary = is_octet_stream(ct);
    pin = http_header(r, "X-Lorad-Variant");
    if (pin) {
        if (strcasecmp(pin, "stable") == 0)
            j->hdr_pin = SERVING_STABLE;
        else if (strcasecmp(pin, "canary") == 0)
            j->hdr_pin = SERVING_CANARY;
        else {
            infer_job_free(&j);
            respond_now(r, LORAD_E_INVALID_REQUEST,
                        "X-Lorad-Variant must be \"stable\" or \"canary\", not \"%.64s\"", pin);
            return;
        }
    }
    rk = http_header(r, "X-Lorad-Route-Key");
    if (rk) {
        j->hdr_route_key = strdup(rk);
        j->hdr_route_key_len = strlen(rk);
        if (!j->hdr_route_key) {
            infer_job_free(&j);
            respond_now(r, LORAD_E_INTERNAL, "%s", "out of memory");
            return;
        }
    }
    j->est_rows = estimate_rows(srv, j);
    rc = workers_submit_job(srv, j);
    if (rc != 0) {
        infer_job_free(&j);
        if (rc == LORAD_E_OVERLOADED)
            respond_now(r, rc, "%s", "the work queue is full (queue_max_requests); retry later");
        else if (rc == LORAD_E_DRAINING)
            respond_now(r, rc, "%s", "lorad is shutting down");
        else
            respond_now(r, rc, "%s", "the workers are not running");
    }
}
