/* lorad — daemon/control.c: the mutating control plane (SPEC.md 6):
 * /swap, /rollback, /canary, /promote, /unload and the parser of their
 * bodies.
 *
 * Everything here runs on the loop thread and never blocks: staging an
 * adapter runs in libuv's threadpool (uv_queue_work) and finishes in an
 * after-callback on the loop. Each commit goes through statewrite_commit()
 * (statewrite.h): its change callback makes one held call into
 * lib/serving.h when the commit's turn comes, and its done callback
 * answers once the new state is on disk and visible, or with the error
 * (507 not_durable among them) when nothing changed.
 *
 * Slots: every call takes "slot" (default "default") and acts on it
 * alone; its answer carries "slot". A /swap is "in progress" in its slot
 * from the moment it is accepted until its commit is answered (a second
 * /swap there is swap_in_progress); swaps in different slots stage in
 * parallel, and their commits, like every commit, run one at a time in
 * statewrite's queue, so at most one version-issuing commit is ever in
 * flight (the state file's version floor depends on it,
 * lib/statefile.h).
 *
 * Drain: control_refuse_staging() answers every /swap still staging 503
 * draining and detaches it from its job, which then frees itself when the
 * threadpool is done with it (or never, if lorad exits first).
 */
#include "control.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "../lib/digest.h"
#include "../lib/jsontext.h"
#include "clock.h"
#include "log.h"
#include "lorad.h"
#include "metrics.h"
#include "status.h"
#include "statewrite.h"
#include "systemd.h"

/* One /swap being staged in the threadpool. */
struct stage_job {
    struct stage_job *next; /* control's list of jobs staging */
    uv_work_t work;
    struct lorad_server *srv;
    struct http_request *r;
    char name[SNAPSHOT_NAME_MAX + 1];
    char slot[SERVING_SLOT_NAME_MAX + 1];
    char sha256[65];
    bool has_sha256;
    int canary_bp;               /* -1: becomes stable */
    struct profile *profile;     /* duplicate of the slot's profile (or the config's) */
    struct snapshot *snap;       /* out */
    struct profile *profile_out; /* out: completed profile or NULL */
    bool profile_installed;      /* profile_out went to the slot (swap_change) */
    int rc;
    struct lorad_error err;
    double stage_ms;      /* measured around adapter_stage */
    double stage_ms_used; /* the one reported (the snapshot's own when it has one) */
};

struct control {
    char (*busy)[SERVING_SLOT_NAME_MAX + 1]; /* slots with a /swap staging or committing */
    size_t nbusy, cap;
    unsigned stages;           /* staging jobs in the threadpool */
    struct stage_job *staging; /* those jobs */
    struct control_swaps swaps;
};

/* ---- life cycle ---- */

int control_init(struct lorad_server *srv, struct lorad_error *err)
{
    if (!(srv->control = calloc(1, sizeof(*srv->control))))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    return 0;
}

void control_free(struct lorad_server *srv)
{
    if (srv->control)
        free(srv->control->busy);
    free(srv->control);
    srv->control = NULL;
}

bool control_idle(const struct lorad_server *srv)
{
    const struct control *c = srv->control;
    return !c || (c->nbusy == 0 && c->stages == 0);
}
/* ---- per-slot swap bookkeeping ---- */

static bool slot_busy(const struct control *c, const char *slot)
{
    for (size_t i = 0; i < c->nbusy; i++)
        if (strcmp(c->busy[i], slot) == 0)
            return true;
    return false;
}

static int slot_busy_add(struct control *c, const char *slot)
{
    if (c->nbusy == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 8;
        void *n = realloc(c->busy, ncap * sizeof(c->busy[0]));
        if (!n)
            return -1;
        c->busy = n;
        c->cap = ncap;
    }
    snprintf(c->busy[c->nbusy++], sizeof(c->busy[0]), "%s", slot);
    return 0;
}

static void slot_busy_del(struct control *c, const char *slot)
{
    for (size_t i = 0; i < c->nbusy; i++)
        if (strcmp(c->busy[i], slot) == 0) {
            memmove(&c->busy[i], &c->busy[i + 1], (c->nbusy - i - 1) * sizeof(c->busy[0]));
            c->nbusy--;
            return;
        }
}

/* Slots that do not exist yet but have a /swap staging (they will). */
static size_t slots_pending(const struct lorad_server *srv)
{
    size_t n = 0;
    for (size_t i = 0; i < srv->control->nbusy; i++)
        n += serving_slot_get(srv->serving, srv->control->busy[i]) == NULL;
    return n;
}

const struct control_swaps *control_swaps(const struct lorad_server *srv)
{
    return &srv->control->swaps;
}

/* ---- small helpers ---- */

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
    /* members in order: the first unknown or repeated key is the error */
    const char *dup = json_duplicate_key(j);
    bool dup_seen = false;
    for (const cJSON *v = j->child; v; v = v->next) {
        bool known = false, is_dup = dup && strcmp(v->string, dup) == 0;
        for (const char *const *a = allowed; *a; a++)
            known = known || strcmp(*a, v->string) == 0;
        if (!known) {
            lorad_error_set(err, LORAD_E_INVALID_REQUEST, "unknown key \"%.64s\"", v->string);
            goto fail;
        }
        if (is_dup && dup_seen) {
            lorad_error_set(err, LORAD_E_INVALID_REQUEST, "duplicate key \"%s\"", v->string);
            goto fail;
        }
        dup_seen = dup_seen || is_dup;
    }
    *out = j;
    return 0;
fail:
    cJSON_Delete(j);
    return err->code;
}

/* The body's "slot" into slot (absent: "default"): a string that follows
 * the adapter name rule, else 400 invalid_request. */
static int body_slot(const cJSON *body, char *slot, size_t len, struct lorad_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "slot");
    if (!v) {
        snprintf(slot, len, "%s", SERVING_DEFAULT_SLOT);
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "\"slot\" must be a string");
    if (!serving_slot_name_valid(v->valuestring))
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST,
                               "slot name \"%.130s\" does not match "
                               "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                               v->valuestring);
    snprintf(slot, len, "%s", v->valuestring);
    return 0;
}

/* A percent in [0, 100] as basis points (rounded to 0.01). */
static int parse_percent(const cJSON *v, const char *key, int *bp, struct lorad_error *err)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 100)
        return lorad_error_set(err, LORAD_E_INVALID_REQUEST, "\"%s\" must be a number in [0, 100]",
                               key);
    *bp = (int)lround(v->valuedouble * 100.0);
    if (*bp > SERVING_BP_MAX)
        *bp = SERVING_BP_MAX;
    return 0;
}

/* The answer of every commit (SPEC 6 /swap): adapter, version, variant,
 * generation, previous, [stage_ms,] commit_us. */
static cJSON *commit_answer(const char *slot, const struct serving_commit *c, bool with_stage,
                            double stage_ms)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "slot", slot);
    if (c->now)
        cJSON_AddStringToObject(o, "adapter", c->now->name);
    else
        cJSON_AddNullToObject(o, "adapter");
    cJSON_AddNumberToObject(o, "version", c->now ? (double)c->now->version : 0);
    cJSON_AddStringToObject(o, "variant", serving_variant_name(c->variant));
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

/* STATUS= for systemd after a commit that changed what serves. */
static void control_notify_status(struct lorad_server *srv)
{
    const struct serving_view *v = serving_current(srv->serving);
    if (atomic_load(&srv->run_state) != LORAD_SERVING)
        return; /* STATUS=draining stays */
    systemd_notify(
        "STATUS=serving adapter=%s version=%llu%s", v->stable ? v->stable->name : "(base)",
        (unsigned long long)(v->stable ? v->stable->version : 0), v->canary ? " canary=on" : "");
}

/* 200 with a commit's answer (consumed), or 500 when building it ran out
 * of memory (the commit stands). */
static void respond_answer(struct http_request *r, cJSON *ans)
{
    if (ans)
        http_respond_json(r, 200, ans, NULL);
    else
        http_respond_error(r, LORAD_E_INTERNAL,
                           "the change is made and durable, but lorad ran "
                           "out of memory writing its answer");
}

/* ---- /swap ---- */

static void swap_record(struct lorad_server *srv, const char *adapter, bool ok, uint64_t version,
                        int code)
{
    struct control_swaps *c = &srv->control->swaps;
    c->has_last = true;
    c->last.adapter_null = adapter == NULL;
    snprintf(c->last.adapter, sizeof(c->last.adapter), "%s", adapter ? adapter : "");
    c->last.ok = ok;
    c->last.version = version;
    c->last.code = code;
    clock_gettime(CLOCK_REALTIME, &c->last.at);
    if (ok)
        c->ok++;
    else
        c->failed++;
}

static void swap_fail(struct http_request *r, const char *adapter, const struct lorad_error *err)
{
    struct lorad_server *srv = r->srv;
    char qa[160], qm[LORAD_ERROR_MSG_MAX + 8];
    swap_record(srv, adapter, false, 0, err->code);
    metrics_record_swap(srv->metrics, false, 0, 0);
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
    uint64_t t0 = clock_now_ns();
    j->rc = adapter_stage(&a, &j->snap, &j->profile_out, &j->err);
    j->stage_ms = (double)(clock_now_ns() - t0) / 1e6;
}

static void stage_job_free(struct stage_job *j)
{
    snapshot_free(&j->snap);
    profile_free(&j->profile);
    profile_free(&j->profile_out);
    free(j);
}

/* The commit's change: one held serving_swap (its snapshot handed over). */
static int swap_change(struct lorad_server *srv, void *arg, struct serving_commit *c,
                       const struct profile **profile, struct lorad_error *err)
{
    struct stage_job *j = arg;
    struct snapshot *snap = j->snap;
    (void)profile;  /* the slot's own profile goes into the slot */
    j->snap = NULL; /* serving_slot_swap owns it from here, on failure too */
    serving_hold(srv->serving);
    if (serving_slot_swap(srv->serving, j->slot, snap, j->canary_bp, c, err) < 0)
        return err->code;
    if (j->profile_out) {
        /* the slot's first adapter completed its profile: recorded in the
         * state file with the change; taken back if the change fails */
        serving_slot_set_profile(srv->serving, j->slot, j->profile_out);
        j->profile_out = NULL;
        j->profile_installed = true;
    }
    return 0;
}

/* The commit's outcome: answer, bookkeeping, and another swap may begin. */
static void swap_done(struct lorad_server *srv, void *arg, int rc, const struct serving_commit *c,
                      const struct lorad_error *err)
{
    struct stage_job *j = arg;
    slot_busy_del(srv->control, j->slot);
    if (rc < 0) {
        if (j->profile_installed) /* the slot has no adapter of this swap: no profile */
            serving_slot_set_profile(srv->serving, j->slot, NULL);
        if (j->r)
            swap_fail(j->r, j->name, err);
        stage_job_free(j);
        return;
    }
    double stage_ms = j->stage_ms_used;
    swap_record(srv, c->now->name, true, c->now->version, 0);
    metrics_record_swap(srv->metrics, true, stage_ms, c->commit_us);
    if (c->variant == SERVING_CANARY)
        metrics_reset_evidence(srv->metrics, j->slot);
    LOG_I("event=swap slot=%s adapter=%s version=%llu variant=%s generation=%llu stage_ms=%.3f "
          "commit_us=%.3f",
          j->slot, c->now->name, (unsigned long long)c->now->version,
          serving_variant_name(c->variant), (unsigned long long)c->generation, stage_ms,
          c->commit_us);
    control_notify_status(srv);
    cJSON *ans = commit_answer(j->slot, c, true, stage_ms);
    if (ans && c->variant == SERVING_CANARY)
        cJSON_AddNumberToObject(ans, "percent", j->canary_bp / 100.0);
    respond_answer(j->r, ans);
    stage_job_free(j);
}

static void staging_unlink(struct control *ctl, struct stage_job *j)
{
    for (struct stage_job **p = &ctl->staging; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            return;
        }
}

static void stage_done(uv_work_t *work, int status)
{
    struct stage_job *j = work->data;
    struct lorad_server *srv = j->srv;
    srv->control->stages--;
    staging_unlink(srv->control, j);
    if (!j->r) { /* answered by the drain (control_refuse_staging) */
        slot_busy_del(srv->control, j->slot);
        stage_job_free(j);
        return;
    }
    if (status < 0 && j->rc == 0) {
        snapshot_free(&j->snap);
        j->rc = lorad_error_set(&j->err, LORAD_E_INTERNAL, "staging was cancelled");
    }
    if (j->rc < 0) {
        slot_busy_del(srv->control, j->slot);
        swap_fail(j->r, j->name, &j->err);
        stage_job_free(j);
        return;
    }
    j->stage_ms_used = j->snap->stage_ms > 0 ? j->snap->stage_ms : j->stage_ms;
    struct statewrite_commit cm = {"swap", j, swap_change, swap_done};
    statewrite_commit(srv, &cm);
}

size_t control_refuse_staging(struct lorad_server *srv)
{
    struct control *ctl = srv->control;
    size_t n = 0;
    for (struct stage_job *j = ctl->staging; j; j = j->next) {
        if (!j->r)
            continue;
        swap_record(srv, j->name, false, 0, LORAD_E_DRAINING);
        metrics_record_swap(srv->metrics, false, 0, 0);
        http_respond_error(j->r, LORAD_E_DRAINING,
                           "lorad is shutting down; the swap of %s was still staging and is "
                           "not made",
                           j->name);
        j->r = NULL;
        n++;
    }
    return n;
}

/* Reads /swap's body into the job; 0 or the error to answer. */
static int swap_parse(struct http_request *r, struct stage_job *j, const char **name,
                      struct lorad_error *err)
{
    static const char *const keys[] = {"adapter", "canary_percent", "sha256", "slot", NULL};
    cJSON *body = NULL;
    int rc = parse_body(r, keys, false, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = body_slot(body, j->slot, sizeof(j->slot), err)) < 0)
        goto out;
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
                             "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                             a->valuestring);
        goto out;
    }
    snprintf(j->name, sizeof(j->name), "%s", a->valuestring);
    *name = j->name;
    j->canary_bp = -1;
    if (p && (rc = parse_percent(p, "canary_percent", &j->canary_bp, err)) < 0)
        goto out;
    if (h) {
        if (!cJSON_IsString(h) || !h->valuestring || !digest_hex_valid(h->valuestring)) {
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
    const struct serving_slot *sl = serving_slot_get(srv->serving, j->slot);
    if (slot_busy(c, j->slot)) {
        lorad_error_set(&err, LORAD_E_SWAP_IN_PROGRESS,
                        "another swap in slot %s is being staged or written; retry when it is "
                        "answered",
                        j->slot);
        goto fail;
    }
    if (sl && serving_slot_canary(sl, NULL)) {
        lorad_error_set(&err, LORAD_E_CANARY_ACTIVE,
                        "a canary is live in slot %s; promote it or roll it back before another "
                        "swap",
                        j->slot);
        goto fail;
    }
    if (!sl &&
        serving_slot_count(srv->serving) + slots_pending(srv) >= serving_max_slots(srv->serving)) {
        lorad_error_set(&err, LORAD_E_TOO_MANY_SLOTS,
                        "%zu slots exist or are being created, the limit (max_slots) is %zu: "
                        "unload one first",
                        serving_slot_count(srv->serving) + slots_pending(srv),
                        serving_max_slots(srv->serving));
        goto fail;
    }
    const struct profile *sp = sl ? serving_slot_profile(sl) : NULL;
    if (!sp)
        sp = srv->profile; /* a slot's first adapter: the configured limits */
    if (sp && !(j->profile = profile_dup(sp))) {
        lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }
    if (slot_busy_add(c, j->slot) < 0) {
        lorad_error_set(&err, LORAD_E_INTERNAL, "out of memory");
        goto fail;
    }

    j->work.data = j;
    int rc = uv_queue_work(srv->loop, &j->work, stage_work, stage_done);
    if (rc < 0) {
        slot_busy_del(c, j->slot);
        lorad_error_set(&err, LORAD_E_INTERNAL, "uv_queue_work: %s", uv_strerror(rc));
        goto fail;
    }
    c->stages++;
    j->next = c->staging;
    c->staging = j;
    LOG_I("event=swap_staging slot=%s adapter=%s", j->slot, j->name);
    return;
fail:
    swap_fail(r, name, &err);
    if (j)
        stage_job_free(j);
}

/* ---- /rollback, /canary, /promote ---- */

/* One of them, parsed, waiting for its commit's turn. */
struct plain_commit {
    struct http_request *r;
    char slot[SERVING_SLOT_NAME_MAX + 1];
    cJSON *ans;       /* /unload: the slot as it was, read when its turn came */
    bool has_version; /* /rollback {"version": N} */
    uint64_t version;
    int bp; /* /canary */
};

/* A commit of request r for slot `slot` (NULL: answered 500 out of memory). */
static struct plain_commit *plain_new(struct http_request *r, const char *slot)
{
    struct plain_commit *p = calloc(1, sizeof(*p));
    if (p) {
        p->r = r;
        snprintf(p->slot, sizeof(p->slot), "%s", slot);
    } else {
        http_respond_error(r, LORAD_E_INTERNAL, "out of memory");
    }
    return p;
}

/* A body whose only member is the optional "slot" (/promote, /unload):
 * the slot into slot[SERVING_SLOT_NAME_MAX + 1]. */
static int slot_only_body(struct http_request *r, char *slot, struct lorad_error *err)
{
    static const char *const keys[] = {"slot", NULL};
    cJSON *body = NULL;
    int rc = parse_body(r, keys, true, &body, err);
    if (rc == 0)
        rc = body_slot(body, slot, SERVING_SLOT_NAME_MAX + 1, err);
    cJSON_Delete(body);
    return rc;
}

static int rollback_change(struct lorad_server *srv, void *arg, struct serving_commit *c,
                           const struct profile **profile, struct lorad_error *err)
{
    struct plain_commit *p = arg;
    (void)profile;
    serving_hold(srv->serving);
    return serving_slot_rollback(srv->serving, p->slot, p->has_version ? &p->version : NULL, c,
                                 err);
}

static void rollback_done(struct lorad_server *srv, void *arg, int rc,
                          const struct serving_commit *c, const struct lorad_error *err)
{
    struct plain_commit *p = arg;
    if (rc < 0) {
        LOG_I("event=rollback_refused slot=%s code=%s", p->slot, lorad_err_name(err->code));
        http_respond_error(p->r, err->code, "%s", err->msg);
        free(p);
        return;
    }
    metrics_record_rollback(srv->metrics, c->commit_us);
    LOG_I("event=rollback slot=%s adapter=%s version=%llu generation=%llu previous=%s "
          "previous_version=%llu commit_us=%.3f",
          p->slot, c->now ? c->now->name : "null",
          (unsigned long long)(c->now ? c->now->version : 0), (unsigned long long)c->generation,
          c->has_previous && c->previous_adapter[0] ? c->previous_adapter : "null",
          (unsigned long long)c->previous_version, c->commit_us);
    control_notify_status(srv);
    respond_answer(p->r, commit_answer(p->slot, c, false, 0));
    free(p);
}

void control_rollback(struct http_request *r)
{
    static const char *const keys[] = {"version", "slot", NULL};
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    cJSON *body = NULL;
    char slot[SERVING_SLOT_NAME_MAX + 1];
    if (parse_body(r, keys, true, &body, &err) < 0 || body_slot(body, slot, sizeof(slot), &err) < 0)
        goto fail;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "version");
    uint64_t version = 0;
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
    cJSON_Delete(body);
    struct plain_commit *p = plain_new(r, slot);
    if (!p)
        return;
    p->has_version = v != NULL;
    p->version = version;
    struct statewrite_commit cm = {"rollback", p, rollback_change, rollback_done};
    statewrite_commit(srv, &cm);
    return;
fail:
    cJSON_Delete(body);
    LOG_I("event=rollback_refused code=%s", lorad_err_name(err.code));
    http_respond_error(r, err.code, "%s", err.msg);
}

static int canary_change(struct lorad_server *srv, void *arg, struct serving_commit *c,
                         const struct profile **profile, struct lorad_error *err)
{
    struct plain_commit *p = arg;
    (void)profile;
    serving_hold(srv->serving);
    return serving_slot_set_canary(srv->serving, p->slot, p->bp, c, err);
}

static void canary_done(struct lorad_server *srv, void *arg, int rc, const struct serving_commit *c,
                        const struct lorad_error *err)
{
    struct plain_commit *p = arg;
    (void)srv;
    if (rc < 0) {
        http_respond_error(p->r, err->code, "%s", err->msg);
        free(p);
        return;
    }
    LOG_I("event=canary slot=%s adapter=%s version=%llu percent=%.2f generation=%llu", p->slot,
          c->now ? c->now->name : "null", (unsigned long long)(c->now ? c->now->version : 0),
          p->bp / 100.0, (unsigned long long)c->generation);
    cJSON *ans = commit_answer(p->slot, c, false, 0);
    if (ans)
        cJSON_AddNumberToObject(ans, "percent", p->bp / 100.0);
    respond_answer(p->r, ans);
    free(p);
}

void control_canary(struct http_request *r)
{
    static const char *const keys[] = {"percent", "slot", NULL};
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    cJSON *body = NULL;
    int bp = 0;
    char slot[SERVING_SLOT_NAME_MAX + 1];
    if (parse_body(r, keys, false, &body, &err) < 0 ||
        body_slot(body, slot, sizeof(slot), &err) < 0)
        goto fail;
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(body, "percent");
    if (!pc) {
        lorad_error_set(&err, LORAD_E_INVALID_REQUEST, "\"percent\" is required");
        goto fail;
    }
    if (parse_percent(pc, "percent", &bp, &err) < 0)
        goto fail;
    cJSON_Delete(body);
    struct plain_commit *p = plain_new(r, slot);
    if (!p)
        return;
    p->bp = bp;
    struct statewrite_commit cm = {"canary change", p, canary_change, canary_done};
    statewrite_commit(srv, &cm);
    return;
fail:
    cJSON_Delete(body);
    http_respond_error(r, err.code, "%s", err.msg);
}

static int promote_change(struct lorad_server *srv, void *arg, struct serving_commit *c,
                          const struct profile **profile, struct lorad_error *err)
{
    struct plain_commit *p = arg;
    (void)profile;
    serving_hold(srv->serving);
    return serving_slot_promote(srv->serving, p->slot, c, err);
}

static void promote_done(struct lorad_server *srv, void *arg, int rc,
                         const struct serving_commit *c, const struct lorad_error *err)
{
    struct plain_commit *p = arg;
    if (rc < 0) {
        http_respond_error(p->r, err->code, "%s", err->msg);
        free(p);
        return;
    }
    LOG_I("event=promote slot=%s adapter=%s version=%llu generation=%llu", p->slot,
          c->now ? c->now->name : "null", (unsigned long long)(c->now ? c->now->version : 0),
          (unsigned long long)c->generation);
    control_notify_status(srv);
    respond_answer(p->r, commit_answer(p->slot, c, false, 0));
    free(p);
}

void control_promote(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    char slot[SERVING_SLOT_NAME_MAX + 1];
    if (slot_only_body(r, slot, &err) < 0) {
        http_respond_error(r, err.code, "%s", err.msg);
        return;
    }
    struct plain_commit *p = plain_new(r, slot);
    if (!p)
        return;
    struct statewrite_commit cm = {"promote", p, promote_change, promote_done};
    statewrite_commit(srv, &cm);
}

/* ---- /unload ---- */

static int unload_change(struct lorad_server *srv, void *arg, struct serving_commit *c,
                         const struct profile **profile, struct lorad_error *err)
{
    struct plain_commit *p = arg;
    const struct serving_slot *sl = serving_slot_get(srv->serving, p->slot);
    (void)profile;
    if (strcmp(p->slot, SERVING_DEFAULT_SLOT) == 0)
        return lorad_error_set(err, LORAD_E_DEFAULT_SLOT,
                               "slot default cannot be unloaded; roll it back to version 0 "
                               "instead");
    if (!sl)
        return lorad_error_set(err, LORAD_E_SLOT_NOT_FOUND, "no slot \"%s\"", p->slot);
    if (slot_busy(srv->control, p->slot))
        return lorad_error_set(err, LORAD_E_SWAP_IN_PROGRESS,
                               "a swap in slot %s is being staged or written; unload it once that "
                               "swap is answered",
                               p->slot);
    /* what it served, read before the slot goes */
    if (!(p->ans = status_slot_json(srv, sl)))
        return lorad_error_set(err, LORAD_E_INTERNAL, "out of memory");
    serving_hold(srv->serving);
    return serving_slot_unload(srv->serving, p->slot, c, err);
}

static void unload_done(struct lorad_server *srv, void *arg, int rc, const struct serving_commit *c,
                        const struct lorad_error *err)
{
    struct plain_commit *p = arg;
    cJSON *ans = p->ans;
    if (rc < 0) {
        LOG_I("event=unload_refused slot=%s code=%s", p->slot, lorad_err_name(err->code));
        cJSON_Delete(ans);
        http_respond_error(p->r, err->code, "%s", err->msg);
        free(p);
        return;
    }
    metrics_forget_slot(srv->metrics, p->slot);
    LOG_I("event=unload slot=%s adapter=%s version=%llu generation=%llu commit_us=%.3f", p->slot,
          c->previous_adapter[0] ? c->previous_adapter : "null",
          (unsigned long long)c->previous_version, (unsigned long long)c->generation, c->commit_us);
    if (ans) {
        cJSON_DeleteItemFromObjectCaseSensitive(ans, "requests");
        cJSON_AddStringToObject(ans, "slot", p->slot);
        cJSON_AddBoolToObject(ans, "unloaded", true);
        cJSON_AddNumberToObject(ans, "generation", (double)c->generation);
        cJSON_AddNumberToObject(ans, "commit_us", round(c->commit_us * 1000.0) / 1000.0);
    }
    respond_answer(p->r, ans);
    free(p);
}

void control_unload(struct http_request *r)
{
    struct lorad_server *srv = r->srv;
    struct lorad_error err = {0};
    char slot[SERVING_SLOT_NAME_MAX + 1];
    if (slot_only_body(r, slot, &err) < 0) {
        LOG_I("event=unload_refused code=%s", lorad_err_name(err.code));
        http_respond_error(r, err.code, "%s", err.msg);
        return;
    }
    struct plain_commit *p = plain_new(r, slot);
    if (!p)
        return;
    struct statewrite_commit cm = {"unload", p, unload_change, unload_done};
    statewrite_commit(srv, &cm);
}
