/* lorad — jsontext.h: the JSON lexing every parser in lorad shares, and
 * the checks on raw JSON text that cJSON cannot make.
 *
 * One definition of each lexical rule, used by every reader of JSON text
 * (the /infer body parser, the safetensors header, control bodies, config
 * and adapter config files, the state file):
 *   - json_number_len(): RFC 8259's number grammar;
 *   - json_utf8_len(): one well-formed UTF-8 sequence;
 *   - json_duplicate_key(): a member name given twice in a cJSON object.
 *
 * cJSON decodes the escape \u0000 into a NUL byte inside a C string, which
 * silently truncates the value ("demo-b\u0000../x" reads as "demo-b").
 * Every parser of untrusted JSON in lorad (request bodies, the config
 * file, adapter_config.json) asks json_has_nul_escape() first and refuses
 * such text with its own error code.
 *
 * cJSON also reads numbers leniently: it hands any run of "+-.0-9eE" to
 * strtod, so 05, 5., 00.5, .5, +1 and 1.e5 parse. json_has_bad_number()
 * holds every number outside strings to RFC 8259's grammar
 *   -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * so that the control plane answers such text as malformed (SPEC 6), as
 * the /infer parser does. Callers ask it before cJSON_Parse.
 *
 * Both checks walk the text with one tokeniser: a string runs from '"' to
 * the next '"' not escaped by a backslash (an unterminated string runs to
 * the end); everything else is outside strings. Neither check validates the
 * rest of the syntax: that is cJSON's job.
 *
 * Thread-safety: pure functions.
 */
#ifndef LORAD_JSONTEXT_H
#define LORAD_JSONTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Length of the RFC 8259 number that starts at p (p < end),
 *   -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * or 0 when p does not start one ("+1", ".5", "-", "5.", "1e"). Reads no
 * byte at or past end and does not look at what follows the number, so
 * "01" is the number "0" followed by "1": callers that need a delimiter
 * check it. When `plain` is not NULL it is set to whether the number is a
 * plain non-negative integer (no sign, fraction or exponent). */
size_t json_number_len(const char *p, const char *end, bool *plain);

/* Length (1..4) of the well-formed UTF-8 sequence that starts at p
 * (p < end), or 0 when the bytes there are not one: a stray continuation
 * byte, a truncated sequence, an overlong form, a surrogate (U+D800 to
 * U+DFFF) or a code point above U+10FFFF. */
size_t json_utf8_len(const unsigned char *p, const unsigned char *end);

/* The name of the first member of object `obj` whose name an earlier
 * member already has, or NULL when every name is unique (or obj is not an
 * object). Only obj's own members are compared, not nested objects'.
 * O(n log n) in the number of members, so a header of 100,000 tensors
 * costs milliseconds, not minutes. */
const char *json_duplicate_key(const cJSON *obj);

/* True when a JSON string in text[0..len) contains the escape \u0000 (any
 * hex case), or when text holds a raw NUL byte. Strings are tokenised
 * properly, so an escaped backslash followed by "u0000" is not a match. */
bool json_has_nul_escape(const char *text, size_t len);

/* True when text[0..len) holds, outside strings, a number token that is not
 * an RFC 8259 number. A number token starts at '-', '+', '.' or a digit
 * outside strings (not inside a word such as true/null) and runs while the
 * bytes are in "+-.0123456789eE". On true, *at is the byte offset where the
 * first bad token starts and *why a static phrase saying what is wrong
 * ("leading zero in a number", ...). On false, *at and *why are unchanged. */
bool json_has_bad_number(const char *text, size_t len, size_t *at, const char **why);

#endif
