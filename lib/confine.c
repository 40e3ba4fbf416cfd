/* lorad — confine.c: this file contains confine_open(), the open(2) of a
 * path confined beneath a directory fd (see confine.h).
 *
 * The first choice is openat2(2) with RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS, which lets a symbolic link resolve as long as
 * every step stays beneath the directory. When the kernel or a seccomp
 * policy refuses the system call (ENOSYS, EPERM), the fallback walks the
 * path itself: each directory component is opened O_PATH | O_DIRECTORY |
 * O_NOFOLLOW relative to the previous one, the last with the caller's
 * flags | O_NOFOLLOW, so no symbolic link is ever followed and no ".."
 * is accepted. Every intermediate fd is closed before returning.
 */
#include "confine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

bool confine_escaped(int e)
{
    return e == EXDEV || e == ELOOP;
}

/* Maps a failed O_NOFOLLOW open of `comp` in `fd` to -errno, a symlink to
 * -EXDEV (O_DIRECTORY on a symlink fails with ENOTDIR, not ELOOP). */
static int nofollow_error(int fd, const char *comp, int e)
{
    struct stat st;

    if (e == ELOOP ||
        (e == ENOTDIR && fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)))
        return -EXDEV;
    return -e;
}

/* Opens one component `comp` (len bytes at path) of the walk in `fd`: a
 * directory to go on from when `last` is false, else the target with the
 * caller's flags. Returns an fd or -errno. */
static int walk_step(int fd, const char *path, size_t len, bool last, int flags)
{
    char comp[NAME_MAX + 1];
    int rc;

    if (len == 0)
        return -EXDEV; /* an absolute path, or "a//b" */
    if (len > NAME_MAX)
        return -ENAMETOOLONG;
    memcpy(comp, path, len);
    comp[len] = '\0';
    if (strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0)
        return -EXDEV;
    rc =
        openat(fd, comp, (last ? flags | O_NOCTTY : O_PATH | O_DIRECTORY) | O_CLOEXEC | O_NOFOLLOW);
    return rc >= 0 ? rc : nofollow_error(fd, comp, errno);
}

/* The fallback without openat2 (see the top of this file). */
static int open_walk_nofollow(int dirfd, const char *path, int flags)
{
    int fd = dirfd;

    for (;;) {
        const char *slash = strchr(path, '/');
        size_t len = slash ? (size_t)(slash - path) : strlen(path);
        int rc = walk_step(fd, path, len, !slash, flags);

        if (fd != dirfd)
            close(fd);
        if (rc < 0 || !slash)
            return rc;
        fd = rc;
        path = slash + 1;
    }
}

int confine_open(int dirfd, const char *path, int flags)
{
    struct open_how how;
    long fd;

    if (!path)
        return -EINVAL;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0)
        return (int)fd;
    if (errno != ENOSYS && errno != EPERM)
        return -errno;
    return open_walk_nofollow(dirfd, path, flags);
}

/* readlink of /proc/self/fd/FD into buf (NUL-terminated). */
static int fd_path(int fd, char *buf, size_t n)
{
    char link[64];
    ssize_t len;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    len = readlink(link, buf, n);
    if (len < 0)
        return -errno;
    if ((size_t)len >= n)
        return -ENAMETOOLONG;
    buf[len] = '\0';
    return 0;
}

int confine_relpath(int basefd, int fd, char *out, size_t n)
{
    char base[PATH_MAX], path[PATH_MAX];
    size_t blen;
    int rc;

    if ((rc = fd_path(basefd, base, sizeof(base))) < 0 ||
        (rc = fd_path(fd, path, sizeof(path))) < 0)
        return rc;
    blen = strcmp(base, "/") == 0 ? 0 : strlen(base);
    if (strncmp(path, base, blen) != 0 || path[blen] != '/' || path[blen + 1] == '\0')
        return -EXDEV;
    if (strlen(path + blen + 1) >= n)
        return -ENAMETOOLONG;
    memcpy(out, path + blen + 1, strlen(path + blen + 1) + 1);
    return 0;
}
