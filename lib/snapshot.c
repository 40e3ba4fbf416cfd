/* lorad — snapshot.c: this file contains the allocation, destruction and
 * time formatting of snapshots (see snapshot.h). Snapshots are filled by
 * adapter_stage() in adapter.c; every array they point to is malloc'd and
 * freed here with free(). */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>

struct snapshot *snapshot_new(size_t nlayers)
{
    struct snapshot *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->nlayers = nlayers;
    s->layers = calloc(nlayers ? nlayers : 1, sizeof(*s->layers));
    if (!s->layers) {
        free(s);
        return NULL;
    }
    return s;
}

static void lora_free(struct snapshot_lora *lo)
{
    if (!lo)
        return;
    free(lo->A);
    free(lo->B);
    free(lo->bias_B);
    free(lo->dora_scale);
    free(lo);
}

void snapshot_free(struct snapshot **sp)
{
    struct snapshot *s;

    if (!sp || !*sp)
        return;
    s = *sp;
    if (s->layers) {
        for (size_t i = 0; i < s->nlayers; i++) {
            lora_free(s->layers[i].lora);
            free(s->layers[i].weight);
            free(s->layers[i].bias);
        }
        free(s->layers);
    }
    free(s);
    *sp = NULL;
}

void snapshot_format_time(const struct timespec *ts, char *buf, size_t len)
{
    struct tm tm;
    time_t sec;
    long ms;

    if (!buf || len == 0)
        return;
    if (!ts) {
        buf[0] = '\0';
        return;
    }
    sec = ts->tv_sec;
    ms = ts->tv_nsec / 1000000L;
    if (ms < 0 || ms > 999)
        ms = 0;
    if (!gmtime_r(&sec, &tm)) {
        snprintf(buf, len, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}
