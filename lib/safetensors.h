/* lorad — safetensors.h: a defensive reader of the safetensors format
 * (stwrite.h writes the format).
 *
 * Design: the file is mmap()ed read-only; the header is parsed and checked
 * against every rule the reference implementation enforces (SPEC.md 2.3)
 * before a single tensor byte is looked at, so afterwards every st_tensor
 * points to bytes that are inside the mapping and exactly as long as its
 * dtype and shape say. Nothing in the file is trusted: header length, shape
 * products and offsets are all overflow-checked. Errors are
 * LORAD_E_INVALID_ADAPTER with a message naming the file and the rule.
 *
 * Where the reference is looser or silent, lorad is stricter (no file that
 * PyTorch/safetensors writes is refused): duplicate tensor names and
 * duplicate keys anywhere in the header are refused, as is an unknown key
 * inside a tensor entry; numbers must be spelled as plain non-negative
 * integers no larger than 2^53 - 1; names and metadata may not contain NUL
 * (\u0000); a tensor has at most ST_MAX_DIMS dimensions. Like the
 * reference, `"__metadata__": null` is accepted (no metadata) and the
 * header may be padded with JSON whitespace after the object.
 *
 * Tensor bytes are not touched until st_to_f32(). A file shortened by
 * someone else while it is mapped raises SIGBUS on access: replace adapter
 * files by rename, never rewrite them in place.
 *
 * Ownership: st_open*() return a struct st_file that owns its mapping and
 * its tensor table; st_tensor pointers (and their name/data pointers) stay
 * valid until st_close(). st_parse() borrows the caller's buffer, which must
 * outlive the st_file.
 *
 * Thread-safety: an st_file is immutable after opening; any number of
 * threads may read it.
 */
#ifndef LORAD_SAFETENSORS_H
#define LORAD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"

/* Largest header the reference implementation accepts. */
#define ST_MAX_HEADER_BYTES 100000000ULL
/* Most dimensions we accept for one tensor (the format has no limit;
 * nothing lorad reads has more than 2). */
#define ST_MAX_DIMS 8
/* Largest integer a header number may carry: beyond it a double (what
 * cJSON stores) no longer holds every integer exactly. */
#define ST_MAX_JSON_INT 9007199254740991.0 /* 2^53 - 1 */

enum st_dtype {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_I64,
    ST_U64,
    ST_F64,
    ST_DTYPE_COUNT
};

struct st_tensor {
    const char *name; /* NUL-terminated, owned by the st_file */
    enum st_dtype dtype;
    int ndim; /* 0 (scalar) .. ST_MAX_DIMS */
    uint64_t shape[ST_MAX_DIMS];
    uint64_t nelems;     /* product of shape (1 for a scalar) */
    const uint8_t *data; /* inside the mapping; nbytes long; unaligned */
    size_t nbytes;
};

struct st_file;

/* Opens and validates `relpath` relative to directory fd `dirfd` (AT_FDCWD
 * allowed). `display` names the file in error messages (NULL: relpath).
 * Follows no symlink in the last component when `nofollow` is nonzero.
 * Returns 0 and sets *out, or a negative lorad_err (LORAD_E_INVALID_ADAPTER
 * for format violations, LORAD_E_ADAPTER_NOT_FOUND when the file does not
 * exist, LORAD_E_INTERNAL for I/O errors). */
int st_open_at(int dirfd, const char *relpath, const char *display, int nofollow,
               struct st_file **out, struct lorad_error *err);

/* Same as st_open_at(AT_FDCWD, path, path, 0, ...). */
int st_open(const char *path, struct st_file **out, struct lorad_error *err);

/* Validates a safetensors image already in memory (used by the fuzzers and
 * tests). Borrows `buf` (must outlive the result). */
int st_parse(const uint8_t *buf, size_t len, const char *display, struct st_file **out,
             struct lorad_error *err);

/* Unmaps and frees; sets *f to NULL. Safe on NULL and *f == NULL. */
void st_close(struct st_file **f);

size_t st_count(const struct st_file *f);
/* Tensors in file order of their data offsets; i < st_count(). */
const struct st_tensor *st_get(const struct st_file *f, size_t i);
/* NULL when absent. Binary search over the names (O(log n)). */
const struct st_tensor *st_find(const struct st_file *f, const char *name);
/* The whole file image (for sha256 of the file). */
const uint8_t *st_image(const struct st_file *f, size_t *len);
/* Value of a `__metadata__` key, or NULL. */
const char *st_metadata(const struct st_file *f, const char *key);

/* t's shape as "[2, 3]" ("[]" for a scalar) into buf (cap bytes,
 * truncated to fit); returns buf. */
const char *st_shape_str(const struct st_tensor *t, char *buf, size_t cap);

/* "F32", "BF16", ... and the size of one element in bytes. */
const char *st_dtype_name(enum st_dtype d);
size_t st_dtype_size(enum st_dtype d);

/* Converts a F32, F16 or BF16 tensor to native f32 into dst (t->nelems
 * floats). Conversion is exact (subnormals, infinities, NaN preserved).
 * Returns LORAD_E_UNSUPPORTED_DTYPE (message names tensor and dtype) for
 * any other dtype. */
int st_to_f32(const struct st_tensor *t, float *dst, struct lorad_error *err);

#endif
