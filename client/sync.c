/* lorad — client/sync.c: lorad-sync, the fleet agent beside one lorad
 * instance (SPEC.md 12). It converges its lorad to the desired state kept
 * in etcd and reports what the instance serves.
 *
 *   lorad-sync --etcd URL[,URL...] --prefix P --name NAME
 *              (--url URL | --socket PATH) [--token-file F]
 *              [--etcd-user U --etcd-password-file F]
 *              [--etcd-cacert F --etcd-cert F --etcd-key F]
 *              [--lease-ttl S] [--resync-ms MS]
 *              [--backoff-min-ms MS --backoff-max-ms MS] [--config FILE]
 *
 * The loop, one thread, level-triggered:
 *   1. etcd: keep the lease alive (a new one when etcd forgot it), read
 *      every P/desired/<slot> (their values and the store's revision);
 *   2. lorad: GET /status (and /readyz), then per slot reconcile.c's plan,
 *      each action one control request (sync_act);
 *   3. etcd: put P/instances/NAME, the report, under the lease;
 *   4. wait: a watch on P/desired/ from the next revision, bounded by the
 *      resync period (a lorad changed by hand, restarted or down is seen
 *      then), the lease keep-alive and the next retry.
 * After actions the loop goes round at once, so the report shows the new
 * state and a second action (abort, then swap) follows the first.
 *
 * Invariants:
 * - Serving never depends on etcd: the agent only ever sends lorad the
 *   control requests of a plan; with etcd unreachable it keeps the last
 *   desired state it read (before the first read: none, so it does
 *   nothing), logs every failed attempt and retries with exponential
 *   backoff (--backoff-min-ms doubling up to --backoff-max-ms).
 * - A refused change (any answer but 200: incompatible, checksum, not
 *   durable, busy) is reported in the slot's last_error with lorad's code
 *   and retried only when the desired value changes (its mod_revision) or
 *   after the slot's backoff; lorad keeps serving what it had.
 * - A desired value that does not parse is reported (code
 *   invalid_desired) and its slot left alone: never unloaded.
 * - The report lives under a lease of --lease-ttl seconds, kept alive
 *   every third of it: a dead agent's report disappears within the TTL;
 *   SIGTERM revokes it at once.
 *
 * Exit: 0 after SIGTERM/SIGINT, 64 usage (bad arguments or config, an
 * unreadable token or password file), 1 when it cannot start (out of
 * memory, libcurl).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "desired.h"
#include "etcd.h"
#include "reconcile.h"
#include "syncconf.h"

#define SYNC_VERSION SYNCCONF_VERSION
#define SYNC_USAGE 64
#define SYNC_CTL_TIMEOUT_MS 120000L

/* A slot's retry state: the desired value it was tried for, failures. */
struct sync_memo {
    bool used;
    char slot[DESIRED_NAME_MAX + 1];
    int64_t desired_rev; /* mod_revision tried for (-1: deleted) */
    int failures;
    int64_t next_try_ms; /* monotonic */
    bool has_error;
    char code[64], msg[LORAD_ERROR_MSG_MAX], at[32], action[24];
    bool converged;
};

/* A desired value that did not parse. */
struct sync_bad {
    char slot[DESIRED_NAME_MAX + 1];
    char msg[LORAD_ERROR_MSG_MAX];
    int64_t mod_revision;
};

/* The agent's state: one struct, passed explicitly. */
struct sync {
    struct sync_conf conf;
    struct etcd *etcd;
    struct api_client *lorad;
    char *desired_prefix; /* P/desired/ */
    char *report_key;     /* P/instances/NAME */
    /* etcd */
    bool have_desired; /* one range succeeded */
    struct desired desired[DESIRED_MAX_SLOTS];
    size_t nd;
    struct sync_bad bad[DESIRED_MAX_SLOTS];
    size_t nbad;
    int64_t revision;
    int64_t lease;
    int64_t keepalive_due_ms;
    bool etcd_down;
    int etcd_failures;
    int64_t etcd_retry_ms;
    /* lorad */
    bool lorad_down;
    int lorad_failures;
    int64_t lorad_retry_ms;
    char lorad_err[LORAD_ERROR_MSG_MAX], lorad_err_at[32];
    bool have_obs, ready;
    struct observed obs;
    struct sync_memo memo[DESIRED_MAX_SLOTS * 2];
    long long seq;
    int64_t resync_due_ms;
};

static volatile sig_atomic_t sync_stop;

/* ---- logging ---- */

static bool sync_journal;

static void slog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void slog(int prio, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (sync_journal) {
        fprintf(stderr, "<%d>%s\n", prio, line);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ lorad-sync %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                line);
    }
}
#define LOG_ERR 3
#define LOG_WARN 4
#define LOG_INFO 6

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rfc3339_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    char sec[24];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%03dZ", sec, (int)(ts.tv_nsec / 1000000));
}

static long backoff_ms(const struct sync *s, int failures)
{
    long d = s->conf.backoff_min_ms;
    for (int i = 1; i < failures && d < s->conf.backoff_max_ms; i++)
        d *= 2;
    return d < s->conf.backoff_max_ms ? d : s->conf.backoff_max_ms;
}

/* ---- etcd side ---- */

static int sync_lease_refresh(struct sync *s, int64_t now, struct lorad_error *err)
{
    long ttl = 0;
    if (s->lease && now < s->keepalive_due_ms)
        return 0;
    if (s->lease) {
        int rc = etcd_lease_keepalive(s->etcd, s->lease, &ttl, err);
        if (rc == 0) {
            s->keepalive_due_ms = now + s->conf.lease_ttl_s * 1000 / 3;
            return 0;
        }
        if (rc != LORAD_E_NOT_FOUND)
            return rc;
        slog(LOG_WARN, "event=lease_lost lease=%llx reason=\"%s\"; granting a new one",
             (unsigned long long)s->lease, err->msg);
        s->lease = 0;
    }
    int rc = etcd_lease_grant(s->etcd, s->conf.lease_ttl_s, &s->lease, &ttl, err);
    if (rc < 0)
        return rc;
    slog(LOG_INFO, "event=lease_granted lease=%llx ttl_s=%ld", (unsigned long long)s->lease, ttl);
    s->keepalive_due_ms = now + s->conf.lease_ttl_s * 1000 / 3;
    return 0;
}

/* Replaces the cached desired state by a range's. */
static void sync_take_desired(struct sync *s, const struct etcd_kvs *kvs)
{
    size_t plen = strlen(s->desired_prefix);
    s->nd = s->nbad = 0;
    for (size_t i = 0; i < kvs->n; i++) {
        const struct etcd_kv *kv = &kvs->kv[i];
        const char *slot = kv->key + plen;
        struct lorad_error err = {0};
        if (s->nd + s->nbad == DESIRED_MAX_SLOTS) {
            slog(LOG_WARN, "event=desired_ignored key=%s reason=\"more than %d slots\"", kv->key,
                 DESIRED_MAX_SLOTS);
            continue;
        }
        if (desired_parse(slot, kv->value, kv->value_len, &s->desired[s->nd], &err) == 0) {
            s->desired[s->nd++].mod_revision = kv->mod_revision;
            continue;
        }
        struct sync_bad *b = &s->bad[s->nbad++];
        snprintf(b->slot, sizeof(b->slot), "%.128s", slot);
        snprintf(b->msg, sizeof(b->msg), "%s", err.msg);
        b->mod_revision = kv->mod_revision;
    }
}

static void sync_etcd_failed(struct sync *s, int64_t now, const char *what,
                             const struct lorad_error *err)
{
    s->etcd_failures++;
    long d = backoff_ms(s, s->etcd_failures);
    s->etcd_down = true;
    s->etcd_retry_ms = now + d;
    slog(LOG_WARN,
         "event=%s step=%s attempt=%d retry_in_ms=%ld reason=\"%s\"; lorad keeps serving what "
         "it has",
         err->code == LORAD_E_NOT_READY ? "etcd_unreachable" : "etcd_error", what, s->etcd_failures,
         d, err->msg);
}

/* Step 1. True when etcd answered (the desired state is fresh). */
static bool sync_etcd_step(struct sync *s, int64_t now)
{
    struct lorad_error err = {0};
    struct etcd_kvs kvs;
    if (s->etcd_down && now < s->etcd_retry_ms)
        return false;
    if (sync_lease_refresh(s, now, &err) < 0) {
        sync_etcd_failed(s, now, "lease", &err);
        return false;
    }
    if (etcd_range_prefix(s->etcd, s->desired_prefix, &kvs, &err) < 0) {
        sync_etcd_failed(s, now, "range", &err);
        return false;
    }
    if (s->etcd_down)
        slog(LOG_INFO, "event=etcd_back endpoint=%s failed_attempts=%d", etcd_where(s->etcd),
             s->etcd_failures);
    s->etcd_down = false;
    s->etcd_failures = 0;
    if (!s->have_desired || kvs.revision != s->revision)
        sync_take_desired(s, &kvs);
    s->have_desired = true;
    s->revision = kvs.revision;
    etcd_kvs_free(&kvs);
    return true;
}

/* ---- lorad side ---- */

static struct sync_memo *sync_memo(struct sync *s, const char *slot)
{
    struct sync_memo *free_m = NULL;
    for (size_t i = 0; i < sizeof(s->memo) / sizeof(s->memo[0]); i++) {
        if (s->memo[i].used && !strcmp(s->memo[i].slot, slot))
            return &s->memo[i];
        if (!s->memo[i].used && !free_m)
            free_m = &s->memo[i];
    }
    if (!free_m) /* more slots than ever expected: reuse the first */
        free_m = &s->memo[0];
    memset(free_m, 0, sizeof(*free_m));
    free_m->used = true;
    free_m->desired_rev = -2;
    snprintf(free_m->slot, sizeof(free_m->slot), "%s", slot);
    return free_m;
}

static void memo_error(struct sync_memo *m, const char *action, const char *code, const char *msg)
{
    m->has_error = true;
    snprintf(m->action, sizeof(m->action), "%s", action);
    snprintf(m->code, sizeof(m->code), "%s", code);
    snprintf(m->msg, sizeof(m->msg), "%s", msg);
    rfc3339_now(m->at);
}

static void sync_lorad_failed(struct sync *s, int64_t now, const struct lorad_error *err)
{
    s->lorad_failures++;
    long d = backoff_ms(s, s->lorad_failures);
    s->lorad_down = true;
    s->lorad_retry_ms = now + d;
    s->ready = false;
    snprintf(s->lorad_err, sizeof(s->lorad_err), "%s", err->msg);
    rfc3339_now(s->lorad_err_at);
    slog(LOG_WARN, "event=lorad_unreachable lorad=%s attempt=%d retry_in_ms=%ld reason=\"%s\"",
         api_client_where(s->lorad), s->lorad_failures, d, err->msg);
}

/* GET /status (and /readyz). 0, or <0 when lorad gave no usable answer. */
static int sync_observe(struct sync *s, int64_t now)
{
    struct api_resp r;
    struct lorad_error err = {0};
    int rc = api_get(s->lorad, "/status", &r, &err);
    if (rc == 0 && r.status != 200)
        rc = lorad_error_set(&err, LORAD_E_NOT_READY, "GET /status answered HTTP %ld %s", r.status,
                             api_resp_error_code(&r) ? api_resp_error_code(&r) : "");
    if (rc == 0)
        rc = observed_parse(r.json, &s->obs, &err);
    api_resp_free(&r);
    if (rc < 0) {
        sync_lorad_failed(s, now, &err);
        return rc;
    }
    rc = api_get(s->lorad, "/readyz", &r, &err);
    s->ready = rc == 0 && r.status == 200;
    api_resp_free(&r);
    if (s->lorad_down)
        slog(LOG_INFO, "event=lorad_back lorad=%s failed_attempts=%d", api_client_where(s->lorad),
             s->lorad_failures);
    s->lorad_down = false;
    s->lorad_failures = 0;
    s->lorad_err[0] = '\0';
    s->have_obs = true;
    return 0;
}

/* The body of one action's control request (NULL on OOM). */
static cJSON *sync_action_body(const char *slot, const struct reconcile_action *a,
                               const char **path)
{
    cJSON *b = cJSON_CreateObject();
    bool ok = b != NULL;
    switch (a->op) {
    case RECONCILE_SWAP:
    case RECONCILE_SWAP_CANARY:
        *path = "/swap";
        ok = ok && cJSON_AddStringToObject(b, "adapter", a->adapter);
        if (a->op == RECONCILE_SWAP_CANARY)
            ok = ok && cJSON_AddNumberToObject(b, "canary_percent", a->percent);
        if (a->sha256[0])
            ok = ok && cJSON_AddStringToObject(b, "sha256", a->sha256);
        break;
    case RECONCILE_PERCENT:
        *path = "/canary";
        ok = ok && cJSON_AddNumberToObject(b, "percent", a->percent);
        break;
    case RECONCILE_PROMOTE:
        *path = "/promote";
        break;
    case RECONCILE_ABORT:
        *path = "/rollback";
        break;
    case RECONCILE_UNLOAD:
        *path = "/unload";
        break;
    }
    /* A lorad without slots refuses the member: only other slots carry it
     * (reconcile.c never plans those for such a lorad). */
    if (ok && (strcmp(slot, "default") != 0 || a->op == RECONCILE_UNLOAD))
        ok = cJSON_AddStringToObject(b, "slot", slot) != NULL;
    if (!ok) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}

/* One action. 1 done, 0 refused (memo holds why), <0 lorad unreachable. */
static int sync_act(struct sync *s, const char *slot, const struct reconcile_action *a,
                    struct sync_memo *m, int64_t now)
{
    const char *path = "";
    const char *op = reconcile_op_name(a->op);
    struct api_resp r;
    struct lorad_error err = {0};
    cJSON *body = sync_action_body(slot, a, &path);
    if (!body) {
        memo_error(m, op, "internal", "out of memory");
        return 0;
    }
    int64_t t0 = now_ms();
    int rc = api_post_json(s->lorad, path, body, &r, &err);
    cJSON_Delete(body);
    if (rc < 0) {
        sync_lorad_failed(s, now, &err);
        return rc;
    }
    if (r.status == 200) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r.json, "version");
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(r.json, "generation");
        const cJSON *ad = cJSON_GetObjectItemCaseSensitive(r.json, "adapter");
        slog(LOG_INFO,
             "event=converge slot=%s action=%s adapter=%s version=%lld generation=%lld "
             "elapsed_ms=%lld",
             slot, op, cJSON_IsString(ad) ? ad->valuestring : (a->adapter ? a->adapter : "-"),
             cJSON_IsNumber(v) ? (long long)v->valuedouble : -1,
             cJSON_IsNumber(g) ? (long long)g->valuedouble : -1, (long long)(now_ms() - t0));
        api_resp_free(&r);
        return 1;
    }
    const char *code = api_resp_error_code(&r), *msg = api_resp_error_message(&r);
    char fallback[64];
    if (!code) {
        snprintf(fallback, sizeof(fallback), "http_%ld", r.status);
        code = fallback;
    }
    memo_error(m, op, code, msg ? msg : "");
    m->failures++;
    long d = backoff_ms(s, m->failures);
    m->next_try_ms = now + d;
    slog(LOG_WARN,
         "event=refused slot=%s action=%s adapter=%s status=%ld code=%s attempt=%d "
         "retry_in_ms=%ld message=\"%s\"; serving what it had",
         slot, op, a->adapter ? a->adapter : "-", r.status, code, m->failures, d, msg ? msg : "");
    api_resp_free(&r);
    return 0;
}

static const struct desired *sync_desired_of(const struct sync *s, const char *slot)
{
    for (size_t i = 0; i < s->nd; i++)
        if (!strcmp(s->desired[i].slot, slot))
            return &s->desired[i];
    return NULL;
}

static const struct sync_bad *sync_bad_of(const struct sync *s, const char *slot)
{
    for (size_t i = 0; i < s->nbad; i++)
        if (!strcmp(s->bad[i].slot, slot))
            return &s->bad[i];
    return NULL;
}

/* Converges one slot. True when an action was done (observe again). */
static bool sync_slot(struct sync *s, const char *slot, int64_t now, bool *unreachable)
{
    const struct desired *d = sync_desired_of(s, slot);
    const struct sync_bad *bad = sync_bad_of(s, slot);
    struct sync_memo *m = sync_memo(s, slot);
    int64_t rev = d ? d->mod_revision : bad ? bad->mod_revision : -1;
    if (rev != m->desired_rev) { /* a new desired value: try at once */
        m->desired_rev = rev;
        m->failures = 0;
        m->next_try_ms = 0;
        m->has_error = false;
    }
    if (bad) {
        if (!m->has_error)
            slog(LOG_WARN, "event=invalid_desired slot=%s reason=\"%s\"; slot left as it is", slot,
                 bad->msg);
        memo_error(m, "none", "invalid_desired", bad->msg);
        m->converged = false;
        return false;
    }
    struct reconcile_plan plan;
    reconcile_slot(slot, d, &s->obs, observed_find(&s->obs, slot), &plan);
    m->converged = plan.status == RECONCILE_CONVERGED;
    if (plan.status == RECONCILE_CONVERGED) {
        m->has_error = false;
        m->failures = 0;
        return false;
    }
    if (plan.status == RECONCILE_UNSUPPORTED) {
        if (!m->has_error)
            slog(LOG_WARN,
                 "event=slot_unsupported slot=%s; this lorad serves only the slot default", slot);
        memo_error(m, "none", "slot_unsupported",
                   "this lorad has no slots (its /status has no \"slots\"): only the slot default "
                   "can be converged");
        return false;
    }
    if (now < m->next_try_ms)
        return false; /* backing off after a refusal */
    for (size_t i = 0; i < plan.n_actions; i++) {
        int rc = sync_act(s, slot, &plan.action[i], m, now);
        if (rc < 0)
            *unreachable = true;
        if (rc <= 0)
            return i > 0;
    }
    return true;
}

/* Step 2. True when some action was done. */
static bool sync_converge(struct sync *s, int64_t now)
{
    if (s->lorad_down && now < s->lorad_retry_ms)
        return false;
    if (sync_observe(s, now) < 0)
        return false;
    if (!s->have_desired)
        return false;
    bool acted = false, unreachable = false;
    for (size_t i = 0; i < s->nd && !unreachable; i++)
        acted |= sync_slot(s, s->desired[i].slot, now, &unreachable);
    for (size_t i = 0; i < s->nbad && !unreachable; i++)
        acted |= sync_slot(s, s->bad[i].slot, now, &unreachable);
    for (size_t i = 0; i < s->obs.n && !unreachable; i++)
        if (!sync_desired_of(s, s->obs.slot[i].name) && !sync_bad_of(s, s->obs.slot[i].name))
            acted |= sync_slot(s, s->obs.slot[i].name, now, &unreachable);
    return acted && !unreachable;
}

/* ---- the report ---- */

static bool add_snap(cJSON *o, const char *name, const struct observed_snap *sn, bool canary)
{
    if (!sn->present)
        return cJSON_AddNullToObject(o, name) != NULL;
    cJSON *j = cJSON_AddObjectToObject(o, name);
    bool ok = j != NULL;
    ok = ok && (sn->adapter[0] ? cJSON_AddStringToObject(j, "adapter", sn->adapter)
                               : cJSON_AddNullToObject(j, "adapter"));
    ok = ok && cJSON_AddNumberToObject(j, "version", (double)sn->version);
    ok = ok && (sn->sha256[0] ? cJSON_AddStringToObject(j, "sha256", sn->sha256)
                              : cJSON_AddNullToObject(j, "sha256"));
    if (canary)
        ok = ok && cJSON_AddNumberToObject(j, "percent", sn->percent);
    return ok;
}

static bool add_counters(cJSON *o, const char *name, const struct observed_counters *c)
{
    cJSON *j = cJSON_AddObjectToObject(o, name);
    return j && cJSON_AddNumberToObject(j, "requests", (double)c->requests) &&
           cJSON_AddNumberToObject(j, "errors", (double)c->errors) &&
           cJSON_AddNumberToObject(j, "nonfinite_rows", (double)c->nonfinite_rows) &&
           (c->p99_ms < 0 ? cJSON_AddNullToObject(j, "p99_ms") != NULL
                          : cJSON_AddNumberToObject(j, "p99_ms", c->p99_ms) != NULL);
}

static bool add_desired(cJSON *o, const struct desired *d)
{
    if (!d)
        return cJSON_AddNullToObject(o, "desired") != NULL;
    cJSON *j = cJSON_AddObjectToObject(o, "desired");
    return j && cJSON_AddStringToObject(j, "adapter", d->adapter) &&
           (d->sha256[0] ? cJSON_AddStringToObject(j, "sha256", d->sha256) != NULL
                         : cJSON_AddNullToObject(j, "sha256") != NULL) &&
           (d->has_percent ? cJSON_AddNumberToObject(j, "canary_percent", d->percent) != NULL
                           : cJSON_AddNullToObject(j, "canary_percent") != NULL) &&
           cJSON_AddNumberToObject(j, "mod_revision", (double)d->mod_revision);
}

static bool add_error(cJSON *o, const struct sync_memo *m, int64_t now)
{
    if (!m || !m->has_error)
        return cJSON_AddNullToObject(o, "last_error") != NULL;
    cJSON *e = cJSON_AddObjectToObject(o, "last_error");
    long retry = m->next_try_ms > now ? (long)(m->next_try_ms - now) : 0;
    return e && cJSON_AddStringToObject(e, "code", m->code) &&
           cJSON_AddStringToObject(e, "message", m->msg) &&
           cJSON_AddStringToObject(e, "action", m->action) &&
           cJSON_AddStringToObject(e, "at", m->at) &&
           cJSON_AddNumberToObject(e, "attempts", m->failures) &&
           cJSON_AddNumberToObject(e, "retry_in_ms", (double)retry);
}

static bool add_slot(struct sync *s, cJSON *slots, const char *name, int64_t now)
{
    cJSON *j = cJSON_AddObjectToObject(slots, name);
    const struct observed_slot *o = s->have_obs ? observed_find(&s->obs, name) : NULL;
    struct observed_snap none = {0};
    struct sync_memo *m = NULL;
    for (size_t i = 0; i < sizeof(s->memo) / sizeof(s->memo[0]) && !m; i++)
        if (s->memo[i].used && !strcmp(s->memo[i].slot, name))
            m = &s->memo[i];
    bool ok = j && add_snap(j, "stable", o ? &o->stable : &none, false) &&
              add_snap(j, "canary", o ? &o->canary : &none, true) &&
              add_desired(j, sync_desired_of(s, name)) &&
              cJSON_AddBoolToObject(j, "converged", m ? m->converged : o != NULL) &&
              add_error(j, m, now);
    if (ok && o) {
        cJSON *rq = cJSON_AddObjectToObject(j, "requests");
        ok = rq && add_counters(rq, "stable", &o->req_stable) &&
             add_counters(rq, "canary", &o->req_canary);
    }
    return ok;
}

static char *sync_report_text(struct sync *s, int64_t now)
{
    char at[32];
    cJSON *r = cJSON_CreateObject();
    cJSON *slots = r ? cJSON_AddObjectToObject(r, "slots") : NULL;
    bool ok = slots != NULL;
    for (size_t i = 0; ok && s->have_obs && i < s->obs.n; i++)
        ok = add_slot(s, slots, s->obs.slot[i].name, now);
    for (size_t i = 0; ok && i < s->nd; i++)
        if (!cJSON_GetObjectItemCaseSensitive(slots, s->desired[i].slot))
            ok = add_slot(s, slots, s->desired[i].slot, now);
    for (size_t i = 0; ok && i < s->nbad; i++)
        if (!cJSON_GetObjectItemCaseSensitive(slots, s->bad[i].slot))
            ok = add_slot(s, slots, s->bad[i].slot, now);
    rfc3339_now(at);
    ok = ok && cJSON_AddStringToObject(r, "name", s->conf.name) &&
         cJSON_AddStringToObject(r, "lorad", api_client_where(s->lorad)) &&
         cJSON_AddBoolToObject(r, "ready", s->ready && !s->lorad_down) &&
         cJSON_AddNumberToObject(r, "generation", s->have_obs ? (double)s->obs.generation : -1) &&
         cJSON_AddNumberToObject(r, "desired_revision", (double)s->revision) &&
         cJSON_AddNumberToObject(r, "seq", (double)++s->seq) &&
         cJSON_AddStringToObject(r, "updated_at", at);
    if (ok && s->lorad_down) {
        cJSON *e = cJSON_AddObjectToObject(r, "last_error");
        ok = e && cJSON_AddStringToObject(e, "code", "lorad_unreachable") &&
             cJSON_AddStringToObject(e, "message", s->lorad_err) &&
             cJSON_AddStringToObject(e, "at", s->lorad_err_at);
    } else if (ok) {
        ok = cJSON_AddNullToObject(r, "last_error") != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(r) : NULL;
    cJSON_Delete(r);
    return text;
}

/* Step 3. */
static void sync_report(struct sync *s, int64_t now)
{
    struct lorad_error err = {0};
    char *text = sync_report_text(s, now);
    if (!text) {
        slog(LOG_ERR, "event=report_failed reason=\"out of memory\"");
        return;
    }
    if (etcd_put(s->etcd, s->report_key, text, s->lease, NULL, &err) < 0)
        sync_etcd_failed(s, now, "report", &err);
    free(text);
}

/* ---- the loop ---- */

static int64_t sync_next_deadline(const struct sync *s, int64_t now)
{
    int64_t t = s->resync_due_ms;
    if (s->lease && s->keepalive_due_ms < t)
        t = s->keepalive_due_ms;
    if (s->etcd_down && s->etcd_retry_ms < t)
        t = s->etcd_retry_ms;
    if (s->lorad_down && s->lorad_retry_ms < t)
        t = s->lorad_retry_ms;
    for (size_t i = 0; i < sizeof(s->memo) / sizeof(s->memo[0]); i++)
        if (s->memo[i].used && s->memo[i].next_try_ms > now && s->memo[i].next_try_ms < t)
            t = s->memo[i].next_try_ms;
    return t > now ? t : now;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    if (ms > 0)
        nanosleep(&ts, NULL); /* a signal ends it early */
}

static void sync_run(struct sync *s)
{
    int64_t resync = s->conf.resync_ms > 0 ? s->conf.resync_ms : s->conf.lease_ttl_s * 1000 / 3;
    slog(LOG_INFO,
         "event=start name=%s etcd=%s prefix=%s lorad=%s lease_ttl_s=%ld resync_ms=%lld "
         "version=%s",
         s->conf.name, s->conf.etcd, s->conf.prefix, api_client_where(s->lorad),
         s->conf.lease_ttl_s, (long long)resync, SYNC_VERSION);
    while (!sync_stop) {
        int64_t now = now_ms();
        if (now >= s->resync_due_ms)
            s->resync_due_ms = now + resync;
        bool etcd_ok = sync_etcd_step(s, now);
        bool acted = sync_converge(s, now);
        if (etcd_ok)
            sync_report(s, now);
        if (acted || sync_stop)
            continue;
        now = now_ms();
        int64_t wait = sync_next_deadline(s, now) - now;
        if (etcd_ok && !s->etcd_down) {
            struct lorad_error err = {0};
            bool changed = false;
            if (wait > 0 && etcd_watch(s->etcd, s->desired_prefix, s->revision + 1, (long)wait,
                                       &changed, &err) < 0)
                sync_etcd_failed(s, now_ms(), "watch", &err);
        } else {
            sleep_ms(wait);
        }
    }
    if (s->lease) {
        struct lorad_error err = {0};
        etcd_set_stop(s->etcd, NULL); /* the revoke must not be cut short */
        if (etcd_lease_revoke(s->etcd, s->lease, &err) < 0)
            slog(LOG_WARN,
                 "event=lease_revoke_failed reason=\"%s\"; the report expires with "
                 "its lease",
                 err.msg);
    }
    slog(LOG_INFO, "event=stop name=%s", s->conf.name);
}

static int sync_open(struct sync *s)
{
    struct sync_conf *c = &s->conf;
    struct lorad_error err = {0};
    char *token = NULL, *password = NULL;
    int rc = SYNC_USAGE;
    if (c->token_file && api_token_read(c->token_file, &token, &err) < 0) {
        fprintf(stderr, "lorad-sync: --token-file: %s\n", err.msg);
        goto done;
    }
    if (c->etcd_password_file && syncconf_read_secret(c->etcd_password_file, &password) < 0)
        goto done;
    struct api_conf ac = {
        .url = c->url, .socket = c->socket, .token = token, .timeout_ms = SYNC_CTL_TIMEOUT_MS};
    if (!(s->lorad = api_client_new(&ac, &err))) {
        fprintf(stderr, "lorad-sync: lorad: %s\n", err.msg);
        goto done;
    }
    struct etcd_conf ec = {.endpoints = c->etcd,
                           .user = c->etcd_user,
                           .password = password,
                           .cacert = c->etcd_cacert,
                           .cert = c->etcd_cert,
                           .key = c->etcd_key,
                           .timeout_ms = 3000,
                           .stop = &sync_stop};
    if (!(s->etcd = etcd_new(&ec, &err))) {
        fprintf(stderr, "lorad-sync: --etcd: %s\n", err.msg);
        goto done;
    }
    const char *sep = c->prefix[strlen(c->prefix) - 1] == '/' ? "" : "/";
    if (asprintf(&s->desired_prefix, "%s%sdesired/", c->prefix, sep) < 0 ||
        asprintf(&s->report_key, "%s%sinstances/%s", c->prefix, sep, c->name) < 0) {
        fprintf(stderr, "lorad-sync: out of memory\n");
        rc = 1;
        goto done;
    }
    rc = 0;
done:
    if (token)
        memset(token, 0, strlen(token));
    free(token);
    if (password)
        memset(password, 0, strlen(password));
    free(password);
    return rc;
}

static void on_signal(int sig)
{
    (void)sig;
    sync_stop = 1;
}

int main(int argc, char **argv)
{
    static struct sync s; /* large (observed state, memos): not on the stack */
    struct lorad_error err = {0};
    int rc;
    sync_journal = getenv("JOURNAL_STREAM") != NULL;
    prctl(PR_SET_NAME, "lorad-sync");
    rc = syncconf_parse(argc, argv, &s.conf);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "lorad-sync: try --help\n");
        syncconf_free(&s.conf);
        return rc < 0 ? SYNC_USAGE : 0;
    }
    if (api_global_init(&err) < 0) {
        fprintf(stderr, "lorad-sync: %s\n", err.msg);
        syncconf_free(&s.conf);
        return 1;
    }
    rc = sync_open(&s);
    if (rc == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal; /* no SA_RESTART: a sleep ends at once */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        sync_run(&s);
    }
    etcd_free(&s.etcd);
    api_client_free(&s.lorad);
    free(s.desired_prefix);
    free(s.report_key);
    syncconf_free(&s.conf);
    api_global_cleanup();
    return rc;
}
