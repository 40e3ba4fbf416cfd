/* lorad — daemon/systemd.c: the systemd service protocol (SPEC.md 8),
 * spoken directly, without libsystemd: sd_notify datagrams to
 * NOTIFY_SOCKET (READY=1, STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1),
 * the watchdog interval (WATCHDOG_USEC / WATCHDOG_PID) and socket
 * activation (LISTEN_FDS / LISTEN_PID). The timer that pets the watchdog,
 * and when it may, are main.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "systemd.h"

#include "log.h"

#define SYSTEMD_MSG_MAX 1024

/* Parses a decimal unsigned integer that must fill the whole string. */
static int parse_u64(const char *s, unsigned long long *out)
{
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int notify_addr(const char *path, struct sockaddr_un *sa, socklen_t *salen)
{
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len < 2 || len >= sizeof(sa->sun_path))
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, len);
    if (path[0] == '@')
        sa->sun_path[0] = '\0'; /* abstract namespace */
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    return 0;
}

void systemd_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    struct sockaddr_un sa;
    socklen_t salen;
    if (notify_addr(path, &sa, &salen) < 0) {
        LOG_W("event=systemd_notify_failed reason=\"NOTIFY_SOCKET is not a unix socket path\"");
        return;
    }
    char msg[SYSTEMD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(msg))
        n = (int)sizeof(msg) - 1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
        LOG_W("event=systemd_notify_failed reason=\"%s\"", strerror(errno));
    close(fd);
}

uint64_t systemd_watchdog_usec(void)
{
    unsigned long long usec, pid;
    if (parse_u64(getenv("WATCHDOG_USEC"), &usec) < 0 || usec == 0)
        return 0;
    const char *p = getenv("WATCHDOG_PID");
    if (p && (parse_u64(p, &pid) < 0 || pid != (unsigned long long)getpid()))
        return 0; /* meant for another process */
    return usec;
}

int systemd_listen_fds(void)
{
    unsigned long long pid, n;
    int count = 0;
    if (parse_u64(getenv("LISTEN_PID"), &pid) < 0 || pid != (unsigned long long)getpid())
        goto out;
    if (parse_u64(getenv("LISTEN_FDS"), &n) < 0 || n > 64)
        goto out;
    for (int fd = 3; fd < 3 + (int)n; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0) {
            LOG_E("event=socket_activation_failed fd=%d reason=\"%s\"", fd, strerror(errno));
            goto out;
        }
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    count = (int)n;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return count;
}
