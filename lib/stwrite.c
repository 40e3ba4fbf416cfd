/* lorad — stwrite.c: this file contains the safetensors writer (see
 * stwrite.h).
 *
 * The header is built as text in a growable buffer: the metadata first,
 * then each tensor in the caller's order with contiguous data_offsets,
 * names escaped as JSON strings, padded with spaces to a multiple of 8.
 * Every tensor is checked (name, dtype, shape, sizes) while the header is
 * built, before anything is written, so a refused set of tensors leaves no
 * file behind. The image (length, header, data) is then assembled in one
 * buffer and handed to fileio_write_atomic().
 */
#include "stwrite.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "jsontext.h"

/* Whether the NUL-terminated s is well-formed UTF-8 (json_utf8_len). */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    size_t n;

    while (p < end && (n = json_utf8_len(p, end)) > 0)
        p += n;
    return p == end;
}

/* A growable text buffer for the header. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

/* s as a JSON string (s is valid UTF-8: passed through except for what
 * JSON requires escaping). */
static void sb_put_json_string(struct sbuf *b, const char *s)
{
    char esc[8];

    sb_putn(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\', esc[1] = (char)ch;
            sb_putn(b, esc, 2);
        } else if (ch < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            sb_putn(b, esc, 6);
        } else {
            sb_putn(b, (const char *)&ch, 1);
        }
    }
    sb_putn(b, "\"", 1);
}

static int check_write_tensor(const struct stwrite_tensor *t, uint64_t *nbytes,
                              struct lorad_error *err)
{
    uint64_t ne = 1;

    if (!t->name || !*t->name || !utf8_valid(t->name) || !strcmp(t->name, "__metadata__"))
        return lorad_error_set(err, LORAD_E_INTERNAL, "stwrite_file: invalid tensor name");
    if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->ndim < 0 || t->ndim > ST_MAX_DIMS)
        return lorad_error_set(err, LORAD_E_INTERNAL,
                               "stwrite_file: tensor \"%s\": bad dtype or ndim", t->name);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] > (uint64_t)ST_MAX_JSON_INT || __builtin_mul_overflow(ne, t->shape[d], &ne))
            return lorad_error_set(err, LORAD_E_INTERNAL,
                                   "stwrite_file: tensor \"%s\": shape too "
                                   "large",
                                   t->name);
    if (__builtin_mul_overflow(ne, (uint64_t)st_dtype_size(t->dtype), nbytes) ||
        *nbytes > (uint64_t)ST_MAX_JSON_INT || (*nbytes && !t->data))
        return lorad_error_set(err, LORAD_E_INTERNAL,
                               "stwrite_file: tensor \"%s\": bad size or no "
                               "data",
                               t->name);
    return 0;
}

/* The padded header text for t[0..n). */
static int build_header(const struct stwrite_tensor *t, size_t n, struct sbuf *b,
                        struct lorad_error *err)
{
    uint64_t off = 0, nb;
    char num[64];
    int rc;

    sb_puts(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_write_tensor(&t[i], &nb, err)) < 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name))
                return lorad_error_set(err, LORAD_E_INTERNAL,
                                       "stwrite_file: duplicate tensor \"%s\"", t[i].name);
        sb_puts(b, ",");
        sb_put_json_string(b, t[i].name);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, st_dtype_name(t[i].dtype));
        sb_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            snprintf(num, sizeof(num), "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
            sb_puts(b, num);
        }
        snprintf(num, sizeof(num), "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        sb_puts(b, num);
        off += nb;
    }
    sb_puts(b, "}");
    while (!b->oom && b->len % 8)
        sb_puts(b, " ");
    if (b->oom)
        return lorad_error_set(err, LORAD_E_INTERNAL, "stwrite_file: out of memory");
    return 0;
}

/* The whole file image for t[0..n) behind the header `hdr` (padded), in
 * one malloc'd buffer of *len bytes; NULL on out-of-memory. */
static uint8_t *file_image(const struct stwrite_tensor *t, size_t n, const struct sbuf *hdr,
                           size_t *len)
{
    size_t total = 8 + hdr->len, off = 8 + hdr->len;
    uint64_t nb = 0;
    uint8_t *img;

    for (size_t i = 0; i < n; i++) {
        (void)check_write_tensor(&t[i], &nb, NULL); /* passed in build_header */
        if (__builtin_add_overflow(total, nb, &total))
            return NULL;
    }
    if (!(img = malloc(total)))
        return NULL;
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)hdr->len >> (8 * i));
    memcpy(img + 8, hdr->p, hdr->len);
    for (size_t i = 0; i < n; i++) {
        (void)check_write_tensor(&t[i], &nb, NULL);
        if (nb)
            memcpy(img + off, t[i].data, (size_t)nb);
        off += (size_t)nb;
    }
    *len = total;
    return img;
}

int stwrite_file(const char *path, const struct stwrite_tensor *t, size_t n,
                 struct lorad_error *err)
{
    struct sbuf hdr = {0};
    uint8_t *img = NULL;
    size_t len = 0;
    char ebuf[128];
    int rc;

    if (!path || (!t && n))
        return lorad_error_set(err, LORAD_E_INTERNAL, "stwrite_file: bad arguments");
    if ((rc = build_header(t, n, &hdr, err)) < 0)
        goto fail;
    if (!(img = file_image(t, n, &hdr, &len))) {
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "stwrite_file: out of memory");
        goto fail;
    }
    if ((rc = fileio_write_atomic(path, img, len, 0644, NULL)) < 0)
        rc = lorad_error_set(err, LORAD_E_INTERNAL, "stwrite_file: %s: %s", path,
                             strerror_r(-rc, ebuf, sizeof(ebuf)));
fail:
    free(img);
    free(hdr.p);
    return rc;
}
