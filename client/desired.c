/* lorad — client/desired.c: parsing desired/<slot> values and lorad's
 * /status into the structs of desired.h (the rules are stated there).
 */
#include "desired.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

bool desired_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > DESIRED_NAME_MAX || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static bool hex64_lower(const char *s, char out[65])
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[64] = '\0';
    return true;
}

static int desired_member(const cJSON *m, struct desired *d, struct lorad_error *err)
{
    const char *k = m->string;
    if (!strcmp(k, "adapter")) {
        if (!cJSON_IsString(m) || !desired_name_ok(m->valuestring))
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                                   "\"adapter\" must be a name matching "
                                   "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        snprintf(d->adapter, sizeof(d->adapter), "%s", m->valuestring);
    } else if (!strcmp(k, "sha256")) {
        if (cJSON_IsNull(m))
            return 0;
        if (!cJSON_IsString(m) || !hex64_lower(m->valuestring, d->sha256))
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                                   "\"sha256\" must be 64 hex digits or null");
    } else if (!strcmp(k, "canary_percent")) {
        if (cJSON_IsNull(m))
            return 0;
        if (!cJSON_IsNumber(m) || !isfinite(m->valuedouble) || m->valuedouble < 0 ||
            m->valuedouble > 100)
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                                   "\"canary_percent\" must be a number in [0, 100] or null");
        d->has_percent = true;
        d->percent = m->valuedouble;
    } else {
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "unknown member \"%.64s\" (expected adapter, sha256, "
                               "canary_percent)",
                               k);
    }
    return 0;
}

int desired_parse(const char *slot, const char *text, size_t len, struct desired *d,
                  struct lorad_error *err)
{
    memset(d, 0, sizeof(*d));
    if (!desired_name_ok(slot))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "slot name \"%.140s\" is not valid",
                               slot);
    snprintf(d->slot, sizeof(d->slot), "%s", slot);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    int rc = 0;
    while (j && end && end < text + len && strchr(" \t\r\n", *end) && *end)
        end++;
    if (!cJSON_IsObject(j) || !end || end != text + len) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "not a JSON object");
        goto done;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, j)
    {
        for (const cJSON *o = j->child; o != m; o = o->next)
            if (!strcmp(o->string, m->string)) {
                rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "member \"%.64s\" given twice",
                                     m->string);
                goto done;
            }
        if ((rc = desired_member(m, d, err)) < 0)
            goto done;
    }
    if (!d->adapter[0])
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "no \"adapter\"");
done:
    cJSON_Delete(j);
    if (rc < 0)
        lorad_error_prefix(err, "desired value");
    return rc;
}

/* ---- /status ---- */

static void snap_parse(const cJSON *s, struct observed_snap *o)
{
    memset(o, 0, sizeof(*o));
    if (!cJSON_IsObject(s))
        return;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(s, "adapter");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "version");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(s, "sha256");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "percent");
    o->present = true;
    if (cJSON_IsString(a))
        snprintf(o->adapter, sizeof(o->adapter), "%s", a->valuestring);
    o->version = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    if (cJSON_IsString(h))
        snprintf(o->sha256, sizeof(o->sha256), "%s", h->valuestring);
    o->percent = cJSON_IsNumber(p) ? p->valuedouble : 0;
}

static void counters_parse(const cJSON *c, struct observed_counters *o)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(c, "requests");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "errors");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "nonfinite_rows");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "p99_ms");
    o->requests = cJSON_IsNumber(r) ? (long long)r->valuedouble : 0;
    o->errors = cJSON_IsNumber(e) ? (long long)e->valuedouble : 0;
    o->nonfinite_rows = cJSON_IsNumber(n) ? (long long)n->valuedouble : 0;
    o->p99_ms = cJSON_IsNumber(p) ? p->valuedouble : -1;
}

/* One slot from an object holding stable, canary and requests. */
static int slot_parse(const char *name, const cJSON *s, struct observed_slot *o,
                      struct lorad_error *err)
{
    memset(o, 0, sizeof(*o));
    if (!desired_name_ok(name))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "/status: slot name \"%.140s\"", name);
    snprintf(o->name, sizeof(o->name), "%s", name);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(s, "stable");
    if (!cJSON_IsObject(st))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "/status: slot %s has no stable",
                               name);
    snap_parse(st, &o->stable);
    snap_parse(cJSON_GetObjectItemCaseSensitive(s, "canary"), &o->canary);
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(s, "requests");
    counters_parse(cJSON_GetObjectItemCaseSensitive(rq, "stable"), &o->req_stable);
    counters_parse(cJSON_GetObjectItemCaseSensitive(rq, "canary"), &o->req_canary);
    return 0;
}

int observed_parse(const cJSON *status, struct observed *o, struct lorad_error *err)
{
    memset(o, 0, sizeof(*o));
    if (!cJSON_IsObject(status))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "/status is not a JSON object");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(status, "state");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(status, "generation");
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(status, "slots");
    o->serving = cJSON_IsString(state) && !strcmp(state->valuestring, "serving");
    o->generation = cJSON_IsNumber(gen) ? (long long)gen->valuedouble : -1;
    o->has_slots = cJSON_IsObject(slots);
    if (!o->has_slots) {
        o->n = 1;
        return slot_parse("default", status, &o->slot[0], err);
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, slots)
    {
        if (o->n == DESIRED_MAX_SLOTS)
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "/status: more than %d slots",
                                   DESIRED_MAX_SLOTS);
        int rc = slot_parse(s->string, s, &o->slot[o->n], err);
        if (rc < 0)
            return rc;
        o->n++;
    }
    return 0;
}

const struct observed_slot *observed_find(const struct observed *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->slot[i].name, name))
            return &o->slot[i];
    return NULL;
}
