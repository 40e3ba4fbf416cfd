/* lorad — stwrite.h: writing safetensors files (the demo tool, tests,
 * fuzzers).
 *
 * The file written is one the reader (safetensors.h) and the reference
 * implementation accept: an 8-byte little-endian header length, a JSON
 * header with metadata {"format":"pt"} and one entry per tensor in the
 * order given, data_offsets contiguous from 0, the header padded with
 * spaces to a multiple of 8, then the data. It replaces `path` atomically
 * through fileio_write_atomic(): "<path>.tmp" written and fsynced, renamed
 * over path, the directory fsynced; mode 0644.
 *
 * Ownership: the caller owns the tensors and their data; the whole file
 * image is assembled in memory for the write and freed before returning.
 *
 * Thread-safety: reentrant, but writers of one path must be serialised
 * (they share the temp name).
 */
#ifndef LORAD_STWRITE_H
#define LORAD_STWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "safetensors.h"

/* One tensor: `data` holds nelems values of `dtype` in little-endian
 * order (half.h encodes F16 and BF16 values). */
struct stwrite_tensor {
    const char *name; /* valid UTF-8, not empty, not "__metadata__" */
    enum st_dtype dtype;
    int ndim; /* 0 (scalar) .. ST_MAX_DIMS */
    uint64_t shape[ST_MAX_DIMS];
    const void *data;
};

/* Writes t[0..n) as a safetensors file at `path` (see the top of this
 * file). Returns 0, or LORAD_E_INTERNAL when a tensor is invalid (bad
 * name, dtype, shape, a size beyond 2^53 - 1, a name given twice: nothing
 * is written) or on out of memory or an I/O error (the message names the
 * path and the errno text; the old file at path is left intact). */
int stwrite_file(const char *path, const struct stwrite_tensor *t, size_t n,
                 struct lorad_error *err);

#endif
