/* lorad — fileio.h: reading small files whole (configs, the state file).
 *
 * One careful reader for every small text file lorad reads: regular files
 * only, a size cap checked before allocating, EINTR retried, a file that
 * shrinks while read reported, the result NUL-terminated. Callers turn the
 * negative errno into their own lorad_err and message.
 *
 * Thread-safety: reentrant. Ownership: *buf is malloc'd; the caller frees.
 */
#ifndef LORAD_FILEIO_H
#define LORAD_FILEIO_H

#include <stddef.h>

/* Reads the whole regular file open on `fd` (at most `max` bytes) into a
 * NUL-terminated buffer. Returns 0 and sets *buf and *len, or a negative
 * errno: -EINVAL (not a regular file), -EFBIG (larger than max), -ENOMEM,
 * -EIO (the file shrank while read), or read(2)'s error. Does not close fd. */
int fileio_read_fd(int fd, size_t max, char **buf, size_t *len);

/* The same for `path` (opened O_RDONLY | O_CLOEXEC; -ENOENT etc. from
 * open(2)). */
int fileio_read_path(const char *path, size_t max, char **buf, size_t *len);

/* A message for the negative errno from the functions above ("larger than
 * the limit", "not a regular file", strerror otherwise). */
const char *fileio_strerror(int rc);

#endif
