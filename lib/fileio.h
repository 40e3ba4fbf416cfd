/* lorad — fileio.h: reading small files whole (configs, the state file)
 * and replacing a file atomically (the state file, safetensors written by
 * the tools).
 *
 * One careful reader for every small text file lorad reads: regular files
 * only, a size cap checked before allocating, EINTR retried, a file that
 * shrinks while read reported, the result NUL-terminated.
 *
 * One atomic writer, in two phases so that a caller can make a write
 * durable before it makes it visible: fileio_stage() writes the data to
 * "<path>.tmp" and fsyncs it; fileio_publish() renames it over `path` and
 * fsyncs the directory. A crash at any instant leaves the old file or the
 * new one at `path`, never a mix, and at most one "<path>.tmp". The temp
 * name is fixed, so writers of one path must be serialised by the caller;
 * the next write truncates and reuses a temp file left by a crash.
 *
 * Errors are negative errno values; callers turn them into their own
 * lorad_err and message. The writer also names the step that failed in
 * *what (when `what` is not NULL): "create temp file", "write", "fsync",
 * "close", "rename" or "fsync directory". Paths are limited to PATH_MAX
 * bytes, the temp suffix included (-ENAMETOOLONG).
 *
 * Ownership: *buf is malloc'd; the caller frees. The writer borrows `data`
 * for the call and allocates nothing.
 *
 * Thread-safety: reentrant, any thread (the writers of one path
 * serialised, as above).
 */
#ifndef LORAD_FILEIO_H
#define LORAD_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* Reads the whole regular file open on `fd` (at most `max` bytes) into a
 * NUL-terminated buffer. Returns 0 and sets *buf and *len, or a negative
 * errno: -EINVAL (not a regular file), -EFBIG (larger than max), -ENOMEM,
 * -EIO (the file shrank while read), or read(2)'s error. Does not close fd. */
int fileio_read_fd(int fd, size_t max, char **buf, size_t *len);

/* The same for `path` (opened O_RDONLY | O_CLOEXEC; -ENOENT etc. from
 * open(2)). */
int fileio_read_path(const char *path, size_t max, char **buf, size_t *len);

/* A message for the negative errno from the readers above ("larger than
 * the limit", "not a regular file", strerror otherwise). */
const char *fileio_strerror(int rc);

/* Writes data[0..len) to "<path>.tmp" (created, or truncated when a crash
 * left it, with O_NOFOLLOW; its mode set to exactly `mode`), fsyncs and
 * closes it. EINTR and short writes are retried. Returns 0 or -errno
 * (-EINVAL when the temp name is not a regular file); on failure the temp
 * file is removed if it was opened, and `path` is never touched. */
int fileio_stage(const char *path, const void *data, size_t len, mode_t mode, const char **what);

/* Renames "<path>.tmp" over path and fsyncs the directory holding it.
 * Returns 0 or -errno ("rename": the temp file stays, for
 * fileio_discard(); "fsync directory": path is already the new file, its
 * rename perhaps not yet durable). */
int fileio_publish(const char *path, const char **what);

/* Unlinks "<path>.tmp" (a staged write that will not be published). Safe
 * when there is none. */
void fileio_discard(const char *path);

/* fileio_stage + fileio_publish, discarding the temp file when publishing
 * fails at its rename. Returns 0 or -errno with *what as above. */
int fileio_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        const char **what);

#endif
