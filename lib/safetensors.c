/* lorad — safetensors.c: this file contains the defensive safetensors reader
 * (mmap + header validation, SPEC.md 2.3) and the conversion of a tensor's
 * data to f32 (the 16-bit formats decoded by half.c). The writer is
 * stwrite.c.
 *
 * Validation order (each step only runs once the previous one passed, so
 * no step ever looks at bytes the earlier ones have not vouched for):
 *   1. frame: 8-byte LE header length N, N <= 100,000,000, 8+N <= size;
 *   2. the header is valid UTF-8 (no overlongs, surrogates, > U+10FFFF);
 *   3. a lexical pass over the header that enforces what cJSON is lax about:
 *      RFC 8259 numbers and whitespace only, no raw control characters in
 *      strings, no \u0000 (names are C strings), an object at the top with
 *      nothing but whitespace after it;
 *   4. cJSON parse; the object's members are `__metadata__` (object of
 *      strings, or null) and tensor entries {dtype, shape, data_offsets}
 *      with nothing else; numbers must be non-negative integers <= 2^53-1;
 *   5. duplicate names, then, sorted by (begin, end) as the reference
 *      implementation does: contiguous from 0, no gap, no overlap,
 *      end - begin == prod(shape) * dtype size (overflow-checked), and the
 *      last end equal to the data buffer length.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "half.h"
#include "jsontext.h"

/* Bytes of a tensor name quoted in an error message. */
#define ST_NAME_QUOTE_MAX 80

struct st_meta {
    const char *key;
    const char *value;
};

struct st_file {
    const uint8_t *image; /* the whole file (mapping or caller's buffer) */
    size_t len;           /* its length */
    void *map;            /* mmap()ed region to unmap, or NULL (st_parse) */
    size_t map_len;
    struct st_tensor *tensors; /* count entries, sorted by data offset */
    size_t count;
    const struct st_tensor **by_name; /* count pointers, sorted by strcmp(name) */
    struct st_meta *meta;             /* nmeta entries, in header order */
    size_t nmeta;
    char *strings; /* arena holding every name, key and value */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4},
    [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},         [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(enum st_dtype d)
{
    if ((unsigned)d >= ST_DTYPE_COUNT)
        return "?";
    return dtypes[d].name;
}

size_t st_dtype_size(enum st_dtype d)
{
    if ((unsigned)d >= ST_DTYPE_COUNT)
        return 0;
    return dtypes[d].size;
}

/* ---- error helpers ---- */

/* What a parse needs to report errors. */
struct st_ctx {
    const char *display;
    struct lorad_error *err;
};

static int st_fail(const struct st_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int st_fail(const struct st_ctx *c, int code, const char *fmt, ...)
{
    char msg[LORAD_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return lorad_error_set(c->err, code, "%s: %s", c->display, msg);
}

#define st_bad(c, ...) st_fail((c), LORAD_E_INVALID_ADAPTER, __VA_ARGS__)

/* A tensor name fit for a message: at most ST_NAME_QUOTE_MAX bytes (cut on
 * a UTF-8 boundary, "..." appended), control characters, quotes and
 * backslashes replaced by '?'. */
static const char *quote_name(const char *s, char buf[ST_NAME_QUOTE_MAX + 4])
{
    size_t n = 0;

    if (!s)
        s = "(null)";
    while (n < ST_NAME_QUOTE_MAX && s[n])
        n++;
    if (s[n]) /* truncated: do not end inside a UTF-8 sequence */
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    if (s[n]) {
        memcpy(buf + n, "...", 4);
    } else {
        buf[n] = '\0';
    }
    return buf;
}

const char *st_shape_str(const struct st_tensor *t, char *buf, size_t cap)
{
    size_t len = 0;

    len += (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", d ? ", " : "",
                                (unsigned long long)t->shape[d]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

/* ---- step 1 and 2: frame and UTF-8 ---- */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int check_frame(const struct st_ctx *c, size_t len, uint64_t n)
{
    if (n > ST_MAX_HEADER_BYTES)
        return st_bad(c, "header length %llu exceeds the limit of %llu bytes",
                      (unsigned long long)n, (unsigned long long)ST_MAX_HEADER_BYTES);
    if (n > len - 8)
        return st_bad(c, "header length %llu runs past the end of the file (8 + %llu > %zu bytes)",
                      (unsigned long long)n, (unsigned long long)n, len);
    return 0;
}

/* Offset of the first byte that does not start a valid UTF-8 sequence
 * (json_utf8_len: overlong forms, surrogates and code points above
 * U+10FFFF are invalid), or n when all of s[0..n) is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0, len;

    while (i < n && (len = json_utf8_len(s + i, s + n)) > 0)
        i += len;
    return i;
}

/* ---- step 3: lexical pass ---- */

/* The first number that is valid JSON but not a plain non-negative
 * integer ("2.0", "2e0", "-0"); its value may pass the checks on doubles,
 * its spelling does not. */
struct lex_odd {
    bool seen;
    size_t at;
    char text[32];
};

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* h[*i] is '"'; moves *i past the closing quote. */
static int lex_string(const struct st_ctx *c, const char *h, size_t n, size_t *i)
{
    size_t p = *i + 1;

    while (p < n) {
        unsigned char ch = (unsigned char)h[p];
        if (ch == '"') {
            *i = p + 1;
            return 0;
        }
        if (ch < 0x20)
            return st_bad(c,
                          "header is not valid JSON: raw control character 0x%02x in a string "
                          "at header byte %zu",
                          ch, p);
        if (ch != '\\') {
            p++;
            continue;
        }
        if (p + 1 >= n)
            break;
        if (h[p + 1] == 'u') {
            if (n - p < 6 || !is_hex(h[p + 2]) || !is_hex(h[p + 3]) || !is_hex(h[p + 4]) ||
                !is_hex(h[p + 5]))
                return st_bad(c, "header is not valid JSON: bad \\u escape at header byte %zu", p);
            if (!memcmp(h + p + 2, "0000", 4))
                return st_bad(c,
                              "header holds a NUL character (\\u0000) in a string at header "
                              "byte %zu; names and metadata must not contain NUL",
                              p);
            p += 6;
        } else if (strchr("\"\\/bfnrt", h[p + 1]) && h[p + 1] != '\0') {
            p += 2;
        } else {
            return st_bad(c, "header is not valid JSON: bad escape at header byte %zu", p);
        }
    }
    return st_bad(c, "header is not valid JSON: unterminated string starting at header byte %zu",
                  *i);
}

/* h[*i] starts a number ('-' or a digit); checks RFC 8259's grammar
 * (json_number_len), moves *i past it and records it in *odd when it is
 * not a plain non-negative integer. */
static int lex_number(const struct st_ctx *c, const char *h, size_t n, size_t *i,
                      struct lex_odd *odd)
{
    bool plain = false;
    size_t len = json_number_len(h + *i, h + n, &plain), p = *i + len;

    /* cJSON would read "01" or "1-2" as one number: only a delimiter may follow */
    if (len == 0 ||
        (p < n && (is_digit(h[p]) || strchr("+-.eE", h[p]) || (h[p] >= 'a' && h[p] <= 'z'))))
        return st_bad(c, "header is not valid JSON: malformed number at header byte %zu", *i);
    if (!plain && !odd->seen) {
        size_t keep = len < sizeof(odd->text) - 1 ? len : sizeof(odd->text) - 1;
        odd->seen = true;
        odd->at = *i;
        memcpy(odd->text, h + *i, keep);
        odd->text[keep] = '\0';
    }
    *i = p;
    return 0;
}

static int lex_header(const struct st_ctx *c, const char *h, size_t n, struct lex_odd *odd)
{
    size_t i = 0;
    long depth = 0;
    int rc;

    while (i < n && is_ws(h[i]))
        i++;
    if (i >= n || h[i] != '{')
        return st_bad(c, "header is not a JSON object (it must start with '{')");
    while (i < n) {
        char ch = h[i];
        if (is_ws(ch) || ch == ',' || ch == ':') {
            i++;
        } else if (ch == '{' || ch == '[') {
            depth++, i++;
        } else if (ch == '}' || ch == ']') {
            i++;
            if (--depth == 0)
                break;
        } else if (ch == '"') {
            if ((rc = lex_string(c, h, n, &i)) < 0)
                return rc;
        } else if (ch == '-' || is_digit(ch)) {
            if ((rc = lex_number(c, h, n, &i, odd)) < 0)
                return rc;
        } else if (ch >= 'a' && ch <= 'z') { /* true, false, null: cJSON checks */
            while (i < n && h[i] >= 'a' && h[i] <= 'z')
                i++;
        } else {
            return st_bad(c, "header is not valid JSON: unexpected byte 0x%02x at header byte %zu",
                          (unsigned char)ch, i);
        }
    }
    if (depth != 0)
        return st_bad(c, "header is not valid JSON: the top-level object is not closed");
    while (i < n && is_ws(h[i]))
        i++;
    if (i < n)
        return st_bad(c,
                      "trailing bytes after the JSON object at header byte %zu (only "
                      "whitespace padding may follow it)",
                      i);
    return 0;
}

/* ---- step 4: the members ---- */

/* One tensor entry while parsing. */
struct st_ent {
    struct st_tensor t;
    const char *name; /* cJSON's copy until the arena holds it */
    uint64_t begin, end;
    size_t index; /* position in the header, to keep sorting stable */
};

/* Reads a JSON number that must be an integer in [0, 2^53). Returns NULL
 * when it is, else why not. */
static const char *json_uint(const cJSON *v, uint64_t *out)
{
    double d;

    if (!cJSON_IsNumber(v))
        return "not a number";
    d = v->valuedouble;
    if (!isfinite(d) || d > ST_MAX_JSON_INT)
        return "too large (more than 2^53 - 1)";
    if (d < 0)
        return "negative";
    if (d != floor(d))
        return "fractional";
    *out = (uint64_t)d;
    return NULL;
}

static int parse_dtype(const struct st_ctx *c, const char *qn, const cJSON *v, enum st_dtype *out)
{
    if (!cJSON_IsString(v))
        return st_bad(c, "tensor \"%s\": dtype is not a string", qn);
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        if (!strcmp(v->valuestring, dtypes[d].name)) {
            *out = (enum st_dtype)d;
            return 0;
        }
    }
    char qd[ST_NAME_QUOTE_MAX + 4];
    return st_bad(c,
                  "tensor \"%s\": unknown dtype \"%s\" (known: BOOL U8 I8 F8_E5M2 F8_E4M3 I16 "
                  "U16 F16 BF16 I32 U32 F32 I64 U64 F64)",
                  qn, quote_name(v->valuestring, qd));
}

static int parse_shape(const struct st_ctx *c, const char *qn, const cJSON *v, struct st_tensor *t)
{
    int nd = 0;
    const cJSON *dim;

    if (!cJSON_IsArray(v))
        return st_bad(c, "tensor \"%s\": shape is not an array", qn);
    cJSON_ArrayForEach(dim, v)
    {
        const char *why;
        uint64_t x = 0;
        if (nd >= ST_MAX_DIMS)
            return st_bad(c, "tensor \"%s\": shape has more than %d dimensions", qn, ST_MAX_DIMS);
        if ((why = json_uint(dim, &x)))
            return st_bad(c, "tensor \"%s\": shape[%d] is %s; shape takes non-negative integers",
                          qn, nd, why);
        t->shape[nd++] = x;
    }
    t->ndim = nd;
    return 0;
}

static int parse_offsets(const struct st_ctx *c, const char *qn, const cJSON *v, struct st_ent *e)
{
    uint64_t o[2] = {0, 0};
    const cJSON *x;
    int k = 0;

    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return st_bad(c, "tensor \"%s\": data_offsets is not an array [begin, end]", qn);
    cJSON_ArrayForEach(x, v)
    {
        const char *why = json_uint(x, &o[k]);
        if (why)
            return st_bad(c,
                          "tensor \"%s\": data_offsets[%d] is %s; offsets take non-negative "
                          "integers",
                          qn, k, why);
        k++;
    }
    if (o[1] < o[0])
        return st_bad(c,
                      "tensor \"%s\": data_offsets [%llu, %llu] end before they begin (end < "
                      "begin)",
                      qn, (unsigned long long)o[0], (unsigned long long)o[1]);
    e->begin = o[0];
    e->end = o[1];
    return 0;
}

/* dtype and shape agree with the offsets, and the offsets stay inside the
 * data buffer of dlen bytes. */
static int check_extent(const struct st_ctx *c, const char *qn, struct st_ent *e, uint64_t dlen)
{
    struct st_tensor *t = &e->t;
    uint64_t ne = 1, nb;
    char sh[128];

    for (int d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(ne, t->shape[d], &ne))
            return st_bad(c,
                          "tensor \"%s\": shape %s overflows: its element count does not fit "
                          "in 64 bits",
                          qn, st_shape_str(t, sh, sizeof(sh)));
    if (__builtin_mul_overflow(ne, (uint64_t)dtypes[t->dtype].size, &nb))
        return st_bad(c,
                      "tensor \"%s\": dtype %s shape %s overflows: its byte size does not "
                      "fit in 64 bits",
                      qn, dtypes[t->dtype].name, st_shape_str(t, sh, sizeof(sh)));
    if (e->end - e->begin != nb)
        return st_bad(c,
                      "tensor \"%s\": data_offsets [%llu, %llu] span %llu bytes but dtype %s "
                      "shape %s needs %llu",
                      qn, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)(e->end - e->begin), dtypes[t->dtype].name,
                      st_shape_str(t, sh, sizeof(sh)), (unsigned long long)nb);
    if (e->end > dlen)
        return st_bad(c,
                      "tensor \"%s\": data_offsets [%llu, %llu] run past the end of the data "
                      "buffer (%llu bytes)",
                      qn, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)dlen);
    t->nelems = ne;
    t->nbytes = (size_t)nb;
    return 0;
}

static int parse_entry(const struct st_ctx *c, const cJSON *item, uint64_t dlen, struct st_ent *e)
{
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL, *kid;
    char qn[ST_NAME_QUOTE_MAX + 4], qk[ST_NAME_QUOTE_MAX + 4];
    int rc;

    quote_name(item->string, qn);
    if (!cJSON_IsObject(item))
        return st_bad(c, "tensor \"%s\": entry is not a JSON object", qn);
    cJSON_ArrayForEach(kid, item)
    {
        const cJSON **slot = !strcmp(kid->string, "dtype")          ? &dtype
                             : !strcmp(kid->string, "shape")        ? &shape
                             : !strcmp(kid->string, "data_offsets") ? &offs
                                                                    : NULL;
        if (!slot)
            return st_bad(c,
                          "tensor \"%s\": unknown key \"%s\" in entry (allowed: dtype, "
                          "shape, data_offsets)",
                          qn, quote_name(kid->string, qk));
        if (*slot)
            return st_bad(c, "tensor \"%s\": duplicate key \"%s\" in entry", qn, kid->string);
        *slot = kid;
    }
    if (!dtype || !shape || !offs)
        return st_bad(c, "tensor \"%s\": entry lacks \"%s\"", qn,
                      !dtype   ? "dtype"
                      : !shape ? "shape"
                               : "data_offsets");
    e->name = item->string;
    if ((rc = parse_dtype(c, qn, dtype, &e->t.dtype)) < 0 ||
        (rc = parse_shape(c, qn, shape, &e->t)) < 0 || (rc = parse_offsets(c, qn, offs, e)) < 0)
        return rc;
    return check_extent(c, qn, e, dlen);
}

static int check_metadata(const struct st_ctx *c, const cJSON *m)
{
    const cJSON *kid;
    const char *dup;
    char qk[ST_NAME_QUOTE_MAX + 4];

    if (cJSON_IsNull(m))
        return 0;
    if (!cJSON_IsObject(m))
        return st_bad(c, "__metadata__ is not an object of strings");
    cJSON_ArrayForEach(kid, m)
    {
        if (!cJSON_IsString(kid))
            return st_bad(c,
                          "__metadata__ key \"%s\" has a non-string value (metadata maps "
                          "strings to strings)",
                          quote_name(kid->string, qk));
    }
    if ((dup = json_duplicate_key(m)))
        return st_bad(c, "__metadata__ key \"%s\" appears twice (duplicate key)",
                      quote_name(dup, qk));
    return 0;
}

/* ---- step 5: names and layout ---- */

static int cmp_ent_name(const void *a, const void *b)
{
    return strcmp((*(const struct st_ent *const *)a)->name,
                  (*(const struct st_ent *const *)b)->name);
}

static int cmp_ent_offset(const void *a, const void *b)
{
    const struct st_ent *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const struct st_tensor *const *)a)->name,
                  (*(const struct st_tensor *const *)b)->name);
}

static int check_duplicates(const struct st_ctx *c, struct st_ent *ents, size_t n)
{
    struct st_ent **v;
    char qn[ST_NAME_QUOTE_MAX + 4];
    int rc = 0;

    if (n < 2)
        return 0;
    if (!(v = malloc(n * sizeof(*v))))
        return st_fail(c, LORAD_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = &ents[i];
    qsort(v, n, sizeof(*v), cmp_ent_name);
    for (size_t i = 1; i < n && !rc; i++)
        if (!strcmp(v[i - 1]->name, v[i]->name))
            rc = st_bad(c, "tensor \"%s\" appears twice (duplicate tensor name)",
                        quote_name(v[i]->name, qn));
    free(v);
    return rc;
}

/* ents sorted by offset: contiguous from 0, no overlap, ends at dlen. */
static int check_layout(const struct st_ctx *c, const struct st_ent *ents, size_t n, uint64_t dlen)
{
    uint64_t pos = 0;
    char qn[ST_NAME_QUOTE_MAX + 4], qp[ST_NAME_QUOTE_MAX + 4];

    for (size_t i = 0; i < n; i++) {
        const struct st_ent *e = &ents[i];
        if (e->begin > pos)
            return st_bad(c,
                          "tensor \"%s\": data_offsets [%llu, %llu] leave a gap after byte "
                          "%llu (tensors must be contiguous from 0)",
                          quote_name(e->name, qn), (unsigned long long)e->begin,
                          (unsigned long long)e->end, (unsigned long long)pos);
        if (e->begin < pos)
            return st_bad(c,
                          "tensor \"%s\": data_offsets [%llu, %llu] overlap tensor \"%s\", "
                          "which ends at %llu",
                          quote_name(e->name, qn), (unsigned long long)e->begin,
                          (unsigned long long)e->end, quote_name(ents[i - 1].name, qp),
                          (unsigned long long)pos);
        pos = e->end;
    }
    if (pos != dlen)
        return st_bad(c,
                      "the tensors end at data byte %llu but the data buffer is %llu bytes (the "
                      "last data_offsets end must equal the buffer length)",
                      (unsigned long long)pos, (unsigned long long)dlen);
    return 0;
}

/* Copies s into the arena at *pos; returns the copy. */
static const char *arena_put(char *arena, size_t *pos, const char *s)
{
    size_t len = strlen(s) + 1;
    char *dst = arena + *pos;
    memcpy(dst, s, len);
    *pos += len;
    return dst;
}

/* Builds the st_file from validated entries (sorted by offset) and the
 * metadata object (or NULL). */
static int build_file(const struct st_ctx *c, const struct st_ent *ents, size_t n,
                      const cJSON *meta, const uint8_t *data, struct st_file *f)
{
    size_t total = 0, pos = 0, nmeta = 0;
    const cJSON *kid;

    for (size_t i = 0; i < n; i++)
        total += strlen(ents[i].name) + 1;
    cJSON_ArrayForEach(kid, meta)
    {
        total += strlen(kid->string) + strlen(kid->valuestring) + 2;
        nmeta++;
    }
    f->tensors = calloc(n ? n : 1, sizeof(*f->tensors));
    f->by_name = calloc(n ? n : 1, sizeof(*f->by_name));
    f->meta = calloc(nmeta ? nmeta : 1, sizeof(*f->meta));
    f->strings = malloc(total ? total : 1);
    if (!f->tensors || !f->by_name || !f->meta || !f->strings)
        return st_fail(c, LORAD_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        f->tensors[i] = ents[i].t;
        f->tensors[i].name = arena_put(f->strings, &pos, ents[i].name);
        f->tensors[i].data = data + ents[i].begin;
        f->by_name[i] = &f->tensors[i];
    }
    f->count = n;
    qsort(f->by_name, n, sizeof(*f->by_name), cmp_tensor_name);
    cJSON_ArrayForEach(kid, meta)
    {
        f->meta[f->nmeta].key = arena_put(f->strings, &pos, kid->string);
        f->meta[f->nmeta].value = arena_put(f->strings, &pos, kid->valuestring);
        f->nmeta++;
    }
    return 0;
}

/* Steps 4 and 5 on the parsed root object. */
static int check_root(const struct st_ctx *c, const cJSON *root, const uint8_t *data, uint64_t dlen,
                      const struct lex_odd *odd, struct st_file *f)
{
    const cJSON *kid, *meta = NULL;
    struct st_ent *ents = NULL;
    size_t n = 0, k = 0;
    int rc;

    cJSON_ArrayForEach(kid, root)
    {
        if (strcmp(kid->string, "__metadata__")) {
            n++;
        } else if (meta) {
            return st_bad(c, "__metadata__ appears twice (duplicate key)");
        } else if ((rc = check_metadata(c, kid)) < 0) {
            return rc;
        } else {
            meta = kid;
        }
    }
    if (!(ents = calloc(n ? n : 1, sizeof(*ents))))
        return st_fail(c, LORAD_E_INTERNAL, "out of memory");
    cJSON_ArrayForEach(kid, root)
    {
        if (kid == meta)
            continue;
        ents[k].index = k;
        if ((rc = parse_entry(c, kid, dlen, &ents[k])) < 0)
            goto fail;
        k++;
    }
    if (odd->seen) {
        rc = st_bad(c,
                    "number %s at header byte %zu is not written as a plain non-negative "
                    "integer (shape and data_offsets take integers only)",
                    odd->text, odd->at);
        goto fail;
    }
    if ((rc = check_duplicates(c, ents, n)) < 0)
        goto fail;
    qsort(ents, n, sizeof(*ents), cmp_ent_offset);
    if ((rc = check_layout(c, ents, n, dlen)) < 0)
        goto fail;
    rc = build_file(c, ents, n, cJSON_IsObject(meta) ? meta : NULL, data, f);
fail:
    free(ents);
    return rc;
}

/* Steps 2 to 5 on the header h[0..n). */
static int parse_header(const struct st_ctx *c, const uint8_t *h, size_t n, const uint8_t *data,
                        uint64_t dlen, struct st_file *f)
{
    struct lex_odd odd = {0};
    size_t bad = utf8_invalid_at(h, n);
    const char *end = NULL;
    cJSON *root = NULL;
    char *text = NULL;
    int rc;

    if (bad < n)
        return st_bad(c, "header is not valid UTF-8 (at header byte %zu)", bad);
    if ((rc = lex_header(c, (const char *)h, n, &odd)) < 0)
        return rc;
    /* cJSON gets its own NUL-terminated copy: it never reads the mapping */
    if (!(text = malloc(n + 1)))
        return st_fail(c, LORAD_E_INTERNAL, "out of memory for a %zu-byte header", n);
    memcpy(text, h, n);
    text[n] = '\0';
    root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        rc = st_bad(c, "header is not valid JSON (near header byte %zu)",
                    end && end >= text ? (size_t)(end - text) : (size_t)0);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = st_bad(c, "header is not a JSON object");
        goto fail;
    }
    rc = check_root(c, root, data, dlen, &odd, f);
fail:
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ---- public: parse, open, close, accessors ---- */

static void free_file(struct st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f);
}

int st_parse(const uint8_t *buf, size_t len, const char *display, struct st_file **out,
             struct lorad_error *err)
{
    struct st_ctx c = {display ? display : "safetensors", err};
    struct st_file *f = NULL;
    uint64_t n;
    int rc;

    if (!out || (!buf && len))
        return st_fail(&c, LORAD_E_INTERNAL, "st_parse: bad arguments");
    *out = NULL;
    if (len == 0)
        return st_bad(&c, "file is empty (a safetensors file starts with an 8-byte header "
                          "length)");
    if (len < 8)
        return st_bad(&c, "file is %zu bytes, shorter than the 8-byte header length", len);
    n = le64(buf);
    if ((rc = check_frame(&c, len, n)) < 0)
        return rc;
    if (!(f = calloc(1, sizeof(*f))))
        return st_fail(&c, LORAD_E_INTERNAL, "out of memory");
    f->image = buf;
    f->len = len;
    rc = parse_header(&c, buf + 8, (size_t)n, buf + 8 + n, len - 8 - n, f);
    if (rc < 0) {
        free_file(f);
        return rc;
    }
    *out = f;
    return 0;
}

static int open_error(const struct st_ctx *c, int e, int nofollow)
{
    char buf[128];

    if (e == ENOENT || e == ENOTDIR)
        return st_fail(c, LORAD_E_ADAPTER_NOT_FOUND, "no such file");
    if (e == ELOOP && nofollow)
        return st_bad(c, "is a symbolic link (refused)");
    return st_fail(c, LORAD_E_INTERNAL, "cannot open: %s", strerror_r(e, buf, sizeof(buf)));
}

int st_open_at(int dirfd, const char *relpath, const char *display, int nofollow,
               struct st_file **out, struct lorad_error *err)
{
    struct st_ctx c = {display ? display : relpath ? relpath : "safetensors", err};
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0);
    char ebuf[128];
    struct stat st;
    void *map = MAP_FAILED;
    int fd = -1, rc;

    if (!relpath || !out)
        return st_fail(&c, LORAD_E_INTERNAL, "st_open_at: bad arguments");
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO planted in place of the file must not hang */
    if ((fd = openat(dirfd, relpath, flags)) < 0)
        return open_error(&c, errno, nofollow);
    if (fstat(fd, &st) < 0) {
        rc = st_fail(&c, LORAD_E_INTERNAL, "fstat: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = st_bad(&c, "not a regular file");
        goto fail;
    }
    if (st.st_size == 0) { /* mmap refuses length 0; st_parse words the error */
        rc = st_parse((const uint8_t *)"", 0, c.display, out, err);
        goto fail;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = st_fail(&c, LORAD_E_INTERNAL, "mmap: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
        goto fail;
    }
    close(fd);
    fd = -1;
    if ((rc = st_parse(map, (size_t)st.st_size, c.display, out, err)) < 0)
        goto fail;
    (*out)->map = map;
    (*out)->map_len = (size_t)st.st_size;
    return 0;
fail:
    if (map != MAP_FAILED)
        munmap(map, (size_t)st.st_size);
    if (fd >= 0)
        close(fd);
    return rc;
}

int st_open(const char *path, struct st_file **out, struct lorad_error *err)
{
    return st_open_at(AT_FDCWD, path, path, 0, out, err);
}

void st_close(struct st_file **f)
{
    if (!f || !*f)
        return;
    free_file(*f);
    *f = NULL;
}

size_t st_count(const struct st_file *f)
{
    return f ? f->count : 0;
}

const struct st_tensor *st_get(const struct st_file *f, size_t i)
{
    if (!f || i >= f->count)
        return NULL;
    return &f->tensors[i];
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    struct st_tensor key = {.name = name};
    const struct st_tensor *kp = &key, **hit;

    if (!f || !name || !f->count)
        return NULL;
    hit = bsearch(&kp, f->by_name, f->count, sizeof(*f->by_name), cmp_tensor_name);
    return hit ? *hit : NULL;
}

const uint8_t *st_image(const struct st_file *f, size_t *len)
{
    if (len)
        *len = f ? f->len : 0;
    return f ? f->image : NULL;
}

const char *st_metadata(const struct st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}

/* ---- conversions ---- */

int st_to_f32(const struct st_tensor *t, float *dst, struct lorad_error *err)
{
    char qn[ST_NAME_QUOTE_MAX + 4];
    const uint8_t *p;

    if (!t || (!dst && t->nelems) || (!t->data && t->nbytes))
        return lorad_error_set(err, LORAD_E_INTERNAL, "st_to_f32: bad arguments");
    if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->nbytes / dtypes[t->dtype].size != t->nelems ||
        t->nbytes % dtypes[t->dtype].size)
        return lorad_error_set(err, LORAD_E_INTERNAL, "tensor \"%s\": inconsistent tensor record",
                               quote_name(t->name, qn));
    p = t->data;
    switch (t->dtype) {
    case ST_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (t->nbytes)
            memcpy(dst, p, t->nbytes);
#else
        for (size_t i = 0; i < t->nelems; i++, p += 4) {
            uint32_t u =
                (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            memcpy(&dst[i], &u, sizeof(u));
        }
#endif
        return 0;
    case ST_F16:
        for (size_t i = 0; i < t->nelems; i++, p += 2)
            dst[i] = half_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < t->nelems; i++, p += 2)
            dst[i] = half_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        return 0;
    default:
        return lorad_error_set(err, LORAD_E_UNSUPPORTED_DTYPE,
                               "tensor \"%s\": dtype %s is not supported (F32, F16 or BF16 only)",
                               quote_name(t->name, qn), dtypes[t->dtype].name);
    }
}
