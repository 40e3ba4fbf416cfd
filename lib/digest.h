/* lorad — digest.h: sha256 of byte buffers as lowercase hex, the memo of
 * file digests, and the comparison of hex digests given by operators.
 *
 * Design: a thin wrapper over nettle's sha256 (a Debian crypto library, as
 * SPEC.md asks; nothing hand-written). Digests travel as 64-character hex
 * strings: lowercase when lorad produces them, any case when an operator
 * sends one (SPEC.md 6: "sha256 hex is case-insensitive").
 *
 * The memo: hashing a 16 MiB adapter costs more than the whole staging
 * budget of SPEC 10, and the same files are staged again and again
 * (alternating rollouts, /adapters, restore). digest_file_sha256()
 * remembers the digest of a file per identity: device, inode, size, mtime
 * and ctime. Any write to a file changes its ctime, which user space
 * cannot set back. As git does with its index, a digest is remembered only
 * when both timestamps were at least DIGEST_MEMO_SETTLE_S seconds old when
 * hashing started, so a write within the same timestamp tick cannot hide
 * behind an entry. Two names linked to one file share an entry; the memo
 * holds DIGEST_MEMO_SIZE entries and evicts the least recently used.
 *
 * Ownership: callers own every buffer; nothing is allocated.
 *
 * Thread-safety: any thread may call every function; the memo is guarded
 * by a mutex, everything else is pure.
 */
#ifndef LORAD_DIGEST_H
#define LORAD_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* Length of a sha256 digest in hex characters (without the NUL). */
#define DIGEST_SHA256_HEX_LEN 64

/* Writes the sha256 of data[0..len) as 64 lowercase hex characters plus a
 * NUL into out. `data` may be NULL only when len is 0. Returns 0, or
 * LORAD_E_INTERNAL when out is NULL or data is NULL with len > 0. */
int digest_sha256_hex(const void *data, size_t len, char out[65]);

/* Entries of the file digest memo, and how old (in seconds of CLOCK_REALTIME)
 * a file's mtime and ctime must be for its digest to be remembered. */
#define DIGEST_MEMO_SIZE 64
#define DIGEST_MEMO_SETTLE_S 2

/* The sha256 of a whole file as digest_sha256_hex() writes it: `st` is
 * fstat() of the open file, data[0..len) its bytes (len == st->st_size;
 * data may be NULL when len is 0). Taken from the memo when an entry has
 * st's identity (then `data` is not read), else computed and remembered
 * when the file had settled. Returns 0, or LORAD_E_INTERNAL for bad
 * arguments (len other than st->st_size included). */
int digest_file_sha256(const struct stat *st, const void *data, size_t len, char out[65]);

/* True when s is exactly 64 hex digits (either case) followed by a NUL. */
bool digest_hex_valid(const char *s);

/* True when a and b are both valid 64-digit hex strings (digest_hex_valid)
 * naming the same digest, compared case-insensitively. Anything else (NULL,
 * wrong length, a non-hex character) is false. The comparison of the
 * digits takes the same time wherever they differ. */
bool digest_hex_equal(const char *a, const char *b);

#endif
