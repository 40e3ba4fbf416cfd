/* lorad — jsontext.c: the shared JSON lexing rules and the checks on raw
 * JSON text (see jsontext.h).
 *
 * string_end() is the one place that knows where a JSON string ends; both
 * text checks step over strings with it, so they agree on what is inside
 * one. json_number_len() is the one place that knows the number grammar. */
#include "jsontext.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool is_nul_escape(const char *p, size_t left)
{
    /* p points at the 'u' after a backslash */
    return left >= 5 && p[1] == '0' && p[2] == '0' && p[3] == '0' && p[4] == '0';
}

/* Index just past the string whose opening quote is text[i], or len when
 * it is unterminated. Sets *nul when the string holds the escape \u0000 or
 * a raw NUL byte (also one right after a backslash). */
static size_t string_end(const char *text, size_t len, size_t i, bool *nul)
{
    for (i++; i < len; i++) {
        if (text[i] == '"')
            return i + 1;
        if (text[i] == '\0')
            *nul = true;
        if (text[i] == '\\' && i + 1 < len) {
            i++;
            if (text[i] == '\0' || (text[i] == 'u' && is_nul_escape(text + i, len - i)))
                *nul = true;
        }
    }
    return len;
}

bool json_has_nul_escape(const char *text, size_t len)
{
    bool nul = false;
    size_t i = 0;
    while (i < len && !nul) {
        if (text[i] == '"') {
            i = string_end(text, len, i, &nul);
        } else {
            nul = text[i] == '\0';
            i++;
        }
    }
    return nul;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* A byte that cJSON would take into a number. */
static bool in_number(char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static size_t skip_digits(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && is_digit(*q))
        q++;
    return (size_t)(q - p);
}

size_t json_number_len(const char *p, const char *end, bool *plain)
{
    const char *q = p;
    bool simple = true;
    size_t n;

    if (q < end && *q == '-')
        q++, simple = false;
    if (q >= end || !is_digit(*q))
        return 0;
    q += *q == '0' ? 1 : skip_digits(q, end);
    if (q < end && *q == '.') {
        if (!(n = skip_digits(q + 1, end)))
            return 0;
        q += 1 + n, simple = false;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        const char *e = q + 1;
        if (e < end && (*e == '+' || *e == '-'))
            e++;
        if (!(n = skip_digits(e, end)))
            return 0;
        q = e + n, simple = false;
    }
    if (plain)
        *plain = simple;
    return (size_t)(q - p);
}

/* NULL when t[i..end) (i < end) is exactly one RFC 8259 number, else a
 * phrase saying what is wrong with it. */
static const char *number_error(const char *t, size_t i, size_t end)
{
    size_t n = json_number_len(t + i, t + end, NULL);
    if (n == end - i)
        return NULL;
    if (n > 0)
        return t[i + n] == '0' || is_digit(t[i + n]) ? "leading zero in a number"
                                                     : "unexpected character in a number";
    /* why the token does not start a number */
    if (t[i] == '+' || t[i] == '.')
        return "a number must start with '-' or a digit";
    if (t[i] == '-' && (i + 1 == end || !is_digit(t[i + 1])))
        return "'-' must be followed by a digit";
    for (size_t k = i; k < end; k++) {
        if (t[k] == '.' && (k + 1 == end || !is_digit(t[k + 1])))
            return "'.' in a number must be followed by a digit";
        if (t[k] == 'e' || t[k] == 'E')
            return "the exponent of a number must have a digit";
    }
    return "unexpected character in a number";
}

bool json_has_bad_number(const char *text, size_t len, size_t *at, const char **why)
{
    bool nul = false; /* not asked here: json_has_nul_escape() is */
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (c == '"') {
            i = string_end(text, len, i, &nul);
        } else if (is_letter(c)) { /* a word (true, false, null): no number inside */
            while (i < len && (is_letter(text[i]) || is_digit(text[i])))
                i++;
        } else if (in_number(c)) { /* 'e'/'E' are letters, so c starts a token */
            size_t end = i;
            while (end < len && in_number(text[end]))
                end++;
            const char *e = number_error(text, i, end);
            if (e) {
                *at = i;
                *why = e;
                return true;
            }
            i = end;
        } else {
            i++;
        }
    }
    return false;
}

size_t json_utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n;
    unsigned cp, min;

    if (p >= end)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0)
        n = 2, cp = p[0] & 0x1Fu, min = 0x80;
    else if ((p[0] & 0xF0) == 0xE0)
        n = 3, cp = p[0] & 0x0Fu, min = 0x800;
    else if ((p[0] & 0xF8) == 0xF0)
        n = 4, cp = p[0] & 0x07u, min = 0x10000;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

struct named {
    const char *name;
    size_t index; /* position among the members */
};

static int cmp_named(const void *x, const void *y)
{
    const struct named *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

/* Few members: compare every pair. */
static const char *duplicate_small(const cJSON *obj)
{
    for (const cJSON *v = obj->child; v; v = v->next)
        for (const cJSON *w = obj->child; w != v; w = w->next)
            if (v->string && w->string && strcmp(w->string, v->string) == 0)
                return v->string;
    return NULL;
}

#define DUP_SMALL 32

const char *json_duplicate_key(const cJSON *obj)
{
    size_t n = 0, k = 0, first = SIZE_MAX;
    const char *name = NULL;
    struct named *all;

    if (!cJSON_IsObject(obj))
        return NULL;
    for (const cJSON *v = obj->child; v; v = v->next)
        n++;
    if (n <= DUP_SMALL || !(all = malloc(n * sizeof(*all))))
        return duplicate_small(obj); /* (out of memory: slower, same answer) */
    for (const cJSON *v = obj->child; v; v = v->next, k++)
        all[k] = (struct named){v->string ? v->string : "", k};
    /* sorted by (name, position): a repeat is an entry equal to its
     * predecessor; the answer is the repeat that comes first in the object */
    qsort(all, n, sizeof(*all), cmp_named);
    for (k = 1; k < n; k++)
        if (strcmp(all[k].name, all[k - 1].name) == 0 && all[k].index < first) {
            first = all[k].index;
            name = all[k].name;
        }
    free(all);
    return name;
}
