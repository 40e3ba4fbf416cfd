/* lorad — daemon/startup.h: private contracts of the daemon's start-up
 * modules beyond daemon/lorad.h: configuration extras (command-line
 * overrides, the auth token file), log value quoting, the OpenBLAS kernel
 * choice (blas.c) and the systemd watchdog timer (systemd.c).
 *
 * Threads: config_* and blas_* functions do file I/O or exec and run at
 * start-up or in libuv's threadpool; log_quote is pure; the watchdog runs on
 * the loop thread.
 */
#ifndef LORAD_STARTUP_H
#define LORAD_STARTUP_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "lorad.h"

/* ---- config.c ---- */

/* Command-line overrides (SPEC 5 "overridable by flags"). NULL / -1 = not
 * given. Strings point into argv (not owned). Kept for SIGHUP, so the flags
 * still win over the re-read file. */
struct config_overrides {
    const char *listen;
    const char *control_listen;
    const char *model_dir;
    const char *adapter_dir;
    const char *initial_adapter;
    const char *state_file;
    const char *log_level;
    int workers;
};

/* Applies the overrides to *c. LORAD_E_INVALID_CONFIG naming the flag when a
 * value is malformed (an unknown log level). */
int config_apply_overrides(struct lorad_config *c, const struct config_overrides *o,
                           struct lorad_error *err);

/* Defaults, then the file at `path` (NULL: none), then the overrides, then
 * config_validate. On failure *c holds nothing to free. */
int config_build(struct lorad_config *c, const char *path, const struct config_overrides *o,
                 struct lorad_error *err);

/* Reads the bearer token from `path`: a regular file, not world-readable,
 * one trailing newline ("\n" or "\r\n") stripped, not empty, at most 4096
 * bytes, printable ASCII without spaces. *out is malloc'd (caller frees).
 * LORAD_E_INVALID_CONFIG naming the file and the reason. */
int config_read_token(const char *path, char **out, struct lorad_error *err);

/* The syslog number of a log level name ("error" 3, "warning" 4, "notice"
 * 5, "info" 6, "debug" 7) or -1; and back. */
int config_log_level_parse(const char *name);
const char *config_log_level_name(int level);

/* Deep copy of a config (strings duplicated). Returns 0 or
 * LORAD_E_INTERNAL (out of memory; *dst then holds nothing to free). */
int config_copy(struct lorad_config *dst, const struct lorad_config *src);

/* ---- log.c ---- */

/* Writes `s` into buf as a log value: as is when it has no space, quote,
 * '=' or control character, else in double quotes with '"' and '\\'
 * escaped and control characters as '?'. NULL is written as null. Returns
 * buf. Truncates to fit `n`. */
const char *log_quote(char *buf, size_t n, const char *s);

/* ---- blas.c: SPEC 7 OpenBLAS kernel ---- */

/* The OpenBLAS DYNAMIC_ARCH x86_64 core names accepted by blas_coretype. */
bool blas_core_name_valid(const char *name);
/* "Prescott, Core2, ..." (static string). */
const char *blas_core_names(void);

/* Decides the kernel for config value `coretype` ("auto", "keep" or a core
 * name) and, when a different kernel must be loaded and the operator has
 * not set OPENBLAS_CORETYPE, re-executes /proc/self/exe with argv and
 * OPENBLAS_CORETYPE set (once: an environment marker prevents loops).
 * Returns only when no re-exec happened (or it failed, which is logged),
 * after logging openblas_get_config(), the core in use and why. */
void blas_select(const char *coretype, char **argv);

/* ---- systemd.c ---- */

/* Starts the watchdog timer on srv->loop at half the WATCHDOG_USEC interval
 * (no-op when the watchdog is off): each tick sends WATCHDOG=1 when the
 * workers are healthy. `t` is owned by the caller (closed with the loop). */
void systemd_watchdog_start(struct lorad_server *srv, uv_timer_t *t);

#endif
