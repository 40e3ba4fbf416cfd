/* lorad — peftkey.c: this file contains peftkey_parse(), the tensor key
 * forms of a PEFT adapter (see peftkey.h).
 *
 * The LoRA suffixes are tried first, so that a LoRA tensor
 * ("x.lora_magnitude_vector.weight") is never taken for a modules_to_save
 * weight; only a key with no "lora_" component may then be a
 * modules_to_save tensor. A stem is never empty.
 */
#include "peftkey.h"

#include <string.h>

#define KEY_PREFIX "base_model.model."

struct form {
    const char *suffix;
    enum peftkey_kind kind;
};

/* Whether s[0..len) ends in `suffix` after a non-empty stem (*stem its
 * length). */
static bool ends_with(const char *s, size_t len, const char *suffix, size_t *stem)
{
    size_t n = strlen(suffix);

    if (len <= n || memcmp(s + len - n, suffix, n) != 0)
        return false;
    *stem = len - n;
    return true;
}

/* The first form of forms[0..n) that key[0..len) ends in. */
static bool match_form(const struct form *forms, size_t n, const char *key, size_t len,
                       size_t *stem_len, enum peftkey_kind *kind)
{
    for (size_t i = 0; i < n; i++)
        if (ends_with(key, len, forms[i].suffix, stem_len)) {
            *kind = forms[i].kind;
            return true;
        }
    return false;
}

bool peftkey_parse(const char *key, const char **stem, size_t *stem_len, enum peftkey_kind *kind)
{
    static const struct form lora[] = {
        {".lora_A.weight", PEFTKEY_A},           {".lora_B.weight", PEFTKEY_B},
        {".lora_B.bias", PEFTKEY_B_BIAS},        {".lora_magnitude_vector.weight", PEFTKEY_MAG},
        {".lora_magnitude_vector", PEFTKEY_MAG},
    };
    static const struct form saved[] = {
        {".weight", PEFTKEY_W},
        {".bias", PEFTKEY_BIAS},
    };
    size_t len;

    if (!key)
        return false;
    if (strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)) == 0)
        key += strlen(KEY_PREFIX);
    len = strlen(key);
    *stem = key;
    if (match_form(lora, sizeof(lora) / sizeof(lora[0]), key, len, stem_len, kind))
        return true;
    if (strstr(key, ".lora_") || strncmp(key, "lora_", 5) == 0)
        return false;
    return match_form(saved, sizeof(saved) / sizeof(saved[0]), key, len, stem_len, kind);
}
