/* lorad — fileio.c: this file contains the whole-file readers and the
 * two-phase atomic writer (see fileio.h).
 *
 * The writer keeps no state between its phases but the file system: the
 * staged write is the file "<path>.tmp", complete and fsynced, and
 * publishing is one rename(2) followed by an fsync of the directory, the
 * step that makes the rename itself durable. Temp and directory names are
 * built in PATH_MAX stack buffers, so nothing is allocated and discarding
 * cannot fail for want of memory.
 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_SUFFIX ".tmp"

int fileio_read_fd(int fd, size_t max, char **buf, size_t *len)
{
    struct stat st;
    size_t got = 0, size;
    char *b;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((unsigned long long)st.st_size > max)
        return -EFBIG;
    size = (size_t)st.st_size;
    if (!(b = malloc(size + 1)))
        return -ENOMEM;
    while (got < size) {
        ssize_t n = read(fd, b + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(b);
            return -e;
        }
        got += (size_t)n;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    return 0;
}

int fileio_read_path(const char *path, size_t max, char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
    if (fd < 0)
        return -errno;
    rc = fileio_read_fd(fd, max, buf, len);
    close(fd);
    return rc;
}

const char *fileio_strerror(int rc)
{
    switch (rc) {
    case -EINVAL:
        return "not a regular file";
    case -EFBIG:
        return "larger than the limit";
    case -EIO:
        return "the file shrank while it was read";
    default:
        return strerror(-rc);
    }
}

/* ---- the atomic writer ---- */

static void set_step(const char **what, const char *step)
{
    if (what)
        *what = step;
}

/* "<path>.tmp" into tmp[PATH_MAX]; 0 or -ENAMETOOLONG. */
static int tmp_name(const char *path, char tmp[PATH_MAX])
{
    int n = snprintf(tmp, PATH_MAX, "%s" TMP_SUFFIX, path);

    return n >= 0 && n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_fd(int fd)
{
    while (fsync(fd) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

/* fsync of the directory holding path ("." when it names none). */
static int fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    int fd, rc;

    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    rc = fsync_fd(fd);
    close(fd);
    return rc;
}

/* Opens the temp file for writing: created or truncated, never through a
 * symlink, never a FIFO or device left under the name, mode exactly `mode`. */
static int open_tmp(const char *tmp, mode_t mode, bool *opened)
{
    struct stat st;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, mode);
    int rc;

    if (fd < 0)
        return -errno;
    *opened = true;
    if (fstat(fd, &st) < 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = -EINVAL;
    else if (fchmod(fd, mode) < 0)
        rc = -errno;
    else
        return fd;
    close(fd);
    return rc;
}

int fileio_stage(const char *path, const void *data, size_t len, mode_t mode, const char **what)
{
    char tmp[PATH_MAX];
    bool opened = false;
    int fd = -1, rc;

    set_step(what, "create temp file");
    if (!path || !*path || (!data && len))
        return -EINVAL;
    if ((rc = tmp_name(path, tmp)) < 0)
        return rc;
    fd = open_tmp(tmp, mode, &opened);
    if ((rc = fd) < 0)
        goto fail;
    set_step(what, "write");
    if ((rc = write_all(fd, data, len)) < 0)
        goto fail;
    set_step(what, "fsync");
    if ((rc = fsync_fd(fd)) < 0)
        goto fail;
    set_step(what, "close");
    rc = close(fd) < 0 ? -errno : 0;
    fd = -1;
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    if (opened)
        unlink(tmp);
    return rc;
}

int fileio_publish(const char *path, const char **what)
{
    char tmp[PATH_MAX];
    int rc;

    set_step(what, "rename");
    if (!path || !*path)
        return -EINVAL;
    if ((rc = tmp_name(path, tmp)) < 0)
        return rc;
    if (rename(tmp, path) < 0)
        return -errno;
    set_step(what, "fsync directory");
    return fsync_dir_of(path);
}

void fileio_discard(const char *path)
{
    char tmp[PATH_MAX];

    if (path && *path && tmp_name(path, tmp) == 0)
        unlink(tmp);
}

int fileio_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        const char **what)
{
    int rc = fileio_stage(path, data, len, mode, what);

    if (rc < 0)
        return rc;
    if ((rc = fileio_publish(path, what)) < 0)
        fileio_discard(path);
    return rc;
}
