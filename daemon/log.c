/* lorad — daemon/log.c: one line per event on stderr (SPEC.md 8).
 *
 * A line is `ts=2026-11-28T13:45:12.345Z level=info <fields>` where the
 * fields are the caller's "event=... key=value" text. When JOURNAL_STREAM is
 * set (stderr goes to the journal, which stamps its own time) the line is
 * `<6>level=info <fields>` instead: the "<N>" prefix is the syslog priority
 * the journal reads. Each line is formatted into one buffer and written
 * with one write(2), so lines from different threads never interleave.
 * Control characters in the text become spaces so one event stays one line.
 * The level names live here, in one table, for the prefix and for config.c.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 4096

static _Atomic int log_level = 6;    /* LOG_INFO */
static _Atomic int log_journal = -1; /* -1 unknown, 0 no, 1 JOURNAL_STREAM set */

void log_set_level(int level)
{
    if (level < 3)
        level = 3;
    if (level > 7)
        level = 7;
    atomic_store(&log_level, level);
}

/* Levels 3..7 by name: the one table of them. */
static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};

int log_level_parse(const char *name)
{
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, level_names[i]) == 0)
            return 3 + i;
    return -1;
}

const char *log_level_name(int level)
{
    return level_names[level < 3 ? 0 : level > 7 ? 4 : level - 3];
}

static size_t log_prefix(char *buf, size_t n, int level)
{
    int journal = atomic_load(&log_journal);
    if (journal < 0) {
        const char *js = getenv("JOURNAL_STREAM");
        journal = js && *js ? 1 : 0;
        atomic_store(&log_journal, journal);
    }
    int w;
    if (journal) {
        w = snprintf(buf, n, "<%d>level=%s ", level, log_level_name(level));
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        w = snprintf(buf, n, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, log_level_name(level));
    }
    return w < 0 ? 0 : ((size_t)w >= n ? n - 1 : (size_t)w);
}

void log_emit(int level, const char *fmt, ...)
{
    if (level > atomic_load(&log_level))
        return;
    char buf[LOG_LINE_MAX];
    size_t len = log_prefix(buf, sizeof(buf), level);
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + len, sizeof(buf) - len - 1, fmt, ap);
    va_end(ap);
    size_t body = w < 0 ? 0 : (size_t)w;
    if (body > sizeof(buf) - len - 2)
        body = sizeof(buf) - len - 2; /* truncated */
    for (size_t i = len; i < len + body; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = ' ';
    len += body;
    buf[len++] = '\n';
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, p, len);
        if (n <= 0)
            return; /* nowhere to report it */
        p += n;
        len -= (size_t)n;
    }
}

static bool needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\')
            return true;
    }
    return false;
}

const char *log_quote(char *buf, size_t n, const char *s)
{
    if (n == 0)
        return buf;
    if (!s) {
        snprintf(buf, n, "null");
        return buf;
    }
    if (!needs_quotes(s)) {
        snprintf(buf, n, "%s", s);
        return buf;
    }
    size_t o = 0;
    if (n < 3) {
        buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; *s && o + 3 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else {
            buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
