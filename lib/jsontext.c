/* lorad — jsontext.c: checks on raw JSON text (see jsontext.h).
 *
 * string_end() is the one place that knows where a JSON string ends; both
 * checks step over strings with it, so they agree on what is inside one. */
#include "jsontext.h"

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

static size_t skip_digits(const char *t, size_t i, size_t end)
{
    while (i < end && is_digit(t[i]))
        i++;
    return i;
}

/* NULL when t[i..end) (i < end) is exactly one RFC 8259 number, else a
 * phrase saying what is wrong with it. */
static const char *number_error(const char *t, size_t i, size_t end)
{
    if (t[i] == '+' || t[i] == '.')
        return "a number must start with '-' or a digit";
    if (t[i] == '-' && (++i == end || !is_digit(t[i])))
        return "'-' must be followed by a digit";
    if (t[i] == '0' && i + 1 < end && is_digit(t[i + 1]))
        return "leading zero in a number";
    i = skip_digits(t, i, end);
    if (i < end && t[i] == '.') {
        if (++i == end || !is_digit(t[i]))
            return "'.' in a number must be followed by a digit";
        i = skip_digits(t, i, end);
    }
    if (i < end && (t[i] == 'e' || t[i] == 'E')) {
        if (++i < end && (t[i] == '+' || t[i] == '-'))
            i++;
        if (i == end || !is_digit(t[i]))
            return "the exponent of a number must have a digit";
        i = skip_digits(t, i, end);
    }
    return i == end ? NULL : "unexpected character in a number";
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
