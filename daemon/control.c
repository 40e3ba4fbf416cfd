/* lorad — daemon/control.c: the control plane (SPEC.md 6): /swap,
 * /rollback, /canary, /promote, /status, /adapters, /healthz, /readyz,
 * /metrics, and the state-file writes that make every commit durable
 * before it is answered (SPEC.md 8).
 *
 * Everything here runs on the loop thread and never blocks: staging an
 * adapter, scanning adapter_dir and writing the state file run in libuv's
 * threadpool (uv_queue_work) and finish in after-callbacks on the loop.
 *
 * A /swap is "in progress" from the moment it is accepted until its state
 * write completed, so at most one version-issuing commit is ever in flight
 * (the state file's version floor depends on it, lib/statefile.h). State
 * writes form one FIFO: one write at a time, in commit order; each
 * commit's text is rendered right after the commit, and its request is
 * answered only once its write is on disk. A failed write is answered 500
 * internal saying the commit is live but not durable.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "../lib/statefile.h"
#include "control.h"
#include "../lib/jsontext.h"
#include "lorad.h"
#include "startup.h"

/* One state-file write, queued after a commit. */
struct state_write {
    struct state_write *next;
    struct lorad_server *srv;
    uv_work_t work;
    char *path;               /* copy of cfg.state_file */
    char *text;               /* statefile_render() output */
    size_t len;
    int rc;
    struct lorad_error err;
    struct http_request *r;   /* answered when the write completes */
    cJSON *answer;            /* the 200 body */
    bool ends_swap;           /* clears swap_busy when done */
    const char *what;         /* "swap", "rollback", ... for messages */
};

/* One /swap being staged in the threadpool. */
struct stage_job {
    uv_work_t work;
    struct lorad_server *srv;
    struct http_request *r;
    char name[SNAPSHOT_NAME_MAX + 1];
    char sha256[65];
    bool has_sha256;
    int canary_bp;                     /* -1: becomes stable */
    struct profile *profile;   /* duplicate of srv->profile */
    struct snapshot *snap;             /* out */
    struct profile *profile_out; /* out: completed profile or NULL */
    int rc;
    struct lorad_error err;
    double stage_ms;                   /* measured around adapter_stage */
};

/* One /adapters scan in the threadpool. */
struct scan_job {
    uv_work_t work;
    struct lorad_server *srv;
    struct http_request *r;
    struct profile *profile;   /* duplicate of srv->profile */
    cJSON *result;
};

struct control {
    struct timespec started_rt;   /* the base model's loaded_at */
    bool swap_busy;               /* a /swap is staging or being written */
    unsigned pending_work;        /* uv_queue_work jobs in flight */
    struct state_write *wq_head;  /* writes queued, not yet started */
    struct state_write *wq_tail;
    bool writing;                 /* a write runs in the threadpool */
    uint64_t swaps_ok, swaps_failed;
    bool has_last;
    struct {
        bool adapter_null;
        char adapter[SNAPSHOT_NAME_MAX + 1];
        bool ok;
        uint64_t version;
        int code;
        struct timespec at;
    } last;                       /* the last /swap */
};

/* ---- life cycle ---- */

int control_init(struct lorad_server *srv, struct lorad_error *err)
{
    struct control *c = calloc(1, sizeof(*c));
    if (!c)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    clock_gettime(CLOCK_REALTIME, &c->started_rt);
    srv->control = c;
    return 0;
}

void control_free(struct lorad_server *srv)
{
    free(srv->control);
    srv->control = NULL;
}

bool control_idle(const struct lorad_server *srv)
{
    const struct control *c = srv->control;
    return !c || (!c->swap_busy && c->pending_work == 0 && !c->writing && !c->wq_head);
}

int control_write_state_sync(struct lorad_server *srv, struct lorad_error *err)
{
    if (!srv->cfg.state_file)
        return 0;
    char *text = statefile_render(srv->serving, srv->profile, srv->model);
    if (!text)
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory rendering the state file");
    int rc = statefile_write(srv->cfg.state_file, text, strlen(text), err);
    free(text);
    return rc;
}

/* ---- small helpers ---- */

static const char *variant_name(enum serving_variant v)
{
    return v == SERVING_CANARY ? "canary" : "stable";
}

static void add_time(cJSON *o, const char *key, const struct timespec *ts)
{
    char buf[64];
    snapshot_format_time(ts, buf, sizeof(buf));
    cJSON_AddStringToObject(o, key, buf);
}

/* Parses r->body as one JSON object whose keys are all in `allowed` (NULL
 * terminated), each at most once. An empty body is {} when allow_empty.
 * cJSON is lenient, so the raw text is checked first (lib/jsontext.h): a
 * \u0000 escape and an RFC 8259-malformed number are refused before it. */
static int parse_body(struct http_request *r, const char *const *allowed, bool allow_empty,
                      cJSON **out, struct lorad_error *err)
{
    const char *b = r->body ? r->body : "";
    size_t i = 0;
    while (i < r->body_len && strchr(" \t\r\n", b[i]))
        i++;
    if (i == r->body_len) {
        if (!allow_empty)
            return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "the body must be a JSON object");
        *out = cJSON_CreateObject();
        return *out ? 0 : lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    }
    if (strlen(b) != r->body_len)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "the body contains a NUL byte");
    if (json_has_nul_escape(b, r->body_len)) {
        /* Only /swap carries a name; a NUL there is a forbidden name (it
         * would otherwise truncate "demo-b\u0000../x" to "demo-b"). */
        bool named = false;
        for (const char *const *a = allowed; *a; a++)
            named = named || strcmp(*a, "adapter") == 0;
        return lorad_error_set(err, named ? LORAD_E_FORBIDDEN_NAME : LORAD_E_INVALID_REQUEST,
                               "a JSON string contains \\u0000 (NUL)%s",
                               named ? "; adapter names cannot contain NUL" : "");
    }
    size_t bad_at;
    const char *why;
    if (json_has_bad_number(b, r->body_len, &bad_at, &why)) /* cJSON takes 05, 5., .5 */
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "malformed JSON at byte %zu: %s",
                               bad_at, why);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(b, &end, 1);
    if (!j)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "malformed JSON or trailing garbage at byte %zu",
                               end && end >= b ? (size_t)(end - b) : (size_t)0);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "the body must be a JSON object");
    }
    for (const cJSON *v = j->child; v; v = v->next) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            known = known || strcmp(*a, v->string) == 0;
        if (!known) {
            lorad_error_set(err, LORAD_E_INVALID_REQUEST, "unknown key \"%.64s\"", v->string);
            goto fail;
        }
        for (const cJSON *w = j->child; w != v; w = w->next)
            if (strcmp(w->string, v->string) == 0) {
                lorad_error_set(err, LORAD_E_INVALID_REQUEST, "duplicate key \"%s\"", v->string);
                goto fail;
            }
    }
    *out = j;
    return 0;
fail:
    cJSON_Delete(j);
    return err->code;
}

/* A percent in [0, 100] as basis points (rounded to 0.01). */
static int parse_percent(const cJSON *v, const char *key, int *bp, struct lorad_error *err)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 100)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "\"%s\" must be a number in [0, 100]", key);
    *bp = (int)lround(v->valuedouble * 100.0);
    if (*bp > SERVING_BP_MAX)
        *bp = SERVING_BP_MAX;
    return 0;
}

static bool hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!strchr("0123456789abcdefABCDEF", s[n]))
            return false;
    return n == 64;
}

/* The answer of every commit (SPEC 6 /swap): adapter, version, variant,
 * generation, previous, [stage_ms,] commit_us. */
static cJSON *commit_answer(const struct serving_commit *c, bool with_stage, double stage_ms)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    if (c->now)
        cJSON_AddStringToObject(o, "adapter", c->now->name);
    else
        cJSON_AddNullToObject(o, "adapter");
    cJSON_AddNumberToObject(o, "version", c->now ? (double)c->now->version : 0);
    cJSON_AddStringToObject(o, "variant", variant_name(c->variant));
    cJSON_AddNumberToObject(o, "generation", (double)c->generation);
    if (c->has_previous) {
        cJSON *p = cJSON_AddObjectToObject(o, "previous");
        if (p && c->previous_adapter[0])
            cJSON_AddStringToObject(p, "adapter", c->previous_adapter);
        else if (p)
            cJSON_AddNullToObject(p, "adapter");
        if (p)
            cJSON_AddNumberToObject(p, "version", (double)c->previous_version);
    } else {
        cJSON_AddNullToObject(o, "previous");
    }
    if (with_stage)
        cJSON_AddNumberToObject(o, "stage_ms", round(stage_ms * 1000.0) / 1000.0);
    cJSON_AddNumberToObject(o, "commit_us", round(c->commit_us * 1000.0) / 1000.0);
    return o;
}

static void systemd_status(struct lorad_server *srv)
{
    const struct serving_view *v = serving_current(srv->serving);
    if (atomic_load(&srv->run_state) != LORAD_SERVING)
        return; /* STATUS=draining stays */
    systemd_notify("STATUS=serving adapter=%s version=%llu%s",
                   v->stable ? v->stable->name : "(base)",
                   (unsigned long long)(v->stable ? v->stable->version : 0),
                   v->canary ? " canary=on" : "");
}

/* ---- the state-write FIFO ---- */

static void state_kick(struct lorad_server *srv);

static void state_write_free(struct state_write *w)
{
    cJSON_Delete(w->answer);
    free(w->text);
    free(w->path);
    free(w);
}

static void state_answer(struct state_write *w)
{
    struct lorad_server *srv = w->srv;
    if (w->rc < 0) {
        LOG_E("event=state_write_failed after=%s path=%s reason=\"%s\"", w->what,
              srv->cfg.state_file, w->err.msg);
        if (w->r)
            http_respond_error(w->r, LORAD_E_INTERNAL,
                               "the %s is committed and serving, but it is not durable: the "
                               "state file could not be written (%s)", w->what, w->err.msg);
    } else if (w->r) {
        http_respond_json(w->r, 200, w->answer, NULL);
        w->answer = NULL;
    }
    if (w->ends_swap)
        srv->control->swap_busy = false;
}

static void state_work(uv_work_t *work)
{
    struct state_write *w = work->data;
    w->rc = statefile_write(w->path, w->text, w->len, &w->err);
}

static void state_done(uv_work_t *work, int status)
{
    struct state_write *w = work->data;
    struct lorad_server *srv = w->srv;
    srv->control->writing = false;
    srv->control->pending_work--;
    if (status < 0 && w->rc == 0)
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "cancelled");
    state_answer(w);
    state_write_free(w);
    state_kick(srv);
}

static void state_kick(struct lorad_server *srv)
{
    struct control *c = srv->control;
    if (c->writing || !c->wq_head)
        return;
    struct state_write *w = c->wq_head;
    c->wq_head = w->next;
    if (!c->wq_head)
        c->wq_tail = NULL;
    w->work.data = w;
    int rc = uv_queue_work(srv->loop, &w->work, state_work, state_done);
    if (rc < 0) {
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
        state_answer(w);
        state_write_free(w);
        state_kick(srv);
        return;
    }
    c->writing = true;
    c->pending_work++;
}

/* After a commit: renders the state now and answers `r` with `answer`
 * (consumed) once it is on disk. */
static void state_enqueue(struct lorad_server *srv, struct http_request *r, cJSON *answer,
                          bool ends_swap, const char *what)
{
    struct control *c = srv->control;
    struct state_write *w = calloc(1, sizeof(*w));
    if (!w) {
        cJSON_Delete(answer);
        LOG_E("event=state_write_failed after=%s reason=\"out of memory\"", what);
        http_respond_error(r, LORAD_E_INTERNAL, "the %s is committed and serving, but it is not "
                           "durable: out of memory", what);
        if (ends_swap)
            c->swap_busy = false;
        return;
    }
    w->srv = srv;
    w->r = r;
    w->answer = answer;
    w->ends_swap = ends_swap;
    w->what = what;
    if (!answer)
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "out of memory");
    if (!srv->cfg.state_file || w->rc < 0) {
        state_answer(w); /* nothing to persist (or nothing to say) */
        state_write_free(w);
        return;
    }
    w->path = strdup(srv->cfg.state_file);
    w->text = statefile_render(srv->serving, srv->profile, srv->model);
    if (!w->path || !w->text) {
        w->rc = lorad_error_set(&w->err, LORAD_E_INTERNAL, "out of memory rendering the state");
        state_answer(w);
        state_write_free(w);
        return;
    }
    w->len = strlen(w->text);
    if (c->wq_tail)
        c->wq_tail->next = w;
    else
        c->wq_head = w;
    c->wq_tail = w;
    state_kick(srv);
}

/* ---- /swap ---- */

static void swap_record(struct lorad_server *srv, const char *adapter, bool ok, uint64_t version,
                        int code)
{
    struct control *c = srv->control;
    c->has_last = true;
    c->last.adapter_null = adapter == NULL;
    snprintf(c->last.adapter, sizeof(c->last.adapter), "%s", adapter ? adapter : "");
    c->last.ok = ok;
    c->last.version = version;
    c->last.code = code;
    clock_gettime(CLOCK_REALTIME, &c->last.at);
    if (ok)
        c->swaps_ok++;
    else
        c->swaps_failed++;
}

static void swap_fail(struct http_request *r, const char *adapter, const struct lorad_error *err)
{
    struct lorad_server *srv = r->srv;
    char qa[160], qm[LORAD_ERROR_MSG_MAX + 8];
    swap_record(srv, adapter, false, 0, err->code);
    metrics_record_swap(srv, false, 0, 0);
    LOG_W("event=swap_failed adapter=%s code=%s reason=%s", log_quote(qa, sizeof(qa), adapter),
          lorad_err_name(err->code), log_quote(qm, sizeof(qm), err->msg));
    http_respond_error(r, err->code, "%s", err->msg);
}

static void stage_work(uv_work_t *work)
{
    struct stage_job *j = work->data;
    struct adapter_stage_args a = {
        .adapter_dirfd = j->srv->adapter_dirfd,
        .name = j->name,
        .expected_sha256 = j->has_sha256 ? j->sha256 : NULL,
        .model = j->srv->model,
        .profile = j->profile,
    };
    uint64_t t0 = lorad_now_ns();
    j->rc = adapter_stage(&a, &j->snap, &j->profile_out, &j->err);
    j->stage_ms = (double)(lorad_now_ns() - t0) / 1e6;
}

static void stage_job_free(struct stage_job *j)
{
    snapshot_free(&j->snap);
    profile_free(&j->profile);
    profile_free(&j->profile_out);
    free(j);
}

/* Commits a staged snapshot: one pointer flip, then the state write. */
static void stage_commit(struct stage_job *j)
{
    struct lorad_server *srv = j->srv;
    struct serving_commit c;
    struct lorad_error err = {0};
    double stage_ms = j->snap->stage_ms > 0 ? j->snap->stage_ms : j->stage_ms;
    struct snapshot *snap = j->snap;
    j->snap = NULL; /* serving_swap owns it from here, on failure too */
    if (serving_swap(srv->serving, snap, j->canary_bp, &c, &err) < 0) {
        srv->control->swap_busy = false;
        swap_fail(j->r, j->name, &err);
        return;
    }
    if (j->profile_out) {
        profile_free(&srv->profile);
        srv->profile = j->profile_out;
        j->profile_out = NULL;
    }
    swap_record(srv, c.now->name, true, c.now->version, 0);
    metrics_record_swap(srv, true, stage_ms, c.commit_us);
    if (c.variant == SERVING_CANARY)
        metrics_reset_evidence(srv);
    LOG_I("event=swap adapter=%s version=%llu variant=%s generation=%llu stage_ms=%.3f "
          "commit_us=%.3f", c.now->name, (unsigned long long)c.now->version,
          variant_name(c.variant), (unsigned long long)c.generation, stage_ms, c.commit_us);
    systemd_status(srv);
    cJSON *ans = commit_answer(&c, true, stage_ms);
    if (ans && c.variant == SERVING_CANARY)
        cJSON_AddNumberToObject(ans, "percent", j->canary_bp / 100.0);
    state_enqueue(srv, j->r, ans, true, "swap");
}

static void stage_done(uv_work_t *work, int status)
{
    struct stage_job *j = work->data;
    struct lorad_server *srv = j->srv;
    srv->control->pending_work--;
    if (status < 0 && j->rc == 0) {
        snapshot_free(&j->snap);
        j->rc = lorad_error_set(&j->err, LORAD_E_INTERNAL, "staging was cancelled");
    }
    if (j->rc < 0) {
        srv->control->swap_busy = false;
        swap_fail(j->r, j->name, &j->err);
    } else {
        stage_commit(j);
    }
    stage_job_free(j);
}

/* Reads /swap's body into the job; 0 or the error to answer. */
static int swap_parse(struct http_request *r, struct stage_job *j, const char **name,
                      struct lorad_error *err)
{
    static const char *const keys[] = {"adapter", "canary_percent", "sha256", NULL};
    cJSON *body = NULL;
    int rc = parse_body(r, keys, false, &body, err);
    if (rc < 0)
        return rc;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(body, "adapter");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "canary_percent");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(body, "sha256");
    if (!cJSON_IsString(a) || !a->valuestring) {
        rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST, "\"adapter\" must be a string");
        goto out;
    }
    if (!adapter_name_valid(a->valuestring)) {
        snprintf(j->name, sizeof(j->name), "%s", a->valuestring);
        *name = j->name;
        rc = lorad_error_set(err, LORAD_E_FORBIDDEN_NAME,
                             "adapter name \"%.130s\" does not match "
                             "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", a->valuestring);
        goto out;
    }
    snprintf(j->name, sizeof(j->name), "%s", a->valuestring);
    *name = j->name;
    j->canary_bp = -1;
    if (p && (rc = parse_percent(p, "canary_percent", &j->canary_bp, err)) < 0)
        goto out;
    if (h) {
        if (!cJSON_IsString(h) || !h->valuestring || !hex64(h->valuestring)) {
            rc = lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                                 "\"sha256\" must be a string of 64 hex digits");
            goto out;
        }
        snprintf(j->sha256, sizeof(j->sha256), "%s", h->valuestring);
        j->has_sha256 = true;
    }
    rc = 0;
out:
    cJSON_Delete(body);
    return rc;
}

void control_swap(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct control *c = srv->control;
    struct lorad_error err = {0};
    const char *name = NULL;
    struct stage_job *j = calloc(1, sizeof(*j));
    if (!j) {
        lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    j->srv = srv;
    j->r = r;
    if (swap_parse(r, j, &name, &err) < 0)
        goto fail;
    if (c->swap_busy) {
        lorad_error_set(&err, LORAD_E_SWAP_IN_PROGRESS,
                        "another swap is being staged or written; retry when it is answered");
        goto fail;
    }
    if (serving_current(srv->serving)->canary) {
        lorad_error_set(&err, LORAD_E_CANARY_ACTIVE,
                        "a canary is live; promote it or roll it back before another swap");
        goto fail;
    }
    if (srv->profile && !(j->profile = profile_dup(srv->profile))) {
        lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    j->work.data = j;
    int rc = uv_queue_work(srv->loop, &j->work, stage_work, stage_done);
    if (rc < 0) {
        lorad_error_set(&err, LORAD_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
        goto fail;
    }
    c->swap_busy = true;
    c->pending_work++;
    return;
fail:
    swap_fail(r, name, &err);
    if (j)
        stage_job_free(j);
}

/* ---- /rollback, /canary, /promote ---- */

void control_rollback(struct http_request *r)
{
    static const char *const keys[] = {"version", NULL};
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    struct serving_commit c;
    cJSON *body = NULL;
    uint64_t version = 0;
    if (parse_body(r, keys, true, &body, &err) < 0)
        goto fail;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "version");
    if (v) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
        if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || d != floor(d) ||
            d > 9007199254740992.0) {
            lorad_error_set(&err, LORAD_E_INVALID_REQUEST,
                            "\"version\" must be a non-negative integer");
            goto fail;
        }
        version = (uint64_t)d;
    }
    if (serving_rollback(srv->serving, v ? &version : NULL, &c, &err) < 0)
        goto fail;
    metrics_record_rollback(srv, c.commit_us);
    LOG_I("event=rollback adapter=%s version=%llu generation=%llu previous=%s "
          "previous_version=%llu commit_us=%.3f", c.now ? c.now->name : "null",
          (unsigned long long)(c.now ? c.now->version : 0), (unsigned long long)c.generation,
          c.has_previous && c.previous_adapter[0] ? c.previous_adapter : "null",
          (unsigned long long)c.previous_version, c.commit_us);
    systemd_status(srv);
    cJSON_Delete(body);
    state_enqueue(srv, r, commit_answer(&c, false, 0), false, "rollback");
    return;
fail:
    cJSON_Delete(body);
    LOG_I("event=rollback_refused code=%s", lorad_err_name(err.code));
    http_respond_error(r, err.code, "%s", err.msg);
}

void control_canary(struct http_request *r)
{
    static const char *const keys[] = {"percent", NULL};
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    struct serving_commit c;
    cJSON *body = NULL;
    int bp = 0;
    if (parse_body(r, keys, false, &body, &err) < 0)
        goto fail;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "percent");
    if (!p) {
        lorad_error_set(&err, LORAD_E_INVALID_REQUEST, "\"percent\" is required");
        goto fail;
    }
    if (parse_percent(p, "percent", &bp, &err) < 0 ||
        serving_set_canary(srv->serving, bp, &c, &err) < 0)
        goto fail;
    LOG_I("event=canary adapter=%s version=%llu percent=%.2f generation=%llu",
          c.now ? c.now->name : "null", (unsigned long long)(c.now ? c.now->version : 0),
          bp / 100.0, (unsigned long long)c.generation);
    cJSON_Delete(body);
    cJSON *ans = commit_answer(&c, false, 0);
    if (ans)
        cJSON_AddNumberToObject(ans, "percent", bp / 100.0);
    state_enqueue(srv, r, ans, false, "canary change");
    return;
fail:
    cJSON_Delete(body);
    http_respond_error(r, err.code, "%s", err.msg);
}

void control_promote(struct http_request *r)
{
    static const char *const keys[] = {NULL};
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    struct serving_commit c;
    cJSON *body = NULL;
    if (parse_body(r, keys, true, &body, &err) < 0 ||
        serving_promote(srv->serving, &c, &err) < 0)
        goto fail;
    LOG_I("event=promote adapter=%s version=%llu generation=%llu",
          c.now ? c.now->name : "null", (unsigned long long)(c.now ? c.now->version : 0),
          (unsigned long long)c.generation);
    systemd_status(srv);
    cJSON_Delete(body);
    state_enqueue(srv, r, commit_answer(&c, false, 0), false, "promote");
    return;
fail:
    cJSON_Delete(body);
    http_respond_error(r, err.code, "%s", err.msg);
}

/* ---- /status ---- */

static cJSON *snapshot_json(const struct control *ctl, const struct snapshot *s)
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
        add_time(o, "loaded_at", &ctl->started_rt);
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

static cJSON *model_json(const struct model *m)
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

static cJSON *swaps_json(const struct control *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "ok", (double)c->swaps_ok);
    cJSON_AddNumberToObject(o, "failed", (double)c->swaps_failed);
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

static cJSON *status_json(struct lorad_server *srv)
{
    const struct control *ctl = srv->control;
    const struct serving_view *v = serving_current(srv->serving);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int st = atomic_load(&srv->run_state);
    cJSON_AddStringToObject(o, "state", st == LORAD_DRAINING ? "draining"
                                        : st == LORAD_SERVING ? "serving" : "starting");
    cJSON_AddNumberToObject(o, "uptime_s", (double)((lorad_now_ns() - srv->started_ns) / 1000000000ull));
    cJSON_AddNumberToObject(o, "generation", (double)v->generation);
    if (srv->restored < 0)
        cJSON_AddNullToObject(o, "restored");
    else
        cJSON_AddBoolToObject(o, "restored", srv->restored > 0);
    cJSON_AddItemToObject(o, "model", model_json(srv->model));
    cJSON *prof = srv->profile ? profile_to_json(srv->profile, srv->model) : NULL;
    cJSON_AddItemToObject(o, "profile", prof ? prof : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "stable", snapshot_json(ctl, v->stable));
    if (v->canary) {
        cJSON *cj = snapshot_json(ctl, v->canary);
        if (cj)
            cJSON_AddNumberToObject(cj, "percent", v->canary_bp / 100.0);
        cJSON_AddItemToObject(o, "canary", cj);
    } else {
        cJSON_AddNullToObject(o, "canary");
    }
    cJSON *h = cJSON_AddArrayToObject(o, "history");
    for (size_t i = 0; h && i < serving_history_len(srv->serving); i++)
        cJSON_AddItemToArray(h, snapshot_json(ctl, serving_history_at(srv->serving, i)));
    cJSON_AddNumberToObject(o, "workers", srv->cfg.workers);
    cJSON *ev = metrics_evidence_json(srv);
    cJSON_AddItemToObject(o, "requests", ev ? ev : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "swaps", swaps_json(ctl));
    cJSON_AddNumberToObject(o, "next_version", (double)serving_next_version(srv->serving));
    cJSON_AddStringToObject(o, "blas_core", openblas_get_corename());
    cJSON_AddStringToObject(o, "lorad_version", LORAD_VERSION);
    return o;
}

void control_status(struct http_request *r)
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

static void scan_done(uv_work_t *work, int status)
{
    struct scan_job *j = work->data;
    j->srv->control->pending_work--;
    cJSON *o = status >= 0 && j->result ? cJSON_CreateObject() : NULL;
    if (o) {
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

void control_adapters(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct scan_job *j = calloc(1, sizeof(*j));
    if (!j)
        goto fail;
    j->srv = srv;
    j->r = r;
    if (srv->profile && !(j->profile = profile_dup(srv->profile)))
        goto fail;
    j->work.data = j;
    if (uv_queue_work(srv->loop, &j->work, scan_work, scan_done) < 0)
        goto fail;
    srv->control->pending_work++;
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

void control_healthz(struct http_request *r)
{
    if (!workers_healthy(r->srv, 10000)) {
        http_respond_error(r, LORAD_E_NOT_READY, "the workers are not making progress");
        return;
    }
    respond_status(r, "ok");
}

void control_readyz(struct http_request *r)
{
    int st = atomic_load(&r->srv->run_state);
    if (st == LORAD_SERVING)
        respond_status(r, "ready");
    else if (st == LORAD_DRAINING)
        http_respond_error(r, LORAD_E_DRAINING, "lorad is draining and shutting down");
    else
        http_respond_error(r, LORAD_E_NOT_READY, "lorad is starting");
}

void control_metrics(struct http_request *r)
{
    size_t len = 0;
    char *text = metrics_render(r->srv, &len);
    if (!text) {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory");
        return;
    }
    http_respond(r, 200, "text/plain; version=0.0.4", text, len, NULL);
}
