/* lorad — digest.h: sha256 of byte buffers as lowercase hex, and the
 * comparison of hex digests given by operators.
 *
 * Design: a thin wrapper over nettle's sha256 (a Debian crypto library, as
 * SPEC.md asks; nothing hand-written). Digests travel as 64-character hex
 * strings: lowercase when lorad produces them, any case when an operator
 * sends one (SPEC.md 6: "sha256 hex is case-insensitive").
 *
 * Ownership: callers own every buffer; nothing is allocated.
 *
 * Thread-safety: all functions are pure; any thread may call them.
 */
#ifndef LORAD_DIGEST_H
#define LORAD_DIGEST_H

#include <stdbool.h>
#include <stddef.h>

/* Length of a sha256 digest in hex characters (without the NUL). */
#define DIGEST_SHA256_HEX_LEN 64

/* Writes the sha256 of data[0..len) as 64 lowercase hex characters plus a
 * NUL into out. `data` may be NULL only when len is 0. Returns 0, or
 * LORAD_E_INTERNAL when out is NULL or data is NULL with len > 0. */
int digest_sha256_hex(const void *data, size_t len, char out[65]);

/* True when s is exactly 64 hex digits (either case) followed by a NUL. */
bool digest_hex_valid(const char *s);

/* True when a and b are both valid 64-digit hex strings (digest_hex_valid)
 * naming the same digest, compared case-insensitively. Anything else (NULL,
 * wrong length, a non-hex character) is false. The comparison of the
 * digits takes the same time wherever they differ. */
bool digest_hex_equal(const char *a, const char *b);

#endif
