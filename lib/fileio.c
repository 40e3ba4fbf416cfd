/* lorad — fileio.c: reading small files whole (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
