/* lorad — daemon/systemd.h: the systemd service protocol (SPEC.md 8),
 * spoken without libsystemd: notifications, the watchdog interval and
 * socket activation. What to notify and when (the watchdog policy) is the
 * caller's.
 *
 * Threads: any.
 */
#ifndef LORAD_SYSTEMD_H
#define LORAD_SYSTEMD_H

#include <stdint.h>

/* Sends one NOTIFY_SOCKET datagram ("READY=1\nSTATUS=..."); no-op when
 * NOTIFY_SOCKET is unset. */
void systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Watchdog interval from WATCHDOG_USEC/WATCHDOG_PID in microseconds, or 0
 * (no watchdog, or one meant for another process). */
uint64_t systemd_watchdog_usec(void);
/* Sockets passed by systemd (LISTEN_FDS, LISTEN_PID): their count; fds start
 * at 3. Unsets the variables. */
int systemd_listen_fds(void);

#endif
