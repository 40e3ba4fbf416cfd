/* lorad — daemon/log.h: one line per event on stderr (SPEC.md 8), and the
 * names of the log levels.
 *
 * Lines are "key=value" style, with a "<N>" syslog priority prefix when
 * JOURNAL_STREAM is set. Levels are syslog numbers: 3 error, 4 warning,
 * 5 notice, 6 info, 7 debug.
 *
 * Threads: any (each line is one write(2)).
 */
#ifndef LORAD_LOG_H
#define LORAD_LOG_H

#include <stddef.h>

/* Lines above `level` (clamped to 3..7) are dropped. */
void log_set_level(int level);
void log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_E(...) log_emit(3, __VA_ARGS__)
#define LOG_W(...) log_emit(4, __VA_ARGS__)
#define LOG_I(...) log_emit(6, __VA_ARGS__)
#define LOG_D(...) log_emit(7, __VA_ARGS__)

/* The level of a name ("error" 3, "warning" 4, "notice" 5, "info" 6,
 * "debug" 7) or -1; and the name of a level (below 3: "error", above 7:
 * "debug"). */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* Writes `s` into buf as a log value: as is when it has no space, quote,
 * '=' or control character, else in double quotes with '"' and '\\'
 * escaped and control characters as '?'. NULL is written as null. Returns
 * buf. Truncates to fit `n`. */
const char *log_quote(char *buf, size_t n, const char *s);

#endif
