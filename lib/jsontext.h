/* lorad — jsontext.h: checks on raw JSON text that cJSON cannot make.
 *
 * cJSON decodes the escape \u0000 into a NUL byte inside a C string, which
 * silently truncates the value ("demo-b\u0000../x" reads as "demo-b").
 * Every parser of untrusted JSON in lorad (request bodies, the config
 * file, adapter_config.json) asks json_has_nul_escape() first and refuses
 * such text with its own error code.
 *
 * Thread-safety: pure functions.
 */
#ifndef LORAD_JSONTEXT_H
#define LORAD_JSONTEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True when a JSON string in text[0..len) contains the escape \u0000 (any
 * hex case), or when text holds a raw NUL byte. Strings are tokenised
 * properly, so an escaped backslash followed by "u0000" is not a match. */
bool json_has_nul_escape(const char *text, size_t len);

#endif
