/* lorad — daemon/status.c: the read-only endpoints (see status.h):
 * /status, /adapters, /healthz, /readyz, /metrics.
 *
 * /status is built from the serving view (stable, canary, history), the
 * model, the profile, the metrics' evidence and control.c's swap record;
 * /metrics hands the gauges it collects here (queue depth, requests in
 * flight, the serving view) to metrics_render(). Nothing here writes the
 * daemon's state but srv->adapter_scans.
 */
#include "status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cjson/cJSON.h>
#include <uv.h>

#include "clock.h"
#include "control.h"
#include "lorad.h"
#include "metrics.h"
#include "statewrite.h"
#include "workers.h"

/* One /adapters scan in the threadpool. */
struct scan_job {
    uv_work_t work;
    struct lorad_server *srv;
    struct http_request *r;
    struct profile *profile; /* duplicate of the default slot's profile */
    cJSON *result;
};

bool status_idle(const struct lorad_server *srv)
{
    return srv->adapter_scans == 0;
}

static void add_time(cJSON *o, const char *key, const struct timespec *ts)
{
    char buf[64];
    snapshot_format_time(ts, buf, sizeof(buf));
    cJSON_AddStringToObject(o, key, buf);
}

/* ---- /status ---- */

/* A snapshot of /status (NULL: the base model, loaded at start). */
static cJSON *status_snapshot_json(const struct lorad_server *srv, const struct snapshot *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    if (!s) {
        cJSON_AddNullToObject(o, "adapter");
        cJSON_AddNumberToObject(o, "version", 0);
        cJSON_AddNumberToObject(o, "rank", 0);
        cJSON_AddNullToObject(o, "lora_alpha");
        cJSON_AddNullToObject(o, "sha256");
        add_time(o, "loaded_at", &srv->started_rt);
        cJSON_AddNumberToObject(o, "stage_ms", 0);
        return o;
    }
    cJSON_AddStringToObject(o, "adapter", s->name);
    cJSON_AddNumberToObject(o, "version", (double)s->version);
    cJSON_AddNumberToObject(o, "rank", s->rank);
    cJSON_AddNumberToObject(o, "lora_alpha", s->lora_alpha);
    cJSON_AddStringToObject(o, "sha256", s->sha256);
    add_time(o, "loaded_at", &s->loaded_at);
    cJSON_AddNumberToObject(o, "stage_ms", round(s->stage_ms * 1000.0) / 1000.0);
    return o;
}

static cJSON *status_model_json(const struct model *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "layers", (double)m->nlayers);
    cJSON_AddNumberToObject(o, "in_features", m->in_features);
    cJSON_AddNumberToObject(o, "out_features", m->out_features);
    cJSON_AddNumberToObject(o, "parameters", (double)m->parameters);
    return o;
}

static cJSON *status_swaps_json(const struct control_swaps *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "ok", (double)c->ok);
    cJSON_AddNumberToObject(o, "failed", (double)c->failed);
    if (!c->has_last) {
        cJSON_AddNullToObject(o, "last");
        return o;
    }
    cJSON *l = cJSON_AddObjectToObject(o, "last");
    if (!l)
        return o;
    if (c->last.adapter_null)
        cJSON_AddNullToObject(l, "adapter");
    else
        cJSON_AddStringToObject(l, "adapter", c->last.adapter);
    if (c->last.ok)
        cJSON_AddNumberToObject(l, "version", (double)c->last.version);
    else
        cJSON_AddNullToObject(l, "version");
    cJSON_AddBoolToObject(l, "ok", c->last.ok);
    if (!c->last.ok)
        cJSON_AddStringToObject(l, "code", lorad_err_name(c->last.code));
    add_time(l, "at", &c->last.at);
    return o;
}

/* The profile of slot sl as /status shows it: the slot's own, else the
 * configured limits alone (null until the first adapter loads). */
static cJSON *status_profile_json(const struct lorad_server *srv, const struct serving_slot *sl)
{
    const struct profile *p = sl ? serving_slot_profile(sl) : NULL;
    cJSON *j;
    if (!p)
        p = srv->profile;
    j = p ? profile_to_json(p, srv->model) : NULL;
    return j ? j : cJSON_CreateNull();
}

/* stable, canary, history, profile of one slot, added to o. */
static void status_slot_state(const struct lorad_server *srv, const struct serving_slot *sl,
                              cJSON *o)
{
    int bp = 0;
    const struct snapshot *canary = serving_slot_canary(sl, &bp);
    cJSON_AddItemToObject(o, "profile", status_profile_json(srv, sl));
    cJSON_AddItemToObject(o, "stable", status_snapshot_json(srv, serving_slot_stable(sl)));
    if (canary) {
        cJSON *cj = status_snapshot_json(srv, canary);
        if (cj)
            cJSON_AddNumberToObject(cj, "percent", bp / 100.0);
        cJSON_AddItemToObject(o, "canary", cj);
    } else {
        cJSON_AddNullToObject(o, "canary");
    }
    cJSON *h = cJSON_AddArrayToObject(o, "history");
    for (size_t i = 0; h && i < serving_slot_history_len(sl); i++)
        cJSON_AddItemToArray(h, status_snapshot_json(srv, serving_slot_history_at(sl, i)));
}

cJSON *status_slot_json(const struct lorad_server *srv, const struct serving_slot *sl)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    status_slot_state(srv, sl, o);
    cJSON *ev = metrics_evidence_json(srv->metrics, serving_slot_name(sl));
    cJSON_AddItemToObject(o, "requests", ev ? ev : cJSON_CreateNull());
    return o;
}

static cJSON *status_slots_json(const struct lorad_server *srv)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < serving_slot_count(srv->serving); i++) {
        const struct serving_slot *sl = serving_slot_at(srv->serving, i);
        cJSON *j = status_slot_json(srv, sl);
        if (j)
            cJSON_AddItemToObject(o, serving_slot_name(sl), j);
    }
    return o;
}

static cJSON *status_memory_json(const struct lorad_server *srv)
{
    cJSON *o = cJSON_CreateObject();
    uint64_t lim = serving_memory_limit(srv->serving);
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "resident_bytes", (double)serving_resident_bytes(srv->serving));
    if (lim)
        cJSON_AddNumberToObject(o, "limit_bytes", (double)lim);
    else
        cJSON_AddNullToObject(o, "limit_bytes");
    return o;
}

static cJSON *status_json(struct lorad_server *srv)
{
    const struct serving_view *v = serving_current(srv->serving);
    const struct serving_slot *dflt = serving_slot_get(srv->serving, NULL);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int st = atomic_load(&srv->run_state);
    cJSON_AddStringToObject(o, "state",
                            st == LORAD_DRAINING  ? "draining"
                            : st == LORAD_SERVING ? "serving"
                                                  : "starting");
    cJSON_AddNumberToObject(o, "uptime_s",
                            (double)((clock_now_ns() - srv->started_ns) / 1000000000ull));
    cJSON_AddNumberToObject(o, "generation", (double)v->generation);
    if (srv->restored < 0)
        cJSON_AddNullToObject(o, "restored");
    else
        cJSON_AddBoolToObject(o, "restored", srv->restored > 0);
    cJSON_AddItemToObject(o, "model", status_model_json(srv->model));
    status_slot_state(srv, dflt, o); /* the top level is slot default */
    cJSON_AddNumberToObject(o, "workers", srv->cfg.workers);
    cJSON *ev = metrics_evidence_json(srv->metrics, NULL);
    cJSON_AddItemToObject(o, "requests", ev ? ev : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "swaps", status_swaps_json(control_swaps(srv)));
    cJSON_AddItemToObject(o, "slots", status_slots_json(srv));
    cJSON_AddItemToObject(o, "memory", status_memory_json(srv));
    cJSON_AddNumberToObject(o, "next_version", (double)serving_next_version(srv->serving));
    cJSON_AddItemToObject(o, "state_file", statewrite_status_json(srv));
    cJSON_AddStringToObject(o, "blas_core", openblas_get_corename());
    cJSON_AddStringToObject(o, "lorad_version", LORAD_VERSION);
    return o;
}

void status_report(struct http_request *r)
{
    cJSON *o = status_json(r->srv);
    if (!o) {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory");
        return;
    }
    http_respond_json(r, 200, o, NULL);
}

/* ---- /adapters ---- */

static void scan_work(uv_work_t *work)
{
    struct scan_job *j = work->data;
    j->result = adapter_describe_all(j->srv->adapter_dirfd, j->srv->model, j->profile);
}

/* "slots": the slots whose stable or canary is adapter `name` (as the
 * serving state is now, on the loop thread). */
static void add_serving_slots(const struct lorad_server *srv, cJSON *a, const char *name)
{
    cJSON *names = cJSON_CreateArray();
    for (size_t i = 0; names && i < serving_slot_count(srv->serving); i++) {
        const struct serving_slot *sl = serving_slot_at(srv->serving, i);
        const struct snapshot *st = serving_slot_stable(sl), *ca = serving_slot_canary(sl, NULL);
        if ((st && strcmp(st->name, name) == 0) || (ca && strcmp(ca->name, name) == 0))
            cJSON_AddItemToArray(names, cJSON_CreateString(serving_slot_name(sl)));
    }
    if (names)
        cJSON_AddItemToObject(a, "slots", names);
}

static void scan_done(uv_work_t *work, int status)
{
    struct scan_job *j = work->data;
    j->srv->adapter_scans--;
    cJSON *o = status >= 0 && j->result ? cJSON_CreateObject() : NULL;
    cJSON *a;
    if (o) {
        cJSON_ArrayForEach(a, j->result)
        {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(a, "name");
            if (cJSON_IsString(n) && !cJSON_GetObjectItemCaseSensitive(a, "slots"))
                add_serving_slots(j->srv, a, n->valuestring);
        }
        cJSON_AddItemToObject(o, "adapters", j->result);
        j->result = NULL;
        http_respond_json(j->r, 200, o, NULL);
    } else {
        http_respond_error(j->r, LORAD_E_INTERNAL, "could not list adapter_dir (out of memory)");
    }
    cJSON_Delete(j->result);
    profile_free(&j->profile);
    free(j);
}

void status_adapters(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct scan_job *j = calloc(1, sizeof(*j));
    if (!j)
        goto fail;
    j->srv = srv;
    j->r = r;
    const struct profile *dp = serving_slot_profile(serving_slot_get(srv->serving, NULL));
    if (!dp)
        dp = srv->profile;
    if (dp && !(j->profile = profile_dup(dp)))
        goto fail;
    j->work.data = j;
    if (uv_queue_work(srv->loop, &j->work, scan_work, scan_done) < 0)
        goto fail;
    srv->adapter_scans++;
    return;
fail:
    if (j)
        profile_free(&j->profile);
    free(j);
    http_respond_error(r, LORAD_E_INTERNAL, "could not start the adapter scan");
}

/* ---- /healthz, /readyz, /metrics ---- */

static void respond_status(struct http_request *r, const char *value)
{
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "status", value);
    if (!o) {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory");
        return;
    }
    http_respond_json(r, 200, o, NULL);
}

void status_healthz(struct http_request *r)
{
    if (!workers_healthy(r->srv->workers)) {
        http_respond_error(r, LORAD_E_NOT_READY, "the workers are not making progress");
        return;
    }
    respond_status(r, "ok");
}

void status_readyz(struct http_request *r)
{
    int st = atomic_load(&r->srv->run_state);
    if (st == LORAD_SERVING)
        respond_status(r, "ready");
    else if (st == LORAD_DRAINING)
        http_respond_error(r, LORAD_E_DRAINING, "lorad is draining and shutting down");
    else
        http_respond_error(r, LORAD_E_NOT_READY, "lorad is starting");
}

void status_metrics(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct metrics_gauges g = {
        .view = srv->serving ? serving_current(srv->serving) : NULL,
        .queue_depth = workers_queue_depth(srv->workers),
        .inflight = http_inflight(srv),
        .resident_bytes = srv->serving ? serving_resident_bytes(srv->serving) : 0,
        .limit_bytes = srv->serving ? serving_memory_limit(srv->serving) : 0,
    };
    size_t len = 0;
    char *text = metrics_render(srv->metrics, &g, &len);
    if (!text) {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory");
        return;
    }
    http_respond(r, 200, "text/plain; version=0.0.4", text, len, NULL);
}
