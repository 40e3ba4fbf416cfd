/* lorad — jsontext.c: checks on raw JSON text (see jsontext.h). */
#include "jsontext.h"

static bool is_nul_escape(const char *p, size_t left)
{
    /* p points at the 'u' after a backslash */
    return left >= 5 && p[1] == '0' && p[2] == '0' && p[3] == '0' && p[4] == '0';
}

bool json_has_nul_escape(const char *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\0')
            return true;
        if (!in_string) {
            in_string = c == '"';
            continue;
        }
        if (c == '"') {
            in_string = false;
        } else if (c == '\\' && i + 1 < len) {
            i++;
            if (text[i] == 'u' && is_nul_escape(text + i, len - i))
                return true;
        }
    }
    return false;
}
